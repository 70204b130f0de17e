"""The sandbox's Buildkite: REST API v2 builds (create, list, get, rebuild) and the token check (more-providers §2.5).

Bearer tokens only (Buildkite supports no other form), scopes enforced (``write_builds`` to create and
rebuild, ``read_builds`` to read), errors as ``{"message": …}`` and validation failures as
``{"message": "Validation Failed", "errors": [...]}``. Rate limits are scripted faults: a 429 with the
``RateLimit-*`` headers Buildkite sends (see ``rate_limited``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from starlette.responses import JSONResponse, Response

from chainer.sandbox.calls import Call, Handler, must_find, refuse, same, whole_number
from chainer.sandbox.models import BuildkitePipeline

# The paths that are Buildkite's, not Codeship's (both APIs live under /v2/organizations/).
PATHS = re.compile(r"/v2/(access-token|organizations/[^/]+/pipelines(/.*)?)")
AUTH_REQUIRED = "Authentication required. Please supply a valid API Access Token"


def buildkite_auth(call: Call) -> None:
    """``Authorization: Bearer <token>`` with the sandbox's Buildkite token; else 401 as Buildkite words it."""
    scheme, _, value = call.request.headers.get("authorization", "").partition(" ")
    refuse(scheme.lower() != "bearer" or not same(value.strip(), call.state.buildkite_token), 401, AUTH_REQUIRED)


def _scope(call: Call, scope: str) -> None:
    refuse(scope not in call.state.buildkite_scopes, 403, f"Your access token is missing the {scope} scope")


def rate_limited(reset: int = 42, *, scope: str = "rest") -> dict[str, Any]:
    """The ``SandboxState.script`` arguments of Buildkite's 429 for an exhausted ``rest`` or ``rest_user`` budget."""
    user = scope == "rest_user"
    headers = {
        "RateLimit-Scope": "rest",
        "RateLimit-Limit": "200",
        "RateLimit-Remaining": "120" if user else "0",
        "RateLimit-Reset": "5" if user else str(reset),
        "RateLimit-User-Scope": "rest_user",
        "RateLimit-User-Limit": "50",
        "RateLimit-User-Remaining": "0" if user else "30",
        "RateLimit-User-Reset": str(reset) if user else "5",
    }
    body = {
        "message": f"You have exceeded your API rate limit. Please wait {reset} seconds before making more requests.",
        "scope": scope,
        "limit": 50 if user else 200,
        "current": 51 if user else 201,
        "reset": reset,
    }
    return {"status": 429, "headers": headers, "body": body}


def _base(call: Call) -> str:
    return str(call.request.base_url).rstrip("/")


def _pipeline(call: Call) -> BuildkitePipeline:
    name = f"{call.param('org')}/{call.param('pipeline')}"
    return must_find(call.state.buildkite_pipelines.get(name), "No pipeline found")


def _invalid(errors: list[dict[str, str]]) -> Response:
    return JSONResponse({"message": "Validation Failed", "errors": errors}, 422)


def _text_map(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return None
    return value


async def buildkite_access_token(call: Call) -> Response:
    """``GET /v2/access-token``: the token's uuid and scopes."""
    return JSONResponse({"uuid": "sandbox-token-uuid", "scopes": list(call.state.buildkite_scopes)})


async def buildkite_create_build(call: Call) -> Response:
    """``POST /v2/organizations/{org}/pipelines/{pipeline}/builds`` ``{commit, branch, …}`` → 201 the build.

    ``commit`` and ``branch`` are required; ``env`` and ``meta_data`` are objects of text; ``meta_data`` is
    kept and sent back on the build, as Buildkite does.
    """
    _scope(call, "write_builds")
    pipeline, body = _pipeline(call), call.json_object()
    errors = [
        {"field": name, "code": "missing"} for name in ("commit", "branch") if not isinstance(body.get(name), str)
    ]
    errors += [{"field": name, "code": "invalid"} for name in ("env", "meta_data") if _text_map(body, name) is None]
    if not isinstance(body.get("message"), str | None):
        errors.append({"field": "message", "code": "invalid"})
    if errors:
        return _invalid(errors)
    if not body["commit"].strip() or not body["branch"].strip():
        return _invalid([{"field": "commit" if not body["commit"].strip() else "branch", "code": "blank"}])
    env, meta_data = body.get("env") or {}, body.get("meta_data") or {}
    build = call.state.create_buildkite_build(
        pipeline, body["branch"], body["commit"], body.get("message"), env, meta_data
    )
    return JSONResponse(build.v2(_base(call)), 201)


_META_FILTER = re.compile(r"meta_data\[(.+)\]")


def _instant(text: str) -> float:
    """An ISO 8601 filter value as unix seconds; a 400 naming it when it is not one."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        refuse(True, 400, f"created_from: {text[:40]!r} is not an ISO 8601 time")
        raise
    refuse(moment.tzinfo is None, 400, "created_from needs a time zone (Z or +00:00)")
    return moment.timestamp()


async def buildkite_list_builds(call: Call) -> Response:
    """``GET …/pipelines/{pipeline}/builds``: the pipeline's builds, newest first, with Buildkite's filters
    ``branch``, ``commit``, ``state``, ``created_from`` and ``meta_data[key]=value`` (every one must hold)."""
    _scope(call, "read_builds")
    pipeline = _pipeline(call)
    query = call.request.query_params
    wanted_meta = {m.group(1): v for k, v in query.items() if (m := _META_FILTER.fullmatch(k))}
    since = _instant(query["created_from"]) if "created_from" in query else None
    found = [
        build
        for build in reversed(pipeline.builds)
        if all(query.get(name) in (None, getattr(build, name)) for name in ("branch", "commit", "state"))
        and all(build.meta_data.get(key) == value for key, value in wanted_meta.items())
        and (since is None or build.created_at >= since)
    ]
    return JSONResponse([build.v2(_base(call)) for build in found])


async def buildkite_get_build(call: Call) -> Response:
    """``GET …/builds/{number}``: the build."""
    _scope(call, "read_builds")
    number = whole_number(call.param("number"), 404, "No build found")
    build = must_find(call.state.buildkite_build(_pipeline(call), number), "No build found")
    return JSONResponse(build.v2(_base(call)))


async def buildkite_rebuild(call: Call) -> Response:
    """``PUT …/builds/{number}/rebuild`` → 200 the new build (same branch, commit, env, meta-data)."""
    _scope(call, "write_builds")
    number = whole_number(call.param("number"), 404, "No build found")
    build = must_find(call.state.buildkite_build(_pipeline(call), number), "No build found")
    return JSONResponse(call.state.rebuild_buildkite_build(build).v2(_base(call)))


_BUILDS = "/v2/organizations/{org}/pipelines/{pipeline}/builds"
# method, path (Starlette syntax), action recorded for it, handler.
ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("GET", "/v2/access-token", "buildkite.access_token", buildkite_access_token),
    ("POST", _BUILDS, "buildkite.create_build", buildkite_create_build),
    ("GET", _BUILDS, "buildkite.list_builds", buildkite_list_builds),
    ("GET", _BUILDS + "/{number}", "buildkite.get_build", buildkite_get_build),
    ("PUT", _BUILDS + "/{number}/rebuild", "buildkite.rebuild", buildkite_rebuild),
)
