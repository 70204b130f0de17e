"""A local emulation of the Codeship (v2, v1), CircleCI (v2, v1.1) and Buildkite (v2) APIs chainer calls, as one app.

Paths, credentials, status codes and bodies follow shared/reference/providers.md, including the awkward parts:
Codeship answers 202 with no body, rate-limits with 403, and reports 2FA accounts with a 200; CircleCI v1.1
answers EDN when no ``Accept`` header is sent. Every request is recorded with its credentials redacted, and
faults (an error status, a ``Retry-After``, a hang, an answer lost after the call took effect) can be scripted
from Python or over HTTP under ``/_sandbox/``.
Point ``CHAINER_CODESHIP_URL``, ``CHAINER_CODESHIP_V1_URL``, ``CHAINER_CIRCLECI_URL``, ``CHAINER_BUILDKITE_URL`` and
``CHAINER_GITHUB_URL`` at the sandbox's root. The handlers of each emulated provider are in
``chainer.sandbox.codeship``, ``chainer.sandbox.circleci``, ``chainer.sandbox.buildkite`` (whose paths share
Codeship's ``/v2/`` prefix and are told apart by ``buildkite.PATHS``) and ``chainer.sandbox.github`` (GitHub's REST
API, more-providers.md §1.6-§1.7).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import Awaitable, Callable, Generator
from dataclasses import asdict

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from chainer.sandbox import buildkite, circleci, codeship, github
from chainer.sandbox import state as st
from chainer.sandbox.calls import DIGITS, NOT_JSON, Call, Handler, decode, refuse, same
from chainer.sandbox.models import ScriptedFault
from chainer.sandbox.state import SandboxState

log = logging.getLogger(__name__)

SANDBOX, UNKNOWN = "sandbox", "unknown"
_PREFIXES = {"/v2/": st.CODESHIP_V2, "/api/v1/": st.CODESHIP_V1, "/api/v2/": st.CIRCLECI_V2}
_PREFIXES |= {"/api/v1.1/": st.CIRCLECI_V11, "/_sandbox": SANDBOX}  # Buildkite's /v2/ paths: see _api_of
_PREFIXES |= dict.fromkeys(github.PREFIXES, st.GITHUB)
_SECRET_HEADERS = {"authorization", "circle-token", "cookie", "proxy-authorization"}
_SECRET_QUERY = {"api_key", "circle-token"}
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]  # the endpoint answers 405 itself, and records it
# method, path (Starlette syntax), action recorded for it, handler; the API follows from the path prefix.
ROUTES: tuple[tuple[str, str, str, Handler], ...] = codeship.ROUTES + circleci.ROUTES + buildkite.ROUTES + github.ROUTES


def _api_of(path: str) -> str:
    """The emulated API a request path belongs to (Buildkite's paths first: they share Codeship's ``/v2/``)."""
    if buildkite.PATHS.fullmatch(path):
        return st.BUILDKITE
    return next((api for prefix, api in _PREFIXES.items() if path.startswith(prefix)), UNKNOWN)


def _error(api: str, request: Request, status: int, message: str) -> Response:
    if api == st.CODESHIP_V2:
        return JSONResponse({"errors": [message]}, status)
    if api in (st.CIRCLECI_V2, st.CIRCLECI_V11):
        return circleci.circle_answer(request, status, {"message": message}, v11=api == st.CIRCLECI_V11)
    if api == st.GITHUB:
        return github.github_error(status, message)
    if api == st.BUILDKITE:
        return JSONResponse({"message": message}, status)
    return JSONResponse({"error": message}, status)


def _fault_response(fault: ScriptedFault) -> Response:
    if fault.body is None or fault.status in (204, 304):
        return Response(status_code=fault.status, headers=fault.headers)
    if isinstance(fault.body, str):
        return Response(fault.body, fault.status, headers=fault.headers, media_type="text/plain")
    return JSONResponse(fault.body, fault.status, headers=fault.headers)


async def _hold(request: Request, delay: float) -> None:
    """``asyncio.sleep(delay)`` before answering, cut short when the client hangs up (after its timeout, say)."""

    async def hung_up() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            continue  # the body was read already; only the disconnect can still arrive

    waits = [asyncio.ensure_future(asyncio.sleep(delay)), asyncio.ensure_future(hung_up())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def _answer(call: Call, api: str, handler: Handler | None, known_path: bool) -> Response:
    """Rate limit (Codeship v2) and credentials (Codeship v1, CircleCI, Buildkite) first, then the handler."""
    try:
        refuse(api == st.CODESHIP_V2 and call.state.over_codeship_rate_limit(), 403, "Rate Limit Exceeded")
        if api in (st.CIRCLECI_V2, st.CIRCLECI_V11):
            circleci.circle_auth(call, query=api == st.CIRCLECI_V11)  # ?circle-token= is v1.1 only
        if api == st.BUILDKITE:
            buildkite.buildkite_auth(call)
        key = call.request.query_params.get("api_key")
        refuse(api == st.CODESHIP_V1 and not same(key, call.state.codeship_api_key), 401, "Unauthorized")
        if handler is None:
            raise HTTPException(405, "Method Not Allowed") if known_path else HTTPException(404, "Not Found")
        return await handler(call)
    except HTTPException as exc:
        return _error(api, call.request, exc.status_code, exc.detail)
    except ValueError as exc:  # the state refused the request's arguments
        return _error(api, call.request, 400, str(exc))


def _endpoint(methods: dict[str, tuple[str, Handler]]) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint of one path: a scripted fault or the handler, then record, then any scripted delay."""

    async def endpoint(request: Request) -> Response:
        state: SandboxState = request.app.state.sandbox
        raw_path = request.scope.get("raw_path")  # as sent, percent-escapes kept (httpx's ASGI transport adds "?…")
        path = raw_path.decode("latin-1").partition("?")[0] if raw_path else request.url.path
        api = _api_of(request.url.path)
        action, handler = methods.get(request.method, (None, None))
        raw = await request.body()
        fault = state.take_fault(api, path) if api in st.APIS else None
        call = Call(request, state, raw, path)
        canned = fault is not None and not fault.effect
        response = _fault_response(fault) if fault and canned else await _answer(call, api, handler, bool(methods))
        if api != SANDBOX:
            query = {k: "***" if k in _SECRET_QUERY else v for k, v in request.query_params.items()}
            body = None if not raw else raw.decode("utf-8", "replace") if (data := decode(raw)) is NOT_JSON else data
            status, seen = response.status_code, request.headers
            headers = {k: "***" if k in _SECRET_HEADERS else ", ".join(seen.getlist(k)) for k in seen}
            state.record(
                api=api,
                method=request.method,
                path=path,
                query=query,
                headers=headers,
                body=body,
                status=status,
                action=action,
            )
            log.debug("sandbox_request", extra={"api": api, "action": action, "status": status})
        if fault is not None and fault.delay > 0:
            await _hold(request, fault.delay)
        return response

    return endpoint


# -- control and inspection under /_sandbox/ -----------------------------------------------------
async def control_requests(request: Request) -> Response:
    """``GET /_sandbox/requests?after=<id>``: the recorded requests; ``DELETE`` clears them."""
    state: SandboxState = request.app.state.sandbox
    if request.method == "DELETE":
        cleared = len(state.requests)
        state.requests.clear()
        return JSONResponse({"cleared": cleared})
    after = request.query_params.get("after", "0")
    if not DIGITS.fullmatch(after):
        return JSONResponse({"error": "after must be a request id"}, 400)
    return JSONResponse([asdict(r) for r in state.requests if r.id > int(after)])


async def control_script(request: Request) -> Response:
    """``POST /_sandbox/script`` with the arguments of ``SandboxState.script``; ``DELETE`` drops all faults."""
    state: SandboxState = request.app.state.sandbox
    if request.method == "DELETE":
        state.faults.clear()
        return JSONResponse({"faults": 0})
    data = decode(await request.body())
    allowed = {"api", "status", "body", "headers", "times", "delay", "path_contains", "effect"}
    if not isinstance(data, dict) or not {"api", "status"} <= data.keys() <= allowed:
        return JSONResponse({"error": f"send a JSON object with api, status and optionally {sorted(allowed)}"}, 400)
    try:
        state.script(**data)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse({"faults": len(state.faults)}, 201)


async def control_page(request: Request) -> Response:
    """``GET /_sandbox/``: a small HTML page listing the newest requests, every value escaped."""
    state: SandboxState = request.app.state.sandbox
    cells = ((r.id, r.api, r.method, r.path, r.status, r.action or "-") for r in reversed(state.requests[-100:]))
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in cells)
    base = html.escape(str(request.base_url).rstrip("/"))
    page = (
        "<!doctype html><meta charset=utf-8><title>chainer sandbox</title><h1>chainer provider sandbox</h1>"
        f"<p>Point CHAINER_CODESHIP_URL, CHAINER_CODESHIP_V1_URL, CHAINER_CIRCLECI_URL, CHAINER_BUILDKITE_URL and "
        f"CHAINER_GITHUB_URL at "
        f"<code>{base}</code>. "
        f"JSON log: <a href='{base}/_sandbox/requests'>/_sandbox/requests</a>. Inject a fault: <code>curl -X POST "
        f'{base}/_sandbox/script -d \'{{"api": "circleci.v2", "status": 500, "times": 2}}\'</code></p>'
        "<table border=1><tr><th>id<th>api<th>method<th>path<th>status<th>action</tr>" + rows + "</table>"
    )
    return HTMLResponse(page)


async def _http_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": getattr(exc, "detail", "error")}, getattr(exc, "status_code", 500))


def create_sandbox_app(state: SandboxState | None = None) -> Starlette:
    """The sandbox as an ASGI app; ``state`` (a fresh default one when omitted) is at ``app.state.sandbox``."""
    by_path: dict[str, dict[str, tuple[str, Handler]]] = {}
    for method, path, action, handler in ROUTES:
        by_path.setdefault(path, {})[method] = (action, handler)
    routes = [
        Route("/_sandbox/", control_page, methods=["GET"]),
        Route("/_sandbox", control_page, methods=["GET"]),
        Route("/_sandbox/requests", control_requests, methods=["GET", "DELETE"]),
        Route("/_sandbox/script", control_script, methods=["POST", "DELETE"]),
        *(Route(path, _endpoint(methods), methods=_METHODS) for path, methods in by_path.items()),
        Route("/{rest:path}", _endpoint({}), methods=_METHODS),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.sandbox = state if state is not None else SandboxState()
    return app


class SignalFreeServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT and SIGTERM to the program running it.

    ``uvicorn.Server.serve`` installs its own handlers for both and, once shut down, raises the signal it
    caught again; under SIGTERM's default action that ends the process on the spot, before the program
    can stop what it started (``chainer run``'s private redis-server). Stop this one with ``should_exit``.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_sandbox(
    host: str, port: int, state: SandboxState | None = None, *, handle_signals: bool = True
) -> None:
    """Serve the sandbox under uvicorn until cancellation (or SIGINT/SIGTERM), then shut down cleanly.

    With ``handle_signals=False`` the signals are left to the caller (see ``SignalFreeServer``).
    Logs through ``logging`` (uvicorn's own log config is not installed) and prints nothing.
    """
    # A scripted hang must not hold up shutdown: in-flight requests get two seconds, then are cancelled.
    config = uvicorn.Config(
        create_sandbox_app(state), host=host, port=port, log_config=None, lifespan="off", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config) if handle_signals else SignalFreeServer(config)
    serving = asyncio.ensure_future(server.serve())
    log.info("sandbox_serving", extra={"url": f"http://{host}:{port}"})
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        server.should_exit = True  # let uvicorn close its sockets before the cancellation goes on
        await serving
        raise
