"""The operator's web page ``/ui`` (DESIGN §8): server-rendered Jinja2 templates over the operator API's data.

Pages: recent deliveries (``/ui``, live through ``/audit/stream``), one event (``/ui/events/{id}``: payload,
decisions with their why-not sentence, actions with attempts, lineage as SVG), dead letters
(``/ui/dlq``, replay and discard), rules (``/ui/rules``: the active rules, the last reload or refusal,
explain). Templates and CSS ship in the package (``templates/``, ``static/``): no build step, no CDN.

Every page needs the session cookie (``chainer.web.session``) or the bearer header; without either it
answers 401 with the sign-in form. Forms are POSTs carrying a CSRF token; query parameters are
checked like the API's (``chainer.web.params``), a bad one is a 400 naming it.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from chainer import dlq, providers
from chainer.errors import StoreUnavailableError, WebhookError
from chainer.explain import explain
from chainer.store import Store
from chainer.web import session
from chainer.web.common import read_body, state
from chainer.web.graph import lineage_svg
from chainer.web.params import DLQ_PARAMS, EVENTS_PARAMS, NO_PARAMS, OUTCOMES, ParamError, Spec, parse_query
from chainer.web.views import chain_view, event_view, events_page

HERE = Path(__file__).parent
STATIC = {"ui.css": "text/css", "live.js": "text/javascript"}
PARTIAL_HEADER = "x-chainer-partial"
Handler = Callable[[Request, Store, dict[str, Any], dict[str, str]], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def _ago(value: Any) -> str:
    """A time (epoch ms, or ISO 8601) as "5 s ago", "3 min ago", "2 h ago", "4 d ago"."""
    if value in (None, ""):
        return ""
    if isinstance(value, int | float) or str(value).isdigit():
        ms = float(value)
    else:
        ms = datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000
    seconds = max(time.time() - ms / 1000, 0)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def _iso(ms: Any) -> str:
    return datetime.fromtimestamp(int(ms) / 1000).astimezone().isoformat(timespec="seconds") if ms else ""


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True
)
ENV.filters.update(
    ago=_ago,
    iso=_iso,
    short=lambda commit: str(commit or "")[:7],
    pretty=lambda value: json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True),
)


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page from ``templates/``, with what every page shows (signed in or not, the CSRF token, nav)."""
    signed_in = getattr(request.state, "credential", None) is not None  # set by _page once it checked
    page = ENV.get_template(template).render(
        request_path=request.url.path,
        signed_in=signed_in,
        csrf=session.csrf_token(request) if signed_in else "",
        **context,
    )
    return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})


def _signin_page(request: Request, status: int, message: str | None = None) -> HTMLResponse:
    disabled = state(request).settings.admin_token is None
    if disabled:
        message = "The operator page is disabled: CHAINER_ADMIN_TOKEN is not set."
    token = session.signin_csrf(request)
    response = render(request, "signin.html", status, message=message, signin_csrf=token, disabled=disabled)
    response.headers["WWW-Authenticate"] = 'Cookie realm="chainer"'
    session.set_cookie(request, response, session.SIGNIN_COOKIE, token, 3600)
    return response


def _page(
    spec: Spec = NO_PARAMS, *, form: bool = False
) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """A signed-in page: credentials, then query parameters (400 naming one), then for a form its CSRF token
    (403), then the handler with the store (503 while Redis is unavailable)."""

    def wrap(handler: Handler) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                how = await session.credential(request)
            except StoreUnavailableError as exc:
                return render(request, "error.html", 503, title="Redis is unavailable", message=str(exc))
            if how is None:
                return _signin_page(request, 401, "Sign in with the admin token to see this page.")
            request.state.credential = how
            try:
                query = parse_query(request.query_params.multi_items(), spec)
            except ParamError as exc:
                return render(request, "error.html", 400, title="Bad request", message=str(exc))
            fields: dict[str, str] = {}
            if form:
                try:
                    raw = await read_body(request, state(request).settings.max_body_bytes * 2)
                except WebhookError as exc:
                    return render(request, "error.html", exc.status, title="Bad request", message=str(exc))
                fields = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
                if how == "cookie" and not session.csrf_valid(request, fields.get("csrf", "")):
                    message = "This form has no valid CSRF token; reload the page and try again."
                    return render(request, "error.html", 403, title="Refused", message=message)
            store = state(request).store
            if store is None:
                return render(request, "error.html", 503, title="Unavailable", message="the store is not ready")
            try:
                return await handler(request, store, query, fields)
            except StoreUnavailableError as exc:
                return render(request, "error.html", 503, title="Redis is unavailable", message=str(exc))

        setattr(endpoint, "query_spec", spec)  # noqa: B010 (tests/web/test_params.py covers every parameter)
        setattr(endpoint, "openapi_media", "text/html")  # noqa: B010
        return endpoint

    return wrap


@_page(EVENTS_PARAMS)
async def events(request: Request, store: Store, q: dict[str, Any], form: dict[str, str]) -> Response:
    """GET /ui: recent deliveries, newest first, filterable; live through /audit/stream."""
    page = await events_page(store, q)
    context: dict[str, Any] = {"page": page, "q": q, "outcomes": list(OUTCOMES.values())}
    context["providers"] = providers.names()
    if request.headers.get(PARTIAL_HEADER) == "rows":
        return render(request, "rows.html", **context)
    return render(request, "events.html", **context)


@_page()
async def event(request: Request, store: Store, q: dict[str, Any], form: dict[str, str]) -> Response:
    """GET /ui/events/{event_id}: payload, decisions, actions with attempts, lineage."""
    event_id = request.path_params["event_id"]
    view = await event_view(store, event_id)
    if view is None:
        message = f"No event {event_id!r} (unknown, or older than the retention window)."
        return render(request, "error.html", 404, title="Not found", message=message)
    chain = await chain_view(store, event_id)
    svg = lineage_svg(chain["tree"], event_id) if chain else ""
    return render(request, "event.html", view=view, event_id=event_id, svg=svg, chain=chain)


@_page(DLQ_PARAMS)
async def dead_letters(request: Request, store: Store, q: dict[str, Any], form: dict[str, str]) -> Response:
    """GET /ui/dlq: dead actions with replay and discard."""
    items = await dlq.list_dead(store, limit=q["limit"], offset=q["offset"])
    return render(request, "dlq.html", items=items, q=q)


@_page(form=True)
async def change_dead_letter(request: Request, store: Store, q: dict[str, Any], form: dict[str, str]) -> Response:
    """POST /ui/dlq/{action_id}/{verb}: replay or discard, then the event's page (where the new attempt shows)."""
    action, verb = request.path_params["action_id"], request.path_params["verb"]
    if verb not in ("replay", "discard"):
        return render(request, "error.html", 404, title="Not found", message=f"unknown operation {verb!r}")
    actor = f"operator@{request.client.host if request.client else 'unknown'} (ui)"
    change = await (dlq.replay if verb == "replay" else dlq.discard)(store, action, actor)
    if not change.ok:
        status = 404 if change.state == "missing" else 409
        return render(request, "error.html", status, title=f"Cannot {verb}", message=change.message)
    ledger = await store.get_action(action)
    return RedirectResponse(f"/ui/events/{ledger.get('event_id', '')}#{action}", status_code=303)


async def _rules_context(store: Store, request: Request) -> dict[str, Any]:
    match = {"type": {"rules.reloaded", "rules.refused"}}
    last = await store.read_audit(before="+", limit=1, match=match)
    return {
        "rules": state(request).ruleset.as_dict(),
        "last_change": last.items[0] if last.items else None,
        "providers": providers.names(),
    }


@_page()
async def rules_page(request: Request, store: Store, q: dict[str, Any], form: dict[str, str]) -> Response:
    """GET /ui/rules: the active rules, the last reload or refusal, and the explain form."""
    return render(request, "rules.html", **await _rules_context(store, request), result=None, given={})


@_page(form=True)
async def explain_form(request: Request, store: Store, q: dict[str, Any], form: dict[str, str]) -> Response:
    """POST /ui/explain: what the active rules would do with a pasted payload ("why did this not fire?")."""
    provider = form.get("provider", "")
    context = await _rules_context(store, request)
    headers: dict[str, str] = {}
    for line in form.get("headers", "").splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers[name.strip()] = value.strip()
    status, result, problem = 200, None, None
    if provider not in providers.PROVIDERS:
        status, problem = 400, f"provider: choose one of {', '.join(providers.names())}"
    else:
        try:
            result = explain(state(request).ruleset, provider, headers, form.get("payload", "").encode())
        except WebhookError as exc:
            status, problem = exc.status, str(exc)
    return render(request, "rules.html", status, **context, result=result, problem=problem, given=form)


@_page(form=True)
async def sign_out(request: Request, store: Store, q: dict[str, Any], form: dict[str, str]) -> Response:
    """POST /ui/signout: end the session, in Redis (every copy of the cookie stops working) and in the browser."""
    await session.end_session(request)
    response = RedirectResponse("/ui/signin", status_code=303)
    session.clear_cookie(request, response, session.SESSION_COOKIE)
    return response


async def sign_in_page(request: Request) -> Response:
    """GET /ui/signin: the sign-in form."""
    try:
        if await session.credential(request) is not None:
            return RedirectResponse("/ui", status_code=303)
    except StoreUnavailableError:
        pass  # the form works without Redis; signing in will say it is unavailable
    return _signin_page(request, 200)


async def sign_in(request: Request) -> Response:
    """POST /ui/signin: check the admin token, then set the session cookie and go to /ui."""
    expected = state(request).settings.admin_token
    if expected is None:
        return _signin_page(request, 401)
    try:
        raw = await read_body(request, 16_384)
    except WebhookError as exc:
        return _signin_page(request, exc.status, str(exc))
    fields = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    if not session.signin_csrf_valid(request, fields.get("csrf", "")):
        return _signin_page(request, 403, "The form expired; sign in again.")
    if not session.token_matches(request, fields.get("token", "")):
        return _signin_page(request, 401, "Wrong token.")
    try:
        opened = await session.new_session(request)
    except StoreUnavailableError as exc:
        return _signin_page(request, 503, f"Cannot sign in now: {exc}")
    response = RedirectResponse("/ui", status_code=303)
    session.set_cookie(request, response, session.SESSION_COOKIE, opened, session.SESSION_S)
    session.clear_cookie(request, response, session.SIGNIN_COOKIE)
    return response


async def static(request: Request) -> Response:
    """GET /ui/static/{name}: the page's CSS and script, shipped in the package."""
    name = request.path_params["name"]
    if name not in STATIC:
        return HTMLResponse("not found", status_code=404)
    body = (HERE / "static" / name).read_bytes()
    return Response(body, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})


def routes() -> list[Route]:
    """The operator page's routes."""
    return [
        Route("/ui", events),
        Route("/ui/events/{event_id}", event),
        Route("/ui/dlq", dead_letters),
        Route("/ui/dlq/{action_id}/{verb}", change_dead_letter, methods=["POST"]),
        Route("/ui/rules", rules_page),
        Route("/ui/explain", explain_form, methods=["POST"]),
        Route("/ui/signout", sign_out, methods=["POST"]),
        Route("/ui/signin", sign_in_page),
        Route("/ui/signin", sign_in, methods=["POST"]),
        Route("/ui/static/{name}", static),
    ]
