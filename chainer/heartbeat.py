"""Worker liveness in Redis: every worker renews its entry, the web counts the live ones (``GET /readyz``).

The ``keys.WORKERS`` key is a sorted set: member = worker id, score = the Redis server time (ms) until
which that worker counts as alive. Both sides read the clock of the Redis server, so the hosts'
clocks and the workers' heartbeat periods do not need to agree with the web's. A worker that stops
cleanly removes its entry; one that dies falls out when its time passes. Expired entries are pruned
by every beat.
"""

from __future__ import annotations

import os
import secrets
import socket
import time

from redis.asyncio import Redis

from chainer import clock
from chainer.store import keys

WORKERS_KEY = keys.WORKERS

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_BEAT = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
return now
"""
)

_COUNT = _NOW + "return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%d', now), '+inf')\n"


def worker_id() -> str:
    """A new id for this worker process: host, pid and a random suffix (pids repeat across hosts and restarts)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


async def beat(redis: Redis, worker: str, ttl_ms: int) -> None:
    """Mark ``worker`` alive for ``ttl_ms`` from now (Redis time), and measure this host's clock against Redis's
    (``chainer.clock``) on the way. Raises redis-py errors."""
    sent = time.time()
    now = await redis.eval(_BEAT, 1, WORKERS_KEY, worker, str(ttl_ms))  # type: ignore[misc]
    clock.observe(int(now), sent, time.time())


async def leave(redis: Redis, worker: str) -> None:
    """Remove ``worker`` at a clean shutdown. Raises redis-py errors."""
    await redis.zrem(WORKERS_KEY, worker)


async def live_workers(redis: Redis) -> int:
    """How many workers beat recently enough to count as alive now. Raises redis-py errors."""
    count = await redis.eval(_COUNT, 1, WORKERS_KEY)  # type: ignore[misc]
    return int(count)
