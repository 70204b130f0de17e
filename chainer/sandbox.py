"""A local emulation of the Codeship (v2, v1) and CircleCI (v2, v1.1) APIs that chainer calls, as one Starlette app.

Paths, credentials, status codes and bodies follow shared/reference/providers.md, including the awkward parts:
Codeship answers 202 with no body, rate-limits with 403, and reports 2FA accounts with a 200; CircleCI v1.1
answers EDN when no ``Accept`` header is sent. Every request is recorded with its credentials redacted, and
faults (an error status, a ``Retry-After``, a hang) can be scripted from Python or over HTTP under ``/_sandbox/``.
Point ``CHAINER_CODESHIP_URL``, ``CHAINER_CODESHIP_V1_URL`` and ``CHAINER_CIRCLECI_URL`` at the sandbox's root.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import html
import json
import logging
import math
import re
import secrets
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from chainer import sandbox_state as st
from chainer.errors import WebhookError
from chainer.events import BuildEvent
from chainer.explain import parse_any
from chainer.rules import RuleSet
from chainer.sandbox_state import RecordedRequest, SandboxState
from chainer.webhooks import decode_json_object

__all__ = [
    "RecordedRequest",
    "SandboxState",
    "SignalFreeServer",
    "create_sandbox_app",
    "example_events",
    "seed_sandbox",
    "serve_sandbox",
]

log = logging.getLogger("chainer.sandbox")

SANDBOX, UNKNOWN = "sandbox", "unknown"
PER_PAGE_DEFAULT, PER_PAGE_MAX, CIRCLECI_PAGE = 30, 50, 20
LOGIN_FIRST = "You must log in first."
TWO_FACTOR = "Your account has two-factor authentication enabled, which is not possible to support with the API."
_PREFIXES = dict(zip(("/v2/", "/api/v1/", "/api/v2/", "/api/v1.1/"), st.APIS, strict=True)) | {"/_sandbox": SANDBOX}
_DIGITS = re.compile(r"[0-9]{1,9}")  # ASCII digits, bounded: int() of other "digits" or of 5000 of them raises
_REF = re.compile(r"^(heads|tags)/\S+$")
_SECRET_HEADERS = {"authorization", "circle-token", "cookie", "proxy-authorization"}
_SECRET_QUERY = {"api_key", "circle-token"}
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]  # the endpoint answers 405 itself, and records it
_NOT_JSON = object()
_T = TypeVar("_T")


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _NOT_JSON


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a handler sees it: the request, the shared state, the raw body and the path as sent."""

    request: Request
    state: SandboxState
    raw: bytes
    path: str = ""  # percent-escapes kept, unlike request.url.path

    def param(self, name: str) -> str:
        """A path parameter as text."""
        return str(self.request.path_params[name])

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object (``{}`` when empty); raises ``HTTPException(400)`` otherwise."""
        data = _decode(self.raw) if self.raw.strip() else {}
        _refuse(data is _NOT_JSON, 400, "the request body is not valid JSON")
        _refuse(not isinstance(data, dict), 400, "the request body must be a JSON object")
        return data


Handler = Callable[[Call], Awaitable[Response]]


def _basic(request: Request) -> tuple[str | None, str | None]:
    """User and password of a ``Basic`` authorization header; ``(None, None)`` without a readable one."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return (user, password) if scheme.lower() == "basic" else (None, None)


def _refuse(when: object, status: int, message: str) -> None:
    """Answer ``status`` with ``message`` (in the called API's error shape) when ``when`` is true."""
    if when:
        raise HTTPException(status, message)


def _found(item: _T | None, message: str) -> _T:
    if item is None:
        raise HTTPException(404, message)
    return item


def _number(text: str, status: int, message: str) -> int:
    _refuse(not _DIGITS.fullmatch(text), status, message)
    return int(text)


def _same(given: str | None, expected: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode(), expected.encode())


def _error(api: str, request: Request, status: int, message: str) -> Response:
    if api == st.CODESHIP_V2:
        return JSONResponse({"errors": [message]}, status)
    if api in (st.CIRCLECI_V2, st.CIRCLECI_V11):
        return _circle_answer(request, status, {"message": message}, v11=api == st.CIRCLECI_V11)
    return JSONResponse({"error": message}, status)


# -- Codeship API v2 -----------------------------------------------------------------------------
async def codeship_auth(call: Call) -> Response:
    """``POST /v2/auth``: Basic credentials in, a bearer token and the account's organization out."""
    user, password = _basic(call.request)
    state = call.state
    _refuse(call.raw.strip() and _decode(call.raw) is _NOT_JSON, 400, "the request body is not valid JSON")
    if not (_same(user, state.codeship_user) and _same(password, state.codeship_password)):
        return JSONResponse({"error": "Unauthorized"}, 401)
    if state.two_factor:
        return JSONResponse({"error": TWO_FACTOR})  # HTTP 200 (providers.md pitfall 5)
    token, expires_at = state.issue_codeship_token()
    org = {"uuid": state.codeship_org_uuid, "name": state.codeship_org, "scopes": list(state.codeship_scopes)}
    return JSONResponse({"access_token": token, "expires_at": expires_at, "organizations": [org]})


def _codeship_token(request: Request) -> str:
    """The API v2 access token: ``Authorization: Bearer <token>`` as the prose and the official client send it,
    or the bare ``Authorization: <token>`` of the API's code examples (providers.md §3.1)."""
    value = request.headers.get("authorization", "").strip()
    scheme, _, rest = value.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else value


def _codeship_org(call: Call, scope: str) -> None:
    """Check the access token, the organization in the path and the account's ``scope`` there."""
    _refuse(not call.state.codeship_token_valid(_codeship_token(call.request)), 401, "Unauthorized")
    _refuse(call.param("org") != call.state.codeship_org_uuid, 404, "organization not found")
    if scope not in call.state.codeship_scopes:
        raise HTTPException(403, f"Forbidden: the {scope} scope is required in organization {call.state.codeship_org}")


def _codeship_project(call: Call, scope: str) -> st.CodeshipProject:
    _codeship_org(call, scope)
    return _found(call.state.codeship_project(call.param("project")), "project not found")


def _codeship_build(call: Call, scope: str) -> st.CodeshipBuild:
    builds = _codeship_project(call, scope).builds
    return _found(next((b for b in builds if b.uuid == call.param("build")), None), "build not found")


def _codeship_page(call: Call, key: str, items: list[dict[str, Any]]) -> Response:
    """One page of a Codeship list: ``{key, page, per_page, total}`` plus an RFC 5988 ``Link`` header."""
    query = call.request.query_params
    page = _number(query.get("page", "1"), 400, "page must be a positive integer")
    per_page = _number(query.get("per_page", str(PER_PAGE_DEFAULT)), 400, "per_page must be a positive integer")
    _refuse(page < 1 or per_page < 1, 400, "page and per_page must be positive integers")
    per_page = min(per_page, PER_PAGE_MAX)
    last = max(1, math.ceil(len(items) / per_page))
    rels = ([("first", 1), ("prev", min(page - 1, last))] if page > 1 else []) + (
        [("next", page + 1), ("last", last)] if page < last else []
    )
    url = call.request.url
    links = [f'<{url.include_query_params(page=p, per_page=per_page)}>; rel="{rel}"' for rel, p in rels]
    body = {key: items[(page - 1) * per_page : page * per_page], "page": page, "per_page": per_page}
    return JSONResponse({**body, "total": len(items)}, headers={"Link": ", ".join(links)} if links else None)


async def codeship_list_projects(call: Call) -> Response:
    """``GET /v2/organizations/{org}/projects``: paginated, oldest project first."""
    _codeship_org(call, "project.read")
    return _codeship_page(call, "projects", [p.v2() for p in call.state.projects])


async def codeship_get_project(call: Call) -> Response:
    """``GET …/projects/{uuid}``: ``{"project": {...}}``."""
    return JSONResponse({"project": _codeship_project(call, "project.read").v2()})


async def codeship_list_builds(call: Call) -> Response:
    """``GET …/projects/{uuid}/builds``: paginated, newest first."""
    project, base = _codeship_project(call, "build.read"), str(call.request.base_url).rstrip("/")
    return _codeship_page(call, "builds", [b.v2(base) for b in reversed(project.builds)])


async def codeship_get_build(call: Call) -> Response:
    """``GET …/builds/{uuid}``: ``{"build": {...}}``."""
    return JSONResponse({"build": _codeship_build(call, "build.read").v2(str(call.request.base_url).rstrip("/"))})


async def codeship_create_build(call: Call) -> Response:
    """``POST …/builds`` with ``{ref, commit_sha?}``: queues a build and answers 202 with an empty body."""
    project = _codeship_project(call, "build.write")
    body = call.json_object()
    ref, sha = body["ref"] if isinstance(body.get("ref"), str) else "", body.get("commit_sha")
    _refuse(not ref, 400, "ref is required")
    _refuse(not _REF.match(ref), 400, "ref must look like heads/<branch> or tags/<tag>")
    _refuse(sha is not None and not isinstance(sha, str), 400, "commit_sha must be a string")
    call.state.create_codeship_build(project, ref, sha or None)
    return Response(status_code=202)


async def codeship_build_command(call: Call) -> Response:
    """``POST …/builds/{uuid}/restart`` or ``…/stop``: 202, empty body (a Basic restart keeps the uuid, Pro's not)."""
    build = _codeship_build(call, "build.write")
    call.json_object()
    if call.request.url.path.endswith("/stop"):
        call.state.stop_codeship_build(build)
    else:
        call.state.restart_codeship_build(build)
    return Response(status_code=202)


# -- Codeship API v1 (Basic projects only) -------------------------------------------------------
async def codeship_v1_projects(call: Call) -> Response:
    """``GET /api/v1/projects.json?api_key=``: every Basic project with its builds, newest first."""
    return JSONResponse({"projects": [p.v1() for p in call.state.projects if p.type == "basic"]})


async def codeship_v1_project(call: Call) -> Response:
    """``GET /api/v1/projects/{id}.json?api_key=&branch=``: one project, builds newest first."""
    wanted = _number(call.param("id"), 404, "project not found")
    found = next((p for p in call.state.projects if p.type == "basic" and p.id == wanted), None)
    return JSONResponse(_found(found, "project not found").v1(call.request.query_params.get("branch")))


async def codeship_v1_restart(call: Call) -> Response:
    """``POST /api/v1/builds/{id}/restart.json?api_key=``: 200 ``{"id": new id, "uuid": new uuid}``."""
    wanted = _number(call.param("id"), 404, "build not found")
    builds = (b for p in call.state.projects if p.type == "basic" for b in p.builds if b.id == wanted)
    old = _found(next(builds, None), "build not found")
    again = call.state.create_codeship_build(old.project, old.ref, old.commit_sha)  # v1 restarts as a new build
    return JSONResponse({"id": again.id, "uuid": again.uuid})


# -- CircleCI API v2 and v1.1 --------------------------------------------------------------------
def _circle_auth(call: Call, *, query: bool) -> None:
    """The token as ``Circle-Token``, bearer, Basic user name or (v1.1 only) ``?circle-token=``; else 401."""
    request = call.request
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    given = [request.headers.get("circle-token"), _basic(request)[0]]
    given += [value.strip() if scheme.lower() == "bearer" else None]
    given += [request.query_params.get("circle-token")] if query else []
    _refuse(not any(_same(token, call.state.circleci_token) for token in given), 401, LOGIN_FIRST)


def _circle_answer(request: Request, status: int, body: Any, *, v11: bool = True) -> Response:
    """v1.1 without ``Accept`` answers EDN (pitfall 7); ``application/json`` gets compact JSON, others pretty."""
    accept = request.headers.get("accept")
    if accept is None and v11:
        return Response(st.edn(body), status, media_type="application/edn")
    if accept is None or not v11 or "application/json" in accept.lower():
        return JSONResponse(body, status)
    return Response(json.dumps(body, indent=2), status, media_type="application/json")


def _slug(call: Call) -> str:
    slug = call.param("slug")
    _refuse(len(parts := slug.split("/")) != 3 or not all(parts), 404, "Project not found")
    return slug


async def circleci_trigger_pipeline(call: Call) -> Response:
    """``POST /api/v2/project/{slug}/pipeline`` ``{branch | tag, parameters}`` → 201 ``{id, state, number, …}``.

    Neither branch nor tag builds the default branch, as CircleCI does; both are a 400.
    """
    slug, body = _slug(call), call.json_object()
    branch, tag, params = body.get("branch"), body.get("tag"), body.get("parameters")
    pipeline = call.state.trigger_pipeline(slug, branch=branch, tag=tag, parameters=params)  # ValueError: 400
    return JSONResponse(pipeline.created(), 201)


async def circleci_list_pipelines(call: Call) -> Response:
    """``GET /api/v2/project/{slug}/pipeline?branch=&page-token=``: newest first, ``{items, next_page_token}``."""
    slug, query = _slug(call), call.request.query_params
    mine = [p for p in reversed(call.state.pipelines) if p.slug == slug and query.get("branch") in (None, p.branch)]
    start = _number(query.get("page-token") or "0", 400, "page-token is not valid")
    more = start + CIRCLECI_PAGE < len(mine)
    items = [p.v2() for p in mine[start : start + CIRCLECI_PAGE]]
    return JSONResponse({"items": items, "next_page_token": str(start + CIRCLECI_PAGE) if more else None})


async def circleci_get_pipeline(call: Call) -> Response:
    """``GET /api/v2/pipeline/{id}``: the pipeline object."""
    pipeline = next((p for p in call.state.pipelines if p.id == call.param("id")), None)
    return JSONResponse(_found(pipeline, "Pipeline not found").v2())


async def circleci_rerun_workflow(call: Call) -> Response:
    """``POST /api/v2/workflow/{id}/rerun`` with optional ``{from_failed | jobs}``: 202 ``{"workflow_id": new}``."""
    body = call.json_object()
    jobs = body.get("jobs")
    if jobs is not None and not (isinstance(jobs, list) and all(isinstance(j, str) for j in jobs)):
        raise HTTPException(400, "jobs must be a list of job ids")
    _refuse(body.get("from_failed") and jobs, 400, "from_failed and jobs are mutually exclusive")
    if (body.get("sparse_tree") or body.get("enable_ssh")) and not jobs:
        raise HTTPException(400, "sparse_tree and enable_ssh need jobs")
    workflow_id = _found(call.state.rerun_workflow(call.param("id")), "Workflow not found")
    return JSONResponse({"workflow_id": workflow_id}, 202)


def _v11_project(call: Call) -> tuple[str, str, str]:
    return _found(st.normalize_vcs(call.param("vcs")), "Project not found"), call.param("org"), call.param("repo")


async def circleci_v1_trigger_build(call: Call) -> Response:
    """``POST /api/v1.1/project/{vcs}/{org}/{repo}/tree/{branch}``: 200, a ``not_running`` job summary.

    ``:branch`` is one path segment, URL-encoded (providers.md §4.2): ``tree/feature/x`` matches no v1.1
    route, so it gets the 404 of an unknown path, as an empty branch does.
    """
    segments = call.path.split("/")  # "", "api", "v1.1", "project", vcs, org, repo, "tree", branch
    _refuse(len(segments) != 9 or not segments[8], 404, "Not Found")
    vcs, org, repo = _v11_project(call)
    body = call.json_object()
    revision, build_parameters = body.get("revision"), body.get("build_parameters")
    if not isinstance(revision, str | None) or not isinstance(build_parameters, dict | None):
        raise HTTPException(400, "revision must be a string and build_parameters an object")
    job = call.state.trigger_job(vcs, org, repo, call.param("branch"), revision, build_parameters)
    return _circle_answer(call.request, 200, job.summary())


async def circleci_v1_trigger_project(call: Call) -> Response:
    """``POST /api/v1.1/project/{vcs}/{org}/{repo}`` with ``{"tag": …}``: 200, a ``not_running`` job of the tag.

    The v1.1 reference's project trigger; ``tag`` cannot go with ``revision`` there. Only the tag form is
    emulated (chainer builds branches through ``tree/{branch}``), so a body without a tag is a 400.
    """
    vcs, org, repo = _v11_project(call)
    body = call.json_object()
    tag, build_parameters = body.get("tag"), body.get("build_parameters")
    _refuse(not isinstance(tag, str) or not tag, 400, "tag must be a non-empty string")
    _refuse(body.get("revision") is not None, 400, "revision cannot be used with tag")
    if not isinstance(build_parameters, dict | None):
        raise HTTPException(400, "build_parameters must be an object")
    job = call.state.trigger_tag_job(vcs, org, repo, str(tag), build_parameters)
    return _circle_answer(call.request, 200, job.summary())


async def circleci_v1_retry_build(call: Call) -> Response:
    """``POST /api/v1.1/project/{vcs}/{org}/{repo}/{build_num}/retry``: 200, a queued summary with ``retry_of``."""
    vcs, org, repo = _v11_project(call)
    job = call.state.find_job(vcs, org, repo, _number(call.param("build_num"), 404, "Build not found"))
    return _circle_answer(call.request, 200, call.state.retry_job(_found(job, "Build not found")).summary())


# -- the route table, recording and scripted faults ----------------------------------------------
_CS = "/v2/organizations/{org}/projects"
_BUILD = _CS + "/{project}/builds/{build}"
_PIPELINES = "/api/v2/project/{slug:path}/pipeline"
_V11 = "/api/v1.1/project/{vcs}/{org}/{repo}"
# method, path (Starlette syntax), action recorded for it, handler; the API follows from the path prefix.
ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("POST", "/v2/auth", "codeship.auth", codeship_auth),
    ("GET", _CS, "codeship.list_projects", codeship_list_projects),
    ("GET", _CS + "/{project}", "codeship.get_project", codeship_get_project),
    ("GET", _CS + "/{project}/builds", "codeship.list_builds", codeship_list_builds),
    ("POST", _CS + "/{project}/builds", "codeship.trigger_build", codeship_create_build),
    ("GET", _BUILD, "codeship.get_build", codeship_get_build),
    ("POST", _BUILD + "/restart", "codeship.restart_build", codeship_build_command),
    ("POST", _BUILD + "/stop", "codeship.stop_build", codeship_build_command),
    ("GET", "/api/v1/projects.json", "codeship.v1_list_projects", codeship_v1_projects),
    ("GET", "/api/v1/projects/{id}.json", "codeship.v1_get_project", codeship_v1_project),
    ("POST", "/api/v1/builds/{id}/restart.json", "codeship.v1_restart_build", codeship_v1_restart),
    ("POST", _PIPELINES, "circleci.trigger_pipeline", circleci_trigger_pipeline),
    ("GET", _PIPELINES, "circleci.list_pipelines", circleci_list_pipelines),
    ("GET", "/api/v2/pipeline/{id}", "circleci.get_pipeline", circleci_get_pipeline),
    ("POST", "/api/v2/workflow/{id}/rerun", "circleci.rerun_workflow", circleci_rerun_workflow),
    ("POST", _V11, "circleci.v1_trigger_build", circleci_v1_trigger_project),
    ("POST", _V11 + "/tree/{branch:path}", "circleci.v1_trigger_build", circleci_v1_trigger_build),
    ("POST", _V11 + "/{build_num}/retry", "circleci.v1_retry_build", circleci_v1_retry_build),
)


def _fault_response(fault: st.ScriptedFault) -> Response:
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
    """Rate limit (Codeship v2) and credentials (Codeship v1, CircleCI) first, then the handler; errors in style."""
    try:
        _refuse(api == st.CODESHIP_V2 and call.state.over_codeship_rate_limit(), 403, "Rate Limit Exceeded")
        if api in (st.CIRCLECI_V2, st.CIRCLECI_V11):
            _circle_auth(call, query=api == st.CIRCLECI_V11)  # ?circle-token= is v1.1 only
        key = call.request.query_params.get("api_key")
        _refuse(api == st.CODESHIP_V1 and not _same(key, call.state.codeship_api_key), 401, "Unauthorized")
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
        api = next((api for prefix, api in _PREFIXES.items() if request.url.path.startswith(prefix)), UNKNOWN)
        action, handler = methods.get(request.method, (None, None))
        raw = await request.body()
        fault = state.take_fault(api, path) if api in st.APIS else None
        call = Call(request, state, raw, path)
        response = _fault_response(fault) if fault else await _answer(call, api, handler, bool(methods))
        if api != SANDBOX:
            query = {k: "***" if k in _SECRET_QUERY else v for k, v in request.query_params.items()}
            body = None if not raw else raw.decode("utf-8", "replace") if (data := _decode(raw)) is _NOT_JSON else data
            status, seen = response.status_code, request.headers
            headers = {k: "***" if k in _SECRET_HEADERS else ", ".join(seen.getlist(k)) for k in seen}
            state.record(
                api=api, method=request.method, path=path, query=query, headers=headers, body=body,
                status=status, action=action,
            )  # fmt: skip
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
    if not _DIGITS.fullmatch(after):
        return JSONResponse({"error": "after must be a request id"}, 400)
    return JSONResponse([asdict(r) for r in state.requests if r.id > int(after)])


async def control_script(request: Request) -> Response:
    """``POST /_sandbox/script`` with the arguments of ``SandboxState.script``; ``DELETE`` drops all faults."""
    state: SandboxState = request.app.state.sandbox
    if request.method == "DELETE":
        state.faults.clear()
        return JSONResponse({"faults": 0})
    data = _decode(await request.body())
    allowed = {"api", "status", "body", "headers", "times", "delay", "path_contains"}
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
        f"<p>Point CHAINER_CODESHIP_URL, CHAINER_CODESHIP_V1_URL and CHAINER_CIRCLECI_URL at <code>{base}</code>. "
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


# -- seeding from the rules and example payloads -------------------------------------------------
_V2_STATUS = {"error": "failed"}  # Codeship webhooks say error where API v2 says failed (providers.md §3.3)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def example_events(directory: Path) -> tuple[list[BuildEvent], list[str]]:
    """The events of the webhook bodies in ``directory/*.json`` (by file name), and one problem per unreadable file.

    Each body is parsed as chainer parses a delivery, authentication aside: ``{"build": …}`` as Codeship's,
    anything else as CircleCI's (legacy ``{"payload": …}`` or outbound). Bodies chainer ignores (a ping) are
    left out without a problem.
    """
    events: list[BuildEvent] = []
    problems: list[str] = []
    for path in sorted(directory.glob("*.json")):
        try:
            body = path.read_bytes()
            provider = "codeship" if "build" in decode_json_object(body) else "circleci"
            parsed = parse_any(provider, {}, body)
        except (OSError, WebhookError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        if isinstance(parsed, BuildEvent):
            events.append(parsed)
    return events, problems


def seed_sandbox(state: SandboxState, ruleset: RuleSet, events: Iterable[BuildEvent] = ()) -> list[str]:
    """Teach ``state`` what the example ``events`` and ``ruleset`` refer to, so the rules' actions on them succeed.

    From each event, with the ids of its payload: a Codeship event's project (numeric id) and build (numeric
    id, branch, commit, status), which ``codeship.restart_build`` finds by commit and branch and
    ``codeship.v1_restart_build`` by id; a CircleCI event's workflow, which ``circleci.rerun_workflow`` reruns,
    and a job's v1.1 build number, which ``circleci.v1_retry_build`` retries. Then each Codeship project the
    rules name literally: the ``project`` of Codeship actions and of ``when`` clauses that can match a Codeship
    event. Returns one line per event that clashes with what came before (two projects with one numeric id,
    say); everything else is seeded.
    """
    problems: list[str] = []
    for event in events:
        try:
            _seed_event(state, event)
        except ValueError as exc:
            problems.append(f"{event.provider} event {event.event_id} of {event.project}: {exc}")
    for name in _literal_codeship_projects(ruleset):
        if state.codeship_project_named(name) is None:
            state.add_codeship_project(name)
    return problems


def _seed_event(state: SandboxState, event: BuildEvent) -> None:
    if event.provider == "codeship":
        _seed_codeship(state, event)
        return
    slug = event.project_slug
    if not slug:
        return
    if event.workflow_id:
        pipeline = event.raw.get("pipeline")
        pipeline_id = pipeline.get("id") if isinstance(pipeline, dict) else None
        state.add_circleci_workflow(
            event.workflow_id, slug, branch=event.branch, tag=event.tag, revision=event.commit,
            pipeline_id=pipeline_id if isinstance(pipeline_id, str) else None, pipeline_number=event.pipeline_number,
        )  # fmt: skip
    if event.kind == "job" and event.build_id is not None and st.normalize_vcs(slug.split("/")[0]):
        state.add_circleci_job(slug, event.build_id, branch=event.branch or "main", revision=event.commit,
                               status=event.raw_status)  # fmt: skip


def _seed_codeship(state: SandboxState, event: BuildEvent) -> None:
    if event.project is None:  # Codeship always names its project; nothing to seed without one
        return
    state.add_codeship_project(event.project, id=event.project_id if isinstance(event.project_id, int) else None)
    if event.build_id is None or not event.branch or not event.commit:
        return
    known = state.codeship_build_numbered(event.build_id)
    if known is None or known.project.name != event.project:  # the same id in another project: ValueError
        status = _V2_STATUS.get(event.raw_status, event.raw_status)
        state.add_codeship_build(
            event.project, branch=event.branch, commit_sha=event.commit, status=status, id=event.build_id
        )


def _literal_codeship_projects(ruleset: RuleSet) -> list[str]:
    names: list[str] = []
    for rule in ruleset.rules:
        for clause in rule.clauses:
            matcher = clause.patterns.get("project")
            if matcher is not None and (clause.providers is None or "codeship" in clause.providers):
                names += [p.text for p in matcher.include if p.literal]
        for action in rule.actions:
            project = action.args.get("project")
            if action.spec.provider == "codeship" and isinstance(project, str) and "{" not in project:
                names += [] if _UUID.match(project) or project.isdigit() else [project]
    return list(dict.fromkeys(names))
