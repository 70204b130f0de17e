"""Outbound limits through real arq workers: the Codeship request budget and one call per target."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chainer.connections import connect_arq
from chainer.downstream import Downstream
from chainer.intake import Intake
from chainer.jobs import RetryPolicy
from chainer.limits import InflightLocks, RateLimiter, inflight_key
from chainer.rules import parse_rules
from chainer.settings import Secret, Settings
from chainer.store import Store
from chainer.worker import create_worker
from tests import payloads

pytestmark = pytest.mark.integration

SETTINGS = Settings(
    hook_token=Secret("hook"),
    codeship_user="ci@example.org",
    codeship_password=Secret("pw"),
    codeship_url="https://codeship.example",
)
RULES = """
version: 1
rules:
  - name: web-after-lib
    when: {provider: codeship, project: acme/lib, status: success}
    then:
      - codeship.trigger_build: {project: acme/web}
"""
ORG = "0b4a4d7c-3f9e-4c0d-9a51-7f0e2b1c5d11"
PROJECT = "a2b3c4d5-e6f7-4a8b-9c0d-1e2f3a4b5c6d"


class FakeCodeship:
    """Codeship API v2 answers for one organisation and project, recording when each request arrived."""

    def __init__(self, hold_s: float = 0.0) -> None:
        self.times: list[float] = []
        self.builds: list[dict[str, Any]] = []
        self.hold_s = hold_s
        self.in_flight = 0
        self.most_in_flight = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.times.append(time.monotonic())
        path = request.url.path
        if path == "/v2/auth":
            org = {"uuid": ORG, "name": "acme", "scopes": ["project.read", "build.read", "build.write"]}
            return httpx.Response(200, json={"access_token": "t", "expires_at": 9999999999, "organizations": [org]})
        if path.endswith("/projects"):
            project = {"uuid": PROJECT, "id": 7, "name": "acme/web"}
            return httpx.Response(200, json={"projects": [project], "page": 1, "per_page": 50, "total": 1})
        if path.endswith("/builds") and request.method == "POST":
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            await asyncio.sleep(self.hold_s)
            self.in_flight -= 1
            self.builds.append(json.loads(request.content))
            return httpx.Response(202)
        return httpx.Response(404, json={"errors": ["not found"]})


async def _accept(store: Store, count: int, *, same_branch: bool) -> None:
    intake = Intake(SETTINGS, store, lambda: parse_rules(RULES))
    for i in range(count):
        branch = "main" if same_branch else f"branch-{i}"
        body = json.dumps(payloads.codeship("success", build_id=1000 + i, branch=branch)).encode()
        reply = await intake.receive("codeship", {}, body, "hook")
        assert reply.status_code == 202, reply.body


async def _drain(redis_url: str, store: Store, downstream: Downstream, policy: RetryPolicy) -> None:
    worker = create_worker(
        SETTINGS,
        burst=True,
        handle_signals=False,
        poll_delay=0.01,
        max_jobs=20,
        redis_pool=connect_arq(redis_url, retries=0),
        ctx={"downstream": downstream, "retry_policy": policy},
    )
    await asyncio.wait_for(worker.main(), timeout=60)
    await worker.close()


@pytest.mark.timeout(90)
async def test_codeship_budget_is_never_exceeded_in_any_window(redis: Redis, redis_url: str) -> None:
    """100 queued Codeship actions never exceed the request budget in any window (1 s stands in for 60 s)."""
    store = Store(redis)
    await _accept(store, 100, same_branch=False)
    fake = FakeCodeship()
    limiter = RateLimiter(redis, "chainer:rate:codeship", limit=60, window_s=1.0, label="Codeship")
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as http:
        downstream = Downstream(SETTINGS, http, codeship_throttle=limiter)
        await _drain(redis_url, store, downstream, RetryPolicy(busy_s=0.02))
    assert len(fake.builds) == 100
    times = sorted(fake.times)
    worst = max(sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times))
    assert worst <= 60
    assert times[-1] - times[0] >= 1.0  # 102 requests cannot fit in one window
    waits = (await store.read_audit(match={"type": {"action.retry_scheduled"}}, limit=500)).items
    assert waits and all("outbound limit" in w["reason"] for w in waits)
    dead = (await store.read_audit(match={"type": {"action.dead"}}, limit=500)).items
    assert dead == []


@pytest.mark.timeout(60)
async def test_one_call_in_flight_per_project_and_branch(redis: Redis, redis_url: str) -> None:
    """Five actions on the same project and branch are called one at a time; all of them succeed."""
    store = Store(redis)
    await _accept(store, 5, same_branch=True)
    fake = FakeCodeship(hold_s=0.05)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as http:
        await _drain(redis_url, store, Downstream(SETTINGS, http), RetryPolicy(busy_s=0.02))
    assert len(fake.builds) == 5
    assert fake.most_in_flight == 1


async def test_lock_lease_is_exclusive_and_released_only_by_its_holder(redis: Redis) -> None:
    """A target lease refuses a second holder, ignores a release by a non-holder and frees on release."""
    locks = InflightLocks(redis, lease_s=5)
    key = inflight_key("codeship.trigger_build", {"project": "acme/web", "ref": "heads/main"})
    assert key == "chainer:inflight:codeship:acme/web:heads/main"
    assert await locks.acquire(key, "a") is None
    assert await locks.acquire(key, "a") is None  # re-entrant for the same action
    assert await locks.acquire(key, "b") == "a"
    await locks.release(key, "b")
    assert await locks.acquire(key, "b") == "a"
    await locks.release(key, "a")
    assert await locks.acquire(key, "b") is None
