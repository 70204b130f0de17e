"""A queued job starts at once; busy targets pass from one action to the next in arrival order (issue 11).

Everything goes through real arq workers (``ChainerWorker`` in this process, or `chainer worker` subprocesses),
the suite's real redis-server, the ASGI app for deliveries and a loopback CircleCI that records every trigger
(``Circle``). Time bounds are generous: each one is far below what the behaviour replaced would have taken
(the poll delay is 30 s where a test asserts "within 5 s"; the old fixed lease kept a dead worker's target
for 70 s where a test allows 20 s), never a tight margin.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import TimeoutError as RedisTimeoutError

from chainer import clock
from chainer.app import create_app
from chainer.heartbeat import WORKERS_KEY
from chainer.limits import InflightLocks, inflight_key
from chainer.settings import Secret, Settings
from chainer.store import Store, keys
from chainer.store.codec import job_deserializer, job_serializer
from chainer.store.connections import connect, connect_arq, dedicated_client
from chainer.worker import ChainerWorker, create_worker
from tests import payloads
from tests.helpers import LoopbackApi, parse_rules
from tests.processes import worker_process

pytestmark = pytest.mark.integration

RULES = """
version: 1
rules:
  - name: fan
    when: {provider: codeship, project: acme/lib, status: success}
    then:
      - circleci.trigger_pipeline:
          project: gh/acme/api
          branch: "{{ event.branch }}"
          parameters: {upstream: "{{ event.build_id }}"}
  - name: one
    when: {provider: codeship, project: acme/one, status: success}
    then:
      - circleci.trigger_pipeline:
          project: gh/acme/one
          branch: main
          parameters: {upstream: "{{ event.build_id }}"}
"""
HOOK, CIRCLE_TOKEN = "hook-token", "circle-token"
POLL_S = 30.0  # the poll delay of the in-process workers: far longer than any bound below
SOON_S = 5.0  # "at once": a bound by a wide margin, far under the poll delay


@dataclass
class Call:
    """One trigger request at the loopback CircleCI: the event it carries, and when it arrived and was answered
    (wall clock, seconds)."""

    upstream: str
    branch: str
    start: float
    end: float


@dataclass
class Circle:
    """A loopback CircleCI v2: 201 for every trigger, after ``hold_s``; requests for an upstream in ``hang`` are
    held until ``release`` is set; the first request for an upstream in ``fail_once`` gets a 503."""

    url: str = ""
    hold_s: float = 0.0
    hang: set[str] = field(default_factory=set)
    fail_once: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)
    calls: list[Call] = field(default_factory=list)
    arrived: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def upstreams(self) -> list[str]:
        with self.lock:
            return [c.upstream for c in self.calls]

    def answer(self, body: bytes) -> tuple[int, dict[str, Any]]:
        start = time.time()
        data = json.loads(body or b"{}")
        upstream = str((data.get("parameters") or {}).get("upstream"))
        with self.lock:
            self.arrived.append(upstream)
            failing = upstream in self.fail_once
            self.fail_once.discard(upstream)
        if upstream in self.hang:
            self.release.wait(60)
        elif self.hold_s:
            time.sleep(self.hold_s)
        with self.lock:
            self.calls.append(Call(upstream, str(data.get("branch")), start, time.time()))
        if failing:
            return 503, {"message": "try again"}
        return 201, {"id": str(uuid.uuid4()), "number": len(self.calls), "state": "created", "created_at": "x"}


@pytest.fixture
def circle() -> Iterator[Circle]:
    state = Circle()
    with LoopbackApi(lambda request, body: state.answer(body)) as api:
        state.url = api.url
        try:
            yield state
        finally:
            state.release.set()  # let a held request answer, so the server can stop


def make_settings(circle: Circle, **overrides: Any) -> Settings:
    timings: dict[str, Any] = {"worker_poll_seconds": POLL_S, "rules_poll_seconds": 3600}
    return Settings(
        hook_token=Secret(HOOK), circleci_token=Secret(CIRCLE_TOKEN), circleci_url=circle.url, **(timings | overrides)
    )


async def eventually(check: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    """Check every 20 ms until ``check`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen within {timeout:g} s")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, redis_url: str) -> AsyncIterator[ChainerWorker]:
    """A ChainerWorker on its own pool, yielded once it has started, run the start-up sweep and trim and gone idle."""
    worker = create_worker(
        settings, handle_signals=False, redis_pool=connect_arq(redis_url, retries=0), ruleset=parse_rules(RULES)
    )
    task = asyncio.create_task(worker.async_run())
    try:
        await eventually(lambda: worker.jobs_complete >= 2 or task.done(), "the worker's start-up sweep and trim")
        assert not task.done(), task
        await asyncio.sleep(0.3)  # past the look at the queue that follows the sweep: waiting now
        yield worker
    finally:
        await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def web(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, ruleset=parse_rules(RULES), store=Store(redis))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


async def deliver(client: httpx.AsyncClient, build_id: int, project: str = "acme/lib") -> str:
    """POST a successful Codeship build; returns the action id it queued."""
    body = payloads.codeship("success", build_id=build_id, project=project, branch=f"b-{build_id}")
    answer = await client.post(
        f"/hooks/codeship/{HOOK}", content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 202 and answer.json()["queued"] == 1, answer.text
    rule = "one" if project == "acme/one" else "fan"
    return f"{answer.json()['event_id']}:{rule}:0"


async def state_of(redis: Redis, action: str) -> str:
    return (await redis.hget(keys.action(action), "state") or b"").decode()


# -- the wake-up's own connection ---------------------------------------------------------------------


async def test_the_blocking_read_has_a_connection_of_its_own_that_outwaits_the_pool_timeout(redis_url: str) -> None:
    """The wake list is read on a client of its own (one connection, nothing retried) whose reads may block longer
    than the socket timeout of the pool it was made from; the same BLPOP on that pool times out."""
    pool = Redis.from_url(redis_url, socket_timeout=0.3)
    own = dedicated_client(pool, socket_timeout=3)
    try:
        assert own.connection_pool is not pool.connection_pool and own.connection_pool.max_connections == 1
        assert await own.blpop(["chainer:test:nothing"], timeout=1) is None
        with pytest.raises(RedisTimeoutError):
            await pool.blpop(["chainer:test:nothing"], timeout=1)
    finally:
        await own.aclose(close_connection_pool=True)
        await pool.aclose()
    sentinel = connect("redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster/3", retries=0)
    made = dedicated_client(sentinel, socket_timeout=9).connection_pool
    assert isinstance(made, SentinelConnectionPool) and made.service_name == "mymaster"
    assert (made.connection_kwargs["db"], made.connection_kwargs["socket_timeout"], made.max_connections) == (3, 9, 1)


# -- waking an idle worker --------------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_an_accepted_job_starts_at_once_not_at_the_next_poll(
    redis: Redis, redis_url: str, circle: Circle
) -> None:
    """With a 30 s poll delay, the action of an event accepted through the app reaches CircleCI within 5 s:
    the accept script's wake token ended the idle worker's wait."""
    settings = make_settings(circle)
    async with running_worker(settings, redis_url) as worker, web(settings, redis) as client:
        posted = time.time()
        action = await deliver(client, 101)
        await eventually(lambda: circle.upstreams() == ["101"], "the trigger at CircleCI")
        await eventually(lambda: _is(state_of(redis, action), "done"), "the action done")
        assert worker.waker is not None and worker.waker.tokens >= 1
    assert circle.calls[0].start - posted < SOON_S
    assert circle.calls[0].branch == "b-101"


@pytest.mark.timeout(90)
async def test_a_deferred_retry_runs_at_its_time_neither_early_nor_at_the_next_poll(
    redis: Redis, redis_url: str, circle: Circle
) -> None:
    """A 503 schedules a retry 0.5-1 s later (backoff base and cap 1 s); nothing wakes the worker for it, yet it
    runs then: not before the time the retry record announced, and long before the 30 s poll delay."""
    circle.fail_once.add("202")
    settings = make_settings(circle, retry_base_seconds=1.0, retry_cap_seconds=1.0)
    async with running_worker(settings, redis_url), web(settings, redis) as client:
        action = await deliver(client, 202)
        await eventually(lambda: _is(state_of(redis, action), "done"), "the retried action done")
    store = Store(redis)
    event_id = action.split(":", 1)[0]
    retry = (await store.read_audit(event_id=event_id, match={"type": {"action.retry_scheduled"}})).items
    assert len(retry) == 1 and 0.5 <= retry[0]["defer_s"] <= 1.0, retry
    first, second = circle.calls
    scheduled_ms = int(retry[0]["id"].split("-")[0]) + retry[0]["defer_s"] * 1000
    assert second.start * 1000 >= scheduled_ms - 1  # not early (1 ms: the two clocks round differently)
    assert second.start - first.end < SOON_S  # and not left for the next poll


@pytest.mark.timeout(90)
async def test_wake_tokens_without_a_job_do_no_harm(redis: Redis, redis_url: str, circle: Circle) -> None:
    """A burst of tokens with nothing queued is consumed without calling anyone or touching the queue; the
    worker then still starts a real job at once. Tokens never pile up beyond the cap."""
    settings = make_settings(circle)
    async with running_worker(settings, redis_url) as worker, web(settings, redis) as client:
        await redis.lpush(keys.WAKE, *(["1"] * 40))
        await eventually(lambda: _equals(redis.llen(keys.WAKE), 0), "the tokens consumed")
        assert worker.waker is not None and worker.waker.tokens >= 40
        assert circle.calls == [] and await redis.zcard(keys.ARQ_QUEUE) <= 2  # at most the deferred sweep and trim
        posted = time.time()
        await deliver(client, 303)
        await eventually(lambda: circle.upstreams() == ["303"], "the trigger at CircleCI")
        assert circle.calls[0].start - posted < SOON_S
    async with web(settings, redis) as client:  # no worker: every accept pushes, the list stays capped
        for build in range(400, 400 + keys.WAKE_MAX + 10):
            await deliver(client, build)
    assert await redis.llen(keys.WAKE) == keys.WAKE_MAX


@pytest.mark.timeout(90)
async def test_two_idle_workers_run_each_queued_job_once(redis: Redis, redis_url: str, circle: Circle) -> None:
    """Two idle workers, then one event and then twenty at once: every action reaches CircleCI exactly once,
    each promptly, and the wake-ups went to both workers."""
    settings = make_settings(circle)
    async with (
        running_worker(settings, redis_url) as one,
        running_worker(settings, redis_url) as two,
        web(settings, redis) as client,
    ):
        posted = time.time()
        await deliver(client, 500)
        await eventually(lambda: circle.upstreams() == ["500"], "the first trigger")
        assert circle.calls[0].start - posted < SOON_S
        actions = await asyncio.gather(*(deliver(client, 501 + i) for i in range(20)))
        await eventually(lambda: len(circle.calls) == 21, "twenty more triggers")
        for action in actions:
            await eventually(lambda a=action: _is(state_of(redis, a), "done"), f"{action} done")
        assert one.waker is not None and two.waker is not None
        assert one.waker.tokens + two.waker.tokens >= 2
    assert sorted(circle.upstreams()) == sorted(str(500 + i) for i in range(21))  # each once
    for action in actions:
        assert (await redis.hget(keys.action(action), "attempts")) == b"1"


# -- busy targets ---------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_actions_for_one_target_run_one_at_a_time_in_arrival_order(
    redis: Redis, redis_url: str, circle: Circle
) -> None:
    """Eight events for one downstream project and branch, accepted one after another while two workers run:
    CircleCI sees them in the order they were accepted, never two at once, each starting after the previous
    answer. Only a release can move them along quickly: the waiting jobs' own looks are 30 s apart and the
    lease is 10 s, so eight 0.2 s calls within 20 s means each release handed the target to the next."""
    circle.hold_s = 0.2
    settings = make_settings(circle, worker_busy_recheck_seconds=POLL_S)
    async with (
        running_worker(settings, redis_url),
        running_worker(settings, redis_url),
        web(settings, redis) as client,
    ):
        started = time.monotonic()
        builds = [str(700 + i) for i in range(8)]
        actions = []
        for build in builds:
            actions.append(await deliver(client, int(build), project="acme/one"))
            await asyncio.sleep(0.005)  # a distinct arrival millisecond each
        await eventually(lambda: len(circle.calls) == len(builds), "eight triggers", timeout=60)
        took = time.monotonic() - started
        for action in actions:
            await eventually(lambda a=action: _is(state_of(redis, a), "done"), f"{action} done")
    calls = circle.calls
    assert [c.upstream for c in calls] == builds
    assert all(c.branch == "main" for c in calls)
    for before, after in itertools.pairwise(calls):
        assert after.start >= before.end, (before, after)  # one at a time
    assert took < 20
    for action in actions:
        assert (await redis.hget(keys.action(action), "attempts")) == b"1"  # waiting is not an attempt
    target = inflight_key("circleci.trigger_pipeline", {"project": "gh/acme/one", "branch": "main"})
    assert await redis.exists(target, keys.waiting(target)) == 0  # nothing held, nobody left waiting


@pytest.mark.timeout(180)
async def test_a_killed_holder_frees_its_target_within_the_lease(
    tmp_path: Path, redis: Redis, redis_url: str, circle: Circle
) -> None:
    """A `chainer worker` (2 s lease) is killed with -9 while its call to a target hangs and three more actions
    for that target wait behind it. A second worker process sends those three, in order, well before the
    in-progress timeout (70 s) after which arq would re-run the killed job: the dead holder's lease ran out."""
    (tmp_path / "rules.yaml").write_text(RULES)
    env = {
        **os.environ,
        "CHAINER_REDIS_URL": redis_url,
        "CHAINER_RULES": str(tmp_path / "rules.yaml"),
        "CHAINER_CIRCLECI_URL": circle.url,
        "CHAINER_CIRCLECI_TOKEN": CIRCLE_TOKEN,
        "CHAINER_TARGET_LEASE_SECONDS": "2",
        "CHAINER_TARGET_LEASE_RENEW_SECONDS": "0.5",
        "CHAINER_WORKER_HEARTBEAT_SECONDS": "0.2",
    }
    for name in ("CHAINER_CODESHIP_USER", "CHAINER_CODESHIP_PASSWORD", "CHAINER_DRY_RUN"):
        env.pop(name, None)
    circle.hang.add("800")
    settings = make_settings(circle)
    target = inflight_key("circleci.trigger_pipeline", {"project": "gh/acme/one", "branch": "main"})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with web(settings, redis) as client:
        with worker_process(tmp_path / "a", env) as (first, _first_log):
            await eventually(lambda: _equals(redis.zcard(WORKERS_KEY), 1), "the first worker's heartbeat", 30)
            await deliver(client, 800, project="acme/one")
            await eventually(lambda: circle.arrived == ["800"], "the hanging call")
            waiting = []
            for build in (801, 802, 803):
                waiting.append(await deliver(client, build, project="acme/one"))
                await asyncio.sleep(0.005)
            await eventually(lambda: _equals(redis.zcard(keys.waiting(target)), 3), "three waiting actions")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
            killed = time.monotonic()
        with worker_process(tmp_path / "b", env) as (second, second_log):
            await eventually(lambda: len(circle.calls) == 3, "the three waiting actions sent", timeout=60)
            freed_after = time.monotonic() - killed
            for action in waiting:
                await eventually(lambda a=action: _is(state_of(redis, a), "done"), f"{action} done")
            assert second.poll() is None, second_log.read_text()[-3000:]
    assert [c.upstream for c in circle.calls] == ["801", "802", "803"]
    for before, after in itertools.pairwise(circle.calls):
        assert after.start >= before.end
    assert freed_after < 20  # the killed worker's job itself is only re-run after 70 s
    assert "Traceback" not in second_log.read_text()


async def test_a_hand_over_racing_a_wait_keeps_the_job_due(redis: Redis, redis_url: str, circle: Circle) -> None:
    """The holder releases between a waiting job's claim and arq's recording of its deferred retry: the job was
    handed the lease and made due, and the worker's retry bookkeeping must not push it back by its wait."""
    settings = make_settings(circle)
    worker = create_worker(settings, handle_signals=False, redis_pool=connect_arq(redis_url, retries=0))
    locks = InflightLocks(redis, lease_s=10)
    key = inflight_key("circleci.trigger_pipeline", {"project": "gh/acme/one", "branch": "main"})
    job = "act:e:one:0"
    now = int(time.time() * 1000)
    await redis.zadd(keys.ARQ_QUEUE, {job: now - 5})  # picked up: its in-progress key is set while it runs
    await redis.set(keys.arq_in_progress(job), b"1", px=70_000)
    assert await locks.acquire(key, "act:holder:0") is None
    busy = await locks.claim(key, job, arrival_ms=now)
    assert busy is not None and (busy.holder, busy.position) == ("act:holder:0", 0)
    assert await locks.release(key, "act:holder:0")  # hands over while the job is still finishing its run
    assert await redis.get(key) == job.encode()
    try:
        await worker.finish_job(job, False, None, None, False, 60_000 + 5, None)  # arq: retry in 60 s
    finally:
        await worker.close()
    score = await redis.zscore(keys.ARQ_QUEUE, job)
    assert score is not None and score <= time.time() * 1000  # due now, not in 60 s
    assert await redis.exists(keys.arq_in_progress(job)) == 0
    assert await redis.zscore(keys.REWAKE, job) is None
    # Without a hand-over, the same bookkeeping defers the job as arq would.
    await redis.zadd(keys.ARQ_QUEUE, {"act:other:0": now})
    worker = create_worker(settings, handle_signals=False, redis_pool=connect_arq(redis_url, retries=0))
    try:
        await worker.finish_job("act:other:0", False, None, None, False, 60_000, None)
    finally:
        await worker.close()
    # arq's delay, shifted onto the Redis clock (an earlier sync may have left this process an offset)
    assert await redis.zscore(keys.ARQ_QUEUE, "act:other:0") == now + 60_000 + round(clock.offset_ms())


# -- stopping without stranding a job ------------------------------------------------------------------


async def test_a_job_claimed_as_the_worker_stops_is_given_back_at_once(
    redis: Redis, redis_url: str, circle: Circle
) -> None:
    """A worker stopping right after claiming a job (arq wrote its in-progress key) but before the run began
    gives the claim back, so the next worker runs the job at once instead of after job timeout + 10 s."""
    settings = make_settings(circle)
    async with web(settings, redis) as client:
        action = await deliver(client, 910)
    job = (await redis.hget(keys.action(action), "job_id") or b"").decode()
    await redis.delete(keys.WAKE)
    stopping = create_worker(
        settings, handle_signals=False, redis_pool=connect_arq(redis_url, retries=0), ruleset=parse_rules(RULES)
    )
    await stopping.start_jobs([job.encode()])  # arq's claim: in-progress key written, the run's task created
    assert job in stopping.tasks and not stopping.tasks[job].done()
    await stopping.close()  # cancels that task before its first step (nothing ran in between)
    assert stopping.jobs_complete == stopping.jobs_failed == 0
    assert await redis.exists(keys.arq_in_progress(job)) == 0
    assert await redis.zscore(keys.ARQ_QUEUE, job) is not None
    posted = time.time()
    async with running_worker(settings, redis_url):
        await eventually(lambda: _is(state_of(redis, action), "done"), "the action done by the next worker")
    assert circle.upstreams() == ["910"] and circle.calls[0].start - posted < SOON_S


async def test_a_cron_run_cut_short_by_a_shutdown_is_not_held_back(
    redis: Redis, redis_url: str, circle: Circle
) -> None:
    """arq keeps a cron job's in-progress key for 60 s after its run, also when the run was cancelled by a
    shutdown and the job stays queued: a draining worker then waits a minute for it. A cancelled run's key
    goes at once; a finished run's hold (against a second run of a unique cron job) stays."""
    worker = create_worker(make_settings(circle), handle_signals=False, redis_pool=connect_arq(redis_url, retries=0))
    now = int(time.time() * 1000)
    try:
        for job in ("sweep:1", "sweep:2"):
            await redis.zadd(keys.ARQ_QUEUE, {job: now})
            await redis.set(keys.arq_in_progress(job), b"1", px=70_000)
        await worker.finish_job("sweep:1", False, None, None, False, None, 60.0)  # cancelled: run it again
        await worker.finish_job("sweep:2", True, None, 0, False, None, 60.0)  # finished
    finally:
        await worker.close()
    assert await redis.exists(keys.arq_in_progress("sweep:1")) == 0
    assert await redis.zscore(keys.ARQ_QUEUE, "sweep:1") == now
    assert 0 < await redis.pttl(keys.arq_in_progress("sweep:2")) <= 60_000
    assert await redis.zscore(keys.ARQ_QUEUE, "sweep:2") is None


class SlowClaims(ArqRedis):
    """arq's client, whose first answer to a job claim after ``arm`` arrives 0.5 s late (a slow network): Redis
    has written the job's in-progress key, the worker does not know it yet. ``delayed`` is set meanwhile."""

    armed = False
    delayed: asyncio.Event

    def arm(self) -> None:
        self.armed, self.delayed = True, asyncio.Event()

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:  # type: ignore[override]
        answer = await super().evalsha(sha, numkeys, *keys_and_args)
        claim = numkeys == 2 and str(keys_and_args[1]).startswith(keys.ARQ_IN_PROGRESS_PREFIX)
        if self.armed and claim and answer:
            self.armed = False
            self.delayed.set()
            await asyncio.sleep(0.5)
        return answer


@pytest.mark.timeout(60)
async def test_a_claim_answered_after_the_worker_was_told_to_stop_still_runs_its_job(
    redis: Redis, redis_url: str, circle: Circle
) -> None:
    """The worker is stopped while the answer to its claim of a job is on its way (Redis wrote the in-progress
    key): the claim is completed and the job runs before the worker ends, rather than the key holding the
    job back for job timeout + 10 s."""
    settings = make_settings(circle)
    pool = connect(redis_url, cls=SlowClaims, retries=0)
    pool.job_serializer, pool.job_deserializer = job_serializer, job_deserializer
    worker = create_worker(settings, handle_signals=False, redis_pool=pool, ruleset=parse_rules(RULES))
    task = asyncio.create_task(worker.async_run())
    try:
        await eventually(lambda: worker.jobs_complete >= 2, "the worker's start-up sweep and trim")
        await asyncio.sleep(0.3)
        pool.arm()
        async with web(settings, redis) as client:
            action = await deliver(client, 920)
        await asyncio.wait_for(pool.delayed.wait(), timeout=20)
    finally:
        await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    job = (await redis.hget(keys.action(action), "job_id") or b"").decode()
    assert await state_of(redis, action) == "done", await redis.pttl(keys.arq_in_progress(job))
    assert circle.upstreams() == ["920"]


# -- idle CPU -------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(90)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
async def test_an_idle_worker_uses_little_cpu(tmp_path: Path, redis: Redis, redis_url: str) -> None:
    """A `chainer worker` with the default timings, idle for 3 s, uses well under a tenth of a core (the target
    is 1 %; the bound only catches a busy loop)."""
    (tmp_path / "rules.yaml").write_text(RULES)
    env = {**os.environ, "CHAINER_REDIS_URL": redis_url, "CHAINER_RULES": str(tmp_path / "rules.yaml")}
    with worker_process(tmp_path, env) as (process, log_path):
        await eventually(lambda: _equals(redis.zcard(WORKERS_KEY), 1), "the worker's heartbeat", 30)
        await asyncio.sleep(1.0)  # start-up done
        before, started = cpu_seconds(process.pid), time.monotonic()
        await asyncio.sleep(3.0)
        used, elapsed = cpu_seconds(process.pid) - before, time.monotonic() - started
        assert process.poll() is None, log_path.read_text()[-3000:]
    assert used / elapsed < 0.10, f"{used:.2f} s of CPU in {elapsed:.1f} s"


async def _is(value: Awaitable[str], expected: str) -> bool:
    return await value == expected


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
