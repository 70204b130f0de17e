"""The sandbox's Codeship: API v2 (token auth, projects, builds, 202-with-no-body answers) and legacy API v1."""

from __future__ import annotations

import math
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chainer.providers.codeship.client import REF_PATTERN
from chainer.sandbox.calls import NOT_JSON, Call, Handler, basic, decode, must_find, refuse, same, whole_number
from chainer.sandbox.models import CodeshipBuild, CodeshipProject

PER_PAGE_DEFAULT, PER_PAGE_MAX = 30, 50
TWO_FACTOR = "Your account has two-factor authentication enabled, which is not possible to support with the API."


async def codeship_auth(call: Call) -> Response:
    """``POST /v2/auth``: Basic credentials in, a bearer token and the account's organization out."""
    user, password = basic(call.request)
    state = call.state
    refuse(call.raw.strip() and decode(call.raw) is NOT_JSON, 400, "the request body is not valid JSON")
    if not (same(user, state.codeship_user) and same(password, state.codeship_password)):
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
    refuse(not call.state.codeship_token_valid(_codeship_token(call.request)), 401, "Unauthorized")
    refuse(call.param("org") != call.state.codeship_org_uuid, 404, "organization not found")
    if scope not in call.state.codeship_scopes:
        raise HTTPException(403, f"Forbidden: the {scope} scope is required in organization {call.state.codeship_org}")


def _codeship_project(call: Call, scope: str) -> CodeshipProject:
    _codeship_org(call, scope)
    return must_find(call.state.codeship_project(call.param("project")), "project not found")


def _codeship_build(call: Call, scope: str) -> CodeshipBuild:
    builds = _codeship_project(call, scope).builds
    return must_find(next((b for b in builds if b.uuid == call.param("build")), None), "build not found")


def _codeship_page(call: Call, key: str, items: list[dict[str, Any]]) -> Response:
    """One page of a Codeship list: ``{key, page, per_page, total}`` plus an RFC 5988 ``Link`` header."""
    query = call.request.query_params
    page = whole_number(query.get("page", "1"), 400, "page must be a positive integer")
    per_page = whole_number(query.get("per_page", str(PER_PAGE_DEFAULT)), 400, "per_page must be a positive integer")
    refuse(page < 1 or per_page < 1, 400, "page and per_page must be positive integers")
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
    refuse(not ref, 400, "ref is required")
    refuse(not REF_PATTERN.match(ref), 400, "ref must look like heads/<branch> or tags/<tag>")
    refuse(sha is not None and not isinstance(sha, str), 400, "commit_sha must be a string")
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
    wanted = whole_number(call.param("id"), 404, "project not found")
    found = next((p for p in call.state.projects if p.type == "basic" and p.id == wanted), None)
    return JSONResponse(must_find(found, "project not found").v1(call.request.query_params.get("branch")))


async def codeship_v1_restart(call: Call) -> Response:
    """``POST /api/v1/builds/{id}/restart.json?api_key=``: 200 ``{"id": new id, "uuid": new uuid}``."""
    wanted = whole_number(call.param("id"), 404, "build not found")
    builds = (b for p in call.state.projects if p.type == "basic" for b in p.builds if b.id == wanted)
    old = must_find(next(builds, None), "build not found")
    again = call.state.create_codeship_build(old.project, old.ref, old.commit_sha)  # v1 restarts as a new build
    return JSONResponse({"id": again.id, "uuid": again.uuid})


_CS = "/v2/organizations/{org}/projects"
_BUILD = _CS + "/{project}/builds/{build}"
# method, path (Starlette syntax), action recorded for it, handler.
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
)
