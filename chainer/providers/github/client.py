"""The GitHub client: the REST calls of the ``github.*`` actions (shared/reference/more-providers.md §1.6-§1.8, §4.5).

Every request carries ``Authorization: Bearer <token>``, ``Accept: application/vnd.github+json``, the pinned
``X-GitHub-Api-Version: 2022-11-28`` and chainer's ``User-Agent`` (GitHub refuses requests without one). The
token is ``CHAINER_GITHUB_TOKEN``, or the installation token of the target repository's owner when a GitHub
App is configured (``chainer.providers.github.auth``), renewed once when GitHub answers 401.

GitHub says "wait" in two ways (more-providers §1.8): ``403`` or ``429`` with ``retry-after``, or with
``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset`` (an epoch); a 403 or 429 that says "rate limit" without
either means at least a minute. ``GitHubApi`` makes those a ``TransientDownstreamError`` carrying
``retry_after``; any other 403 (no permission) and every 404 or 422 is permanent, with GitHub's message and the
field errors of a 422.

A workflow dispatch asks for ``return_run_details: true``: GitHub answers 200 with ``workflow_run_id``, the
id lineage registers; a server without the flag (GitHub Enterprise Server) answers 204, and one that refuses
it (400/422 naming it) gets the same dispatch once more without it: nothing was started by the refused one.

Reconciliation: when a dispatch's answer is lost after it was sent (a timeout or a dropped connection: the
outcome is ambiguous), the client lists the workflow's runs (``GET …/actions/workflows/{workflow}/runs`` with
``event=workflow_dispatch``, the branch and ``created=>=`` the attempt's start less ``CLOCK_SKEW_S``). GitHub
gives a run no marker chainer could set (``inputs`` are not echoed in runs, more-providers §4.6), so the match
is by workflow, event, branch and time: exactly one such run is taken as the one this dispatch started (its
id recorded for lineage); none or several leave the outcome ambiguous (the dead-letter list, DESIGN §6).
A person dispatching the same workflow on the same branch within those seconds would be mistaken for it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from chainer import __version__
from chainer.errors import (
    AmbiguousDownstreamError,
    DownstreamError,
    PermanentDownstreamError,
    TransientDownstreamError,
)
from chainer.events import BuildEvent
from chainer.providers.base import HandlerClient
from chainer.providers.github.auth import AppTokens
from chainer.providers.github.facts import (
    ACCEPT,
    API_VERSION,
    APP_VARIABLES,
    CREDENTIALS,
    MAX_CLIENT_PAYLOAD_KEYS,
    MAX_EVENT_TYPE,
    MAX_INPUTS,
    NAME,
)
from chainer.providers.http import (
    BODY_EXCERPT,
    Api,
    CallResult,
    Throttle,
    json_body,
    numeric_id,
    required_text,
    retry_after_seconds,
)

# A rate limit without a retry-after or reset to go by: GitHub's advice is to wait at least a minute.
DEFAULT_RATE_WAIT_S = 60.0
# How far GitHub's clock may be behind chainer's when a lost dispatch's run is looked for by its creation time.
CLOCK_SKEW_S = 5.0
_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
_REPO = re.compile(r"[A-Za-z0-9._-]{1,100}")
_WORKFLOW_FILE = re.compile(r"[^/\\]+\.ya?ml")


def rate_limit_wait(response: httpx.Response, now: float) -> float | None:
    """Seconds GitHub asks to wait before trying again, or None when the 403/429 is not a rate limit."""
    headers = response.headers
    retry_after = retry_after_seconds(headers.get("retry-after"), now)
    if retry_after is not None:
        return retry_after
    if headers.get("x-ratelimit-remaining", "").strip() == "0":
        try:
            reset = float(headers.get("x-ratelimit-reset", ""))
        except ValueError:
            return DEFAULT_RATE_WAIT_S
        return max(1.0, reset - now + 1.0) if math.isfinite(reset) else DEFAULT_RATE_WAIT_S
    if response.status_code == 429 or "rate limit" in response.text.lower():
        return DEFAULT_RATE_WAIT_S
    return None


def error_text(raw: str) -> str:
    """GitHub's error text: ``message``, then each field error of a 422 (``errors[].message`` or its code)."""
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return " ".join(raw.split())[:200] or "(empty body)"
    parts = [data["message"]] if isinstance(data.get("message"), str) and data["message"] else []
    errors = data.get("errors")
    for item in errors if isinstance(errors, list) else ():
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, dict):
            text = item.get("message") or " ".join(str(item[k]) for k in ("field", "code") if item.get(k))
            parts.append(str(text))
    return "; ".join(parts)[:BODY_EXCERPT] or "(no message)"


class GitHubApi(Api):
    """``Api`` with GitHub's answers: rate limits are waits, other 4xx are permanent with GitHub's own words."""

    def _client_error(self, method: str, url: httpx.URL, response: httpx.Response) -> DownstreamError | None:
        status = response.status_code
        clean = self.scrub(response.content.decode("utf-8", "replace"))
        message = f"{self.label} {method} {self.scrub(url.path)} answered {status}: {self.scrub(error_text(clean))}"
        wait = rate_limit_wait(response, self._clock()) if status in (403, 429) else None
        if wait is not None:
            message += f" (rate limited: retry in {math.ceil(wait)} s)"
            return TransientDownstreamError(message, status=status, retry_after=wait, body=clean[:BODY_EXCERPT])
        if status in (401, 403):
            message += f" (check {self._credentials} and its permissions)"
        elif status == 404:
            message += " (no such repository, workflow or run, or the credentials cannot see it)"
        return PermanentDownstreamError(message, status=status, body=clean[:BODY_EXCERPT])

    def error_for(self, response: httpx.Response) -> DownstreamError:
        """The error a non-2xx ``response`` this API handed back stands for."""
        error = self._classify(response.request.method, response.request.url, response, safe=False)
        return error or PermanentDownstreamError(f"{self.label}: unexpected answer {response.status_code}")


def _seconds(value: Any) -> float:
    """Unix seconds of an ISO 8601 time GitHub sent (``2026-11-20T10:00:00Z``); minus infinity when it is none."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return -math.inf


def split_repo(params: Mapping[str, Any], action: str) -> tuple[str, str]:
    """``(owner, repo)`` of the ``repo`` argument; PermanentDownstreamError unless it is ``owner/repo``."""
    text = required_text(params, "repo", action)
    owner, sep, repo = text.partition("/")
    if not sep or not _OWNER.fullmatch(owner) or not _REPO.fullmatch(repo) or repo in (".", ".."):
        raise PermanentDownstreamError(f"{action}: repo {text!r} is not owner/repo")
    return owner, repo


def _workflow(params: Mapping[str, Any], action: str) -> str:
    value = params.get("workflow")
    if (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.strip().isdigit()):
        return numeric_id(value, "workflow", action)
    text = required_text(params, "workflow", action)
    name = text.removeprefix(".github/workflows/")
    if not _WORKFLOW_FILE.fullmatch(name):
        raise PermanentDownstreamError(
            f"{action}: workflow {text!r} is neither a workflow id nor a file name such as deploy.yml"
        )
    return quote(name, safe="")


def _mapping(params: Mapping[str, Any], name: str, action: str, limit: int) -> dict[str, Any] | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise PermanentDownstreamError(f"{action}: argument {name!r} must be a mapping")
    if len(value) > limit:
        raise PermanentDownstreamError(f"{action}: {len(value)} entries in {name!r}, GitHub allows {limit}")
    return dict(value)


class GitHubClient(HandlerClient):
    """Executes the GitHub actions; see the module docstring."""

    provider = NAME

    def setup(self, http: httpx.AsyncClient, throttle: Throttle | None) -> None:
        settings, scrub, clock = self._settings, self._scrub, self._clock
        self._base = settings.github_url
        hint = CREDENTIALS if not settings.github_app_id else APP_VARIABLES
        self._api = GitHubApi(http, label="GitHub", credentials=hint, scrub=scrub, clock=clock, throttle=throttle)
        self.app: AppTokens | None = None
        if settings.github_app_id and settings.github_app_private_key:
            app_api = GitHubApi(
                http, label="GitHub App", credentials=APP_VARIABLES, scrub=scrub, clock=clock, throttle=throttle
            )
            self.app = AppTokens(settings, app_api, clock=clock)
        self.handlers = {
            f"{NAME}.dispatch_workflow": self.dispatch_workflow,
            f"{NAME}.repository_dispatch": self.repository_dispatch,
            f"{NAME}.rerun_workflow_run": self.rerun_workflow_run,
        }

    async def check(self) -> list[str]:
        """The start-up check: a configured App must be known to GitHub (``GET /app``) with Actions and Contents
        write; a token is only tried by the first action."""
        if self.app is None:
            return []
        try:
            found = await self.app.app()
        except DownstreamError as exc:
            exc.about(NAME)
            raise
        granted = found.get("permissions")
        permissions: dict[str, Any] = granted if isinstance(granted, dict) else {}
        needs = {
            "actions": "github.dispatch_workflow and github.rerun_workflow_run",
            "contents": "github.repository_dispatch",
        }
        return [
            f"the GitHub App {self.app.app_id} lacks the {name}: write permission, so {effect} will be refused"
            for name, effect in needs.items()
            if permissions.get(name) != "write"
        ]

    # -- requests ---------------------------------------------------------------------------------

    async def _token(self, action: str, owner: str, repo: str, stale: str | None = None) -> str:
        if self.app is not None:
            return await self.app.token(owner, repo, stale=stale)
        token = self._settings.github_token
        if not token:
            raise PermanentDownstreamError(f"{action} needs GitHub credentials: set {CREDENTIALS}")
        return token.reveal()

    def _url(self, owner: str, repo: str, path: str) -> str:
        return f"{self._base}/repos/{quote(owner, safe='')}/{quote(repo, safe='')}{path}"

    async def _post(
        self, action: str, owner: str, repo: str, path: str, body: dict[str, Any], *, hand_back: tuple[int, ...] = ()
    ) -> httpx.Response:
        """``POST {base}/repos/{owner}/{repo}{path}`` with ``body``; an App token GitHub refuses is renewed once."""
        return await self._request("POST", action, owner, repo, path, body=body, hand_back=hand_back)

    async def _request(
        self,
        method: str,
        action: str,
        owner: str,
        repo: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        hand_back: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One REST call on a repository; a GET is a look-up (``safe``). An App token refused is renewed once."""
        url = self._url(owner, repo, path)
        token = await self._token(action, owner, repo)
        for renewed in (False, True):
            headers = {
                "Authorization": f"Bearer {token}",
                "Accept": ACCEPT,
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": f"chainer/{__version__}",
            }
            if body is not None:
                headers["Content-Type"] = "application/json"
            renewable = (401,) if self.app is not None and not renewed else ()
            response = await self._api.send(
                method,
                url,
                params=params,
                json=body,
                headers=headers,
                safe=method == "GET",
                hand_back=hand_back + renewable,
            )
            if response.status_code != 401 or not renewable:
                break
            token = await self._token(action, owner, repo, stale=token)
        return response

    # -- actions ----------------------------------------------------------------------------------

    async def dispatch_workflow(self, params: Mapping[str, Any], event: BuildEvent) -> CallResult:
        """``github.dispatch_workflow``: ``POST …/actions/workflows/{workflow}/dispatches`` → 200 with the run id."""
        action = f"{NAME}.dispatch_workflow"
        owner, repo = split_repo(params, action)
        workflow = _workflow(params, action)
        ref = required_text(params, "ref", action)
        inputs = _mapping(params, "inputs", action, MAX_INPUTS)
        body: dict[str, Any] = {"ref": ref, **({"inputs": inputs} if inputs is not None else {})}
        path = f"/actions/workflows/{workflow}/dispatches"
        started = self._clock()
        try:
            response = await self._post(
                action, owner, repo, path, {**body, "return_run_details": True}, hand_back=(400, 422)
            )
            if response.status_code in (400, 422):
                if "return_run_details" not in response.text:
                    raise self._api.error_for(response)
                response = await self._post(action, owner, repo, path, body)  # a server without the flag: as before
            else:
                body["return_run_details"] = True
        except AmbiguousDownstreamError as lost:
            return await self._find_dispatched(action, (owner, repo), workflow, ref, body, started, lost)
        data = json_body(response)
        answer: dict[str, Any] = data if isinstance(data, dict) else {}
        run_id = answer.get("workflow_run_id")
        detail = {
            k: answer[k] for k in ("workflow_run_id", "run_url", "html_url") if isinstance(answer.get(k), int | str)
        }
        detail.update(repo=f"{owner}/{repo}", ref=ref)
        if isinstance(run_id, int) and not isinstance(run_id, bool):
            return self._api.result(response, body, str(run_id), detail)
        detail["note"] = f"GitHub answered {response.status_code} without run details; the run was started"
        return self._api.result(response, body, None, detail)

    async def _find_dispatched(
        self,
        action: str,
        target: tuple[str, str],
        workflow: str,
        ref: str,
        body: dict[str, Any],
        started: float,
        lost: AmbiguousDownstreamError,
    ) -> CallResult:
        """The run a dispatch whose answer was lost started (see the module docstring); else ``lost`` stands."""
        owner, repo = target
        branch = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
        since = datetime.fromtimestamp(started - CLOCK_SKEW_S, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        query = {"event": "workflow_dispatch", "branch": branch, "created": f">={since}"}
        path = f"/actions/workflows/{workflow}/runs"
        where = f"GET {self._api.redact(httpx.URL(self._url(owner, repo, path), params=query))}"
        try:
            response = await self._request("GET", action, owner, repo, path, params=query)
        except DownstreamError as exc:
            message = f"{lost.message}; looking for the run failed: {exc.message}"
            raise AmbiguousDownstreamError(message, status=lost.status) from exc
        data = json_body(response)
        listed = data.get("workflow_runs") if isinstance(data, dict) else None
        runs = [
            run
            for run in (listed if isinstance(listed, list) else [])
            if isinstance(run, dict)
            and run.get("event") == "workflow_dispatch"
            and run.get("head_branch") == branch
            and isinstance(run.get("id"), int)
            and _seconds(run.get("created_at")) >= started - CLOCK_SKEW_S
        ]
        if len(runs) != 1:
            count = "no run" if not runs else f"{len(runs)} runs ({', '.join(str(r['id']) for r in runs[:5])})"
            raise AmbiguousDownstreamError(f"{lost.message}; {count} of the dispatch found by {where}")
        run = runs[0]
        detail: dict[str, Any] = {"workflow_run_id": run["id"]}
        detail.update({k: run[k] for k in ("html_url",) if isinstance(run.get(k), str)})
        detail.update(repo=f"{owner}/{repo}", ref=ref, reconciled=f"the answer was lost; its run was found by {where}")
        request = {
            "method": "POST",
            "url": self._api.redact(httpx.URL(self._url(owner, repo, f"/actions/workflows/{workflow}/dispatches"))),
            "body": {**body, "return_run_details": True},
        }
        return CallResult(response.status_code, str(run["id"]), detail, request)

    async def repository_dispatch(self, params: Mapping[str, Any], event: BuildEvent) -> CallResult:
        """``github.repository_dispatch``: ``POST /repos/{owner}/{repo}/dispatches`` → 204 (no run id)."""
        action = f"{NAME}.repository_dispatch"
        owner, repo = split_repo(params, action)
        event_type = required_text(params, "event_type", action)
        if len(event_type) > MAX_EVENT_TYPE:
            raise PermanentDownstreamError(f"{action}: event_type is over {MAX_EVENT_TYPE} characters")
        payload = _mapping(params, "client_payload", action, MAX_CLIENT_PAYLOAD_KEYS)
        body: dict[str, Any] = {"event_type": event_type}
        if payload is not None:
            body["client_payload"] = payload
        response = await self._post(action, owner, repo, "/dispatches", body)
        detail = {"repo": f"{owner}/{repo}", "event_type": event_type}
        return self._api.result(response, body, None, detail)

    async def rerun_workflow_run(self, params: Mapping[str, Any], event: BuildEvent) -> CallResult:
        """``github.rerun_workflow_run``: ``POST …/actions/runs/{run}/rerun-failed-jobs`` (or ``/rerun``) → 201."""
        action = f"{NAME}.rerun_workflow_run"
        owner, repo = split_repo(params, action)
        run = numeric_id(params.get("run"), "run", action)
        failed_only = params.get("failed_only", True)
        if not isinstance(failed_only, bool):
            raise PermanentDownstreamError(f"{action}: argument 'failed_only' must be true or false")
        path = f"/actions/runs/{run}/" + ("rerun-failed-jobs" if failed_only else "rerun")
        response = await self._post(action, owner, repo, path, {})
        # The new attempt keeps the run id (run_attempt + 1): that id is how it reports back.
        detail = {"repo": f"{owner}/{repo}", "rerun_of": int(run), "failed_only": failed_only}
        return self._api.result(response, {}, run, detail)
