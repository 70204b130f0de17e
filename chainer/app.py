"""The web app (DESIGN §3, §8): webhook endpoints, the operator API and health probes.

``create_app`` is the composition root; uvicorn runs it as a factory (``chainer.app:create_app``).
Every answer is JSON; bad input gets a 4xx that names the problem, Redis trouble a 503, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chainer import dlq, heartbeat, providers
from chainer.accesslog import AccessLog, secret_values
from chainer.errors import (
    PayloadTooLargeError,
    StoreUnavailableError,
    UnsupportedMediaError,
    WebhookError,
)
from chainer.explain import explain
from chainer.intake import Intake
from chainer.params import AUDIT_FILTERS, AUDIT_PARAMS, DLQ_PARAMS, NO_PARAMS, ParamError, Spec, parse_query
from chainer.providers import catalogue
from chainer.providers.payload import decode_json_object
from chainer.reload import RulesWatcher
from chainer.rules import RuleSet, load_rules
from chainer.settings import Settings
from chainer.store import Store, current_error
from chainer.store.connections import connect

log = logging.getLogger("chainer.app")


class _State:
    """What the routes share: settings, the store, the active rules."""

    def __init__(self, settings: Settings, ruleset: RuleSet, store: Store | None) -> None:
        self.settings = settings
        self.ruleset = ruleset
        self.store = store
        self.intake: Intake | None = Intake(settings, store, lambda: self.ruleset) if store else None


class _JSONResponse(JSONResponse):
    """JSON that always encodes: text holding a lone surrogate (a payload may escape one, ``"\\ud800"``, and
    JSON decoding keeps it) is written with ``\\uXXXX`` escapes instead of failing as strict UTF-8."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return _JSONResponse(body, status_code=status, headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return _json(status, {"error": message}, headers)


def _state(request: Request) -> _State:
    state: _State = request.app.state.chainer
    return state


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"body of {declared} bytes is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_content_type(request: Request) -> None:
    value = request.headers.get("content-type", "")
    media = value.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        shown = media or "none"
        raise UnsupportedMediaError(f"content type {shown!r} is not supported; send application/json")


async def receive_webhook(request: Request) -> Response:
    """POST /hooks/{provider}[/{token}]: verify, parse, match and durably accept one delivery."""
    state = _state(request)
    provider = request.url.path.split("/")[2]
    intake = state.intake
    if intake is None:
        return _error(503, "the store is not ready")
    remote = request.client.host if request.client else None
    try:
        _check_content_type(request)
        body = await _read_body(request, state.settings.max_body_bytes)
    except WebhookError as exc:
        reply = await intake.reject(provider, exc, remote)
        return _json(reply.status_code, reply.body)
    hook = providers.get(provider).hook
    token = (request.path_params.get("token") or request.query_params.get("token")) if hook.token else None
    reply = await intake.receive(provider, request.headers, body, token, remote)
    headers = {"Retry-After": "5"} if reply.status_code == 503 else None
    return _json(reply.status_code, reply.body, headers)


def _require_admin(request: Request) -> JSONResponse | None:
    expected = _state(request).settings.admin_token
    challenge = {"WWW-Authenticate": 'Bearer realm="chainer"'}
    if expected is None:
        return _error(401, "the operator API is disabled: CHAINER_ADMIN_TOKEN is not set", challenge)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return _error(401, "missing bearer token (Authorization: Bearer <CHAINER_ADMIN_TOKEN>)", challenge)
    if not hmac.compare_digest(given.strip().encode(), expected.reveal().encode()):
        return _error(401, "wrong bearer token", challenge)
    return None


Endpoint = Callable[[Request], Awaitable[Response]]
AdminHandler = Callable[[Request, dict[str, Any]], Awaitable[Response]]
OperatorHandler = Callable[[Request, Store, dict[str, Any]], Awaitable[Response]]


def _admin(spec: Spec = NO_PARAMS) -> Callable[[AdminHandler], Endpoint]:
    """An operator endpoint: bearer token checked, then the query parameters against ``spec`` (400 naming
    the parameter); the handler gets them parsed. ``spec`` stays on the endpoint as ``query_spec``."""

    def wrap(handler: AdminHandler) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            if (denied := _require_admin(request)) is not None:
                return denied
            try:
                query = parse_query(request.query_params.multi_items(), spec)
            except ParamError as exc:
                return _error(400, str(exc))
            return await handler(request, query)

        setattr(endpoint, "query_spec", spec)  # noqa: B010 (read by the tests that cover every parameter)
        return endpoint

    return wrap


def _operator(spec: Spec = NO_PARAMS) -> Callable[[OperatorHandler], Endpoint]:
    """An ``_admin`` endpoint that reads the store: handed in, Redis trouble answered with 503."""

    def wrap(handler: OperatorHandler) -> Endpoint:
        @_admin(spec)
        @functools.wraps(handler)
        async def endpoint(request: Request, query: dict[str, Any]) -> Response:
            store = _state(request).store
            if store is None:
                return _error(503, "the store is not ready")
            try:
                return await handler(request, store, query)
            except StoreUnavailableError as exc:
                return _error(503, str(exc))

        return endpoint

    return wrap


def _no_event(event_id: str) -> JSONResponse:
    return _error(404, f"no event {event_id!r} (unknown, or older than the retention window)")


@_operator(AUDIT_PARAMS)
async def get_audit(request: Request, store: Store, q: dict[str, Any]) -> Response:
    """GET /audit: a page of audit records with stable cursors and filters."""
    if q["after"] is not None and q["before"] is not None:
        return _error(400, "after and before cannot be combined; page forwards or backwards")
    if q["since"] is not None and q["until"] is not None and q["since"] > q["until"]:
        return _error(400, f"since: {q['since']} ms is after until ({q['until']} ms)")
    page = await store.read_audit(
        after=q["after"],
        before=q["before"],
        since_ms=q["since"],
        until_ms=q["until"],
        limit=q["limit"],
        match={name: set(q[name]) for name in AUDIT_FILTERS if q[name] is not None},
        event_id=q["event_id"],
    )
    return _json(200, {"items": page.items, "next": page.next})


@_operator()
async def get_event(request: Request, store: Store, q: dict[str, Any]) -> Response:
    """GET /events/{event_id}: the event, every rule decision, every action with its attempts."""
    event_id = request.path_params["event_id"]
    stored = await store.get_event(event_id)
    if not stored:
        return _no_event(event_id)
    action_ids: list[str] = json.loads(stored.get("actions") or "[]")
    actions = [await store.get_action(a) for a in action_ids]
    records = await store.event_audit(event_id)
    event = json.loads(stored["event"])
    event["raw"] = json.loads(stored.get("raw") or "{}")
    return _json(
        200,
        {
            "event": event,
            "received_ms": int(stored.get("received_ms") or 0),
            "rules_version": stored.get("rules_version"),
            "decisions": json.loads(stored.get("decisions") or "[]"),
            "actions": [_action_view(a, records) for a in actions if a],
            "audit": records,
        },
    )


_ATTEMPT_ENDS = ("attempt.succeeded", "attempt.failed")
_HISTORY_FIELDS = ("attempt", "time", "outcome", "http_status", "error", "downstream_id")


def _action_view(ledger: dict[str, str], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The ledger decoded, ``last_error`` only while it explains the state, and ``history``: every
    finished attempt with its outcome, status and error (from the event's audit records)."""
    view: dict[str, Any] = dict(ledger)
    view["params"] = json.loads(ledger.get("params") or "{}")
    for name in ("attempts", "replays", "depth", "index"):
        if name in view and str(view[name]).isdigit():
            view[name] = int(view[name])
    view["last_error"] = current_error(ledger)
    view["attempt_log"] = [
        r for r in records if r.get("action_id") == ledger.get("action_id") and r["type"].startswith("attempt.")
    ]
    view["history"] = [
        {name: r[name] for name in _HISTORY_FIELDS if r.get(name) is not None}
        for r in view["attempt_log"]
        if r["type"] in _ATTEMPT_ENDS
    ]
    return view


@_operator(DLQ_PARAMS)
async def get_dlq(request: Request, store: Store, q: dict[str, Any]) -> Response:
    """GET /dlq: dead actions with their last error, oldest first."""
    items = await dlq.list_dead(store, limit=q["limit"], offset=q["offset"])
    return _json(200, {"items": items})


@_operator()
async def change_dlq(request: Request, store: Store, q: dict[str, Any]) -> Response:
    """POST /dlq/{action_id}/replay|discard: 200 when done, 404 unknown, 409 when the action is not dead."""
    action = request.path_params["action_id"]
    verb = request.path_params["verb"]
    if verb not in ("replay", "discard"):
        return _error(404, f"unknown operation {verb!r}; use replay or discard")
    actor = f"operator@{request.client.host if request.client else 'unknown'}"
    change = await (dlq.replay if verb == "replay" else dlq.discard)(store, action, actor)
    status = 200 if change.ok else 404 if change.state == "missing" else 409
    body = {"action_id": action, "state": change.state, "message": change.message}
    return _json(status, body if change.ok else {**body, "error": change.message})


@_admin()
async def post_explain(request: Request, q: dict[str, Any]) -> Response:
    """POST /explain: what the active rules would do with a payload; stores and sends nothing.

    Body: ``{"provider": "<a registered provider>", "payload": {...} or "body": "<raw text>",
    "headers": {...}}``.
    """
    try:
        _check_content_type(request)
        raw = await _read_body(request, _state(request).settings.max_body_bytes * 2)
        query = decode_json_object(raw)
    except WebhookError as exc:
        return _error(exc.status, f"explain request: {exc}")
    provider = query.get("provider")
    if not isinstance(provider, str) or provider not in providers.PROVIDERS:
        return _error(400, f"provider: must be {' or '.join(repr(name) for name in providers.names())}")
    headers = query.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return _error(400, "headers: must be an object of strings")
    if isinstance(query.get("body"), str):
        try:
            body = query["body"].encode()
        except UnicodeEncodeError as exc:
            return _error(
                400,
                f"body: character {exc.start} is the lone surrogate U+{ord(exc.object[exc.start]):04X}, "
                "which no UTF-8 delivery can carry; keep it escaped in the JSON text or send payload",
            )
    elif isinstance(query.get("payload"), dict):
        body = json.dumps(query["payload"]).encode()
    else:
        return _error(400, "give the delivery as payload (a JSON object) or body (the raw text)")
    try:
        result = explain(_state(request).ruleset, provider, headers, body)
    except WebhookError as exc:
        return _error(exc.status, str(exc))
    return _json(200, result)


MAX_CHAIN_NODES = 500


@_operator()
async def get_chain(request: Request, store: Store, q: dict[str, Any]) -> Response:
    """GET /chains/{event_id}: the lineage tree around an event, from the first build of its chain."""
    event_id = request.path_params["event_id"]
    stored = await store.get_event(event_id)
    if not stored:
        return _no_event(event_id)
    chain = json.loads(stored["event"]).get("chain") or []
    root = chain[0]["event_id"] if chain else event_id
    budget = [MAX_CHAIN_NODES]
    tree = await _chain_node(store, root, budget)
    return _json(200, {"event_id": event_id, "root": root, "path": chain, "tree": tree, "truncated": budget[0] <= 0})


async def _chain_node(store: Store, event_id: str, budget: list[int]) -> dict[str, Any]:
    budget[0] -= 1
    stored = await store.get_event(event_id)
    if not stored:
        return {"event_id": event_id, "missing": "expired or never stored"}
    event = json.loads(stored["event"])
    chain = event.get("chain") or []
    children = [await _chain_node(store, c, budget) for c in await store.children(event_id) if budget[0] > 0]
    actions = []
    for action in json.loads(stored.get("actions") or "[]"):
        ledger = await store.get_action(action)
        actions.append(
            {
                "action_id": action,
                "rule": ledger.get("rule"),
                "action": ledger.get("action"),
                "state": ledger.get("state"),
                "downstream_id": ledger.get("downstream_id") or None,
                "reason": current_error(ledger),
                "builds": [c for c in children if c.get("caused_by") == action],
            }
        )
    fields = ("provider", "kind", "project", "branch", "tag", "commit", "status", "build_url", "workflow")
    return {
        "event_id": event_id,
        **{name: event.get(name) for name in fields},
        "depth": len(chain),
        "caused_by": chain[-1].get("action_id") if chain else None,
        "actions": actions,
    }


@_admin()
async def get_rules(request: Request, q: dict[str, Any]) -> Response:
    """GET /rules: the active rules and their version hash."""
    return _json(200, _state(request).ruleset.as_dict())


async def healthz(request: Request) -> Response:
    """GET /healthz: the process is up."""
    return _json(200, {"status": "ok"})


MAX_READY_WORKERS = 10_000


async def readyz(request: Request) -> Response:
    """GET /readyz: Redis answers and rules are loaded; ``workers`` counts the live workers.

    ``?workers=N`` also requires at least N live workers (a probe for "jobs will run": ``?workers=1``);
    without it the answer does not depend on workers (DESIGN §8). ``workers`` is null when Redis is
    not reachable.
    """
    state = _state(request)
    wanted_raw = request.query_params.get("workers")
    wanted = 0
    if wanted_raw is not None:
        if not (wanted_raw.isascii() and wanted_raw.isdigit()) or int(wanted_raw) > MAX_READY_WORKERS:
            return _error(400, f"workers: must be a whole number from 0 to {MAX_READY_WORKERS}, got {wanted_raw!r}")
        wanted = int(wanted_raw)
    problems = []
    workers: int | None = None
    if state.store is None or not await state.store.ping():
        problems.append("redis is not reachable")
    else:
        try:
            workers = await heartbeat.live_workers(state.store.redis)
        except (RedisError, OSError):
            problems.append("redis is not reachable")
    if workers is not None and workers < wanted:
        problems.append(f"{workers} live worker(s), {wanted} required")
    body: dict[str, Any] = {
        "status": "ready" if not problems else "not ready",
        "rules_version": state.ruleset.version,
        "workers": workers,
    }
    if problems:
        body["problems"] = problems
    return _json(200 if not problems else 503, body)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 (starlette only routes HTTPException here)
    return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))


def create_app(
    settings: Settings | None = None,
    *,
    ruleset: RuleSet | None = None,
    store: Store | None = None,
    watch_rules: bool | None = None,
) -> Starlette:
    """Build the app. Without arguments, settings come from the environment and rules from CHAINER_RULES.

    Rules loaded here are reloaded on SIGHUP and when the file changes (``watch_rules``, default on
    unless a ruleset is passed in). Raises ConfigError or RulesError when either is bad, so the
    process stops before serving.
    """
    settings = settings or Settings.from_env(os.environ)
    watch = ruleset is None if watch_rules is None else watch_rules
    load = functools.partial(load_rules, catalogue=catalogue())
    ruleset = ruleset or load(settings.rules_path)
    state = _State(settings, ruleset, store)

    def activate(new: RuleSet) -> None:
        state.ruleset = new

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned: Redis | None = None
        if state.store is None:
            owned = connect(settings.redis_url)
            state.store = Store(owned, retention_ms=settings.audit_retention_ms)
            state.intake = Intake(settings, state.store, lambda: state.ruleset)
        watcher = RulesWatcher(settings.rules_path, lambda: state.ruleset, activate, state.store, load=load)
        app.state.rules_watcher = watcher
        task = asyncio.create_task(watcher.watch(settings.rules_poll_seconds)) if watch else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if owned is not None:
                await owned.aclose()

    hooks = [
        Route(f"/hooks/{name}{suffix}", receive_webhook, methods=["POST"])
        for name, provider in providers.PROVIDERS.items()
        for suffix in ("", "/{token}")
        if provider.hook.token or not suffix
    ]
    routes = [
        *hooks,
        Route("/audit", get_audit),
        Route("/events/{event_id}", get_event),
        Route("/chains/{event_id}", get_chain),
        Route("/dlq", get_dlq),
        Route("/dlq/{action_id}/{verb}", change_dlq, methods=["POST"]),
        Route("/explain", post_explain, methods=["POST"]),
        Route("/rules", get_rules),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.add_middleware(AccessLog, secrets=secret_values(settings))  # uvicorn's access log is off: it shows tokens
    app.state.chainer = state
    return app
