"""The operator API (DESIGN §8): audit, events, chains, dead letters, rules and explain.

Every endpoint here is behind the bearer token ``CHAINER_ADMIN_TOKEN`` (checked once, in ``_admin``)
and declares the query parameters it takes (``chainer.web.params``): an unknown, repeated or bad one
is a 400 naming it, before Redis sees anything. Endpoints that read the store answer 503 while
Redis is unavailable.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chainer import dlq, providers
from chainer.errors import StoreUnavailableError, WebhookError
from chainer.explain import explain
from chainer.providers.payload import decode_json_object
from chainer.store import Store
from chainer.web.common import answer, check_content_type, error, read_body, state
from chainer.web.params import (
    AUDIT_FILTERS,
    AUDIT_PARAMS,
    DLQ_PARAMS,
    EVENTS_PARAMS,
    NO_PARAMS,
    ParamError,
    Spec,
    parse_query,
)
from chainer.web.session import SESSION_COOKIE, bearer_problem, session_valid
from chainer.web.stream import STREAM_PARAMS, get_audit_stream
from chainer.web.views import chain_view, event_view, events_page

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="chainer"'}

Endpoint = Callable[[Request], Awaitable[Response]]
AdminHandler = Callable[[Request, dict[str, Any]], Awaitable[Response]]
OperatorHandler = Callable[[Request, Store, dict[str, Any]], Awaitable[Response]]


async def _refused(request: Request) -> JSONResponse | None:
    """A 401 unless the request carries the admin bearer token (compared in constant time), or for a read the
    operator page's session cookie (503 when Redis cannot say whether that session is open)."""
    expected = state(request).settings.admin_token
    if expected is None:
        return error(401, "the operator API is disabled: CHAINER_ADMIN_TOKEN is not set", CHALLENGE)
    if request.method == "GET" and SESSION_COOKIE in request.cookies and "authorization" not in request.headers:
        try:
            if await session_valid(request):  # the operator page's reads (its live stream)
                return None
        except StoreUnavailableError as exc:
            return error(503, str(exc))
    problem = bearer_problem(request)
    return None if problem is None else error(401, problem, CHALLENGE)


def _admin(spec: Spec = NO_PARAMS) -> Callable[[AdminHandler], Endpoint]:
    """An operator endpoint: bearer token checked, then the query parameters against ``spec`` (400 naming
    the parameter); the handler gets them parsed. ``spec`` stays on the endpoint as ``query_spec``."""

    def wrap(handler: AdminHandler) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            if (denied := await _refused(request)) is not None:
                return denied
            try:
                query = parse_query(request.query_params.multi_items(), spec)
            except ParamError as exc:
                return error(400, str(exc))
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
            store = state(request).store
            if store is None:
                return error(503, "the store is not ready")
            try:
                return await handler(request, store, query)
            except StoreUnavailableError as exc:
                return error(503, str(exc))

        return endpoint

    return wrap


def _no_event(event_id: str) -> JSONResponse:
    return error(404, f"no event {event_id!r} (unknown, or older than the retention window)")


@_operator(AUDIT_PARAMS)
async def get_audit(request: Request, store: Store, q: dict[str, Any]) -> Response:
    """GET /audit: a page of audit records with stable cursors and filters."""
    if q["after"] is not None and q["before"] is not None:
        return error(400, "after and before cannot be combined; page forwards or backwards")
    if q["since"] is not None and q["until"] is not None and q["since"] > q["until"]:
        return error(400, f"since: {q['since']} ms is after until ({q['until']} ms)")
    page = await store.read_audit(
        after=q["after"],
        before=q["before"],
        since_ms=q["since"],
        until_ms=q["until"],
        limit=q["limit"],
        match={name: set(q[name]) for name in AUDIT_FILTERS if q[name] is not None},
        event_id=q["event_id"],
    )
    return answer(200, {"items": page.items, "next": page.next})


@_operator(EVENTS_PARAMS)
async def get_events(request: Request, store: Store, q: dict[str, Any]) -> Response:
    """GET /events: recent deliveries (newest first; ``after`` pages forwards) with their outcome, matched rules
    and actions' states; the filters of /audit, ``outcome`` (accepted, duplicate, ignored, rejected) for type."""
    if q["after"] is not None and q["before"] is not None:
        return error(400, "after and before cannot be combined; page forwards or backwards")
    if q["since"] is not None and q["until"] is not None and q["since"] > q["until"]:
        return error(400, f"since: {q['since']} ms is after until ({q['until']} ms)")
    return answer(200, await events_page(store, q))


@_operator()
async def get_event(request: Request, store: Store, q: dict[str, Any]) -> Response:
    """GET /events/{event_id}: the event, every rule decision, every action with its attempts."""
    event_id = request.path_params["event_id"]
    view = await event_view(store, event_id)
    return _no_event(event_id) if view is None else answer(200, view)


@_operator()
async def get_chain(request: Request, store: Store, q: dict[str, Any]) -> Response:
    """GET /chains/{event_id}: the lineage tree around an event, from the first build of its chain."""
    event_id = request.path_params["event_id"]
    view = await chain_view(store, event_id)
    return _no_event(event_id) if view is None else answer(200, view)


@_operator(DLQ_PARAMS)
async def get_dlq(request: Request, store: Store, q: dict[str, Any]) -> Response:
    """GET /dlq: dead actions with their last error, oldest first."""
    items = await dlq.list_dead(store, limit=q["limit"], offset=q["offset"])
    return answer(200, {"items": items})


@_operator()
async def change_dlq(request: Request, store: Store, q: dict[str, Any]) -> Response:
    """POST /dlq/{action_id}/replay|discard: 200 when done, 404 unknown, 409 when the action is not dead."""
    action = request.path_params["action_id"]
    verb = request.path_params["verb"]
    if verb not in ("replay", "discard"):
        return error(404, f"unknown operation {verb!r}; use replay or discard")
    actor = f"operator@{request.client.host if request.client else 'unknown'}"
    change = await (dlq.replay if verb == "replay" else dlq.discard)(store, action, actor)
    status = 200 if change.ok else 404 if change.state == "missing" else 409
    body = {"action_id": action, "state": change.state, "message": change.message}
    return answer(status, body if change.ok else {**body, "error": change.message})


@_admin()
async def post_explain(request: Request, q: dict[str, Any]) -> Response:
    """POST /explain: what the active rules would do with a payload; stores and sends nothing.

    Body: ``{"provider": "<a registered provider>", "payload": {...} or "body": "<raw text>",
    "headers": {...}}``.
    """
    web = state(request)
    try:
        check_content_type(request.headers)
        raw = await read_body(request, web.settings.max_body_bytes * 2)
        query = decode_json_object(raw)
    except WebhookError as exc:
        return error(exc.status, f"explain request: {exc}")
    provider = query.get("provider")
    if not isinstance(provider, str) or provider not in providers.PROVIDERS:
        return error(400, f"provider: must be {' or '.join(repr(name) for name in providers.names())}")
    headers = query.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        return error(400, "headers: must be an object of strings")
    if isinstance(query.get("body"), str):
        try:
            body = query["body"].encode()
        except UnicodeEncodeError as exc:
            return error(
                400,
                f"body: character {exc.start} is the lone surrogate U+{ord(exc.object[exc.start]):04X}, "
                "which no UTF-8 delivery can carry; keep it escaped in the JSON text or send payload",
            )
    elif isinstance(query.get("payload"), dict):
        body = json.dumps(query["payload"]).encode()
    else:
        return error(400, "give the delivery as payload (a JSON object) or body (the raw text)")
    try:
        result = explain(web.ruleset, provider, headers, body)
    except WebhookError as exc:
        return error(exc.status, str(exc))
    return answer(200, result)


@_admin()
async def get_rules(request: Request, q: dict[str, Any]) -> Response:
    """GET /rules: the active rules and their version hash."""
    return answer(200, state(request).ruleset.as_dict())


def routes() -> list[Route]:
    """The operator API's routes."""
    return [
        Route("/audit", get_audit),
        Route("/audit/stream", _operator(STREAM_PARAMS)(get_audit_stream)),
        Route("/events", get_events),
        Route("/events/{event_id}", get_event),
        Route("/chains/{event_id}", get_chain),
        Route("/dlq", get_dlq),
        Route("/dlq/{action_id}/{verb}", change_dlq, methods=["POST"]),
        Route("/explain", post_explain, methods=["POST"]),
        Route("/rules", get_rules),
    ]
