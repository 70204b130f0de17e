"""The sandbox's GitHub: chainer's own client runs all three GitHub actions against it (token and App auth, the App's
JWT verified with its public key), it answers like GitHub (200 run details, 204, 201, 401, 404, 422), rate limits
come from scripted faults, and it learns repositories, workflows and runs from rules and example payloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from chainer.errors import PermanentDownstreamError, TransientDownstreamError
from chainer.events import BuildEvent
from chainer.explain import parse_any
from chainer.providers import Downstream
from chainer.sandbox import SandboxState, create_sandbox_app, example_events, seed_sandbox
from chainer.sandbox.github_state import GitHubState
from chainer.settings import Secret, Settings
from tests.helpers import NOW, Clock, parse_rules
from tests.providers.github.support import RUN_ID, key_pair, workflow_run

BASE = "http://sandbox"
EVENT = BuildEvent(
    provider="codeship",
    kind="build",
    event_id="evt_1",
    project="acme/web",
    status="success",
    raw_status="success",
    branch="main",
)
RULES = """
version: 1
rules:
  - name: deploy
    when: {provider: codeship, project: acme/web}
    then:
      - github.dispatch_workflow: {repo: acme/site, workflow: deploy.yml, inputs: {sha: "{{ event.commit }}"}}
      - github.repository_dispatch: {repo: acme/site, event_type: web-green}
  - name: rerun
    when: {provider: github, status: failed}
    then:
      - github.rerun_workflow_run: {}
"""


def sandbox(**github: Any) -> SandboxState:
    clock = Clock(NOW)
    return SandboxState(clock=clock, github=GitHubState(clock=clock, **github))


async def run(
    state: SandboxState, settings: Settings, action: str, params: dict[str, Any], event: BuildEvent = EVENT
) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_sandbox_app(state))) as http:
        return await Downstream(settings, http, clock=state.clock).execute(action, params, event)


def token_settings(state: SandboxState, token: str | None = None) -> Settings:
    return Settings(github_url=BASE, github_token=Secret(token or state.github.token))


async def test_all_three_actions_run_against_the_seeded_sandbox() -> None:
    """Seeded from the rules and a failed run's payload, the sandbox lets chainer's client carry out every GitHub
    action: a dispatch answers 200 with the new run's id, repository_dispatch 204, the re-run 201 (attempt 2)."""
    state = sandbox()
    failed = json.dumps(workflow_run("failure", repo="acme/lib")).encode()
    event = parse_any("github", {}, failed)
    assert isinstance(event, BuildEvent)
    assert seed_sandbox(state, parse_rules(RULES), [event]) == []
    settings = token_settings(state)
    dispatched = await run(
        state,
        settings,
        "github.dispatch_workflow",
        {"repo": "acme/site", "workflow": "deploy.yml", "ref": "main", "inputs": {"sha": "a" * 40}},
    )
    sent = await run(state, settings, "github.repository_dispatch", {"repo": "acme/site", "event_type": "web-green"})
    rerun = await run(state, settings, "github.rerun_workflow_run", {"repo": "acme/lib", "run": RUN_ID}, event)
    assert (dispatched.status, sent.status, rerun.status) == (200, 204, 201)
    new_run = state.github.runs[int(dispatched.downstream_id)]
    assert (new_run.repo.full_name, new_run.workflow.path, new_run.head_branch, new_run.event, new_run.inputs) == (
        "acme/site",
        ".github/workflows/deploy.yml",
        "main",
        "workflow_dispatch",
        {"sha": "a" * 40},
    )
    assert dispatched.detail["html_url"] == f"https://github.com/acme/site/actions/runs/{new_run.id}"
    assert state.github.dispatches == [{"repo": "acme/site", "event_type": "web-green", "client_payload": None}]
    assert (rerun.downstream_id, state.github.runs[RUN_ID].run_attempt) == (str(RUN_ID), 2)
    recorded = [(r.api, r.method, r.action, r.status) for r in state.requests]
    assert recorded == [
        ("github", "POST", "github.dispatch_workflow", 200),
        ("github", "POST", "github.repository_dispatch", 204),
        ("github", "POST", "github.rerun_workflow_run", 201),
    ]
    assert all(r.headers["authorization"] == "***" for r in state.requests)
    assert state.requests[2].path == f"/repos/acme/lib/actions/runs/{RUN_ID}/rerun-failed-jobs"


async def test_the_app_authenticates_with_a_jwt_the_sandbox_verifies_with_the_public_key() -> None:
    private, public = key_pair()
    state = sandbox(app_id="4242", app_public_key=public)
    state.github.add_workflow("acme/site", "deploy.yml")
    settings = Settings(github_url=BASE, github_app_id="4242", github_app_private_key=Secret(private))
    result = await run(
        state, settings, "github.dispatch_workflow", {"repo": "acme/site", "workflow": "deploy.yml", "ref": "main"}
    )
    assert result.status == 200
    assert [(r.method, r.path, r.status) for r in state.requests] == [
        ("GET", "/repos/acme/site/installation", 200),
        ("POST", "/app/installations/1/access_tokens", 201),
        ("POST", "/repos/acme/site/actions/workflows/deploy.yml/dispatches", 200),
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_sandbox_app(state))) as http:
        assert await Downstream(settings, http, clock=state.clock).clients["github"].check() == []
        other = Settings(github_url=BASE, github_app_id="1", github_app_private_key=Secret(private))
        with pytest.raises(PermanentDownstreamError, match="answered 401: Integration not found"):
            await Downstream(other, http, clock=state.clock).clients["github"].check()
        state.github.app_public_key = None  # a key GitHub does not know
        with pytest.raises(PermanentDownstreamError, match="A JSON web token could not be decoded"):
            await Downstream(settings, http, clock=state.clock).clients["github"].check()
        found = await http.get(f"{BASE}/users/acme/installation", headers={"authorization": "Bearer x.y.z"})
        assert found.status_code == 401
    clock = state.clock
    assert isinstance(clock, Clock)
    clock.now = NOW + 3600  # the minted installation token has expired
    assert not state.github.token_valid(next(iter(state.github._tokens)))


@pytest.mark.parametrize(
    ("script", "kind", "retry_after", "text"),
    [
        (
            {
                "status": 403,
                "body": {"message": "API rate limit exceeded for installation ID 1."},
                "headers": {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 90)},
            },
            TransientDownstreamError,
            91.0,
            "API rate limit exceeded",
        ),
        (
            {
                "status": 429,
                "body": {"message": "You have exceeded a secondary rate limit."},
                "headers": {"retry-after": "45"},
            },
            TransientDownstreamError,
            45.0,
            "secondary rate limit",
        ),
        ({"status": 401, "body": {"message": "Bad credentials"}}, PermanentDownstreamError, None, "Bad credentials"),
    ],
    ids=["primary-403", "secondary-429", "401"],
)
async def test_rate_limits_and_auth_failures_are_scripted_faults(
    script: dict[str, Any], kind: type[Exception], retry_after: float | None, text: str
) -> None:
    state = sandbox()
    state.github.add_workflow("acme/site", "deploy.yml")
    state.script("github", path_contains="/dispatches", **script)
    params = {"repo": "acme/site", "workflow": "deploy.yml", "ref": "main"}
    with pytest.raises(kind) as info:
        await run(state, token_settings(state), "github.dispatch_workflow", params)
    assert getattr(info.value, "retry_after", None) == retry_after and text in str(info.value)
    assert (await run(state, token_settings(state), "github.dispatch_workflow", params)).status == 200


@pytest.mark.parametrize(
    ("action", "params", "status", "message"),
    [
        (
            "github.dispatch_workflow",
            {"repo": "acme/site", "workflow": "deploy.yml", "ref": "main"},
            401,
            "Bad credentials",
        ),
        ("github.dispatch_workflow", {"repo": "acme/other", "workflow": "deploy.yml", "ref": "main"}, 404, "Not Found"),
        ("github.dispatch_workflow", {"repo": "acme/site", "workflow": "nope.yml", "ref": "main"}, 404, "Not Found"),
        ("github.rerun_workflow_run", {"repo": "acme/site", "run": 1}, 404, "Not Found"),
    ],
    ids=["bad-token", "unknown-repo", "unknown-workflow", "unknown-run"],
)
async def test_refusals_are_githubs(action: str, params: dict[str, Any], status: int, message: str) -> None:
    state = sandbox()
    state.github.add_workflow("acme/site", "deploy.yml")
    token = "not-the-token" if status == 401 else None
    with pytest.raises(PermanentDownstreamError) as info:
        await run(state, token_settings(state, token), action, params)
    assert info.value.status == status and message in info.value.message


async def test_the_raw_api_answers_like_github() -> None:
    state = sandbox()
    state.github.add_workflow("acme/site", "deploy.yml")
    running = state.github.add_run("acme/site", 7, workflow="deploy.yml", status="in_progress", conclusion=None)
    auth = {"authorization": f"Bearer {state.github.token}", "x-github-api-version": "2022-11-28"}
    dispatch = f"{BASE}/repos/acme/site/actions/workflows/deploy.yml/dispatches"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_sandbox_app(state))) as http:
        plain = await http.post(dispatch, json={"ref": "main"}, headers=auth)
        missing_ref = await http.post(dispatch, json={}, headers=auth)
        too_many = await http.post(
            dispatch, json={"ref": "main", "inputs": {str(i): i for i in range(26)}}, headers=auth
        )
        new_version = await http.post(
            dispatch, json={"ref": "main"}, headers={**auth, "x-github-api-version": "2026-03-10"}
        )
        refused_flag = await http.post(
            dispatch,
            json={"ref": "main", "return_run_details": True},
            headers={**auth, "x-github-api-version": "2026-03-10"},
        )
        bad_version = await http.post(dispatch, json={"ref": "main"}, headers={**auth, "x-github-api-version": "1"})
        busy = await http.post(f"{BASE}/repos/acme/site/actions/runs/7/rerun", headers=auth)
        got = await http.get(f"{BASE}/repos/acme/site/actions/runs/7", headers=auth)
        unknown = await http.get(f"{BASE}/repos/acme/site/pulls", headers=auth)
    assert (plain.status_code, plain.content) == (204, b"")
    assert missing_ref.status_code == 422 and "ref" in missing_ref.json()["message"]
    assert too_many.status_code == 422 and "25 inputs" in too_many.json()["message"]
    assert new_version.status_code == 200 and "workflow_run_id" in new_version.json()
    assert refused_flag.status_code == 422 and "return_run_details" in refused_flag.json()["message"]
    assert bad_version.status_code == 400 and bad_version.json()["documentation_url"].startswith("https://docs.github")
    assert (busy.status_code, busy.json()["message"]) == (403, "This workflow is already running")
    assert got.json()["id"] == running.id and got.json()["status"] == "in_progress"
    assert unknown.status_code == 404 and unknown.json()["message"] == "Not Found"


def test_example_github_payloads_are_read_as_githubs_and_seed_their_runs(tmp_path: Path) -> None:
    (tmp_path / "gh-failed.json").write_text(json.dumps(workflow_run("failure", run_id=99, attempt=3)))
    events, problems = example_events(tmp_path)
    assert problems == [] and [(e.provider, e.build_id) for e in events] == [("github", 99)]
    state = sandbox()
    assert seed_sandbox(state, parse_rules("version: 1\nrules: []\n"), events) == []
    seeded = state.github.runs[99]
    assert (seeded.repo.full_name, seeded.run_attempt, seeded.status, seeded.conclusion) == (
        "acme/lib",
        3,
        "completed",
        "failure",
    )
    assert seeded.workflow.id == 161335 and seeded.repo.id == 300029405
