"""The GitHub client against a real HTTP server on 127.0.0.1: each action's exact request (method, path, headers,
body) and its CallResult; rate limits are waits (retry_after), other 4xx permanent with GitHub's words; arguments
checked before sending; the token in no error or record; a rate-limited job is deferred, not dead."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from arq.worker import Retry
from redis.asyncio import Redis
from starlette.responses import JSONResponse, Response

from chainer import __version__
from chainer.app import create_app
from chainer.errors import (
    AmbiguousDownstreamError,
    DownstreamError,
    PermanentDownstreamError,
    TransientDownstreamError,
)
from chainer.events import BuildEvent
from chainer.jobs import run_action
from chainer.providers import Downstream
from chainer.providers.http import default_http_client
from chainer.settings import Secret, Settings
from chainer.store import Store
from tests.helpers import NOW, Clock, job_ctx, parse_rules
from tests.providers.github.support import RUN_ID, SECRET, TOKEN, ScriptedGitHub, delivery, serve, workflow_run

DISPATCH = "/repos/acme/api/actions/workflows/deploy.yml/dispatches"
RERUN_FAILED = f"/repos/acme/lib/actions/runs/{RUN_ID}/rerun-failed-jobs"
EVENT = BuildEvent(
    provider="github",
    kind="workflow",
    event_id="evt_gh",
    project="acme/lib",
    status="failed",
    raw_status="completed/failure",
    branch="main",
    commit="a" * 40,
    build_id=RUN_ID,
)


@pytest.fixture
async def api() -> AsyncIterator[ScriptedGitHub]:
    async with serve(ScriptedGitHub()) as scripted:
        yield scripted


def settings(api: ScriptedGitHub, **changes: Any) -> Settings:
    return Settings(github_url=api.url, github_token=Secret(TOKEN), **changes)


async def execute(api: ScriptedGitHub, action: str, params: dict[str, Any], **changes: Any) -> Any:
    async with default_http_client() as http:
        return await Downstream(settings(api, **changes), http, clock=Clock()).execute(action, params, EVENT)


def assert_github_headers(headers: dict[str, str], token: str = TOKEN) -> None:
    assert headers["authorization"] == f"Bearer {token}"
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"
    assert headers["user-agent"] == f"chainer/{__version__}"
    assert headers["content-type"] == "application/json"


async def test_dispatch_workflow_asks_for_run_details_and_returns_the_run_id(api: ScriptedGitHub) -> None:
    details = {
        "workflow_run_id": 22283,
        "run_url": "https://api.github.com/repos/acme/api/actions/runs/22283",
        "html_url": "https://github.com/acme/api/actions/runs/22283",
    }
    api.on("POST", DISPATCH, JSONResponse(details, 200))
    params = {"repo": "acme/api", "workflow": "deploy.yml", "ref": "main", "inputs": {"sha": "a" * 40, "n": 3}}
    result = await execute(api, "github.dispatch_workflow", params)
    [seen] = api.seen
    assert (seen.method, seen.path) == ("POST", DISPATCH)
    assert_github_headers(seen.headers)
    assert seen.json() == {"ref": "main", "inputs": {"sha": "a" * 40, "n": 3}, "return_run_details": True}
    assert (result.status, result.downstream_id) == (200, "22283")
    assert result.detail == {**details, "repo": "acme/api", "ref": "main"}
    assert result.request == {"method": "POST", "url": api.url + DISPATCH, "body": seen.json()}
    assert TOKEN not in json.dumps(result.request) + json.dumps(result.detail)


async def test_dispatch_answered_204_is_accepted_without_a_run_id(api: ScriptedGitHub) -> None:
    """GitHub Enterprise Server (and versions without return_run_details) answer 204: the run started, no id."""
    api.on("POST", "/repos/acme/api/actions/workflows/161335/dispatches", Response(status_code=204))
    result = await execute(api, "github.dispatch_workflow", {"repo": "acme/api", "workflow": 161335, "ref": "v1.2"})
    assert (result.status, result.downstream_id) == (204, None)
    assert "without run details" in result.detail["note"]
    assert api.seen[0].json() == {"ref": "v1.2", "return_run_details": True}


async def test_a_server_that_refuses_the_flag_gets_the_dispatch_again_without_it(api: ScriptedGitHub) -> None:
    refusal = JSONResponse({"message": 'Invalid request.\n\n"return_run_details" is not a permitted key.'}, 422)
    api.on("POST", DISPATCH, refusal, Response(status_code=204))
    params = {"repo": "acme/api", "workflow": ".github/workflows/deploy.yml", "ref": "main"}
    result = await execute(api, "github.dispatch_workflow", params)
    assert [s.json() for s in api.seen] == [{"ref": "main", "return_run_details": True}, {"ref": "main"}]
    assert (result.status, result.downstream_id, result.request["body"]) == (204, None, {"ref": "main"})


async def test_repository_dispatch_sends_the_event_type_and_client_payload(api: ScriptedGitHub) -> None:
    api.on("POST", "/repos/acme/api/dispatches", Response(status_code=204))
    params = {"repo": "acme/api", "event_type": "chainer.deploy", "client_payload": {"sha": "a" * 40}}
    result = await execute(api, "github.repository_dispatch", params)
    [seen] = api.seen
    assert_github_headers(seen.headers)
    assert seen.json() == {"event_type": "chainer.deploy", "client_payload": {"sha": "a" * 40}}
    assert (result.status, result.downstream_id) == (204, None)


@pytest.mark.parametrize(
    ("failed_only", "path"), [(None, "rerun-failed-jobs"), (True, "rerun-failed-jobs"), (False, "rerun")]
)
async def test_rerun_workflow_run_reruns_failed_jobs_by_default(
    api: ScriptedGitHub, failed_only: bool | None, path: str
) -> None:
    api.on("POST", f"/repos/acme/lib/actions/runs/{RUN_ID}/{path}", JSONResponse({}, 201))
    params: dict[str, Any] = {"repo": "acme/lib", "run": RUN_ID}
    if failed_only is not None:
        params["failed_only"] = failed_only
    result = await execute(api, "github.rerun_workflow_run", params)
    [seen] = api.seen
    assert seen.path == f"/repos/acme/lib/actions/runs/{RUN_ID}/{path}"
    assert_github_headers(seen.headers)
    assert seen.json() == {}
    assert (result.status, result.downstream_id) == (201, str(RUN_ID))  # the new attempt reports back by this id
    assert result.detail == {"repo": "acme/lib", "rerun_of": RUN_ID, "failed_only": failed_only is not False}


RESET = NOW + 120


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind", "retry_after", "text"),
    [
        (
            403,
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(RESET))},
            {"message": "API rate limit exceeded for user ID 1."},
            TransientDownstreamError,
            121.0,
            "rate limited",
        ),
        (
            429,
            {"retry-after": "30"},
            {"message": "secondary rate limit"},
            TransientDownstreamError,
            30.0,
            "retry in 30",
        ),
        (
            403,
            {"retry-after": "7"},
            {"message": "You have exceeded a secondary rate limit."},
            TransientDownstreamError,
            7.0,
            "secondary rate limit",
        ),
        (
            403,
            {},
            {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."},
            TransientDownstreamError,
            60.0,
            "retry in 60 s",
        ),
        (429, {}, {"message": "Too many requests"}, TransientDownstreamError, 60.0, "Too many requests"),
        (
            403,
            {"x-ratelimit-remaining": "4999"},
            {"message": "Resource not accessible by personal access token"},
            PermanentDownstreamError,
            None,
            "Resource not accessible by personal access token (check CHAINER_GITHUB_TOKEN",
        ),
        (401, {}, {"message": "Bad credentials"}, PermanentDownstreamError, None, "answered 401: Bad credentials"),
        (404, {}, {"message": "Not Found"}, PermanentDownstreamError, None, "Not Found (no such repository"),
        (
            422,
            {},
            {
                "message": "Validation Failed",
                "errors": [
                    {"resource": "Dispatch", "field": "ref", "code": "invalid"},
                    {"message": "No ref found for: nope"},
                ],
            },
            PermanentDownstreamError,
            None,
            "Validation Failed; ref invalid; No ref found for: nope",
        ),
        (
            422,
            {},
            {"message": 'Unexpected inputs provided: ["x"]'},
            PermanentDownstreamError,
            None,
            'Unexpected inputs provided: ["x"]',
        ),
        (500, {}, {"message": "Server Error"}, TransientDownstreamError, None, "answered 500: Server Error"),
        (502, {"retry-after": "5"}, "<html>bad gateway</html>", TransientDownstreamError, 5.0, "bad gateway"),
    ],
    ids=[
        "primary-403",
        "429-retry-after",
        "secondary-403-retry-after",
        "secondary-403-bare",
        "429-bare",
        "403-permission",
        "401",
        "404",
        "422-fields",
        "422-inputs",
        "500",
        "502",
    ],
)
async def test_answers_are_classified_rate_limits_as_waits(
    api: ScriptedGitHub,
    status: int,
    headers: dict[str, str],
    body: Any,
    kind: type[DownstreamError],
    retry_after: float | None,
    text: str,
) -> None:
    answer = Response(body, status, headers=headers) if isinstance(body, str) else JSONResponse(body, status, headers)
    api.on("POST", DISPATCH, answer)
    with pytest.raises(DownstreamError) as info:
        await execute(api, "github.dispatch_workflow", {"repo": "acme/api", "workflow": "deploy.yml", "ref": "main"})
    error = info.value
    assert type(error) is kind and (error.provider, error.action) == ("github", "github.dispatch_workflow")
    assert (error.status, error.retry_after) == (status, retry_after)
    assert text in error.message, error.message
    assert len(api.seen) == 1


async def test_a_timeout_after_sending_a_dispatch_is_ambiguous(api: ScriptedGitHub) -> None:
    api.on("POST", DISPATCH, Response(status_code=204))
    api.delay = 1.0
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=0.2)) as http:
        downstream = Downstream(settings(api), http)
        with pytest.raises(AmbiguousDownstreamError, match="may have taken effect"):
            params = {"repo": "acme/api", "workflow": "deploy.yml", "ref": "main"}
            await downstream.execute("github.dispatch_workflow", params, EVENT)


@pytest.mark.parametrize(
    ("action", "params", "message"),
    [
        ("github.dispatch_workflow", {"repo": "acme", "workflow": "deploy.yml"}, "repo 'acme' is not owner/repo"),
        ("github.dispatch_workflow", {"repo": "acme/api/x", "workflow": "a.yml"}, "is not owner/repo"),
        ("github.dispatch_workflow", {"repo": "acme/api", "workflow": "../x.yml"}, "neither a workflow id nor"),
        ("github.dispatch_workflow", {"repo": "acme/api", "workflow": "deploy.yml", "ref": " "}, "'ref' is missing"),
        (
            "github.dispatch_workflow",
            {"repo": "acme/api", "workflow": "d.yml", "inputs": {str(i): i for i in range(26)}},
            "26 entries in 'inputs', GitHub allows 25",
        ),
        ("github.repository_dispatch", {"repo": "acme/api", "event_type": "x" * 101}, "over 100 characters"),
        (
            "github.repository_dispatch",
            {"repo": "acme/api", "event_type": "e", "client_payload": [1]},
            "'client_payload' must be a mapping",
        ),
        ("github.rerun_workflow_run", {"repo": "acme/lib", "run": "latest"}, "'run' must be a numeric id"),
        ("github.rerun_workflow_run", {"repo": "acme/lib", "run": 1, "failed_only": "yes"}, "must be true or false"),
    ],
)
async def test_arguments_are_checked_before_anything_is_sent(
    api: ScriptedGitHub, action: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(PermanentDownstreamError) as info:
        await execute(api, action, {"ref": "main", **params})
    assert message in info.value.message and info.value.action == action
    assert api.seen == []


async def test_without_credentials_nothing_is_sent(api: ScriptedGitHub) -> None:
    async with default_http_client() as http:
        downstream = Downstream(Settings(github_url=api.url), http)
        with pytest.raises(PermanentDownstreamError, match="needs GitHub credentials: set CHAINER_GITHUB_TOKEN"):
            await downstream.execute("github.rerun_workflow_run", {"repo": "acme/lib", "run": 1}, EVENT)
        assert await downstream.clients["github"].check() == []
    assert api.seen == []


async def test_the_token_never_shows_in_errors_even_when_github_echoes_it(api: ScriptedGitHub) -> None:
    api.on("POST", DISPATCH, JSONResponse({"message": f"token {TOKEN} is revoked"}, 401))
    with pytest.raises(PermanentDownstreamError) as info:
        await execute(api, "github.dispatch_workflow", {"repo": "acme/api", "workflow": "deploy.yml", "ref": "main"})
    error = info.value
    for text in (str(error), repr(error), error.message, error.body, str(error.args)):
        assert TOKEN not in text
    assert "token *** is revoked" in error.message


async def test_a_rate_limited_action_is_deferred_by_the_wait_and_stays_pending(
    api: ScriptedGitHub, redis: Redis
) -> None:
    """Through the path a user takes: a failed run posted to /hooks/github, its rerun job meets a rate-limit 403;
    the job is retried after GitHub's reset (arq Retry), the action is not dead, and the next try succeeds."""
    rules = parse_rules(
        "version: 1\nrules:\n  - name: rerun-failures\n    when: {provider: github, status: failed}\n"
        "    then:\n      - github.rerun_workflow_run: {}\n"
    )
    hook_settings = settings(api, github_webhook_secrets=(Secret(SECRET),))
    store = Store(redis)
    app = create_app(hook_settings, ruleset=rules, store=store)
    body, headers = delivery(workflow_run("failure"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        accepted = await client.post("/hooks/github", content=body, headers=headers)
    assert accepted.status_code == 202 and accepted.json()["queued"] == 1, accepted.text
    limited = JSONResponse(
        {"message": "API rate limit exceeded"},
        403,
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW + 600))},
    )
    api.on("POST", RERUN_FAILED, limited, JSONResponse({}, 201))
    action = f"{accepted.json()['event_id']}:rerun-failures:0"
    async with default_http_client() as http:
        ctx = job_ctx(store, hook_settings, Downstream(hook_settings, http, clock=Clock()))
        with pytest.raises(Retry) as deferred:
            await run_action(ctx, action)
        assert deferred.value.defer_score is not None and deferred.value.defer_score >= 601_000
        ledger = await store.get_ledger(action)
        assert ledger is not None and ledger.state == "pending"
        assert await run_action({**ctx, "job_try": 2}, action) == "done"
    assert [s.path for s in api.seen] == [RERUN_FAILED, RERUN_FAILED]
    types = [r["type"] for r in await store.event_audit(accepted.json()["event_id"])]
    assert "action.dead" not in types and types.count("action.retry_scheduled") == 1
    assert types[-1] == "attempt.succeeded"
