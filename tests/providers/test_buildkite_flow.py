"""Buildkite through the path a user takes: deliveries to /hooks/buildkite (ASGI app, real Redis), actions run by a
real arq worker against the sandbox served on 127.0.0.1, lineage through the ``chainer:cause`` meta-data and the
build id, and an A → B → A loop stopped by the guard with its path in the audit log."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.worker import Retry
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.jobs import run_action
from chainer.providers import Downstream, get
from chainer.sandbox import SandboxState
from chainer.sandbox.buildkite import rate_limited
from chainer.settings import Secret, Settings
from chainer.store import Store
from tests.helpers import drain, job_ctx, parse_rules, read_audit, serve_sandbox
from tests.payloads import COMMIT, buildkite_build, buildkite_signed
from tests.payloads import buildkite_webhook_of as webhook_of

pytestmark = pytest.mark.integration

WEBHOOK_TOKEN = "bk-hook-7d2a"
ADMIN = "admin-bk"
AUTH = {"authorization": f"Bearer {ADMIN}"}
MORE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "fixtures" / "more-providers"
RULES = """
version: 1
max_depth: 3
rules:
  - name: api-after-lib
    when: {provider: buildkite, project: acme/lib, branch: main, status: success}
    then:
      - circleci.trigger_pipeline:
          project: gh/acme/api
          branch: "{{ event.branch }}"
          parameters: {upstream_sha: "{{ event.commit }}", upstream_build: "{{ event.build_url }}"}
  - name: a-to-b
    when: {provider: buildkite, project: acme/a, status: success}
    then:
      - buildkite.create_build: {pipeline: acme/b, message: "after {{ event.project }}"}
  - name: b-to-a
    when: {provider: buildkite, project: acme/b, status: success}
    then:
      - buildkite.create_build: {pipeline: acme/a}
  - name: rebuild-flaky
    when: {provider: buildkite, project: acme/flaky, status: failed}
    then:
      - buildkite.rebuild: {}
"""


@dataclass
class Stack:
    client: httpx.AsyncClient
    sandbox: SandboxState
    settings: Settings
    redis: Redis
    redis_url: str

    async def post(self, body: dict[str, Any] | bytes, status: int = 202, **kw: Any) -> dict[str, Any]:
        raw, headers = buildkite_signed(body, WEBHOOK_TOKEN, int(time.time()), **kw)
        answer = await self.client.post("/hooks/buildkite", content=raw, headers=headers)
        assert answer.status_code == status, answer.text
        return dict(answer.json())

    async def drain(self) -> None:
        """A real arq worker (burst) runs every queued job against the sandbox."""
        await drain(self.settings, self.redis_url)

    async def audit(self, event_id: str) -> list[dict[str, Any]]:
        return await read_audit(self.client, event_id, AUTH)

    def api_calls(self, api: str, method: str) -> list[Any]:
        return [r for r in self.sandbox.requests if r.api == api and r.method == method]


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[SandboxState, str]]:
    state = SandboxState()
    for name in ("acme/a", "acme/b", "acme/flaky"):
        state.add_buildkite_pipeline(name)
    async with serve_sandbox(state) as base:
        yield state, base


def stack_settings(base: str, redis_url: str, state: SandboxState, **changes: Any) -> Settings:
    return Settings(
        redis_url=redis_url,
        admin_token=Secret(ADMIN),
        buildkite_webhook_token=Secret(WEBHOOK_TOKEN),
        buildkite_token=Secret(state.buildkite_token),
        buildkite_url=base,
        circleci_token=Secret(state.circleci_token),
        circleci_url=base,
        **changes,
    )


@pytest.fixture
async def stack(sandbox: tuple[SandboxState, str], redis: Redis, redis_url: str) -> AsyncIterator[Stack]:
    state, base = sandbox
    settings = stack_settings(base, redis_url, state)
    app = create_app(settings, ruleset=parse_rules(RULES), store=Store(redis))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://chainer.test") as client:
        yield Stack(client, state, settings, redis, redis_url)


# -- the endpoint ---------------------------------------------------------------------------------------------


@pytest.mark.conformance
async def test_the_official_vector_is_accepted_by_the_endpoint_at_its_time(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """go-buildkite's signed ping, posted as Buildkite would, with chainer's clock at the signature's time."""
    if not MORE.is_dir():
        pytest.skip(f"reference fixtures not found at {MORE}")
    body = (MORE / "bk_gobuildkite_ping.json").read_bytes()
    signature = "timestamp=1642080837,signature=582d496ac2d869dd97a3101c4cda346288c49a742592daf582ec64c86449f79c"
    headers = {"content-type": "application/json", "x-buildkite-event": "ping", "x-buildkite-signature": signature}
    settings = Settings(buildkite_webhook_token=Secret("29b1ff5779c76bd48ba6705eb99ff970"), admin_token=Secret(ADMIN))
    app = create_app(settings, ruleset=parse_rules(RULES), store=Store(stack.redis))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        stale = await client.post("/hooks/buildkite", content=body, headers=headers)
        monkeypatch.setattr(get("buildkite"), "clock", lambda: 1642080837 + 300)
        answer = await client.post("/hooks/buildkite", content=body, headers=headers)
    assert stale.status_code == 401 and "s old (more than 300 s)" in stale.json()["error"]
    assert (answer.status_code, answer.json()) == (202, {"status": "ignored", "reason": "Buildkite ping event"})


async def test_plain_tokens_are_refused_and_audited_without_the_token_unless_allowed(stack: Stack) -> None:
    raw = json.dumps(buildkite_build(org="acme", pipeline="lib")).encode()
    headers = {
        "content-type": "application/json",
        "x-buildkite-event": "build.finished",
        "x-buildkite-token": WEBHOOK_TOKEN,
    }
    refused = await stack.client.post("/hooks/buildkite", content=raw, headers=headers)
    assert refused.status_code == 401 and "CHAINER_BUILDKITE_ALLOW_PLAIN_TOKEN=1" in refused.json()["error"]
    records = (await stack.client.get("/audit", params={"type": "webhook.rejected"}, headers=AUTH)).json()["items"]
    assert records and WEBHOOK_TOKEN not in json.dumps(records)
    assert (
        await stack.client.post(f"/hooks/buildkite/{WEBHOOK_TOKEN}", content=raw, headers=headers)
    ).status_code == 404
    allowed = stack_settings("http://unused", stack.redis_url, stack.sandbox, buildkite_allow_plain_token=True)
    app = create_app(allowed, ruleset=parse_rules(RULES), store=Store(stack.redis))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        accepted = await client.post("/hooks/buildkite", content=raw, headers=headers)
    assert accepted.status_code == 202 and accepted.json()["matched"] == ["api-after-lib"]


async def test_a_mismatched_event_header_is_400_and_a_blocked_build_is_ignored(stack: Stack) -> None:
    mismatch = await stack.post(buildkite_build(), 400, event="build.running")
    assert "does not match the body's event" in mismatch["error"]
    blocked = await stack.post(buildkite_build(blocked=True))
    assert blocked["status"] == "ignored" and "status `other` (raw `passed/blocked`)" in blocked["reason"]


# -- Buildkite → CircleCI end to end ---------------------------------------------------------------------------


async def test_a_green_buildkite_build_triggers_a_circleci_pipeline_once(stack: Stack) -> None:
    body = buildkite_build()
    accepted = await stack.post(body)
    assert (accepted["status"], accepted["matched"], accepted["queued"]) == ("accepted", ["api-after-lib"], 1)
    again = await stack.post(body, 200)
    await stack.drain()
    assert again == {"status": "duplicate", "event_id": accepted["event_id"]}
    [pipeline] = stack.api_calls("circleci.v2", "POST")
    assert (pipeline.path, pipeline.status) == ("/api/v2/project/gh/acme/api/pipeline", 201)
    assert pipeline.body == {
        "branch": "main",
        "parameters": {"upstream_sha": COMMIT, "upstream_build": "https://buildkite.com/acme/lib/builds/12"},
    }
    types = [r["type"] for r in await stack.audit(accepted["event_id"])]
    assert types[:3] == ["webhook.received", "rule.matched", "action.queued"] and "attempt.succeeded" in types
    view = (await stack.client.get(f"/events/{accepted['event_id']}", headers=AUTH)).json()
    assert view["event"]["provider"] == "buildkite" and view["actions"][0]["state"] == "done"


# -- lineage and the loop guard ------------------------------------------------------------------------------


async def test_an_a_b_a_loop_across_buildkite_pipelines_stops_at_max_depth_with_the_path(stack: Stack) -> None:
    """Each build chainer creates carries chainer:cause; its webhook inherits the chain; depth 4 > 3 is not sent."""
    start = await stack.post(buildkite_build(org="acme", pipeline="a", build_id="0190aaaa-0000-4000-8000-000000000001"))
    events = [start["event_id"]]
    for expected in ("acme/b", "acme/a", "acme/b"):
        await stack.drain()
        build = stack.sandbox.buildkite_pipelines[expected].builds[-1]
        assert build.meta_data == {"chainer:cause": events[-1]} and build.source == "api"
        answer = await stack.post(webhook_of(build))
        events.append(answer["event_id"])
    assert answer["queued"] == 0 and answer["matched"] == ["b-to-a"]
    await stack.drain()
    created = stack.api_calls("buildkite", "POST")
    assert [r.path for r in created] == [f"/v2/organizations/acme/pipelines/{p}/builds" for p in ("b", "a", "b")]
    assert created[0].body == {
        "commit": COMMIT,
        "branch": "main",
        "message": "after acme/a",
        "meta_data": {"chainer:cause": events[0]},
    }
    view = (await stack.client.get(f"/events/{events[-1]}", headers=AUTH)).json()
    assert [link["event_id"] for link in view["event"]["chain"]] == events[:3]
    skipped = [r for r in view["audit"] if r["type"] == "action.skipped"]
    assert skipped[0]["reason"] == "loop guard: acme/a → acme/b → acme/a → acme/b → acme/a, depth 4 > 3"
    tree = (await stack.client.get(f"/chains/{events[-1]}", headers=AUTH)).json()
    assert tree["root"] == events[0] and [link["rule"] for link in tree["path"]] == ["a-to-b", "b-to-a", "a-to-b"]


async def test_the_cause_meta_data_alone_carries_the_chain_and_a_strangers_build_starts_fresh(stack: Stack) -> None:
    """A build Buildkite re-creates with chainer's meta-data (a rebuild from its UI) keeps its chain; the cause key
    is per pipeline; a build without it is a new root."""
    start = await stack.post(buildkite_build(org="acme", pipeline="a", build_id="0190aaaa-0000-4000-8000-000000000002"))
    await stack.drain()
    meta = {"chainer:cause": start["event_id"]}
    manual = buildkite_build(org="acme", pipeline="b", build_id="0190bbbb-0000-4000-8000-00000000000b", meta_data=meta)
    elsewhere = buildkite_build(
        org="acme", pipeline="c", build_id="0190cccc-0000-4000-8000-00000000000c", meta_data=meta
    )
    stranger = buildkite_build(org="acme", pipeline="b", build_id="0190dddd-0000-4000-8000-00000000000d")
    chains = []
    for body in (manual, elsewhere, stranger):
        posted = await stack.post(body)
        event = (await stack.client.get(f"/events/{posted['event_id']}", headers=AUTH)).json()["event"]
        chains.append([link["rule"] for link in event["chain"]])
    assert chains == [["a-to-b"], [], []]


async def test_rebuild_defaults_to_the_events_build_and_the_new_build_inherits_the_chain_by_its_id(
    stack: Stack,
) -> None:
    seeded = stack.sandbox.add_buildkite_build("acme/flaky", 41, branch="main", commit=COMMIT, state="failed")
    failed = await stack.post(webhook_of(seeded, state="failed"))
    await stack.drain()
    [rebuild] = stack.api_calls("buildkite", "PUT")
    assert (rebuild.path, rebuild.status, rebuild.body) == (
        "/v2/organizations/acme/pipelines/flaky/builds/41/rebuild",
        200,
        None,
    )
    new = stack.sandbox.buildkite_pipelines["acme/flaky"].builds[-1]
    assert new.rebuilt_from is seeded and new.number == 42
    again = await stack.post(webhook_of(new, state="failed"))
    event = (await stack.client.get(f"/events/{again['event_id']}", headers=AUTH)).json()["event"]
    assert [link["event_id"] for link in event["chain"]] == [failed["event_id"]]


# -- Buildkite's rate limit through the job ---------------------------------------------------------------------


async def test_a_429_from_buildkite_schedules_the_retry_after_its_reset(stack: Stack) -> None:
    stack.sandbox.script("buildkite", **rate_limited(600, scope="rest_user"))
    start = await stack.post(buildkite_build(org="acme", pipeline="a", build_id="0190aaaa-0000-4000-8000-000000000003"))
    store = Store(stack.redis)
    async with httpx.AsyncClient() as http:
        ctx = job_ctx(store, stack.settings, Downstream(stack.settings, http), ruleset=parse_rules(RULES))
        with pytest.raises(Retry):
            await run_action(ctx, f"{start['event_id']}:a-to-b:0")
    records = await stack.audit(start["event_id"])
    failed = next(r for r in records if r["type"] == "attempt.failed")
    scheduled = next(r for r in records if r["type"] == "action.retry_scheduled")
    assert (failed["http_status"], failed["retry_after"], scheduled["defer_s"]) == (429, 600, 600)
    assert "Please wait 600 seconds" in failed["error"] and stack.sandbox.buildkite_token not in json.dumps(records)


# -- an ambiguous create, reconciled by its cause ---------------------------------------------------------------


async def test_a_create_whose_answer_is_lost_is_found_by_its_cause_and_recorded_once(stack: Stack) -> None:
    """Buildkite creates the build but its answer never arrives (the worker's read timeout): the worker finds the
    build by its chainer:cause meta-data and records it as the success, with lineage; no second build."""
    stack.sandbox.script("buildkite", status=201, delay=5, effect=True, path_contains="/pipelines/b/builds")
    start = await stack.post(buildkite_build(org="acme", pipeline="a", build_id="0190aaaa-0000-4000-8000-000000000004"))
    await drain(stack.settings, stack.redis_url, timeout=httpx.Timeout(5, read=0.5))

    [build] = stack.sandbox.buildkite_pipelines["acme/b"].builds
    assert build.meta_data == {"chainer:cause": start["event_id"]}
    seen = [(r.method, r.action, r.status) for r in stack.sandbox.requests if r.api == "buildkite"]
    assert seen == [("POST", "buildkite.create_build", 201), ("GET", "buildkite.list_builds", 200)]
    [lookup] = stack.api_calls("buildkite", "GET")
    assert lookup.path == "/v2/organizations/acme/pipelines/b/builds"
    assert lookup.query == {"branch": "main", "commit": COMMIT, "meta_data[chainer:cause]": start["event_id"]}
    view = (await stack.client.get(f"/events/{start['event_id']}", headers=AUTH)).json()
    [action] = view["actions"]
    assert (action["state"], action["downstream_id"]) == ("done", build.id)
    trail = [r for r in view["audit"] if r["type"].startswith(("attempt.", "action.dead"))]
    assert [r["type"] for r in trail] == ["attempt.started", "attempt.succeeded"]
    assert trail[1]["detail"]["number"] == build.number and "found by GET" in trail[1]["detail"]["reconciled"]
    reported = await stack.post(webhook_of(build))
    event = (await stack.client.get(f"/events/{reported['event_id']}", headers=AUTH)).json()["event"]
    assert [link["event_id"] for link in event["chain"]] == [start["event_id"]]


async def test_a_lost_answer_without_a_build_to_find_stays_ambiguous_and_is_not_sent_again(stack: Stack) -> None:
    """The request is lost before Buildkite acts on it (a canned hang): the look-up finds nothing, so the action
    goes to the dead-letter list as ambiguous, naming the look-up; nothing is created, nothing is sent twice."""
    stack.sandbox.script("buildkite", status=201, delay=5, path_contains="/pipelines/b/builds")
    start = await stack.post(buildkite_build(org="acme", pipeline="a", build_id="0190aaaa-0000-4000-8000-000000000005"))
    await drain(stack.settings, stack.redis_url, timeout=httpx.Timeout(5, read=0.5))

    assert stack.sandbox.buildkite_pipelines["acme/b"].builds == []
    assert [r.method for r in stack.sandbox.requests if r.api == "buildkite"] == ["POST", "GET"]
    view = (await stack.client.get(f"/events/{start['event_id']}", headers=AUTH)).json()
    assert view["actions"][0]["state"] == "dead"
    [failed] = [r for r in view["audit"] if r["type"] == "attempt.failed"]
    assert failed["outcome"] == "ambiguous" and "no build with chainer:cause=" in failed["error"]
    assert stack.sandbox.buildkite_token not in json.dumps(view)
