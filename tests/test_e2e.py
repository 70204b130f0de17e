"""End to end: webhook through the ASGI app → real Redis → arq worker → provider API on 127.0.0.1 → audit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.providers import Downstream
from chainer.sandbox import SandboxState
from chainer.settings import Secret, Settings
from chainer.store import Store
from tests import helpers, payloads
from tests.helpers import AUTH, HOOK, WHSEC, app_client, job_ctx, parse_rules
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

CIRCLE_TOKEN = "sandbox-token"

RULES = """
version: 1
rules:
  - name: api-after-lib
    when: {project: acme/lib, branch: main, status: success}
    then:
      - circleci.trigger_pipeline:
          project: gh/acme/api
          branch: "{{ event.branch }}"
          parameters: {upstream_sha: "{{ event.commit }}"}
  - name: web-after-lib
    when: {project: acme/lib, branch: main, status: success}
    then:
      - codeship.trigger_build: {project: acme/web, commit: "{{ event.commit }}"}
"""


@dataclass
class Stack:
    client: httpx.AsyncClient
    sandbox: SandboxState
    settings: Settings
    redis: Redis
    redis_url: str

    async def drain(self) -> None:
        """Run a burst worker until the queue is empty."""
        await helpers.drain(self.settings, self.redis_url)

    async def audit(self, event_id: str) -> list[dict[str, Any]]:
        return await helpers.read_audit(self.client, event_id)


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[SandboxState, str]]:
    state = SandboxState()
    state.add_codeship_project("acme/web")
    async with helpers.serve_sandbox(state) as base:
        yield state, base


@pytest.fixture
async def stack(sandbox: tuple[SandboxState, str], redis: Redis, redis_url: str) -> AsyncIterator[Stack]:
    state, base = sandbox
    settings = helpers.settings(
        redis_url=redis_url,
        circleci_token=Secret(CIRCLE_TOKEN),
        circleci_url=base,
        codeship_user="sandbox@example.org",
        codeship_password=Secret("sandbox"),
        codeship_url=base,
    )
    app = create_app(settings, ruleset=parse_rules(RULES), store=Store(redis))
    async with app_client(app) as client:
        yield Stack(client, state, settings, redis, redis_url)


def _calls(state: SandboxState, api: str) -> list[Any]:
    return [r for r in state.requests if r.api == api]


async def test_webhook_to_downstream_builds_with_exact_requests_and_audit(stack: Stack) -> None:
    """A green upstream build triggers a CircleCI pipeline and a Codeship build with the exact requests."""
    body, headers = payloads.signed(payloads.circleci_workflow("success"), WHSEC)
    accepted = await stack.client.post("/hooks/circleci", content=body, headers=headers)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["queued"] == 2
    await stack.drain()

    [pipeline] = [r for r in _calls(stack.sandbox, "circleci.v2") if r.method == "POST"]
    assert pipeline.path == "/api/v2/project/gh/acme/api/pipeline"
    assert pipeline.status == 201
    assert pipeline.body == {"branch": "main", "parameters": {"upstream_sha": payloads.COMMIT}}
    assert pipeline.headers.get("content-type") == "application/json"
    assert CIRCLE_TOKEN not in json.dumps(pipeline.headers)

    codeship = _calls(stack.sandbox, "codeship.v2")
    assert next(r.path.split("/")[-1] for r in codeship) == "auth"
    [build] = [r for r in codeship if r.method == "POST" and r.path.endswith("/builds")]
    assert build.body == {"ref": "heads/main", "commit_sha": payloads.COMMIT}
    assert build.status == 202

    event_id = accepted.json()["event_id"]
    types = [r["type"] for r in await stack.audit(event_id)]
    assert types[:3] == ["webhook.received", "rule.matched", "action.queued"]
    assert types.count("attempt.started") == 2 and types.count("attempt.succeeded") == 2
    assert all(types.index("attempt.started") < i for i, t in enumerate(types) if t == "attempt.succeeded")
    view = (await stack.client.get(f"/events/{event_id}", headers=AUTH)).json()
    assert {a["state"] for a in view["actions"]} == {"done"}
    pipeline_action = next(a for a in view["actions"] if a["action"] == "circleci.trigger_pipeline")
    assert pipeline_action["downstream_id"] and pipeline_action["attempt_log"][-1]["http_status"] == 201


async def test_same_delivery_twice_makes_one_downstream_call(stack: Stack) -> None:
    """Posting one delivery twice (before and after the worker ran) calls each downstream API once."""
    body, headers = payloads.signed(payloads.circleci_workflow("success"), WHSEC)
    first = await stack.client.post("/hooks/circleci", content=body, headers=headers)
    second = await stack.client.post("/hooks/circleci", content=body, headers=headers)
    await stack.drain()
    third = await stack.client.post("/hooks/circleci", content=body, headers=headers)
    await stack.drain()
    assert (first.status_code, second.status_code, third.status_code) == (202, 200, 200)
    pipelines = [r for r in _calls(stack.sandbox, "circleci.v2") if r.method == "POST"]
    builds = [r for r in _calls(stack.sandbox, "codeship.v2") if r.path.endswith("/builds") and r.method == "POST"]
    assert len(pipelines) == 1 and len(builds) == 1
    types = [r["type"] for r in await stack.audit(first.json()["event_id"])]
    assert types.count("webhook.duplicate") == 2


async def test_job_rerun_after_success_does_not_call_again(stack: Stack) -> None:
    """A job that arq runs again after the ledger says done (crash after success) makes no second call."""
    body, headers = payloads.signed(payloads.circleci_workflow("success"), WHSEC)
    accepted = (await stack.client.post("/hooks/circleci", content=body, headers=headers)).json()
    await stack.drain()
    before = len(stack.sandbox.requests)
    from chainer.jobs import run_action

    store = Store(stack.redis)
    http = httpx.AsyncClient()
    ctx = job_ctx(store, stack.settings, Downstream(stack.settings, http), job_try=2)
    state = await run_action(ctx, f"{accepted['event_id']}:api-after-lib:0")
    await http.aclose()
    assert state == "done" and len(stack.sandbox.requests) == before


async def test_interrupted_call_is_dead_lettered_not_repeated(stack: Stack) -> None:
    """A job re-run while its ledger says 'calling' does not call again and goes to the dead-letter list."""
    body, headers = payloads.signed(payloads.circleci_workflow("success"), WHSEC)
    accepted = (await stack.client.post("/hooks/circleci", content=body, headers=headers)).json()
    action = f"{accepted['event_id']}:api-after-lib:0"
    await stack.redis.hset(f"chainer:action:{action}", "state", "calling")
    await stack.drain()
    assert [r for r in _calls(stack.sandbox, "circleci.v2") if r.method == "POST"] == []
    ledger = await stack.redis.hgetall(f"chainer:action:{action}")
    assert ledger[b"state"] == b"dead" and ledger[b"dead_reason"] == b"ambiguous"
    assert await stack.redis.zscore("chainer:dlq", action) is not None
    dead = [r for r in await stack.audit(accepted["event_id"]) if r["type"] == "action.dead"]
    assert dead[0]["reason"] == "ambiguous"


async def test_redis_down_during_post_answers_503_and_leaves_nothing(tmp_path: Any) -> None:
    """With Redis killed mid-run a POST gets 503; after restart nothing of that event exists and a retry works."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    redis = Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=1)
    try:
        settings = helpers.settings(redis_url=server.url)
        app = create_app(settings, ruleset=parse_rules(RULES), store=Store(redis))
        async with app_client(app, "http://t") as client:
            post = lambda: client.post(  # noqa: E731
                f"/hooks/codeship/{HOOK}",
                content=json.dumps(payloads.codeship("success")).encode(),
                headers={"content-type": "application/json"},
            )
            warm = await client.post(
                f"/hooks/codeship/{HOOK}",
                content=json.dumps(payloads.codeship("success", build_id=1)).encode(),
                headers={"content-type": "application/json"},
            )
            assert warm.status_code == 202
            server.kill()
            down = await post()
            assert down.status_code == 503
            event_id = down.json()["event_id"]
            server.start()
            assert await redis.exists(f"chainer:event:{event_id}") == 0
            assert await redis.exists(f"chainer:event:{warm.json()['event_id']}") == 1
            assert await redis.zcard("arq:queue") == 2
            again = await post()
            assert again.status_code == 202 and again.json()["event_id"] == event_id
            assert await redis.zcard("arq:queue") == 4
    finally:
        await redis.aclose()
        server.stop()
