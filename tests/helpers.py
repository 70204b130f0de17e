"""Helpers shared by the test modules (a test module never imports another test module; they import this).

Rules: ``parse_rules``, ``load_rules`` and ``rules_schema`` as production calls them, with the
provider catalogue the composition roots pass; and the small builders the rules tests share.
Providers: a scripted fake provider API for ``httpx.MockTransport``, settings pointing at it, and a
Codeship event, shared by the provider client tests.

Web and worker: the tokens and ``settings()`` most web tests use; ``app_client`` / ``post_codeship``
(the ASGI app under an httpx client, and a Codeship delivery to it); ``job_ctx``, the arq ``ctx`` a
job gets from the worker (``ctx["services"]``), for tests that run one job by hand; ``LoopbackApi``, a
JSON API on 127.0.0.1 that a real worker process can call.

End to end (the chain tests): ``serve_sandbox`` (the provider sandbox under uvicorn on a free 127.0.0.1 port),
``drain`` (a real arq worker in burst mode until the queue is empty), ``read_audit`` / ``read_event``
(the operator API's view of an event), and ``ChainStack`` / ``chain_stack``, all of them together: the app
with the rules under an ASGI client, the sandbox on a socket and settings pointing at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from chainer import rules
from chainer.app import create_app
from chainer.errors import DownstreamError, RulesError
from chainer.events import BuildEvent
from chainer.jobs import SERVICES, SWEEP_GRACE_MS, RetryPolicy, Services
from chainer.limits import InflightLocks
from chainer.providers import Downstream, catalogue
from chainer.sandbox import SandboxState, create_sandbox_app
from chainer.settings import Secret, Settings
from chainer.store import Store
from chainer.store.connections import connect_arq
from chainer.worker import create_worker
from tests.redis_server import free_port

# ----------------------------------------------------------------------------- rules, with the catalogue


def parse_rules(text: str | bytes, source: str = "rules.yaml") -> rules.RuleSet:
    """``chainer.rules.parse_rules`` with the provider catalogue, as the app, worker and CLI call it."""
    return rules.parse_rules(text, source, catalogue=catalogue())


def load_rules(path: str | os.PathLike[str]) -> rules.RuleSet:
    """``chainer.rules.load_rules`` with the provider catalogue, as the app, worker and CLI call it."""
    return rules.load_rules(path, catalogue=catalogue())


def rules_schema() -> dict[str, Any]:
    """The JSON Schema of rules.yaml for the provider catalogue, as ``chainer schema`` prints it."""
    return rules.rules_schema(catalogue())


# ----------------------------------------------------------------------------- rules documents and events

RESTART = "[{codeship.restart_build: {}}]"
# How a problem in the one rule of ``document()`` names its rule.
R = "rule 'r' (rules[0]) "
BASE_EVENT = BuildEvent(
    provider="circleci",
    kind="workflow",
    event_id="evt_1",
    project="acme/lib",
    status="success",
    raw_status="success",
    project_id="p1",
    project_slug="gh/acme/lib",
    branch="main",
    commit="a" * 40,
    build_id=7,
    build_url="https://ci.example.org/7",
    workflow="build",
    workflow_id="wf-1",
    job="test",
    pipeline_number=3,
    occurred_at="2024-01-01T00:00:00Z",
)


def rule_event(**changes: Any) -> BuildEvent:
    """A green CircleCI workflow of acme/lib on main with every field set, with ``changes`` applied."""
    return dataclasses.replace(BASE_EVENT, **changes)


def document(when: str = "{}", then: str = RESTART, extra: str = "") -> str:
    """One rule `r`: `name` on line 3, `when` on line 4, `then` on line 5, then the ``extra`` lines."""
    return f"version: 1\nrules:\n  - name: r\n    when: {when}\n    then: {then}\n{extra}"


def problems_of(text: str | bytes) -> list[str]:
    """The problems parse_rules reports for ``text`` (the test fails if it accepts the document)."""
    with pytest.raises(RulesError) as info:
        parse_rules(text)
    return info.value.problems


def only_rule(text: str) -> rules.RuleSet:
    """parse_rules on a document that must hold exactly one rule."""
    ruleset = parse_rules(text)
    assert len(ruleset.rules) == 1
    return ruleset


# ----------------------------------------------------------------------------- web and worker

HOOK = "hook-token-123"
WHSEC = "whsec-456"
ADMIN = "admin-789"
AUTH = {"authorization": f"Bearer {ADMIN}"}
JSON = {"content-type": "application/json"}
NO_RULES = "version: 1\nrules: []\n"


def settings(**overrides: Any) -> Settings:
    """Settings with the hook token ``HOOK``, the CircleCI webhook secrets ``older`` and ``WHSEC`` (a rotation)
    and the admin token ``ADMIN``; ``overrides`` replace or add fields."""
    base: dict[str, Any] = {
        "hook_token": Secret(HOOK),
        "circleci_webhook_secrets": (Secret("older"), Secret(WHSEC)),
        "admin_token": Secret(ADMIN),
    }
    return Settings(**(base | overrides))


def app_client(app: ASGIApp, base_url: str = "http://chainer.test") -> httpx.AsyncClient:
    """An httpx client that sends its requests to ``app`` through ASGI (no socket)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def post_codeship(client: httpx.AsyncClient, body: Any, token: str | None = HOOK, **kw: Any) -> httpx.Response:
    """POST ``body`` as a Codeship delivery, the token as a path segment (none when ``token`` is None)."""
    url = f"/hooks/codeship/{token}" if token else "/hooks/codeship"
    return await client.post(url, content=json.dumps(body).encode(), headers=JSON, **kw)


def job_ctx(
    store: Store,
    settings: Settings,
    downstream: Downstream,
    *,
    ruleset: rules.RuleSet | None = None,
    locks: InflightLocks | None = None,
    retry_policy: RetryPolicy | None = None,
    sweep_grace_ms: int = SWEEP_GRACE_MS,
    job_try: int = 1,
) -> dict[str, Any]:
    """The ``ctx`` arq hands a job: the worker's Services (no rules unless given, no per-target leases
    unless ``locks``) and the try number."""
    active = ruleset or parse_rules(NO_RULES)
    services = Services(
        settings=settings,
        store=store,
        rules=lambda: active,
        downstream=downstream,
        locks=locks,
        retry_policy=retry_policy or RetryPolicy(),
        sweep_grace_ms=sweep_grace_ms,
    )
    return {SERVICES: services, "job_try": job_try}


# ----------------------------------------------------------------------------- provider APIs: fakes, settings, events

CIRCLE_TOKEN = "circle-secret-token-123"
CODESHIP_USER = "api@example.org"
CODESHIP_PASSWORD = "codeship-pass-456"
API_KEY = "v1-api-key-789"
ACCESS_TOKEN = "codeship-access-abc"
SECRETS = (CIRCLE_TOKEN, CODESHIP_PASSWORD, API_KEY, ACCESS_TOKEN)

CODESHIP = "https://api.codeship.test"
CODESHIP_V1 = "https://codeship.test"
CIRCLECI = "https://circleci.test"
ORG = "28123f10-e33d-5533-b53f-111ef8d7b14f"
PROJECT = "0059df30-7701-0135-8810-6e5f001a2e3c"
BUILD = "25a3dd8c-eb3e-4e75-1298-8cbcbe621342"
COMMIT = "185ab4c7dc4eda2a027c284f7a669cac3f50a5ed"
NOW = 1_700_000_000.0  # 22:13:20 UTC: 40 s to the next minute boundary
BUILDS_PATH = f"/v2/organizations/{ORG}/projects/{PROJECT}/builds"
PROJECTS_PATH = f"/v2/organizations/{ORG}/projects"

Reply = httpx.Response | Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


class Recorder:
    """A scripted provider for ``httpx.MockTransport``: records every request, answers per route.

    Each route holds a list of replies used in order; the last one repeats. A reply is a response or
    a (sync or async) callable that returns one or raises an httpx exception.
    """

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], list[Reply]] = {}

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        replies = self.routes.get((request.method, request.url.path))
        if not replies:
            return httpx.Response(418, json={"message": f"unscripted {request.method} {request.url.path}"})
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if isinstance(reply, httpx.Response):
            return reply
        answer = reply(request)
        return answer if isinstance(answer, httpx.Response) else await answer

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    def calls(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


class Clock:
    """A settable clock for token expiry and retry-after arithmetic."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "circleci_token": Secret(CIRCLE_TOKEN),
        "circleci_url": CIRCLECI,
        "codeship_user": CODESHIP_USER,
        "codeship_password": Secret(CODESHIP_PASSWORD),
        "codeship_url": CODESHIP,
        "codeship_api_key": Secret(API_KEY),
        "codeship_v1_url": CODESHIP_V1,
    }
    values.update(overrides)
    return Settings(**values)


def make_event(**overrides: Any) -> BuildEvent:
    values: dict[str, Any] = {
        "provider": "codeship",
        "kind": "build",
        "event_id": "evt_1",
        "project": "acme/web",
        "project_id": 1234,
        "status": "error",
        "raw_status": "infrastructure_failure",
        "branch": "main",
        "commit": COMMIT,
        "build_id": 987,
    }
    values.update(overrides)
    return BuildEvent(**values)


def auth_ok(
    token: str = ACCESS_TOKEN,
    expires_at: float = NOW + 3600,
    orgs: list[dict[str, Any]] | None = None,
) -> httpx.Response:
    scopes = ["project.read", "project.write", "build.read", "build.write"]
    organizations = orgs if orgs is not None else [{"uuid": ORG, "name": "Acme", "scopes": scopes}]
    return httpx.Response(200, json={"access_token": token, "expires_at": expires_at, "organizations": organizations})


def projects_page(projects: list[dict[str, Any]], page: int = 1, total: int | None = None) -> httpx.Response:
    body = {"projects": projects, "page": page, "per_page": 50, "total": len(projects) if total is None else total}
    return httpx.Response(200, json=body)


def project(name: str = "acme/web", uuid: str = PROJECT, ident: int = 1234) -> dict[str, Any]:
    return {"id": ident, "uuid": uuid, "name": name, "type": "basic"}


def codeship_recorder() -> Recorder:
    rec = Recorder()
    rec.on("POST", "/v2/auth", auth_ok())
    rec.on("GET", PROJECTS_PATH, projects_page([project()]))
    rec.on("POST", BUILDS_PATH, httpx.Response(202))
    return rec


def assert_secret_free(*things: object) -> None:
    """None of the configured secrets appears in the str or repr of any argument."""
    for thing in things:
        for text in (str(thing), repr(thing)):
            for secret in SECRETS:
                assert secret not in text


def assert_error_secret_free(exc: DownstreamError) -> None:
    assert_secret_free(exc, exc.message, exc.body, exc.args)


async def wait_until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` (sync or async) every 50 ms until it holds; fail naming ``what`` after ``timeout`` s."""
    import asyncio
    import inspect

    for _ in range(int(timeout / 0.05)):
        outcome = check()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{what}: not seen within {timeout:g} s")


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A Prometheus exposition parsed with prometheus-client's parser: (sample name, labels) → value."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# ----------------------------------------------------------------------------- a loopback JSON API


class LoopbackApi(ThreadingHTTPServer):
    """A JSON API on 127.0.0.1 in a thread: every POST's body goes to ``answer``, which returns (status, JSON).

    ``log`` keeps the request lines the standard handler would print to stderr, so a test can read them.
    """

    daemon_threads = True

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler, bytes], tuple[int, Any]]) -> None:
        self.answer = answer
        self.log: list[str] = []
        super().__init__(("127.0.0.1", 0), _LoopbackHandler)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> LoopbackApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=10)


class _LoopbackHandler(BaseHTTPRequestHandler):
    server: LoopbackApi

    def do_POST(self) -> None:
        status, answer = self.server.answer(self, self.rfile.read(int(self.headers.get("content-length") or 0)))
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log.append(format % args)


# ----------------------------------------------------------------------------- end to end: sandbox, worker, audit


@contextlib.asynccontextmanager
async def serve_sandbox(state: SandboxState) -> AsyncIterator[str]:
    """The provider sandbox holding ``state``, served by uvicorn on a free 127.0.0.1 port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_sandbox_app(state), host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def drain(settings: Settings, redis_url: str, ruleset: rules.RuleSet | None = None, **http_options: Any) -> None:
    """A real arq worker (burst) runs every queued job against the providers ``settings`` point at, then stops.

    Quick retries (three tries, 10-50 ms apart); ``ruleset`` instead of the rules file ``settings`` name;
    ``http_options`` go to the worker's ``httpx.AsyncClient`` (``timeout`` 5 s unless given).
    """
    async with httpx.AsyncClient(**({"timeout": 5} | http_options)) as http:
        worker = create_worker(
            settings,
            burst=True,
            handle_signals=False,
            poll_delay=0.01,
            downstream=Downstream(settings, http),
            retry_policy=RetryPolicy(max_tries=3, base_s=0.01, cap_s=0.05),
            redis_pool=connect_arq(redis_url, retries=0),
            ruleset=ruleset,
        )
        await worker.main()
        await worker.close()


async def read_audit(client: httpx.AsyncClient, event_id: str, headers: dict[str, str] = AUTH) -> list[dict[str, Any]]:
    """The audit records of ``event_id``, oldest first, through ``GET /audit`` (admin token ``ADMIN``)."""
    response = await client.get("/audit", params={"event_id": event_id}, headers=headers)
    return list(response.json()["items"])


async def read_event(client: httpx.AsyncClient, event_id: str, headers: dict[str, str] = AUTH) -> dict[str, Any]:
    """``GET /events/{event_id}``: the event, its chain, its actions and its audit records."""
    answer: dict[str, Any] = (await client.get(f"/events/{event_id}", headers=headers)).json()
    return answer


@dataclasses.dataclass
class ChainStack:
    """The app (``client``, through ASGI), the sandbox it calls (``sandbox``) and the ``settings`` both use."""

    client: httpx.AsyncClient
    sandbox: SandboxState
    settings: Settings
    redis_url: str

    async def drain(self, **http_options: Any) -> None:
        """Run a burst worker until the queue is empty (``http_options``: see ``drain``)."""
        await drain(self.settings, self.redis_url, **http_options)

    async def view(self, event_id: str) -> dict[str, Any]:
        return await read_event(self.client, event_id)

    async def loop_stop(self, event_id: str) -> tuple[list[str], str]:
        """The chain an event inherited (its ancestors' event ids) and the reason of its one skipped action."""
        view = await self.view(event_id)
        [skipped] = [r for r in view["audit"] if r["type"] == "action.skipped"]
        return [link["event_id"] for link in view["event"]["chain"]], skipped["reason"]

    def sent(self, action: str) -> list[Any]:
        """The requests the sandbox received for ``action`` (``<provider>.<verb>``)."""
        return [r for r in self.sandbox.requests if r.action == action]


_Stack = TypeVar("_Stack", bound=ChainStack)


@contextlib.asynccontextmanager
async def chain_stack(
    kind: type[_Stack],
    state: SandboxState,
    rules_text: str,
    store: Store,
    redis_url: str,
    overrides: Callable[[str], dict[str, Any]],
) -> AsyncIterator[_Stack]:
    """``state`` served as the sandbox and the app with ``rules_text`` under an ASGI client, as a ``kind``: its
    settings are ``settings()`` with ``redis_url`` and ``overrides(<the sandbox's base URL>)``."""
    async with serve_sandbox(state) as base:
        chosen = settings(redis_url=redis_url, **overrides(base))
        app = create_app(chosen, ruleset=parse_rules(rules_text), store=store)
        async with app_client(app) as client:
            yield kind(client, state, chosen, redis_url)


# The rules most web tests run with: a trigger, a budgeted restart and a finished-status rule.
# One rule: a green acme/lib build triggers gh/acme/api's pipeline on the same branch.
CHAIN_RULE = """
version: 1
rules:
  - name: api-after-lib
    when: {project: acme/lib, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api, branch: "{{ event.branch }}"}
"""

WEB_RULES = """
version: 1
rules:
  - name: api-after-lib
    when: {project: acme/lib, branch: main, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api, parameters: {upstream_sha: "{{ event.commit }}"}}
  - name: restart-infra
    when: {provider: codeship, status: error}
    then:
      - codeship.restart_build: {}
    limit: {per_commit: 2, per_day: 3}
  - name: web-after-lib
    when: {project: acme/lib, branch: "release/*", status: finished}
    then:
      - codeship.trigger_build: {project: acme/web}
"""
