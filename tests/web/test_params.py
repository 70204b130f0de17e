"""Every operator route of the app: refuses without the admin token, and answers junk query parameters with
a 400 naming the parameter before Redis sees them (503 only when Redis is really down). Routes and their
parameters are read from the app itself, so a new route or parameter is covered without editing this file."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.routing import Route

from chainer.app import create_app
from chainer.jobs import run_action
from chainer.providers import Downstream
from chainer.settings import Secret, Settings
from chainer.store import Store
from chainer.web.params import U64_MAX, Count, Cursor, Param, Text, Time, Values
from tests import payloads
from tests.helpers import ADMIN, AUTH, HOOK, job_ctx, parse_rules
from tests.redis_server import free_port

pytestmark = pytest.mark.integration

RULES = """
version: 1
rules:
  - name: api-after-lib
    when: {project: acme/lib, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api}
"""
SETTINGS = Settings(
    hook_token=Secret(HOOK),
    admin_token=Secret(ADMIN),
    circleci_token=Secret("cci-token"),
    circleci_url="https://circleci.example",
)
# Routes anyone may call; every other route of the app is an operator route.
PUBLIC = {
    "/hooks/codeship",
    "/hooks/codeship/{token}",
    "/hooks/circleci",
    "/hooks/circleci/{token}",
    "/hooks/github",
    "/hooks/buildkite",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/ui/signin",
    "/ui/static/{name}",
}
KNOWN_OPERATOR = {
    "/audit",
    "/events/{event_id}",
    "/chains/{event_id}",
    "/dlq",
    "/dlq/{action_id}/{verb}",
    "/explain",
    "/rules",
}


@dataclass
class World:
    redis: Redis
    client: httpx.AsyncClient
    app: Starlette
    event_id: str
    action_id: str

    def operator_routes(self) -> list[Route]:
        """Every route of the app that is not public (fails on a route kind this test cannot call)."""
        routes = []
        for route in self.app.routes:
            assert isinstance(route, Route), f"{route!r}: extend this test to cover this kind of route"
            if route.path not in PUBLIC:
                routes.append(route)
        assert KNOWN_OPERATOR <= {r.path for r in routes}
        return routes

    def url(self, route: Route) -> str:
        values = {"event_id": self.event_id, "action_id": self.action_id, "verb": "discard"}
        names = re.findall(r"{(\w+)(?::\w+)?}", route.path)
        assert set(names) <= set(values), f"{route.path}: give this test a value for its path parameters"
        return re.sub(r"{(\w+)(?::\w+)?}", lambda m: values[m[1]], route.path)


async def _world(redis: Redis, settings: Settings) -> World:
    """An app over real Redis holding one accepted event whose action is dead (so every route has real ids)."""
    store = Store(redis)
    app = create_app(settings, ruleset=parse_rules(RULES), store=store)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://chainer.test")
    body = json.dumps(payloads.codeship("success")).encode()
    accepted = await client.post(f"/hooks/codeship/{HOOK}", content=body, headers={"content-type": "application/json"})
    event_id = accepted.json()["event_id"]
    action = f"{event_id}:api-after-lib:0"
    transport = httpx.MockTransport(lambda request: httpx.Response(400, json={"message": "no such project"}))
    async with httpx.AsyncClient(transport=transport) as http:
        ctx = job_ctx(store, SETTINGS, Downstream(SETTINGS, http))
        assert await run_action(ctx, action) == "dead"
    return World(redis, client, app, event_id, action)


@pytest.fixture
async def world(redis: Redis) -> AsyncIterator[World]:
    w = await _world(redis, SETTINGS)
    yield w
    await w.client.aclose()


def _body(response: httpx.Response) -> dict[str, Any]:
    """A JSON answer's body; an HTML page's (the operator page /ui) as {"page": text}."""
    if response.headers.get("content-type", "").startswith("text/html"):
        return {"page": response.text}
    found: dict[str, Any] = response.json()
    return found


def _error(response: httpx.Response) -> str:
    """The error a refusal names: the JSON ``error``, or the text of an HTML page."""
    return str(_body(response).get("error") or _body(response).get("page") or "")


def _methods(route: Route) -> list[str]:
    return sorted(route.methods or {"GET"})


async def _snapshot(redis: Redis) -> dict[bytes, Any]:
    """Every key with its type and size, to show a refused request changed nothing."""
    state: dict[bytes, Any] = {}
    for key in await redis.keys("*"):
        kind = (await redis.type(key)).decode()
        size = {
            "hash": redis.hgetall,
            "stream": redis.xlen,
            "list": redis.llen,
            "zset": redis.zcard,
            "string": redis.get,
            "set": redis.scard,
        }[kind](key)
        state[key] = (kind, await size)
    return state


# ---- item: the operator API refuses without the admin token, on every route ----


@pytest.mark.parametrize("configured", [False, True], ids=["admin-token-unset", "admin-token-set"])
async def test_every_operator_route_refuses_without_the_right_token(redis: Redis, configured: bool) -> None:
    """Each operator route and method of the app answers 401/403 without a token, with a wrong one, with another
    scheme, and with any token at all when CHAINER_ADMIN_TOKEN is unset; nothing in Redis changes."""
    settings = SETTINGS if configured else Settings(hook_token=Secret(HOOK), admin_token=None)
    world = await _world(redis, settings)
    before = await _snapshot(redis)
    tries: list[dict[str, str]] = [
        {},
        {"authorization": "Bearer wrong-token"},
        {"authorization": f"Bearer {ADMIN}x"},
        {"authorization": f"Basic {ADMIN}"},
        {"authorization": "Bearer "},
        {"authorization": ADMIN},
    ]
    if not configured:
        tries.append(AUTH)  # the right token of a configured deployment means nothing here
    answers = []
    try:
        for route in world.operator_routes():
            for method in _methods(route):
                for headers in tries:
                    response = await world.client.request(
                        method,
                        world.url(route),
                        headers=headers | {"content-type": "application/json"},
                        content=json.dumps({"provider": "codeship", "payload": payloads.codeship()}),
                    )
                    answers.append((method, route.path, headers.get("authorization"), response.status_code))
                    if method != "HEAD":
                        assert world.event_id not in response.text and "items" not in _body(response)
                        if not configured:
                            assert "CHAINER_ADMIN_TOKEN" in _error(response)
    finally:
        await world.client.aclose()
    refused = [a for a in answers if a[3] not in (401, 403)]
    assert refused == []
    assert len({(m, p) for m, p, _, _ in answers}) >= len(KNOWN_OPERATOR)
    assert await _snapshot(redis) == before
    if configured:  # the same requests with the right token get through (the refusal was the token's doing)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="http://t") as c:
            assert (await c.get("/dlq", headers=AUTH)).json()["items"][0]["action_id"] == world.action_id


# ---- item: junk query parameters get a 400 naming the parameter, never Redis's refusal as a 503 ----

COUNT_JUNK = [
    "-1",
    "x",
    "1.5",
    "1e3",
    " 5",
    "5 ",
    "+5",
    "0x10",
    "5_0",
    "١٢",
    "²",
    str(2**63 - 1),
    str(2**64),
    "9" * 30,
    "9" * 5000,
]
CURSOR_JUNK = [
    "abc",
    "-1",
    "-",
    "1-",
    "-1-0",
    "1--2",
    "1-2-3",
    "1.5-0",
    "(5-0",
    " 5-0",
    "5-0 ",
    "١-٠",
    "x-1",
    "99999999999999999999-0",
    "0-99999999999999999999",
    f"{2**64}-0",
    f"0-{2**64}",
    "9" * 30,
    "*",
]
TIME_JUNK = [
    "-1",
    "yesterday",
    "1.5",
    "²",
    "١٢",
    str(2**64),
    "18446744073709551616",
    "9" * 30,
    "2024-01-01T00:00:00",
    "2024-13-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "0001-01-01T00:00:00+14:00",
    "-2024-01-01T00:00:00Z",
    "now",
]
VALUES_JUNK = ["a,,b", ",", "a,"]


def _junk(kind: Param) -> list[str]:
    """Values of ``kind`` that chainer must refuse (besides the empty value and a repeated parameter)."""
    if isinstance(kind, Count):
        return [*COUNT_JUNK, str(kind.high + 1)] + ([str(kind.low - 1)] if kind.low > 0 else [])
    if isinstance(kind, Cursor):
        edge = "0-0" if kind.bound == "end" else f"{U64_MAX}-{U64_MAX}"  # nothing before/after these
        return [*CURSOR_JUNK, edge] + ([] if kind.latest else ["+"])
    if isinstance(kind, Time):
        return TIME_JUNK
    if isinstance(kind, Values):
        return VALUES_JUNK
    assert isinstance(kind, Text), f"{kind!r}: give this test junk values for this kind of parameter"
    return []


def _valid(kind: Param) -> str:
    if isinstance(kind, Count):
        return str(kind.low)
    if isinstance(kind, Cursor):
        return "+" if kind.latest else "0-0"
    if isinstance(kind, Time):
        return "2026-01-01T00:00:00Z"
    return "a,b" if isinstance(kind, Values) else "evt_nope"


def _cases(world: World) -> list[tuple[str, str, list[tuple[str, str]], str]]:
    """(method, url, query, name the error must mention) for every parameter of every operator route."""
    cases = []
    for route in world.operator_routes():
        spec = getattr(route.endpoint, "query_spec", None)
        assert spec is not None, f"{route.path}: declare its query parameters (even none) with _admin/_operator"
        for method in _methods(route):
            url = world.url(route)
            cases.append((method, url, [("colour", "red")], "colour"))
            cases.append((method, url, [("", "x")], "unknown"))
            for name, kind in spec.items():
                valid = _valid(kind)
                cases.append((method, url, [(name, "")], name))
                cases.append((method, url, [(name, valid), (name, valid)], name))
                cases += [(method, url, [(name, value)], name) for value in _junk(kind)]
    return cases


# The values from the review that Redis refused (answered as 503 Redis is unavailable).
REPORTED = [
    ("/audit", [("after", "99999999999999999999-0")], "after"),
    ("/audit", [("before", "0-0")], "before"),
    ("/audit", [("until", "18446744073709551616")], "until"),
    ("/dlq", [("offset", "9223372036854775807")], "offset"),
    ("/audit", [("after", "1-0"), ("before", "2-0")], "after"),
    ("/audit", [("since", "2000"), ("until", "1000")], "since"),
]


async def test_junk_parameters_of_every_operator_route_get_400_naming_them(world: World) -> None:
    """Huge, negative, malformed, non-numeric, empty, repeated and unknown parameters: 400 naming the parameter,
    on every operator route; a valid value of each parameter is answered 200 on every GET route."""
    cases = _cases(world) + [("GET", path, query, name) for path, query, name in REPORTED]
    assert len(cases) > 200
    before = await _snapshot(world.redis)
    wrong = []
    for method, url, query, name in cases:
        response = await world.client.request(method, url, params=query, headers=AUTH)
        error = _error(response) if method != "HEAD" else ""
        if response.status_code != 400 or (method != "HEAD" and name not in error):
            wrong.append((method, url, query, response.status_code, response.text[:200]))
    assert wrong == []
    assert await _snapshot(world.redis) == before

    for route in world.operator_routes():
        spec = route.endpoint.query_spec  # type: ignore[attr-defined]
        if "GET" not in _methods(route):
            continue
        if getattr(route.endpoint, "openapi_media", None) == "text/event-stream":
            continue  # an endless answer: tests/web/test_stream.py checks its valid values over a real socket
        for name, kind in spec.items():
            response = await world.client.get(world.url(route), params={name: _valid(kind)}, headers=AUTH)
            assert response.status_code == 200, (route.path, name, response.text)


async def test_junk_parameters_are_refused_before_redis_and_503_means_redis_is_down(redis: Redis) -> None:
    """With Redis unreachable, junk parameters still get 400 (nothing was sent to Redis); valid ones get 503."""
    world = await _world(redis, SETTINGS)
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    app = create_app(SETTINGS, ruleset=parse_rules(RULES), store=Store(dead))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            for path, query, name in REPORTED:
                refused = await client.get(path, params=query, headers=AUTH)
                assert refused.status_code == 400 and name in refused.json()["error"], refused.text
            for path, query in [
                ("/audit", {"after": "1-0"}),
                ("/audit", {"until": "1000"}),
                ("/dlq", {"offset": "5"}),
                (f"/events/{world.event_id}", {}),
            ]:
                down = await client.get(path, params=query, headers=AUTH)
                assert down.status_code == 503 and "Redis" in down.json()["error"], down.text
    finally:
        await dead.aclose()
        await world.client.aclose()
