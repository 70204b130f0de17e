"""GitHub Actions and Buildkite chained end to end: signed deliveries through the ASGI app into a real Redis, a real
arq worker (burst) calling the sandbox's APIs on a 127.0.0.1 socket. GitHub → Buildkite with the exact create-build
request and the audit trail, and a GitHub ↔ Buildkite loop stopped by max_depth: the run chainer dispatched is found
by the ``workflow_run_id`` GitHub answered, the build chainer created by its ``chainer:cause`` meta-data."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from chainer.sandbox import SandboxState
from chainer.settings import Secret
from chainer.store import Store
from tests import helpers
from tests.helpers import parse_rules
from tests.payloads import buildkite_signed, buildkite_webhook_of
from tests.providers.github.support import SECRET, SHA, GitHubChainStack

pytestmark = pytest.mark.integration

BK_WEBHOOK_TOKEN = "bk-hook-3c9e"
RULES = """
version: 1
max_depth: 3
rules:
  - name: site-after-lib
    when: {provider: github, project: acme/lib, branch: main, status: success}
    then:
      - buildkite.create_build:
          pipeline: acme/site
          message: "after {{ event.project }} run {{ event.build_id }}"
          env: {UPSTREAM_RUN: "{{ event.build_url }}"}
  - name: gh-a-to-bk-b
    when: {provider: github, project: acme/a, status: success}
    then:
      - buildkite.create_build: {pipeline: acme/b}
  - name: bk-b-to-gh-a
    when: {provider: buildkite, project: acme/b, status: success}
    then:
      - github.dispatch_workflow: {repo: acme/a, workflow: ci.yml}
"""


class Stack(GitHubChainStack):
    async def buildkite_build(self, body: dict[str, Any]) -> dict[str, Any]:
        """A ``build.finished`` delivery, signed as Buildkite signs (HMAC over ``timestamp.`` + body)."""
        raw, headers = buildkite_signed(body, BK_WEBHOOK_TOKEN, int(time.time()))
        answer = await self.client.post("/hooks/buildkite", content=raw, headers=headers)
        assert answer.status_code == 202, answer.text
        return dict(answer.json())


@pytest.fixture
async def stack(redis: Redis, redis_url: str) -> AsyncIterator[Stack]:
    state = SandboxState()
    state.github.add_workflow("acme/a", "ci.yml")
    for pipeline in ("acme/site", "acme/b"):
        state.add_buildkite_pipeline(pipeline)

    def at(base: str) -> dict[str, Any]:
        return {
            "github_webhook_secrets": (Secret(SECRET),),
            "github_url": base,
            "github_token": Secret(state.github.token),
            "buildkite_webhook_token": Secret(BK_WEBHOOK_TOKEN),
            "buildkite_token": Secret(state.buildkite_token),
            "buildkite_url": base,
        }

    async with helpers.chain_stack(Stack, state, RULES, Store(redis), redis_url, at) as stack:
        yield stack


async def test_a_github_run_creates_a_buildkite_build_with_the_exact_request_and_audit(stack: Stack) -> None:
    accepted = await stack.github_run(30433642, "acme/lib", event="push")
    assert (accepted["matched"], accepted["queued"]) == (["site-after-lib"], 1)
    cause = accepted["event_id"]
    await stack.drain()

    [sent] = [r for r in stack.sandbox.requests if r.api == "buildkite"]
    assert (sent.method, sent.path, sent.status, sent.action) == (
        "POST",
        "/v2/organizations/acme/pipelines/site/builds",
        201,
        "buildkite.create_build",
    )
    assert sent.body == {
        "commit": SHA,
        "branch": "main",
        "message": "after acme/lib run 30433642",
        "env": {"UPSTREAM_RUN": "https://github.com/acme/lib/actions/runs/30433642"},
        "meta_data": {"chainer:cause": cause},
    }
    assert sent.headers["authorization"] == "***" and sent.headers["content-type"] == "application/json"
    assert stack.sandbox.buildkite_token not in json.dumps(sent.headers)
    [build] = stack.sandbox.buildkite_pipelines["acme/site"].builds
    assert (build.source, build.meta_data) == ("api", {"chainer:cause": cause})

    view = await stack.view(cause)
    [action] = view["actions"]
    assert (action["state"], action["downstream_id"]) == ("done", build.id)
    trail = [r["type"] for r in view["audit"] if r["type"] not in ("rule.not_matched",)]
    assert trail == [
        "webhook.received",
        "rule.matched",
        "action.queued",
        "attempt.started",
        "attempt.succeeded",
    ]
    [succeeded] = [r for r in view["audit"] if r["type"] == "attempt.succeeded"]
    assert succeeded["http_status"] == 201

    reported = await stack.buildkite_build(buildkite_webhook_of(build))
    chain = (await stack.view(reported["event_id"]))["event"]["chain"]
    assert [(link["event_id"], link["rule"], link["project"]) for link in chain] == [
        (cause, "site-after-lib", "acme/lib")
    ]


async def test_a_github_buildkite_loop_stops_at_max_depth_with_the_path_in_the_audit_log(stack: Stack) -> None:
    """acme/a (GitHub) → acme/b (Buildkite) → acme/a → acme/b: the fourth build's action would be depth 4 > 3.

    The run chainer dispatched reports back under the ``workflow_run_id`` GitHub answered; the last Buildkite build
    is one a person rebuilt by hand (a new build id), so only its ``chainer:cause`` meta-data carries the chain."""
    first = await stack.github_run(1, "acme/a", event="push")  # a run nobody chained
    await stack.drain()
    [build_1] = stack.sandbox.buildkite_pipelines["acme/b"].builds
    assert build_1.meta_data == {"chainer:cause": first["event_id"]}
    second = await stack.buildkite_build(buildkite_webhook_of(build_1))
    assert second["queued"] == 1
    await stack.drain()
    [dispatched] = (await stack.view(second["event_id"]))["actions"]
    run_2 = int(dispatched["downstream_id"])
    assert stack.sandbox.github.runs[run_2].event == "workflow_dispatch"
    third = await stack.github_run(run_2, "acme/a")
    assert third["queued"] == 1
    await stack.drain()
    build_2 = stack.sandbox.buildkite_pipelines["acme/b"].builds[-1]
    assert build_2 is not build_1 and build_2.meta_data == {"chainer:cause": third["event_id"]}
    by_hand = stack.sandbox.rebuild_buildkite_build(build_2)
    assert by_hand.id != build_2.id and by_hand.meta_data == build_2.meta_data
    fourth = await stack.buildkite_build(buildkite_webhook_of(by_hand))
    assert (fourth["matched"], fourth["queued"]) == (["bk-b-to-gh-a"], 0)
    await stack.drain()

    chain, reason = await stack.loop_stop(fourth["event_id"])
    assert chain == [first["event_id"], second["event_id"], third["event_id"]]
    assert reason == "loop guard: acme/a → acme/b → acme/a → acme/b → acme/a, depth 4 > 3"
    assert len(stack.sent("github.dispatch_workflow")) == 1
    assert len(stack.sent("buildkite.create_build")) == 2
    assert "acme/a → acme/b → acme/a (rules gh-a-to-bk-b, bk-b-to-gh-a), stopped at depth 3" in (
        parse_rules(RULES).summary()
    )
