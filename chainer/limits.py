"""Outbound limits shared by every worker through Redis (DESIGN §6).

- ``RateLimiter``: a sliding-window request budget (a provider's per-account requests a minute),
  timed by the Redis server's clock so that workers on several hosts agree.
- ``InflightLocks``: at most one call in flight per downstream project and branch, in order of arrival.

Waiting for either is a deferred retry of the job, never a sleeping worker: a job waiting for a busy target
is parked and made due again by the release that hands it the lease (a wake-up, not a fixed delay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from chainer.errors import StoreUnavailableError, ThrottledError
from chainer.store import keys
from chainer.store.codec import now_ms

log = logging.getLogger(__name__)

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


def inflight_key(action: str, params: Mapping[str, Any], target_param: str = "project") -> str:
    """The lock key of an action's downstream target: provider, project and branch (or ref or tag).

    ``target_param`` is the argument that names the project the action builds (the catalogue's
    ``ActionSpec.target``: ``project``, or a provider's ``repo`` or ``pipeline``); without it, a workflow or
    build id stands for the target.
    """
    provider = action.split(".", 1)[0]
    target = params.get(target_param) or params.get("workflow") or params.get("build") or "-"
    ref = params.get("branch") or params.get("ref") or params.get("tag") or "-"
    return keys.inflight(provider, str(target), str(ref))


# Leases on downstream targets, in order of arrival. Every script gets the same keys and leading arguments:
# KEYS: 1 the lease, 2 the target's waiters (job → arrival ms), 3 arq's queue, 4 the rewake set, 5 the wake list.
# ARGV: 1 holder (the job id), 2 lease ms, 3 now (ms, the clock arq scores by), 4 margin ms, 5 wake list cap.
_LEASE_LIB = """
local lease_key, waiting, queue, rewake, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local holder, lease_ms, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local margin, wake_max = tonumber(ARGV[4]), tonumber(ARGV[5])

-- The first waiter's job falls due when the lease would run out unrenewed (a holder that dies never releases).
local function arm()
  local head = redis.call('ZRANGE', waiting, 0, 0)[1]
  if head then redis.call('ZADD', queue, 'XX', 'LT', now + lease_ms + margin, head) end
end

-- Hand the free lease to the first waiter whose job is still queued: its job falls due now and a worker
-- is woken. A job handed the lease while it is still recording its wait is noted in the rewake set, so
-- that the worker finishing it makes it due again (ChainerWorker.finish_job).
local function hand_over()
  while true do
    local head = redis.call('ZRANGE', waiting, 0, 0)[1]
    if not head then return false end
    redis.call('ZREM', waiting, head)
    if redis.call('ZSCORE', queue, head) then
      redis.call('SET', lease_key, head, 'PX', lease_ms)
      redis.call('ZADD', queue, 'XX', now, head)
      redis.call('ZREMRANGEBYSCORE', rewake, '-inf', now - 60000)
      redis.call('ZADD', rewake, now, head)
      redis.call('LPUSH', wake, '1')
      redis.call('LTRIM', wake, 0, wake_max - 1)
      arm()
      return head
    end
  end
end
"""

# ARGV 6: the holder's arrival (ms its job was queued), 7: how long the waiters' set lives (ms).
# Returns {0, holder, lease ms, 0} when the lease is the holder's now, else {1, current holder, its ms left,
# the caller's place among the waiters (0 = next)}.
_CLAIM = (
    _LEASE_LIB
    + """
local arrival = tonumber(ARGV[6])
local function take()
  redis.call('SET', lease_key, holder, 'PX', lease_ms)
  redis.call('ZREM', waiting, holder)
  redis.call('ZREM', rewake, holder)
  arm()
  return {0, holder, lease_ms, 0}
end
local current = redis.call('GET', lease_key)
if current == holder then return take() end
if not current then
  local head = redis.call('ZRANGE', waiting, 0, 0, 'WITHSCORES')
  if #head == 0 or head[1] == holder or arrival <= tonumber(head[2]) then return take() end
  -- Nobody holds it but someone who came earlier waits (its holder died, or a waiter handed the lease
  -- never came for it): it goes to them.
  current = hand_over()
  if not current then return take() end
end
redis.call('ZADD', waiting, 'NX', arrival, holder)
redis.call('PEXPIRE', waiting, ARGV[7])
return {1, current, redis.call('PTTL', lease_key), redis.call('ZRANK', waiting, holder)}
"""
)

_RELEASE = (
    _LEASE_LIB
    + """
if redis.call('GET', lease_key) ~= holder then return 0 end
redis.call('DEL', lease_key)
redis.call('ZREM', rewake, holder)
hand_over()
return 1
"""
)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Busy:
    """The answer to a claim on a target someone else holds: the holder, when its lease runs out unless renewed
    (seconds), and the caller's place among the target's waiters (0: the lease goes to it next)."""

    holder: str
    expires_s: float
    position: int


class InflightLocks:
    """Leases on downstream targets, granted in order of arrival; a lease expires by itself if its holder dies.

    A holder claims a target with the time its job was queued (``claim``); if the target is busy it joins
    the target's waiters, ordered by that time, and parks its job. ``release`` hands the lease straight to
    the first waiter, makes its job due now and wakes a worker, so the next call starts as soon as the
    previous one ends; a waiter that came earlier than everyone waiting takes a free lease at once. While
    a call runs its lease is renewed (``renewing``), so the lease can be short: a holder that died frees
    the target within ``lease_s``, when the first waiter's job falls due.
    """

    def __init__(
        self, redis: Redis, *, lease_s: float, renew_s: float | None = None, queue: str = keys.ARQ_QUEUE
    ) -> None:
        self._redis = redis
        self.lease_s = lease_s
        self.lease_ms = max(int(lease_s * 1000), 1)
        self.renew_s = renew_s if renew_s is not None and 0 < renew_s < lease_s else lease_s / 3
        self.queue = queue
        self.margin_ms = 10
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)

    def _keys(self, key: str) -> list[str]:
        return [key, keys.waiting(key), self.queue, keys.REWAKE, keys.WAKE]

    def _args(self, holder: str) -> list[str | int]:
        return [holder, self.lease_ms, now_ms(), self.margin_ms, keys.WAKE_MAX]

    async def claim(self, key: str, holder: str, *, arrival_ms: int | None = None) -> Busy | None:
        """Take the lease and return None, or join the target's waiters (ordered by ``arrival_ms``): who has it."""
        arrival = now_ms() if arrival_ms is None else arrival_ms
        args = [*self._args(holder), arrival, keys.JOB_TTL_MS]
        try:
            busy, current, left_ms, position = await self._claim(keys=self._keys(key), args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc
        if not int(busy):
            return None
        text = current.decode() if isinstance(current, bytes) else str(current)
        return Busy(text, max(int(left_ms), 0) / 1000, int(position))

    async def acquire(self, key: str, holder: str) -> str | None:
        """Take the lease and return None, or return the holder that has it (``claim`` arriving now)."""
        busy = await self.claim(key, holder)
        return None if busy is None else busy.holder

    async def release(self, key: str, holder: str) -> bool:
        """Give the lease up if ``holder`` has it, handing it to the first waiter; False when it was not held."""
        try:
            return bool(await self._release(keys=self._keys(key), args=self._args(holder)))
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc

    async def renew(self, key: str, holder: str) -> bool:
        """Extend the lease by ``lease_s`` if ``holder`` still has it."""
        try:
            return bool(await self._renew(keys=[key], args=[holder, self.lease_ms]))
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc

    @contextlib.asynccontextmanager
    async def renewing(self, key: str, holder: str) -> AsyncIterator[Lease]:
        """Hold a claimed lease for the block: renewed every ``renew_s``, released (handed on) at the end, or
        earlier by the ``Lease`` it yields (as soon as the call is over)."""
        lease = Lease(self, key, holder)
        try:
            yield lease
        finally:
            await lease.end()

    async def _keep(self, key: str, holder: str) -> None:
        while True:
            await asyncio.sleep(self.renew_s)
            try:
                if not await self.renew(key, holder):
                    # The call outlived the lease (a stalled event loop or Redis): another job may take the
                    # target meanwhile. The action's ledger still keeps this action's call single.
                    log.warning("lease_lost", extra={"target": key, "holder": holder})
                    return
            except StoreUnavailableError as exc:  # try again at the next period; the lease may still hold
                log.warning("lease_not_renewed", extra={"target": key, "holder": holder, "error": str(exc)[:300]})


class Lease:
    """A held target lease, renewed in the background until ``end``."""

    def __init__(self, locks: InflightLocks, key: str, holder: str) -> None:
        self.locks, self.key, self.holder = locks, key, holder
        self._renewer: asyncio.Task[None] | None = asyncio.create_task(locks._keep(key, holder))

    async def end(self) -> None:
        """Stop renewing and give the lease up, handing it to the next waiter; only the first call acts.

        If Redis cannot take the release, the lease runs out by itself within ``lease_s``.
        """
        renewer, self._renewer = self._renewer, None
        if renewer is None:
            return
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        try:
            await self.locks.release(self.key, self.holder)
        except StoreUnavailableError as exc:
            log.warning(
                "lease_not_released", extra={"target": self.key, "holder": self.holder, "error": str(exc)[:300]}
            )
