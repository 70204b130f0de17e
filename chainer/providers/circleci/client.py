"""The CircleCI client: API v2 and v1.1 calls (shared/reference/providers.md §4.2, §5.3, §5.4).

Every call authenticates with the ``Circle-Token`` header (accepted by both v2 and v1.1, unlike
project tokens) and sends ``Accept: application/json``: without it v1.1 answers EDN. Project slugs
are opaque (``gh/…``, ``github/…``, ``circleci/<id>/<id>``) and go into the path with their slashes
kept and every other reserved character percent-encoded; v1.1 branch names are encoded whole, so
``feature/x`` becomes ``feature%2Fx``. Arguments are checked before anything is sent: a malformed
trigger body would silently build the default branch (providers.md §5.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from chainer.errors import PermanentDownstreamError
from chainer.events import BuildEvent
from chainer.providers.base import HandlerClient
from chainer.providers.circleci.facts import (
    CREDENTIALS,
    MAX_PARAMETER_KEY,
    MAX_PARAMETER_VALUE,
    MAX_PARAMETERS,
    NAME,
    normalize_vcs,
)
from chainer.providers.http import (
    Api,
    CallResult,
    Throttle,
    json_body,
    numeric_id,
    required_text,
)


def _slug_path(slug: str, action: str) -> str:
    segments = slug.split("/")
    if len(segments) < 3 or any(s in ("", ".", "..") for s in segments):
        raise PermanentDownstreamError(
            f"{action}: project {slug!r} is not a project slug such as gh/<org>/<repo> or circleci/<id>/<id>"
        )
    return "/".join(quote(s, safe="") for s in segments)


def _legacy_project(params: Mapping[str, Any], action: str) -> str:
    project = required_text(params, "project", action)
    parts = project.split("/")
    vcs = normalize_vcs(parts[0]) if parts else None
    if len(parts) != 3 or vcs is None or any(p in ("", ".", "..") for p in parts):
        raise PermanentDownstreamError(f"{action}: project {project!r} must be <github|bitbucket>/<org>/<repo>")
    return "/".join(quote(p, safe="") for p in (vcs, parts[1], parts[2]))


def _check_parameters(value: Any, action: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise PermanentDownstreamError(f"{action}: 'parameters' must be a mapping")
    if len(value) > MAX_PARAMETERS:
        raise PermanentDownstreamError(f"{action}: {len(value)} parameters, CircleCI allows {MAX_PARAMETERS}")
    for key, item in value.items():
        if not isinstance(key, str) or not key or len(key) > MAX_PARAMETER_KEY:
            raise PermanentDownstreamError(
                f"{action}: parameter name {str(key)[:40]!r} must be 1 to {MAX_PARAMETER_KEY} characters"
            )
        if isinstance(item, float) or not isinstance(item, str | int | bool):
            raise PermanentDownstreamError(f"{action}: parameter {key!r} must be an integer, string or boolean")
        if isinstance(item, str) and len(item) > MAX_PARAMETER_VALUE:
            raise PermanentDownstreamError(
                f"{action}: parameter {key!r} is {len(item)} characters, CircleCI allows {MAX_PARAMETER_VALUE}"
            )
    return dict(value)


def _branch_or_tag(branch: str | None, tag: str | None, action: str) -> dict[str, str]:
    """``{"branch": …}`` or ``{"tag": …}``; a trigger naming neither is refused, since CircleCI would build
    the default branch instead (rules skip such actions before they are queued; this guards replays)."""
    if branch and tag:
        raise PermanentDownstreamError(f"{action}: give either branch or tag, not both")
    if branch:
        return {"branch": branch}
    if tag:
        return {"tag": tag}
    raise PermanentDownstreamError(
        f"{action}: no branch or tag to build; CircleCI would build the default branch, so nothing was sent"
    )


def _optional_text(params: Mapping[str, Any], name: str, action: str) -> str | None:
    value = params.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise PermanentDownstreamError(f"{action}: argument {name!r} must be a string")
    return value


class CircleCIClient(HandlerClient):
    """Executes the CircleCI actions."""

    provider = NAME

    def setup(self, http: httpx.AsyncClient, throttle: Throttle | None) -> None:
        self._api = Api(
            http, label="CircleCI", credentials=CREDENTIALS, scrub=self._scrub, clock=self._clock, throttle=throttle
        )
        self._base = self._settings.circleci_url
        self.handlers = {
            f"{NAME}.trigger_pipeline": self.trigger_pipeline,
            f"{NAME}.rerun_workflow": self.rerun_workflow,
            f"{NAME}.v1_trigger_build": self.v1_trigger_build,
            f"{NAME}.v1_retry_build": self.v1_retry_build,
        }

    def _headers(self, action: str) -> dict[str, str]:
        token = self._settings.circleci_token
        if not token:
            raise PermanentDownstreamError(f"{action} needs a CircleCI personal API token: set {CREDENTIALS}")
        return {"Circle-Token": token.reveal(), "Content-Type": "application/json", "Accept": "application/json"}

    async def trigger_pipeline(self, params: Mapping[str, Any], event: BuildEvent) -> CallResult:
        """``circleci.trigger_pipeline``: ``POST /api/v2/project/{slug}/pipeline`` → 201 ``{id, number, state}``."""
        action = "circleci.trigger_pipeline"
        path = _slug_path(required_text(params, "project", action), action)
        branch = _optional_text(params, "branch", action)
        tag = _optional_text(params, "tag", action)
        parameters = None if params.get("parameters") is None else _check_parameters(params["parameters"], action)
        body: dict[str, Any] = _branch_or_tag(branch, tag, action)
        if parameters is not None:
            body["parameters"] = parameters
        headers = self._headers(action)
        response = await self._api.send(
            "POST", f"{self._base}/api/v2/project/{path}/pipeline", json=body, headers=headers
        )
        data = json_body(response)
        answer: dict[str, Any] = data if isinstance(data, dict) else {}
        pipeline_id = answer.get("id")
        detail = {k: answer[k] for k in ("number", "state", "created_at") if isinstance(answer.get(k), int | str)}
        if isinstance(pipeline_id, str) and pipeline_id:
            return self._api.result(response, body, pipeline_id, detail)
        detail["note"] = "CircleCI answered without a pipeline id; the pipeline was created"
        return self._api.result(response, body, None, detail)

    async def rerun_workflow(self, params: Mapping[str, Any], event: BuildEvent) -> CallResult:
        """``circleci.rerun_workflow``: ``POST /api/v2/workflow/{id}/rerun`` → 202 ``{workflow_id}``."""
        action = "circleci.rerun_workflow"
        workflow = required_text(params, "workflow", action)
        from_failed = params.get("from_failed", True)
        if not isinstance(from_failed, bool):
            raise PermanentDownstreamError(f"{action}: argument 'from_failed' must be true or false")
        body: dict[str, Any] = {"from_failed": True} if from_failed else {}
        headers = self._headers(action)
        url = f"{self._base}/api/v2/workflow/{quote(workflow, safe='')}/rerun"
        response = await self._api.send("POST", url, json=body, headers=headers)
        data = json_body(response)
        new_id = data.get("workflow_id") if isinstance(data, dict) else None
        detail: dict[str, Any] = {"rerun_of": workflow, "from_failed": from_failed}
        if isinstance(new_id, str) and new_id:
            return self._api.result(response, body, new_id, detail)
        detail["note"] = "CircleCI answered without the new workflow id; the rerun was accepted"
        return self._api.result(response, body, None, detail)

    async def v1_trigger_build(self, params: Mapping[str, Any], event: BuildEvent) -> CallResult:
        """``circleci.v1_trigger_build``: a job on a branch or a tag with API v1.1 → job summary.

        A branch builds with ``POST /api/v1.1/project/{vcs}/{org}/{repo}/tree/{branch}``; a tag with
        ``POST /api/v1.1/project/{vcs}/{org}/{repo}`` and ``{"tag": …}`` in the body (the v1.1 reference's
        project trigger; ``revision`` cannot go with a tag there).
        """
        action = "circleci.v1_trigger_build"
        project = _legacy_project(params, action)
        ref = _branch_or_tag(_optional_text(params, "branch", action), _optional_text(params, "tag", action), action)
        body: dict[str, Any] = {k: v for k, v in ref.items() if k == "tag"}
        revision = _optional_text(params, "revision", action)
        if revision and "tag" in ref:
            raise PermanentDownstreamError(f"{action}: 'revision' cannot go with a tag (CircleCI v1.1 refuses it)")
        if revision:
            body["revision"] = revision
        build_parameters = params.get("build_parameters")
        if build_parameters is not None:
            if not isinstance(build_parameters, Mapping):
                raise PermanentDownstreamError(f"{action}: 'build_parameters' must be a mapping")
            body["build_parameters"] = dict(build_parameters)
        headers = self._headers(action)
        url = f"{self._base}/api/v1.1/project/{project}"
        if "branch" in ref:
            url += f"/tree/{quote(ref['branch'], safe='')}"
        response = await self._api.send("POST", url, json=body, headers=headers)
        return self._job_result(response, body, "the build was triggered")

    async def v1_retry_build(self, params: Mapping[str, Any], event: BuildEvent) -> CallResult:
        """``circleci.v1_retry_build``: ``POST /api/v1.1/project/{vcs}/{org}/{repo}/{build_num}/retry`` → job."""
        action = "circleci.v1_retry_build"
        project = _legacy_project(params, action)
        build = numeric_id(params.get("build"), "build", action)
        headers = self._headers(action)
        url = f"{self._base}/api/v1.1/project/{project}/{build}/retry"
        response = await self._api.send("POST", url, headers=headers)
        result = self._job_result(response, None, "the retry was accepted")
        result.detail["retry_of"] = int(build)
        return result

    def _job_result(self, response: httpx.Response, body: dict[str, Any] | None, accepted: str) -> CallResult:
        data = json_body(response)
        answer: dict[str, Any] = data if isinstance(data, dict) else {}
        build_num = answer.get("build_num")
        detail = {k: answer[k] for k in ("build_num", "build_url", "status") if isinstance(answer.get(k), int | str)}
        if isinstance(build_num, int) and not isinstance(build_num, bool):
            return self._api.result(response, body, str(build_num), detail)
        detail["note"] = f"CircleCI answered without a build number; {accepted}"
        return self._api.result(response, body, None, detail)
