"""The sandbox's CircleCI: API v2 (pipelines, workflow reruns) and v1.1 (jobs, EDN without an ``Accept`` header)."""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chainer.providers.circleci.facts import normalize_vcs
from chainer.sandbox.calls import Call, Handler, basic, must_find, refuse, same, whole_number
from chainer.sandbox.models import edn

CIRCLECI_PAGE = 20
LOGIN_FIRST = "You must log in first."


def circle_auth(call: Call, *, query: bool) -> None:
    """The token as ``Circle-Token``, bearer, Basic user name or (v1.1 only) ``?circle-token=``; else 401."""
    request = call.request
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    given = [request.headers.get("circle-token"), basic(request)[0]]
    given += [value.strip() if scheme.lower() == "bearer" else None]
    given += [request.query_params.get("circle-token")] if query else []
    refuse(not any(same(token, call.state.circleci_token) for token in given), 401, LOGIN_FIRST)


def circle_answer(request: Request, status: int, body: Any, *, v11: bool = True) -> Response:
    """v1.1 without ``Accept`` answers EDN (pitfall 7); ``application/json`` gets compact JSON, others pretty."""
    accept = request.headers.get("accept")
    if accept is None and v11:
        return Response(edn(body), status, media_type="application/edn")
    if accept is None or not v11 or "application/json" in accept.lower():
        return JSONResponse(body, status)
    return Response(json.dumps(body, indent=2), status, media_type="application/json")


def _slug(call: Call) -> str:
    slug = call.param("slug")
    refuse(len(parts := slug.split("/")) != 3 or not all(parts), 404, "Project not found")
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
    start = whole_number(query.get("page-token") or "0", 400, "page-token is not valid")
    more = start + CIRCLECI_PAGE < len(mine)
    items = [p.v2() for p in mine[start : start + CIRCLECI_PAGE]]
    return JSONResponse({"items": items, "next_page_token": str(start + CIRCLECI_PAGE) if more else None})


async def circleci_get_pipeline(call: Call) -> Response:
    """``GET /api/v2/pipeline/{id}``: the pipeline object."""
    pipeline = next((p for p in call.state.pipelines if p.id == call.param("id")), None)
    return JSONResponse(must_find(pipeline, "Pipeline not found").v2())


async def circleci_rerun_workflow(call: Call) -> Response:
    """``POST /api/v2/workflow/{id}/rerun`` with optional ``{from_failed | jobs}``: 202 ``{"workflow_id": new}``."""
    body = call.json_object()
    jobs = body.get("jobs")
    if jobs is not None and not (isinstance(jobs, list) and all(isinstance(j, str) for j in jobs)):
        raise HTTPException(400, "jobs must be a list of job ids")
    refuse(body.get("from_failed") and jobs, 400, "from_failed and jobs are mutually exclusive")
    if (body.get("sparse_tree") or body.get("enable_ssh")) and not jobs:
        raise HTTPException(400, "sparse_tree and enable_ssh need jobs")
    workflow_id = must_find(call.state.rerun_workflow(call.param("id")), "Workflow not found")
    return JSONResponse({"workflow_id": workflow_id}, 202)


def _v11_project(call: Call) -> tuple[str, str, str]:
    return must_find(normalize_vcs(call.param("vcs")), "Project not found"), call.param("org"), call.param("repo")


async def circleci_v1_trigger_build(call: Call) -> Response:
    """``POST /api/v1.1/project/{vcs}/{org}/{repo}/tree/{branch}``: 200, a ``not_running`` job summary.

    ``:branch`` is one path segment, URL-encoded (providers.md §4.2): ``tree/feature/x`` matches no v1.1
    route, so it gets the 404 of an unknown path, as an empty branch does.
    """
    segments = call.path.split("/")  # "", "api", "v1.1", "project", vcs, org, repo, "tree", branch
    refuse(len(segments) != 9 or not segments[8], 404, "Not Found")
    vcs, org, repo = _v11_project(call)
    body = call.json_object()
    revision, build_parameters = body.get("revision"), body.get("build_parameters")
    if not isinstance(revision, str | None) or not isinstance(build_parameters, dict | None):
        raise HTTPException(400, "revision must be a string and build_parameters an object")
    job = call.state.trigger_job(vcs, org, repo, call.param("branch"), revision, build_parameters)
    return circle_answer(call.request, 200, job.summary())


async def circleci_v1_trigger_project(call: Call) -> Response:
    """``POST /api/v1.1/project/{vcs}/{org}/{repo}`` with ``{"tag": …}``: 200, a ``not_running`` job of the tag.

    The v1.1 reference's project trigger; ``tag`` cannot go with ``revision`` there. Only the tag form is
    emulated (chainer builds branches through ``tree/{branch}``), so a body without a tag is a 400.
    """
    vcs, org, repo = _v11_project(call)
    body = call.json_object()
    tag, build_parameters = body.get("tag"), body.get("build_parameters")
    refuse(not isinstance(tag, str) or not tag, 400, "tag must be a non-empty string")
    refuse(body.get("revision") is not None, 400, "revision cannot be used with tag")
    if not isinstance(build_parameters, dict | None):
        raise HTTPException(400, "build_parameters must be an object")
    job = call.state.trigger_tag_job(vcs, org, repo, str(tag), build_parameters)
    return circle_answer(call.request, 200, job.summary())


async def circleci_v1_retry_build(call: Call) -> Response:
    """``POST /api/v1.1/project/{vcs}/{org}/{repo}/{build_num}/retry``: 200, a queued summary with ``retry_of``."""
    vcs, org, repo = _v11_project(call)
    job = call.state.find_job(vcs, org, repo, whole_number(call.param("build_num"), 404, "Build not found"))
    return circle_answer(call.request, 200, call.state.retry_job(must_find(job, "Build not found")).summary())


_PIPELINES = "/api/v2/project/{slug:path}/pipeline"
_V11 = "/api/v1.1/project/{vcs}/{org}/{repo}"
# method, path (Starlette syntax), action recorded for it, handler.
ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("POST", _PIPELINES, "circleci.trigger_pipeline", circleci_trigger_pipeline),
    ("GET", _PIPELINES, "circleci.list_pipelines", circleci_list_pipelines),
    ("GET", "/api/v2/pipeline/{id}", "circleci.get_pipeline", circleci_get_pipeline),
    ("POST", "/api/v2/workflow/{id}/rerun", "circleci.rerun_workflow", circleci_rerun_workflow),
    ("POST", _V11, "circleci.v1_trigger_build", circleci_v1_trigger_project),
    ("POST", _V11 + "/tree/{branch:path}", "circleci.v1_trigger_build", circleci_v1_trigger_build),
    ("POST", _V11 + "/{build_num}/retry", "circleci.v1_retry_build", circleci_v1_retry_build),
)
