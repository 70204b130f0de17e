"""The sandbox's GitHub REST API: workflow dispatch (200 with run details), repository_dispatch (204), re-runs (201),
runs (one, or a workflow's runs with GitHub's filters), and GitHub App auth (installation look-ups and token minting
with the App's JWT verified).

Point ``CHAINER_GITHUB_URL`` at the sandbox's root. Calls carry ``Authorization: Bearer <token>`` (the sandbox's
personal access token or an installation token it minted); ``/app/...`` and the installation look-ups take the
App's JWT instead. A pinned ``X-GitHub-Api-Version`` must be one GitHub knows. Rate limits (a 403 with
``x-ratelimit-remaining: 0``, a 429 with ``retry-after``) and other faults are scripted with the ``github`` api
(``SandboxState.script``). Errors have GitHub's shape: ``{"message", "documentation_url"}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.responses import JSONResponse, Response

from chainer.providers.github.facts import API_VERSION
from chainer.sandbox.calls import DIGITS, Call, Handler, must_find, refuse
from chainer.sandbox.github_state import APP_PERMISSIONS, GitHubRepo, GitHubState

DOCS = "https://docs.github.com/rest"
# The request paths that are GitHub's (the rest of the sandbox serves Codeship and CircleCI).
PREFIXES = ("/repos/", "/app/", "/app", "/orgs/", "/users/")
_VERSIONS = (API_VERSION, "2026-03-10")
BAD_CREDENTIALS = "Bad credentials"


def github_error(status: int, message: str) -> Response:
    return JSONResponse({"message": message, "documentation_url": DOCS}, status)


def _github(call: Call) -> GitHubState:
    return call.state.github


def _bearer(call: Call) -> str | None:
    scheme, _, value = call.request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() in ("bearer", "token") and value.strip() else None


def _version(call: Call) -> str:
    version = call.request.headers.get("x-github-api-version", API_VERSION)
    refuse(version not in _VERSIONS, 400, f"Invalid API version: {version[:20]}")
    return version


def token_auth(call: Call) -> None:
    """A REST call: the personal access token or an unexpired installation token, else 401."""
    _version(call)
    refuse(not _github(call).token_valid(_bearer(call)), 401, BAD_CREDENTIALS)


def app_auth(call: Call) -> None:
    """An App call: a JWT signed with the App's key (iss = App id, at most 10 minutes long), else 401."""
    _version(call)
    problem = _github(call).jwt_problem(_bearer(call))
    refuse(problem is not None, 401, problem or "")


def _repo(call: Call) -> GitHubRepo:
    return must_find(_github(call).repo(call.param("owner"), call.param("repo")), "Not Found")


def _base(call: Call) -> str:
    return str(call.request.base_url).rstrip("/")


async def github_dispatch_workflow(call: Call) -> Response:
    """``POST /repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches`` ``{ref, inputs, return_run_details}``.

    200 with ``workflow_run_id``, ``run_url``, ``html_url`` when ``return_run_details`` is true (always under
    version 2026-03-10, which refuses the flag), else 204; 404 for an unknown repository or workflow, 422 for
    a missing ``ref`` or more than 25 inputs.
    """
    token_auth(call)
    repo = _repo(call)
    workflow = must_find(_github(call).workflow(repo, call.param("workflow")), "Not Found")
    body = call.json_object()
    details = body.get("return_run_details", False)
    new_version = call.request.headers.get("x-github-api-version") == "2026-03-10"
    refuse(new_version and "return_run_details" in body, 422, '"return_run_details" is not a permitted key.')
    refuse(not isinstance(details, bool), 422, "return_run_details must be a boolean")
    try:
        run = _github(call).dispatch_workflow(repo, workflow, body.get("ref"), body.get("inputs"))
    except ValueError as exc:
        return github_error(422, str(exc))
    if details or new_version:
        return JSONResponse(run.links(_base(call)), 200)
    return Response(status_code=204)


async def github_repository_dispatch(call: Call) -> Response:
    """``POST /repos/{owner}/{repo}/dispatches`` ``{event_type, client_payload}`` → 204."""
    token_auth(call)
    repo = _repo(call)
    body = call.json_object()
    try:
        _github(call).repository_dispatch(repo, body.get("event_type"), body.get("client_payload"))
    except ValueError as exc:
        return github_error(422, str(exc))
    return Response(status_code=204)


def _run(call: Call) -> Any:
    repo = _repo(call)
    run_id = call.param("run_id")
    run = _github(call).runs.get(int(run_id)) if DIGITS.fullmatch(run_id) else None
    return must_find(run if run is not None and run.repo is repo else None, "Not Found")


async def _rerun(call: Call, *, failed_only: bool) -> Response:
    token_auth(call)
    run = _run(call)
    call.json_object()  # an optional {"enable_debug_logging": bool}; anything but an object is a 400
    try:
        _github(call).rerun(run, failed_only=failed_only)
    except ValueError as exc:
        return github_error(403, str(exc))
    return JSONResponse({}, 201)


async def github_rerun(call: Call) -> Response:
    """``POST /repos/{owner}/{repo}/actions/runs/{run_id}/rerun`` → 201 ``{}`` (a new attempt, same id)."""
    return await _rerun(call, failed_only=False)


async def github_rerun_failed_jobs(call: Call) -> Response:
    """``POST /repos/{owner}/{repo}/actions/runs/{run_id}/rerun-failed-jobs`` → 201 ``{}``."""
    return await _rerun(call, failed_only=True)


async def github_get_run(call: Call) -> Response:
    """``GET /repos/{owner}/{repo}/actions/runs/{run_id}``: the run object."""
    token_auth(call)
    return JSONResponse(_run(call).v3(_base(call)))


def _created_filter(text: str) -> float:
    """The lower bound of ``created=>=<ISO 8601>`` (the one form of GitHub's date search the sandbox takes)."""
    since = text.removeprefix(">=")
    try:
        moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        moment = datetime.fromtimestamp(0)  # no time zone: refused below
    refuse(moment.tzinfo is None or since == text, 422, f"Invalid created filter: {text[:40]}")
    return moment.timestamp()


async def github_list_workflow_runs(call: Call) -> Response:
    """``GET …/actions/workflows/{workflow}/runs?branch=&event=&status=&head_sha=&created=>=<time>``: the
    workflow's runs, newest first, as ``{total_count, workflow_runs}``."""
    token_auth(call)
    repo = _repo(call)
    workflow = must_find(_github(call).workflow(repo, call.param("workflow")), "Not Found")
    query = call.request.query_params
    since = _created_filter(query["created"]) if "created" in query else None
    fields = {"branch": "head_branch", "event": "event", "head_sha": "head_sha"}
    runs = [
        run
        for run in sorted(_github(call).runs.values(), key=lambda r: r.id, reverse=True)
        if run.workflow is workflow
        and all(query.get(name) in (None, getattr(run, attr)) for name, attr in fields.items())
        and query.get("status") in (None, run.status, run.conclusion)
        and (since is None or run.created_at >= since)
    ]
    return JSONResponse({"total_count": len(runs), "workflow_runs": [run.v3(_base(call)) for run in runs]})


def _app_id(state: GitHubState) -> int | str:
    return int(state.app_id) if state.app_id.isdigit() else state.app_id


def _installation(call: Call, owner: str) -> Response:
    state = _github(call)
    installation = must_find(state.installation_for(owner), "Not Found")
    body = {"id": installation, "app_id": _app_id(state), "account": {"login": owner}, "permissions": APP_PERMISSIONS}
    return JSONResponse(body)


async def github_repo_installation(call: Call) -> Response:
    """``GET /repos/{owner}/{repo}/installation`` (App JWT): the installation on the repository's owner."""
    app_auth(call)
    return _installation(call, _repo(call).full_name.split("/")[0])


async def github_owner_installation(call: Call) -> Response:
    """``GET /orgs/{owner}/installation`` and ``GET /users/{owner}/installation`` (App JWT)."""
    app_auth(call)
    return _installation(call, call.param("owner"))


async def github_access_token(call: Call) -> Response:
    """``POST /app/installations/{id}/access_tokens`` (App JWT) → 201 ``{token, expires_at, permissions}``."""
    app_auth(call)
    number = call.param("id")
    minted = _github(call).issue_installation_token(int(number)) if DIGITS.fullmatch(number) else None
    token, expires_at = must_find(minted, "Not Found")
    body = {"token": token, "expires_at": expires_at, "permissions": APP_PERMISSIONS, "repository_selection": "all"}
    return JSONResponse(body, 201)


async def github_app(call: Call) -> Response:
    """``GET /app`` (App JWT): the App, with its permissions."""
    app_auth(call)
    body = {"id": _app_id(_github(call)), "slug": "chainer-sandbox", "name": "chainer sandbox"}
    return JSONResponse({**body, "permissions": APP_PERMISSIONS})


_REPO = "/repos/{owner}/{repo}"
_RUN = _REPO + "/actions/runs/{run_id}"
# method, path (Starlette syntax), action recorded for it, handler.
ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("POST", _REPO + "/actions/workflows/{workflow}/dispatches", "github.dispatch_workflow", github_dispatch_workflow),
    ("POST", _REPO + "/dispatches", "github.repository_dispatch", github_repository_dispatch),
    ("POST", _RUN + "/rerun", "github.rerun_workflow_run", github_rerun),
    ("POST", _RUN + "/rerun-failed-jobs", "github.rerun_workflow_run", github_rerun_failed_jobs),
    ("GET", _RUN, "github.get_run", github_get_run),
    ("GET", _REPO + "/actions/workflows/{workflow}/runs", "github.list_workflow_runs", github_list_workflow_runs),
    ("GET", _REPO + "/installation", "github.installation", github_repo_installation),
    ("GET", "/orgs/{owner}/installation", "github.installation", github_owner_installation),
    ("GET", "/users/{owner}/installation", "github.installation", github_owner_installation),
    ("POST", "/app/installations/{id}/access_tokens", "github.access_token", github_access_token),
    ("GET", "/app", "github.app", github_app),
)
