"""Cross-provider chains end to end: webhooks through the ASGI app into a real Redis, a real arq worker (burst), the
sandbox's APIs on a 127.0.0.1 socket. Codeship → GitHub dispatch (the run it started inherits the chain when it reports
back, found by the run id GitHub answered), and a GitHub ↔ CircleCI loop stopped by max_depth with its path audited."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chainer.sandbox import SandboxState
from chainer.settings import Secret
from chainer.store import Store
from tests import helpers, payloads
from tests.helpers import HOOK, JSON, WHSEC, parse_rules
from tests.providers.github.support import SECRET, GitHubChainStack

pytestmark = pytest.mark.integration

RULES = """
version: 1
max_depth: 3
rules:
  - name: deploy-site-after-web
    when: {provider: codeship, project: acme/web, branch: main, status: success}
    then:
      - github.dispatch_workflow:
          repo: acme/site
          workflow: deploy.yml
          inputs: {upstream_sha: "{{ event.commit }}"}
  - name: a-to-b
    when: {provider: github, project: acme/a, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/b, branch: "{{ event.branch }}"}
  - name: b-to-a
    when: {provider: circleci, project: acme/b, status: success}
    then:
      - github.dispatch_workflow: {repo: acme/a, workflow: ci.yml}
"""


class Stack(GitHubChainStack):
    async def circleci_pipeline(self, pipeline_id: str, delivery_id: str) -> dict[str, Any]:
        payload = payloads.circleci_workflow("success", repo="b", delivery=delivery_id, workflow_id=delivery_id + "-wf")
        payload["pipeline"]["id"] = pipeline_id
        body, headers = payloads.signed(payload, WHSEC)
        answer = await self.client.post("/hooks/circleci", content=body, headers=headers)
        assert answer.status_code == 202, answer.text
        return dict(answer.json())


@pytest.fixture
async def stack(redis: Redis, redis_url: str) -> AsyncIterator[Stack]:
    state = SandboxState()
    state.github.add_workflow("acme/site", "deploy.yml")
    state.github.add_workflow("acme/a", "ci.yml")

    def at(base: str) -> dict[str, Any]:
        return {
            "github_webhook_secrets": (Secret(SECRET),),
            "github_url": base,
            "github_token": Secret(state.github.token),
            "circleci_url": base,
            "circleci_token": Secret(state.circleci_token),
        }

    async with helpers.chain_stack(Stack, state, RULES, Store(redis), redis_url, at) as stack:
        yield stack


async def test_codeship_to_github_dispatch_and_the_run_reports_back_with_the_chain(stack: Stack) -> None:
    body = json.dumps(payloads.codeship("success", project="acme/web")).encode()
    accepted = await stack.client.post(f"/hooks/codeship/{HOOK}", content=body, headers=JSON)
    assert accepted.status_code == 202 and accepted.json()["matched"] == ["deploy-site-after-web"]
    await stack.drain()

    [sent] = [r for r in stack.sandbox.requests if r.api == "github"]
    assert (sent.method, sent.path, sent.status) == (
        "POST",
        "/repos/acme/site/actions/workflows/deploy.yml/dispatches",
        200,
    )
    assert sent.body == {"ref": "main", "inputs": {"upstream_sha": payloads.COMMIT}, "return_run_details": True}
    assert sent.headers["authorization"] == "***" and sent.headers["x-github-api-version"] == "2022-11-28"
    assert sent.headers["accept"] == "application/vnd.github+json"
    cause = accepted.json()["event_id"]
    [action] = (await stack.view(cause))["actions"]
    run_id = int(action["downstream_id"])
    assert action["state"] == "done" and stack.sandbox.github.runs[run_id].event == "workflow_dispatch"

    reported = await stack.github_run(run_id, "acme/site")
    chain = (await stack.view(reported["event_id"]))["event"]["chain"]
    assert [(link["event_id"], link["rule"], link["project"]) for link in chain] == [
        (cause, "deploy-site-after-web", "acme/web")
    ]
    stranger = await stack.github_run(run_id + 1000, "acme/site")
    assert (await stack.view(stranger["event_id"]))["event"]["chain"] == []


async def test_a_github_circleci_loop_stops_at_max_depth_with_the_path_in_the_audit_log(stack: Stack) -> None:
    """acme/a (GitHub) → acme/b (CircleCI) → acme/a → acme/b: the fourth build's action would be depth 4 > 3."""
    first = await stack.github_run(1, "acme/a")  # a run nobody chained
    await stack.drain()
    pipeline_1 = stack.sandbox.pipelines[-1].id
    second = await stack.circleci_pipeline(pipeline_1, "d-1")
    await stack.drain()
    run_2 = int((await stack.view(second["event_id"]))["actions"][0]["downstream_id"])
    third = await stack.github_run(run_2, "acme/a")
    assert third["queued"] == 1
    await stack.drain()
    pipeline_2 = stack.sandbox.pipelines[-1].id
    assert pipeline_2 != pipeline_1
    fourth = await stack.circleci_pipeline(pipeline_2, "d-2")
    assert fourth["matched"] == ["b-to-a"] and fourth["queued"] == 0
    await stack.drain()

    chain, reason = await stack.loop_stop(fourth["event_id"])
    assert chain == [first["event_id"], second["event_id"], third["event_id"]]
    assert reason == "loop guard: acme/a → acme/b → acme/a → acme/b → acme/a, depth 4 > 3"
    dispatches = stack.sent("github.dispatch_workflow")
    assert len(dispatches) == 1 and dispatches[0].body == {"ref": "main", "return_run_details": True}
    assert len(stack.sent("circleci.trigger_pipeline")) == 2
    # Lint sees the same loop through GitHub's `repo` argument.
    assert "acme/a → acme/b → acme/a (rules a-to-b, b-to-a), stopped at depth 3" in parse_rules(RULES).summary()


# -- an ambiguous dispatch, reconciled by listing the workflow's runs ----------------------------------------------


async def test_a_dispatch_whose_answer_is_lost_is_found_among_the_workflows_runs_and_recorded_once(
    stack: Stack,
) -> None:
    """GitHub starts the run but the 200 never arrives (the worker's read timeout): the worker lists the workflow's
    workflow_dispatch runs of the branch since the attempt began, takes the one it finds, and dispatches no more."""
    stack.sandbox.script("github", status=200, delay=5, effect=True, path_contains="/dispatches")
    body = json.dumps(payloads.codeship("success", project="acme/web")).encode()
    accepted = await stack.client.post(f"/hooks/codeship/{HOOK}", content=body, headers=JSON)
    await stack.drain(timeout=httpx.Timeout(5, read=0.5))

    [run] = stack.sandbox.github.runs.values()
    seen = [(r.method, r.action, r.status) for r in stack.sandbox.requests if r.api == "github"]
    assert seen == [("POST", "github.dispatch_workflow", 200), ("GET", "github.list_workflow_runs", 200)]
    lookup = stack.sandbox.requests[-1]
    assert lookup.path == "/repos/acme/site/actions/workflows/deploy.yml/runs"
    assert (lookup.query["event"], lookup.query["branch"]) == ("workflow_dispatch", "main")
    assert lookup.query["created"].startswith(">=") and lookup.headers["x-github-api-version"] == "2022-11-28"
    cause = accepted.json()["event_id"]
    view = await stack.view(cause)
    [action] = view["actions"]
    assert (action["state"], action["downstream_id"]) == ("done", str(run.id))
    [succeeded] = [r for r in view["audit"] if r["type"] == "attempt.succeeded"]
    assert succeeded["detail"]["workflow_run_id"] == run.id and "found by GET" in succeeded["detail"]["reconciled"]
    assert not [r for r in view["audit"] if r["type"] in ("attempt.failed", "action.dead")]

    reported = await stack.github_run(run.id, "acme/site")
    chain = (await stack.view(reported["event_id"]))["event"]["chain"]
    assert [link["event_id"] for link in chain] == [cause]


async def test_a_lost_dispatch_with_two_candidate_runs_stays_ambiguous(stack: Stack) -> None:
    """Someone dispatched the same workflow on the same branch meanwhile: two runs fit, GitHub marks neither as
    chainer's, so the action is dead as ambiguous, naming both runs, and is not dispatched again."""
    site = stack.sandbox.github.repo("acme", "site")
    assert site is not None
    workflow = stack.sandbox.github.workflow(site, "deploy.yml")
    assert workflow is not None
    by_hand = stack.sandbox.github.dispatch_workflow(site, workflow, "main", None)
    stack.sandbox.script("github", status=200, delay=5, effect=True, path_contains="/dispatches")
    body = json.dumps(payloads.codeship("success", project="acme/web")).encode()
    accepted = await stack.client.post(f"/hooks/codeship/{HOOK}", content=body, headers=JSON)
    await stack.drain(timeout=httpx.Timeout(5, read=0.5))

    assert len(stack.sandbox.github.runs) == 2
    assert [r.method for r in stack.sandbox.requests if r.api == "github"] == ["POST", "GET"]
    view = await stack.view(accepted.json()["event_id"])
    assert view["actions"][0]["state"] == "dead"
    [failed] = [r for r in view["audit"] if r["type"] == "attempt.failed"]
    assert failed["outcome"] == "ambiguous" and "2 runs (" in failed["error"] and str(by_hand.id) in failed["error"]
