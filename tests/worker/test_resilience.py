"""Workers outlive Redis outages and report that they are alive; /readyz counts them.

The outage test runs a real ``chainer worker`` process against a private redis-server that it stops
for longer than the worker's Redis retry window and starts again on the same port and data.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.errors import ConfigError
from chainer.heartbeat import WORKERS_KEY
from chainer.providers import Downstream
from chainer.settings import Secret, Settings
from chainer.store import Store, action_key
from chainer.store.codec import job_deserializer, job_serializer
from chainer.store.connections import connect, connect_arq
from chainer.worker import create_worker
from tests import payloads
from tests.helpers import LoopbackApi, parse_rules
from tests.processes import worker_process
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

RULES = """
version: 1
rules:
  - name: api-after-lib
    when: {project: acme/lib, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api}
"""
HOOK, ADMIN, CIRCLE_TOKEN = "hook-token", "admin-token", "circle-token"
PIPELINE = "5034460f-c7c4-4c43-9457-de07e2029e7b"


async def eventually(check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` every 50 ms until it holds; fail naming ``what`` after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.05)):
        outcome = check()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{what}: not seen within {timeout:g} s")


def asgi_client(settings: Settings, redis: Redis) -> httpx.AsyncClient:
    app = create_app(settings, ruleset=parse_rules(RULES), store=Store(redis))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def ready_workers(client: httpx.AsyncClient) -> int:
    body = (await client.get("/readyz")).json()
    count: int = body["workers"]
    return count


# -- /readyz through the ASGI app ----------------------------------------------------------------


async def test_readyz_counts_a_live_worker_and_drops_it_on_clean_shutdown(redis: Redis, redis_url: str) -> None:
    """/readyz reports 0 workers, then 1 while a worker runs, then 0 after it stops; ?workers=1 gates on it."""
    settings = Settings(hook_token=Secret(HOOK), worker_heartbeat_seconds=0.05)
    async with asgi_client(settings, redis) as client:
        alone = await client.get("/readyz")
        gated = await client.get("/readyz?workers=1")
        assert (alone.status_code, alone.json()["status"], alone.json()["workers"]) == (200, "ready", 0)
        assert (gated.status_code, gated.json()["workers"]) == (503, 0)
        assert gated.json()["problems"] == ["0 live worker(s), 1 required"]
        worker = create_worker(
            settings,
            handle_signals=False,
            poll_delay=0.01,
            redis_pool=connect_arq(redis_url, retries=0),
            ruleset=parse_rules(RULES),
        )
        running = asyncio.create_task(worker.async_run())
        try:
            await eventually(lambda: _equals(ready_workers(client), 1), "the worker's heartbeat")
            one = await client.get("/readyz?workers=1")
            two = await client.get("/readyz?workers=2")
            assert (one.status_code, one.json()["workers"], one.json()["status"]) == (200, 1, "ready")
            assert two.status_code == 503 and two.json()["problems"] == ["1 live worker(s), 2 required"]
        finally:
            await worker.close()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        after = await client.get("/readyz?workers=1")
    assert (after.status_code, after.json()["workers"]) == (503, 0)
    assert await redis.zcard(WORKERS_KEY) == 0


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


@pytest.mark.parametrize("value", ["", "x", "-1", "1.5", "10001", "１"])
async def test_readyz_refuses_a_bad_workers_parameter(redis: Redis, value: str) -> None:
    """A workers= that is not a whole number from 0 to 10000 gets a 400 naming the parameter."""
    async with asgi_client(Settings(), redis) as client:
        response = await client.get("/readyz", params={"workers": value})
    assert response.status_code == 400 and response.json()["error"].startswith("workers:")


async def test_readyz_reports_no_worker_count_when_redis_is_down() -> None:
    """With Redis unreachable /readyz is 503 and the worker count is unknown (null), not 0."""
    from tests.redis_server import free_port

    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    async with asgi_client(Settings(), dead) as client:
        response = await client.get("/readyz")
    await dead.aclose()
    assert response.status_code == 503 and response.json()["workers"] is None


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CHAINER_WORKER_REDIS_RETRIES": "2.5"}, "CHAINER_WORKER_REDIS_RETRIES"),
        ({"CHAINER_WORKER_REDIS_RETRIES": "-1"}, "CHAINER_WORKER_REDIS_RETRIES"),
        ({"CHAINER_WORKER_RECONNECT_MAX_SECONDS": "inf"}, "CHAINER_WORKER_RECONNECT_MAX_SECONDS"),
        ({"CHAINER_WORKER_HEARTBEAT_SECONDS": "nan"}, "CHAINER_WORKER_HEARTBEAT_SECONDS"),
        ({"CHAINER_WORKER_HEARTBEAT_SECONDS": "0"}, "CHAINER_WORKER_HEARTBEAT_SECONDS"),
    ],
)
def test_worker_timing_settings_are_validated(env: dict[str, str], variable: str) -> None:
    """Malformed worker timings stop the process with the variable's name; good ones are read."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(variable)
    good = Settings.from_env(
        {
            "CHAINER_WORKER_REDIS_RETRIES": "3",
            "CHAINER_WORKER_RECONNECT_MAX_SECONDS": "0.5",
            "CHAINER_WORKER_HEARTBEAT_SECONDS": "2",
        }
    )
    assert (good.worker_redis_retries, good.worker_reconnect_max_seconds, good.worker_heartbeat_seconds) == (3, 0.5, 2)
    assert Settings.from_env({}).worker_redis_retries == 20


# -- a real worker process through a Redis outage --------------------------------------------------


Seen = list[tuple[str, str]]


@pytest.fixture
def circleci() -> Iterator[tuple[str, Seen]]:
    """A loopback CircleCI v2 that creates a pipeline for every trigger and records (path, token)."""
    seen: Seen = []

    def answer(request: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, Any]]:
        seen.append((request.path, request.headers.get("circle-token", "")))
        return 201, {"id": PIPELINE, "number": 1, "state": "created", "created_at": "x"}

    with LoopbackApi(answer) as api:
        yield api.url, seen


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and start again."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def private_client(private_redis: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(private_redis.url, socket_connect_timeout=1)
    yield client
    await client.aclose()


def lines(log_path: Path, event: str) -> list[str]:
    return [line for line in log_path.read_text(errors="replace").splitlines() if f" chainer.worker {event}" in line]


def worker_env(tmp_path: Path, redis: RedisServer, *, retries: int, **extra: str) -> dict[str, str]:
    """The environment of a worker process on ``redis`` with this module's rules and compressed outage timings:
    ``retries`` Redis retries (about 0.15 s each instead of the default 20), reconnect probes and heartbeats
    every 0.2 s."""
    (tmp_path / "rules.yaml").write_text(RULES)
    return {
        **os.environ,
        "CHAINER_REDIS_URL": redis.url,
        "CHAINER_RULES": str(tmp_path / "rules.yaml"),
        "CHAINER_WORKER_REDIS_RETRIES": str(retries),
        "CHAINER_WORKER_RECONNECT_MAX_SECONDS": "0.2",
        "CHAINER_WORKER_HEARTBEAT_SECONDS": "0.2",
        **extra,
    }


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
async def test_worker_process_rides_out_a_redis_outage_and_then_runs_new_jobs(
    tmp_path: Path, private_redis: RedisServer, private_client: Redis, circleci: tuple[str, Seen]
) -> None:
    """A worker whose Redis is stopped past its retry window stays up, logs one lost and one restored line,
    then runs a newly accepted event's action against a loopback CircleCI; killed, it drops out of /readyz."""
    circleci_url, seen = circleci
    env = worker_env(
        tmp_path, private_redis, retries=2, CHAINER_CIRCLECI_URL=circleci_url, CHAINER_CIRCLECI_TOKEN=CIRCLE_TOKEN
    )
    for name in ("CHAINER_CODESHIP_USER", "CHAINER_CODESHIP_PASSWORD", "CHAINER_DRY_RUN"):
        env.pop(name, None)
    settings = Settings(hook_token=Secret(HOOK), admin_token=Secret(ADMIN))
    with worker_process(tmp_path, env) as (process, log_path):
        async with asgi_client(settings, private_client) as client:
            await eventually(lambda: _equals(ready_workers(client), 1), "the worker's first heartbeat")

            private_redis.stop()
            await eventually(lambda: bool(lines(log_path, "redis_lost")) or process.poll() is not None, "redis_lost")
            await asyncio.sleep(1.5)  # stay down across several reconnect probes (the cap is 0.2 s)
            assert process.poll() is None, log_path.read_text()[-3000:]
            private_redis.start()
            await eventually(lambda: bool(lines(log_path, "redis_restored")), "the redis_restored line")
            assert process.poll() is None, log_path.read_text()[-3000:]
            await eventually(lambda: _equals(ready_workers(client), 1), "/readyz counting the worker again")

            body = json.dumps(payloads.codeship("success")).encode()
            accepted = await client.post(
                f"/hooks/codeship/{HOOK}", content=body, headers={"content-type": "application/json"}
            )
            assert accepted.status_code == 202 and accepted.json()["queued"] == 1
            action = f"{accepted.json()['event_id']}:api-after-lib:0"
            await eventually(lambda: _state_is(private_client, action, b"done"), "the action done")
            assert seen == [("/api/v2/project/gh/acme/api/pipeline", CIRCLE_TOKEN)]

            assert len(lines(log_path, "redis_lost")) == 1 and len(lines(log_path, "redis_restored")) == 1
            assert " warning chainer.worker redis_lost" in lines(log_path, "redis_lost")[0]
            assert " info chainer.worker redis_restored" in lines(log_path, "redis_restored")[0]
            assert "Traceback" not in log_path.read_text()

            process.send_signal(signal.SIGKILL)  # no clean shutdown: the entry must expire on its own
            process.wait(timeout=30)
            await eventually(lambda: _equals(ready_workers(client), 0), "the dead worker's entry expiring")


async def _state_is(redis: Redis, action: str, state: bytes) -> bool:
    return await redis.hget(action_key(action), "state") == state


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
async def test_worker_started_before_redis_waits_for_it(
    tmp_path: Path, private_redis: RedisServer, private_client: Redis
) -> None:
    """A worker started while Redis is down stays up, logs one lost line, and registers once Redis starts."""
    env = worker_env(tmp_path, private_redis, retries=1)
    private_redis.stop()
    with worker_process(tmp_path, env) as (process, log_path):
        await eventually(lambda: bool(lines(log_path, "redis_lost")), "the redis_lost line")
        assert process.poll() is None, log_path.read_text()[-3000:]
        private_redis.start()
        await eventually(lambda: bool(lines(log_path, "redis_restored")), "the redis_restored line")
        await eventually(lambda: _equals(private_client.zcard(WORKERS_KEY), 1), "the worker's heartbeat")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    assert await private_client.zcard(WORKERS_KEY) == 0  # a clean shutdown removes the entry
    assert len(lines(log_path, "redis_lost")) == 1 and len(lines(log_path, "redis_restored")) == 1


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
async def test_worker_stops_cleanly_on_sigterm_while_redis_is_lost(
    tmp_path: Path, private_redis: RedisServer, private_client: Redis
) -> None:
    """SIGTERM during an outage ends the worker with exit code 0 and no traceback; its entry then expires."""
    env = worker_env(tmp_path, private_redis, retries=1)
    with worker_process(tmp_path, env) as (process, log_path):
        await eventually(lambda: _equals(private_client.zcard(WORKERS_KEY), 1), "the worker's heartbeat")
        private_redis.stop()
        await eventually(lambda: bool(lines(log_path, "redis_lost")) or process.poll() is not None, "redis_lost")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    assert "Traceback" not in log_path.read_text()
    private_redis.start()
    async with asgi_client(Settings(), private_client) as client:
        await eventually(lambda: _equals(ready_workers(client), 0), "the stopped worker's entry expiring")


class CancelSwallowingPool(ArqRedis):
    """An arq pool whose queue read swallows a cancellation once, as Python 3.11's asyncio.wait_for
    can inside redis-py when the cancellation arrives just as a socket write completes."""

    reading = asyncio.Event()
    swallowed = 0

    async def zrangebyscore(self, *args: Any, **kwargs: Any) -> Any:
        if not type(self).swallowed:
            type(self).reading.set()
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                type(self).swallowed += 1
        return await super().zrangebyscore(*args, **kwargs)


async def test_worker_stops_even_when_its_cancellation_is_swallowed(redis_url: str) -> None:
    """close() stops the poll loop although a library swallowed the cancellation sent to it."""
    CancelSwallowingPool.reading, CancelSwallowingPool.swallowed = asyncio.Event(), 0
    pool = connect(redis_url, cls=CancelSwallowingPool)
    pool.job_serializer, pool.job_deserializer = job_serializer, job_deserializer
    worker = create_worker(
        Settings(), handle_signals=False, poll_delay=0.01, redis_pool=pool, ruleset=parse_rules(RULES)
    )
    running = asyncio.create_task(worker.async_run())
    await asyncio.wait_for(CancelSwallowingPool.reading.wait(), timeout=20)
    await asyncio.wait_for(worker.close(), timeout=20)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(running, timeout=20)
    assert CancelSwallowingPool.swallowed == 1 and running.done()


# An in-process worker's settings for outage tests: a CircleCI behind httpx.MockTransport and quick probes.
OUTAGE_SETTINGS = Settings(
    hook_token=Secret(HOOK),
    circleci_token=Secret(CIRCLE_TOKEN),
    circleci_url="https://cci.test",
    worker_reconnect_max_seconds=0.1,
    worker_heartbeat_seconds=0.05,
)


def recording_circleci(calls: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    """A CircleCI v2 handler for httpx.MockTransport that creates a pipeline for every request into ``calls``."""

    def circleci(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(201, json={"id": PIPELINE, "number": 1, "state": "created"})

    return circleci


async def test_worker_rides_out_redis_refusing_writes_then_runs_the_job(
    private_redis: RedisServer, private_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """While Redis refuses writes (min-replicas-to-write) the worker waits with one lost line, then runs the job."""
    caplog.set_level(logging.INFO, logger="chainer.worker")
    calls: list[httpx.Request] = []
    circleci = recording_circleci(calls)
    settings = OUTAGE_SETTINGS
    http = httpx.AsyncClient(transport=httpx.MockTransport(circleci))
    worker = create_worker(
        settings,
        handle_signals=False,
        poll_delay=0.01,
        redis_pool=connect_arq(private_redis.url, retries=0),
        ruleset=parse_rules(RULES),
        downstream=Downstream(settings, http),
    )
    running = asyncio.create_task(worker.async_run())

    def events(name: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == name]

    try:
        async with asgi_client(settings, private_client) as client:
            await eventually(lambda: _equals(ready_workers(client), 1), "the worker's heartbeat")
            await private_client.config_set("min-replicas-to-write", 1)
            await eventually(lambda: bool(events("redis_lost")) or running.done(), "redis_lost")
            assert not running.done()
            body = json.dumps(payloads.codeship("success")).encode()
            refused = await client.post(
                f"/hooks/codeship/{HOOK}", content=body, headers={"content-type": "application/json"}
            )
            assert refused.status_code == 503  # the web cannot store it either
            await private_client.config_set("min-replicas-to-write", 0)
            await eventually(lambda: bool(events("redis_restored")), "redis_restored")
            accepted = await client.post(
                f"/hooks/codeship/{HOOK}", content=body, headers={"content-type": "application/json"}
            )
            assert accepted.status_code == 202
            action = f"{accepted.json()['event_id']}:api-after-lib:0"
            await eventually(lambda: _state_is(private_client, action, b"done"), "the action done")
    finally:
        await private_client.config_set("min-replicas-to-write", 0)
        await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await http.aclose()
    assert len(calls) == 1
    assert [r.levelno for r in events("redis_lost")] == [logging.WARNING]
    assert [r.levelno for r in events("redis_restored")] == [logging.INFO]


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of Redis that drops the client's connection, before forwarding, the
    first ``cuts`` times a command naming ``marker`` passes through (Redis never sees those commands)."""

    def __init__(self, upstream_port: int, marker: bytes, cuts: int) -> None:
        self.upstream_port, self.marker, self.left = upstream_port, marker, cuts
        self.cut = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def up() -> None:
            while data := await client_r.read(65536):
                if self.left and self.marker in data:
                    self.left -= 1
                    self.cut += 1
                    return
                server_w.write(data)
                await server_w.drain()

        async def down() -> None:
            while data := await server_r.read(65536):
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        client_w.close()
        server_w.close()


@pytest.mark.timeout(90)
async def test_claims_cut_off_by_redis_outages_give_their_job_slots_back(
    private_redis: RedisServer, private_client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Each outage that strikes during a claim (the connection drops before Redis sees it) must not cost the worker
    a job slot: after more such outages than it has slots, the worker still claims and runs the job."""
    caplog.set_level(logging.INFO, logger="chainer.worker")
    calls: list[httpx.Request] = []
    circleci = recording_circleci(calls)
    settings = OUTAGE_SETTINGS
    async with asgi_client(settings, private_client) as client:
        body = json.dumps(payloads.codeship("success")).encode()
        accepted = await client.post(
            f"/hooks/codeship/{HOOK}", content=body, headers={"content-type": "application/json"}
        )
        assert accepted.status_code == 202
    action = f"{accepted.json()['event_id']}:api-after-lib:0"
    slots = 2
    async with CuttingProxy(private_redis.port, b"arq:in-progress:", cuts=slots + 1) as proxy:
        worker = create_worker(
            settings,
            handle_signals=False,
            poll_delay=0.01,
            max_jobs=slots,
            redis_pool=connect_arq(proxy.url, retries=0),
            ruleset=parse_rules(RULES),
            downstream=Downstream(settings, httpx.AsyncClient(transport=httpx.MockTransport(circleci))),
        )
        running = asyncio.create_task(worker.async_run())
        try:

            async def done_or_crashed() -> bool:
                return running.done() or await _state_is(private_client, action, b"done")

            await eventually(done_or_crashed, "the action done", timeout=40)
            assert not running.done()
        finally:
            await worker.close()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    assert proxy.cut == slots + 1
    assert len([r for r in caplog.records if r.getMessage() == "redis_lost"]) == slots + 1
    assert len(calls) == 1
