"""The Redis server's clock, as every chainer process reads it (DESIGN §6: the Redis clock decides).

Every time that one process writes and another compares with its own clock (a job's due time in arq's queue, a
retry's, an action's ``updated_ms`` that the sweeper ages, a target lease's expiry) is read from ``now_ms``: the
host's clock plus the offset to the Redis server's ``TIME``, measured at start and again by every worker beat and
every ``SYNC_SECONDS`` in a web process (half the round trip taken as the one-way delay). A host whose clock is an
hour off then still queues, retries, claims and sweeps on Redis's time. Before the first measurement the offset is
0 (the host's own clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

SYNC_SECONDS = 30.0
_offset_ms = 0.0


def now_ms() -> int:
    """Milliseconds since the epoch by the Redis server's clock (the host's until the first measurement)."""
    return int(time.time() * 1000 + _offset_ms)


def offset_ms() -> float:
    """How far the Redis clock is ahead of this host's (negative: behind), in ms, as last measured."""
    return _offset_ms


def observe(redis_ms: float, sent: float, received: float) -> None:
    """Take the Redis time ``redis_ms`` read in a round trip sent at ``sent`` and answered at ``received``
    (``time.time()`` seconds) as the clock's offset."""
    global _offset_ms
    _offset_ms = redis_ms - (sent + received) * 500


async def sync(redis: Any) -> None:
    """Measure the offset with Redis's ``TIME``. Raises redis-py errors."""
    sent = time.time()
    seconds, micros = await redis.time()
    observe(seconds * 1000 + micros / 1000, sent, time.time())


async def follow(redis: Any, period: float = SYNC_SECONDS) -> None:
    """Measure the offset every ``period`` seconds until cancelled; an unreachable Redis is skipped over."""
    while True:
        with contextlib.suppress(Exception):
            await sync(redis)
        await asyncio.sleep(period)
