"""Outbound limits shared by every worker through Redis (DESIGN §6).

- ``RateLimiter``: a sliding-window request budget (Codeship: 60 requests a minute per account),
  timed by the Redis server's clock so that workers on several hosts agree.
- ``InflightLocks``: at most one call in flight per downstream project and branch.

Waiting for either is a deferred retry of the job, never a sleeping worker.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from chainer.errors import StoreUnavailableError, ThrottledError
from chainer.store import keys

_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {0, now}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {tonumber(oldest[2]) + window - now + 1, now}
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RateLimiter:
    """At most ``limit`` requests in any ``window_s`` seconds, across every process sharing Redis."""

    def __init__(self, redis: Redis, key: str, *, limit: int, window_s: float, label: str) -> None:
        self.key = key
        self.limit = limit
        self.window_ms = int(window_s * 1000)
        # A slot is taken a moment before the request reaches the provider; counting each slot for a
        # tenth longer than the window keeps the provider's own count under the limit despite that.
        self._counted_ms = int(self.window_ms * 1.1)
        self.label = label
        self._script = redis.register_script(_WINDOW)

    async def take(self) -> tuple[int, int]:
        """Try to take one request slot: ``(0, t)`` when taken, else ``(ms until a slot frees, t)``.

        ``t`` is the Redis server's clock (ms) when the limiter decided: the time the slot counts from.
        """
        try:
            wait, at = await self._script(keys=[self.key], args=[self._counted_ms, self.limit, secrets.token_hex(8)])
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc
        return int(wait), int(at)

    async def wait_ms(self) -> int:
        """Take one request slot now and return 0, or return how many ms until a slot frees up."""
        wait, _ = await self.take()
        return wait

    async def __call__(self, api: str) -> None:
        """Throttle hook for ``chainer.providers.http.Api``: raise ThrottledError when the budget is spent."""
        wait = await self.wait_ms()
        if wait > 0:
            raise ThrottledError(
                f"{self.label} outbound limit reached ({self.limit} requests per {self.window_ms / 1000:g} s); "
                f"next slot in {wait / 1000:.1f} s",
                retry_after=wait / 1000,
            )


def inflight_key(action: str, params: Mapping[str, Any]) -> str:
    """The lock key of an action's downstream target: provider, project (or workflow) and branch (or ref)."""
    provider = action.split(".", 1)[0]
    target = params.get("project") or params.get("workflow") or params.get("build") or "-"
    ref = params.get("branch") or params.get("ref") or params.get("tag") or "-"
    return keys.inflight(provider, str(target), str(ref))


class InflightLocks:
    """Leases on downstream targets; a lease expires by itself if its holder dies."""

    def __init__(self, redis: Redis, *, lease_s: float) -> None:
        self._redis = redis
        self.lease_ms = int(lease_s * 1000)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, key: str, holder: str) -> str | None:
        """Take the lease and return None, or return the holder that has it."""
        try:
            if await self._redis.set(key, holder, nx=True, px=self.lease_ms):
                return None
            current = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc
        if current is None:
            return await self.acquire(key, holder)
        text = current.decode() if isinstance(current, bytes) else str(current)
        return None if text == holder else text

    async def release(self, key: str, holder: str) -> None:
        try:
            await self._release(keys=[key], args=[holder])
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc
