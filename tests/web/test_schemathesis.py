"""schemathesis against ``GET /openapi.json``: generated requests for every documented operation, answered by the app.

The schema is loaded from the ASGI app itself (``schemathesis.openapi.from_asgi``), so what is fuzzed is exactly
what the app documents. The app is the production one: settings from ``tests.helpers.settings`` with the
session's redis-server as ``redis_url``, its own lifespan (its Redis connection, the Redis clock). schemathesis
drives the app through its ASGI transport, on the one event loop thread it keeps for ASGI apps; the tests here are
plain synchronous functions, so pytest-asyncio stays out of the way and no loop is shared between threads.

Two passes, each derandomized (a fixed seed per operation), ``max_examples`` cases per operation and mode:

* signed in: the admin bearer token on every request, the hook token where a webhook takes one, so operator
  handlers and webhook parsers run beyond auth; positive cases (valid under the document) and negative ones
  (invalid: the app must reject them with a 4xx);
* without credentials: every operation that declares the bearer scheme must answer 401, whatever else is sent.

Checks on every answer (schemathesis' own): never a 5xx (Redis is up, so not even 503; the one exception is
``/readyz?workers=N``'s designed 503 "not ready" while fewer than N workers live, none running here), the status
code is one the operation documents, the content type and headers are the documented ones, the body matches its
documented schema, and negative cases are rejected. 30 operations; about 4 300 requests a run, some 45 s on 2 cores.

schemathesis' pytest plugin (loaded by its entry point) ends an ASGI app's lifespan after every test; the next
request starts it again, which is how it found that the app did not survive a second lifespan.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import redis as syncredis
import schemathesis
from hypothesis import HealthCheck, given, settings
from redis.asyncio import Redis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette

from chainer.app import create_app
from chainer.web.openapi import document
from tests.helpers import ADMIN, AUTH, HOOK, WEB_RULES, app_client, parse_rules
from tests.helpers import settings as chainer_settings
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EXAMPLES = 100  # per operation and generation mode, signed in
EXAMPLES_NO_AUTH = 25  # per secured operation, without credentials
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _profile(examples: int) -> Any:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


STREAM_S = 0.3  # how long a GET /audit/stream request is read (the stream never ends by itself)


def _build(redis_url: str) -> Starlette:
    # Heartbeats every 50 ms, so a stream read for STREAM_S sends a few events.
    options = chainer_settings(redis_url=redis_url, stream_heartbeat_seconds=0.05)
    return create_app(options, ruleset=parse_rules(WEB_RULES), watch_rules=False)


def _call(case: Any) -> Any:
    """Send ``case`` to the app (schemathesis' ASGI transport); a stream is read for ``STREAM_S`` seconds."""
    return case.call(timeout=STREAM_S) if case.path == "/audit/stream" else case.call()


# The operations, known at collection time from the routes (no Redis needed to document them).
_DOC = document(_build("redis://127.0.0.1:1/0").routes)
OPERATIONS = [(path, method) for path, ops in _DOC["paths"].items() for method in ops]
SECURED = [(path, method) for path, method in OPERATIONS if "security" in _DOC["paths"][path][method]]


def _negatable(operation: dict[str, Any]) -> bool:
    """Whether a request to ``operation`` can be invalid: a query parameter, a JSON body (not an object), or a form
    with a required field. A path segment is any string, and so is every field of a form."""
    forms = operation.get("requestBody", {}).get("content", {})
    return (
        any(p["in"] == "query" for p in operation.get("parameters", []))
        or "application/json" in forms
        or any("required" in media["schema"] for media in forms.values())
    )


NEGATABLE = {(path, method) for path, method in OPERATIONS if _negatable(_DOC["paths"][path][method])}


@pytest.fixture(scope="module")
def schema(redis_server: RedisServer) -> Iterator[Any]:
    """The document as schemathesis loads it from the running app (its lifespan started, on the session's Redis)."""
    app = _build(redis_server.url)
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    yield loaded
    schemathesis_asgi.shutdown_lifespans()  # (the plugin does so after each test too) its Redis connection closes
    flush = syncredis.Redis.from_url(redis_server.url)
    flush.flushall()
    flush.close()


def _fixed(path: str) -> dict[str, Any]:
    """What a signed-in caller sends as it is: the hook token where the path or query takes one."""
    fixed: dict[str, Any] = {"headers": {"authorization": f"Bearer {ADMIN}"}}
    if path.endswith("/{token}"):
        fixed["path_parameters"] = {"token": HOOK}
    elif path.startswith("/hooks/") and f"{path}/{{token}}" in _DOC["paths"]:
        fixed["query"] = {"token": HOOK}
    return fixed


def _not_ready_for_want_of_workers(case: Any, response: Any) -> bool:
    """/readyz?workers=N answers 503 "not ready" by design while fewer than N workers live (none runs here);
    with Redis up and rules loaded, that must be its only problem."""
    if case.path != "/readyz" or response.status_code != 503:
        return False
    body = response.json()
    return body["status"] == "not ready" and all(
        re.fullmatch(r"0 live worker\(s\), [1-9][0-9]* required", problem) for problem in body["problems"]
    )


def _run(operation: Any, mode: GenerationMode, examples: int, fixed: dict[str, Any]) -> None:
    @_profile(examples)
    @given(case=operation.as_strategy(mode, **fixed))
    def each(case: Any) -> None:
        response = _call(case)
        checks = [*CHECKS, negative_data_rejection] if mode is GenerationMode.NEGATIVE else CHECKS
        if _not_ready_for_want_of_workers(case, response):
            checks = [check for check in checks if check is not not_a_server_error]
        case.validate_response(response, checks=checks, headers=fixed.get("headers"))

    each()


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
def test_every_operation_signed_in_answers_as_documented(schema: Any, path: str, method: str) -> None:
    operation = schema[path][method]
    for mode in GenerationMode if (path, method) in NEGATABLE else [GenerationMode.POSITIVE]:
        _run(operation, mode, EXAMPLES, _fixed(path))


@pytest.mark.parametrize(("path", "method"), SECURED, ids=[f"{m.upper()} {p}" for p, m in SECURED])
def test_every_secured_operation_without_credentials_answers_401(schema: Any, path: str, method: str) -> None:
    operation = schema[path][method]

    @_profile(EXAMPLES_NO_AUTH)
    @given(case=operation.as_strategy(GenerationMode.POSITIVE))
    def each(case: Any) -> None:
        case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in ("authorization", "cookie")}
        response = _call(case)
        assert response.status_code == 401, (case.method, case.formatted_path, response.status_code, response.text)
        case.validate_response(response, checks=CHECKS)

    each()


# ----------------------------------------------------------------------------- what schemathesis found


def test_readyz_not_ready_answers_the_documented_readiness_body(schema: Any) -> None:
    """/readyz's 503 is the probe's verdict (status, problems), not the error object; the document said the latter."""
    case = schema["/readyz"]["GET"].Case(query={"workers": 1})
    response = case.call()
    assert response.status_code == 503 and response.json()["problems"] == ["0 live worker(s), 1 required"]
    case.validate_response(response, checks=[status_code_conformance, response_schema_conformance])


def test_a_page_form_sent_with_the_bearer_header_needs_no_csrf_field(schema: Any) -> None:
    """Only a session cookie's form needs its CSRF token; the document required ``csrf`` of every page form, so a
    bearer request without it (which the page accepts) counted as invalid input accepted."""
    operation = schema["/ui/signout"]["POST"]
    case = operation.Case(body={}, media_type="application/x-www-form-urlencoded", headers=AUTH)
    response = case.call()
    assert response.status_code == 303 and response.headers["location"] == ["/ui/signin"]
    form = operation.definition.raw["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    jsonschema.validate({}, form)
    case.validate_response(response, checks=CHECKS, headers=AUTH)
    # The sign-in form (no session yet) still requires its double-submit value.
    signin = schema["/ui/signin"]["POST"].definition.raw["requestBody"]["content"]
    assert signin["application/x-www-form-urlencoded"]["schema"]["required"] == ["csrf"]


async def test_a_lifespan_run_again_connects_anew_and_closes_what_it_opened(redis_url: str, redis: Redis) -> None:
    """schemathesis' pytest plugin ends an ASGI app's lifespan after every test and starts it again. The second run
    served from the store whose client the first had closed (redis-py reconnects it) and, not owning it, never
    closed it: a connection left open at every restart."""
    app = _build(redis_url)
    stores = []
    for _ in range(2):
        async with app.router.lifespan_context(app), app_client(app) as client:
            assert (await client.get("/events", headers=AUTH)).status_code == 200
            stores.append(app.state.chainer.store)
        async with app_client(app) as client:  # between lifespans the app has no store: 503, not a closed client
            assert (await client.get("/events", headers=AUTH)).status_code == 503
        for _ in range(100):  # the server drops a closed connection on its next loop turn; bounded wait
            if len(await redis.client_list()) == 1:  # only this test's own connection
                break
            await asyncio.sleep(0.05)
        assert [c["cmd"] for c in await redis.client_list()] == ["client|list"]
    assert stores[0] is not stores[1]
