"""Outbound limits through real arq workers: the Codeship request budget and one call per target."""

from __future__ import annotations

import asyncio
import bisect
import json
import time
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chainer.intake import Intake
from chainer.jobs import RetryPolicy, run_action, target_key
from chainer.limits import InflightLocks, RateLimiter, inflight_key
from chainer.providers import Downstream
from chainer.settings import Secret, Settings
from chainer.store import Store
from chainer.store.connections import connect_arq
from chainer.web.hooks import status_of
from chainer.worker import create_worker
from tests import payloads
from tests.helpers import job_ctx, parse_rules

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
        assert status_of(reply) == 202, reply.body()


async def _drain(redis_url: str, store: Store, downstream: Downstream, policy: RetryPolicy) -> None:
    worker = create_worker(
        SETTINGS,
        burst=True,
        handle_signals=False,
        poll_delay=0.01,
        max_jobs=20,
        redis_pool=connect_arq(redis_url, retries=0),
        downstream=downstream,
        retry_policy=policy,
    )
    try:
        await asyncio.wait_for(worker.main(), timeout=60)
    finally:
        await worker.close()


class RecordingLimiter(RateLimiter):
    """The real limiter, noting the Redis server time of every slot it grants (its own clock, not the client's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.granted: list[int] = []

    async def take(self) -> tuple[int, int]:
        wait, at = await super().take()
        if wait == 0:
            self.granted.append(at)
        return wait, at


def most_in_any_window(times_ms: list[int], window_ms: int) -> int:
    """The largest number of ``times_ms`` inside one half-open window ``[t, t + window_ms)``."""
    times = sorted(times_ms)
    return max((bisect.bisect_left(times, t + window_ms) - i for i, t in enumerate(times)), default=0)


def test_most_in_any_window_counts_half_open_windows() -> None:
    assert most_in_any_window([], 1000) == 0
    assert most_in_any_window([0, 999, 1000, 1999, 2000], 1000) == 2
    assert most_in_any_window([5, 5, 5, 1004, 1005], 1000) == 4


@pytest.mark.timeout(90)
async def test_codeship_budget_is_never_exceeded_in_any_window(redis: Redis, redis_url: str) -> None:
    """100 queued Codeship actions never exceed the request budget in any window (20 a second stands in for
    60 a minute: a budget small enough that the worker must wait for it even on a slow, busy machine).

    The windows are checked on the limiter's own timestamps (the Redis server clock it decides by), and every
    request that reached Codeship is one slot it granted, so client timing plays no part.
    """
    store = Store(redis)
    await _accept(store, 100, same_branch=False)
    fake = FakeCodeship()
    limiter = RecordingLimiter(redis, "chainer:rate:codeship", limit=20, window_s=1.0, label="Codeship")
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as http:
        downstream = Downstream(SETTINGS, http, throttles={"codeship": limiter})
        await _drain(redis_url, store, downstream, RetryPolicy(busy_s=0.02))
    assert len(fake.builds) == 100
    assert len(limiter.granted) == len(fake.times)  # auth, project lookup, 100 builds: each took a slot
    assert most_in_any_window(limiter.granted, limiter.window_ms) <= 20
    assert max(limiter.granted) - min(limiter.granted) >= 5 * limiter.window_ms  # 102 slots need at least six windows
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


async def _until(predicate: Any, what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate`` (bounded) until true; fails the test naming ``what`` when it never is."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(0.02)


@pytest.mark.timeout(90)
async def test_busy_and_throttled_waits_do_not_count_as_attempts(redis: Redis, redis_url: str) -> None:
    """An action that waits for a busy target, then for the Codeship budget, then succeeds has one attempt.

    The target's lease is held by another action until the worker has bounced off it twice; the budget is
    kept spent (as by other workers' requests) until the worker has been throttled. Only then can the call go
    out, so both waits certainly happened; the ledger must count the one real call, not the waits.
    """
    from chainer.app import create_app

    app = create_app(SETTINGS, ruleset=parse_rules(RULES), store=Store(redis))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        body = json.dumps(payloads.codeship("success", build_id=77)).encode()
        answer = await client.post("/hooks/codeship/hook", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 202 and answer.json()["queued"] == 1, answer.text
    action = f"{answer.json()['event_id']}:web-after-lib:0"
    store = Store(redis)
    ledger = await store.get_action(action)
    target = target_key(ledger["action"], json.loads(ledger["params"]))
    other = InflightLocks(redis, lease_s=60)
    assert await other.acquire(target, "another-action") is None

    rate_key, limit = "chainer:rate:codeship:test", 3

    async def spend_budget() -> None:  # fresh server-time entries: the window is always full
        seconds, micros = await redis.time()
        now = seconds * 1000 + micros // 1000
        await redis.zadd(rate_key, {f"other-{i}": now for i in range(limit)})

    async def keep_spent(stop: asyncio.Event) -> None:
        while not stop.is_set():
            await spend_budget()
            await asyncio.sleep(0.02)

    async def tries() -> int:
        return int(await redis.get(f"arq:retry:{ledger['job_id']}") or 0)

    async def throttled() -> bool:
        waits = (await store.read_audit(match={"type": {"action.retry_scheduled"}}, event_id=ledger["event_id"])).items
        return any("outbound limit" in (w.get("reason") or "") for w in waits)

    fake = FakeCodeship()
    limiter = RateLimiter(redis, rate_key, limit=limit, window_s=1.0, label="Codeship")
    stop = asyncio.Event()
    await spend_budget()
    filler = asyncio.create_task(keep_spent(stop))
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as http:
        downstream = Downstream(SETTINGS, http, throttles={"codeship": limiter})
        worker = asyncio.create_task(_drain(redis_url, store, downstream, RetryPolicy(busy_s=0.05)))
        try:
            await _until(lambda: _at_least(tries, 3), "two bounces off the busy target")
            assert (await store.get_action(action))["attempts"] == "0"
            await other.release(target, "another-action")
            await _until(throttled, "a wait for the Codeship budget")
            stop.set()
            await filler
            await asyncio.wait_for(worker, timeout=60)
        finally:
            stop.set()
            for task in (worker, filler):
                task.cancel()
            await asyncio.gather(worker, filler, return_exceptions=True)
    ledger = await store.get_action(action)
    assert ledger["state"] == "done"
    assert len(fake.builds) == 1  # the one real call
    assert int(ledger["attempts"]) == len(fake.builds)
    records = (await store.read_audit(event_id=ledger["event_id"], limit=500)).items
    waits = [r for r in records if r["type"] == "action.retry_scheduled"]
    assert waits and all("outbound limit" in r["reason"] and r["next_attempt"] == 1 for r in waits)
    assert [r["attempt"] for r in records if r["type"] == "attempt.succeeded"] == [1]
    assert not [r for r in records if r["type"] in {"attempt.failed", "action.dead"}]


async def _at_least(get: Any, n: int) -> bool:
    return bool(await get() >= n)


GITHUB_RULES = """
version: 1
rules:
  - name: dispatch-both
    when: {provider: codeship, project: acme/lib, status: success}
    then:
      - github.repository_dispatch: {repo: acme/one, event_type: lib-built}
      - github.repository_dispatch: {repo: acme/two, event_type: lib-built}
      - buildkite.create_build: {pipeline: acme/one, branch: main, commit: HEAD}
      - buildkite.create_build: {pipeline: acme/two, branch: main, commit: HEAD}
"""


async def test_targets_are_the_repository_or_pipeline_an_action_names(redis: Redis) -> None:
    """Leases follow the catalogue's target argument: a call to one GitHub repository or Buildkite pipeline does
    not hold up a call to another one on the same branch."""
    settings = Settings(
        hook_token=Secret("hook"),
        github_token=Secret("ghp-token"),
        github_url="https://github.example",
        buildkite_token=Secret("bk-token"),
        buildkite_url="https://buildkite.example",
    )
    store = Store(redis)
    intake = Intake(settings, store, lambda: parse_rules(GITHUB_RULES))
    body = json.dumps(payloads.codeship("success", build_id=91)).encode()
    answer = await intake.receive("codeship", {"content-type": "application/json"}, body, "hook")
    assert status_of(answer) == 202
    actions = [f"{answer.body()['event_id']}:dispatch-both:{i}" for i in range(4)]
    ledgers = [await store.get_action(a) for a in actions]
    targets = [target_key(ledger["action"], json.loads(ledger["params"])) for ledger in ledgers]
    assert targets == [
        "chainer:inflight:github:acme/one:-",
        "chainer:inflight:github:acme/two:-",
        "chainer:inflight:buildkite:acme/one:main",
        "chainer:inflight:buildkite:acme/two:main",
    ]
    locks = InflightLocks(redis, lease_s=60)
    for held in (targets[0], targets[2]):  # another call is in flight at acme/one on each provider
        assert await locks.acquire(held, "another-action") is None

    def provider(request: httpx.Request) -> httpx.Response:
        if request.url.host == "github.example":
            return httpx.Response(204)
        return httpx.Response(201, json={"id": "b-1", "number": 1, "web_url": "https://buildkite.example/b/1"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(provider)) as http:
        ctx = job_ctx(store, settings, Downstream(settings, http), locks=locks)
        assert await run_action(ctx, actions[1]) == "done"
        assert await run_action(ctx, actions[3]) == "done"
