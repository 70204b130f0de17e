"""Shared fixtures: one private redis-server per test session, flushed before every test that uses it."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "reference" / "fixtures"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server on a free loopback port with AOF on, for the whole session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The URL of the session's redis-server, emptied before the test (restarted first if a test killed it)."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    import redis as syncredis

    client = syncredis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio Redis client on the test's database."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
def _thaw_heap() -> Iterator[None]:
    """Apps and workers started by a test freeze the heap when ready (chainer.heap): in a long-lived process that
    is what they should do, but here it would freeze every earlier test's leftovers for the rest of the run."""
    yield
    gc.unfreeze()
