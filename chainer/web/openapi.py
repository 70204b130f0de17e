"""``GET /openapi.json`` (an OpenAPI 3.1 document of the whole HTTP API) and ``GET /docs`` (the same as a page).

The document is generated from the mounted routes, so it cannot drift from them: each route's path and
methods, its summary (the first line of its endpoint's docstring), its query parameters (the
``query_spec`` of ``chainer.web.params`` that the endpoint checks requests against), its path
parameters, what it answers (``produces``) and whether it needs the bearer token (every endpoint
with a ``query_spec`` is an operator endpoint; ``public`` marks the others' parameters).
``/docs`` is plain server-rendered HTML, no script, no CDN.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from chainer import __version__
from chainer.web.common import answer
from chainer.web.params import Count, Cursor, Param, Spec, Text, Time, Values

F = TypeVar("F", bound=Callable[..., Any])
JSON = "application/json"
_PATH_PARAM = re.compile(r"{(\w+)(?::\w+)?}")
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What is wrong, naming the parameter or field."}},
}
_STATUS_TEXT = {
    "200": "OK",
    "202": "Accepted",
    "303": "See Other (to the page named in Location)",
    "400": "A parameter or the body is wrong; the error names it",
    "401": "Missing or wrong credentials",
    "403": "Refused (a form without its CSRF token)",
    "404": "Not found",
    "409": "Conflict with the current state",
    "413": "Body too large",
    "415": "Unsupported content type",
    "503": "Redis is unavailable or the store is not ready",
}
_TAGS = {
    "chainer.web.hooks": ("webhooks", ["200", "202", "400", "401", "404", "413", "415", "503"]),
    "chainer.web.operator": ("operator", ["200", "400", "401", "404", "409", "503"]),
    "chainer.web.stream": ("operator", ["200", "400", "401", "503"]),
    "chainer.web.probes": ("probes", ["200", "400", "503"]),
    "chainer.web.openapi": ("documentation", ["200"]),
}


def produces(
    media: str, *, public: Spec | None = None, bodies: dict[str, dict[str, Any]] | None = None
) -> Callable[[F], F]:
    """Mark an endpoint as answering ``media`` (default JSON); ``public``: the query parameters of an endpoint
    anyone may call (operator endpoints declare theirs as ``query_spec``); ``bodies``: the JSON Schema of the
    body by status, where it is not the default (an object, or for a 4xx/5xx the ``{"error": ...}`` object)."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, "openapi_media", media)  # noqa: B010 (read by document())
        if public is not None:
            setattr(endpoint, "public_spec", public)  # noqa: B010
        if bodies is not None:
            setattr(endpoint, "openapi_bodies", bodies)  # noqa: B010
        return endpoint

    return mark


def param_schema(kind: Param) -> dict[str, Any]:
    """The JSON Schema of one query parameter kind, with what it accepts in words."""
    if isinstance(kind, Count):
        return {"type": "integer", "minimum": kind.low, "maximum": kind.high, "default": kind.default}
    if isinstance(kind, Cursor):
        cursor = r"[0-9]{1,20}(-[0-9]{1,20})?"
        pattern = rf"^(\+|{cursor})$" if kind.latest else rf"^{cursor}$"
        return {"type": "string", "pattern": pattern}
    if isinstance(kind, Time):
        return {"type": "string", "description": "epoch milliseconds, or an ISO 8601 time with a zone"}
    if isinstance(kind, Values):
        return {"type": "string", "minLength": 1, "description": "one value or a comma-separated list"}
    assert isinstance(kind, Text)  # noqa: S101 (Param is a closed union)
    return {"type": "string", "minLength": 1}


def _param_text(name: str, kind: Param) -> str:
    if isinstance(kind, Cursor):
        side = "after" if kind.bound == "start" else "before"
        latest = " (+ for the newest)" if kind.latest else ""
        return f"exclusive cursor: records {side} this id{latest}"
    return {
        "since": "records at or after this time",
        "until": "records at or before this time",
        "limit": "page size",
        "offset": "entries to skip",
        "workers": "also require this many live workers",
        "token": "the hook token (CHAINER_HOOK_TOKEN), for senders that cannot put it in the path",
    }.get(name, f"filter: {name}")


_HOOK_TOKEN = Text()
_CSRF_TEXT = {
    True: "the page's CSRF token: required with the session cookie (403 without it), not with the bearer header",
    False: "the sign-in form's value, the same as its chainer_signin cookie (403 otherwise)",
}


def _operation(route: Route, method: str, paths: set[str]) -> dict[str, Any]:
    endpoint = route.endpoint
    module = getattr(endpoint, "__module__", "")
    tag, statuses = _TAGS.get(module, ("pages", ["200", "303", "400", "401", "403", "404", "503"]))
    doc = (endpoint.__doc__ or "").strip()
    summary = doc.splitlines()[0] if doc else f"{method} {route.path}"
    spec: Spec | None = getattr(endpoint, "query_spec", None)
    operator = spec is not None
    spec = spec if spec is not None else getattr(endpoint, "public_spec", {})
    if tag == "webhooks" and f"{route.path}/{{token}}" in paths:  # the hook token may come as ?token=
        spec = {"token": _HOOK_TOKEN}
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in _PATH_PARAM.findall(route.path)
    ]
    parameters += [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": _param_text(name, kind),
            "schema": param_schema(kind),
        }
        for name, kind in spec.items()
    ]
    media = getattr(endpoint, "openapi_media", JSON)
    bodies: dict[str, dict[str, Any]] = getattr(endpoint, "openapi_bodies", {})
    responses: dict[str, Any] = {}
    for status in statuses:
        if status == "401" and not operator and tag not in ("webhooks", "pages"):
            continue
        body: dict[str, Any] = {media: {"schema": {"type": "object"} if media == JSON else {"type": "string"}}}
        if status[0] in "45":
            body = {JSON: {"schema": _ERROR}} if tag != "pages" else {"text/html": {"schema": {"type": "string"}}}
        if status in bodies:
            body = {media: {"schema": bodies[status]}}
        responses[status] = {"description": _STATUS_TEXT[status]} | ({"content": body} if status != "303" else {})
    operation: dict[str, Any] = {
        "operationId": f"{method.lower()}_{re.sub(r'[^a-z0-9]+', '_', route.path.lower()).strip('_') or 'root'}",
        "summary": summary,
        "tags": [tag],
        "responses": responses,
    }
    if len(doc.splitlines()) > 1:
        operation["description"] = doc
    if parameters:
        operation["parameters"] = parameters
    if method in ("POST", "PUT", "PATCH") and tag != "pages":
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": {"type": "object"}}}}
    elif method == "POST":
        # A signed-in page's form needs its CSRF token only with the session cookie: a request with the bearer
        # header needs none (chainer.web.session); the sign-in form always needs its double-submit value.
        csrf = {"type": "string", "description": _CSRF_TEXT[operator]}
        form: dict[str, Any] = {"type": "object", "properties": {"csrf": csrf}}
        if not operator:
            form["required"] = ["csrf"]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": form}},
        }
    if operator:
        operation["security"] = [{"admin": []}]
    return operation


def document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (the app's); routes other than ``Route`` (mounts) are skipped."""
    mounted = [r for r in routes if isinstance(r, Route) and r.include_in_schema]
    known = {r.path for r in mounted}
    paths: dict[str, dict[str, Any]] = {}
    for route in mounted:
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = _operation(route, method, known)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chainer",
            "version": __version__,
            "description": "Webhook-driven chaining of CI builds: webhooks in, the operator API, probes and metrics.",
        },
        "tags": [
            {"name": "webhooks", "description": "deliveries from the CI providers"},
            {"name": "operator", "description": "audit log, events, dead letters, rules (bearer CHAINER_ADMIN_TOKEN)"},
            {"name": "probes", "description": "health, readiness and Prometheus metrics"},
            {"name": "pages", "description": "the operator's web page (sign-in cookie)"},
            {"name": "documentation", "description": "this document"},
        ],
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}}},
    }


@produces(JSON)
async def get_openapi(request: Request) -> Response:
    """GET /openapi.json: the OpenAPI 3.1 document of this API, generated from the mounted routes."""
    return answer(200, document(request.app.routes))


@produces("text/html")
async def get_docs(request: Request) -> Response:
    """GET /docs: the API as one self-contained page (no script, no CDN)."""
    doc = document(request.app.routes)
    rows = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            params = ", ".join(p["name"] for p in op.get("parameters", []) if p["in"] == "query")
            lock = "bearer" if "security" in op else ""
            cells = (method.upper(), path, op["summary"], params, lock)
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>chainer API</title>"
        "<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;"
        "width:100%}td,th{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top;"
        "overflow-wrap:anywhere}</style>"
        f"<h1>chainer {html.escape(__version__)} API</h1><p>The machine-readable document: "
        "<a href=/openapi.json>/openapi.json</a> (OpenAPI 3.1).</p><table><tr><th>method<th>path<th>what"
        "<th>query parameters<th>auth</tr>" + "".join(rows) + "</table></html>"
    )
    return HTMLResponse(page)


def routes() -> list[Route]:
    """The documentation's routes."""
    return [Route("/openapi.json", get_openapi), Route("/docs", get_docs)]
