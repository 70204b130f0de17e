"""Waking idle workers the moment a job is queued, instead of at arq's next poll (DESIGN §9).

Every script that queues a job due now (accept, fire_join, a replay's transition, a lease handed to the
next waiting job) pushes a token on the list ``keys.WAKE`` (``store/scripts/_wake.lua``), capped at
``keys.WAKE_MAX`` tokens. Each worker runs a ``Waker``: a task blocked on that list with ``BLPOP`` on a
connection of its own; a token it pops sets the worker's ``woken`` event, which ends the wait between two
polls of arq's queue (``chainer.worker.ChainerWorker``). One token wakes one worker, so an accepted job
does not set every worker polling; a worker without room for another job leaves the tokens to the others.

Nothing depends on a token arriving: the worker still polls every poll delay and when the next queued job
falls due, so a token lost with a dropped connection only costs that delay. arq's queue stays the one
source of truth, and arq's own claim (the in-progress key) still decides which worker runs a job.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from chainer.store import keys

log = logging.getLogger(__name__)

# A job's deferred retry (arq's ZINCRBY of its score, and the end of its in-progress claim), unless a lease was
# handed to the job while it was recording its wait (it is in the rewake set): then it is due now, and a
# worker is woken. KEYS: 1 arq queue, 2 the job's in-progress key, 3 rewake set, 4 wake list.
# ARGV: 1 job id, 2 score increment (ms), 3 now (ms), 4 wake list cap. Returns the job's new score.
FINISH_RETRY = """
redis.call('DEL', KEYS[2])
if redis.call('ZREM', KEYS[3], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('LPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[4]) - 1)
  return ARGV[3]
end
return redis.call('ZINCRBY', KEYS[1], ARGV[2], ARGV[1])
"""

# arq's claim of a job (Worker.start_jobs: WATCH, EXISTS, ZSCORE, then MULTI/PSETEX/EXEC, four round trips) in
# one: the job is claimed when it is still queued, due, and nobody holds its in-progress key.
# KEYS: 1 arq queue, 2 the job's in-progress key. ARGV: 1 job id, 2 now (ms), 3 in-progress timeout (ms).
# Returns the job's score when claimed, else false.
CLAIM = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) or redis.call('EXISTS', KEYS[2]) == 1 then return false end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return score
"""

RETRY_FIRST_S = 0.1


class Waker:
    """Pops wake tokens on ``client`` (a connection of its own) while ``ready()``; sets ``woken`` for each.

    When the worker has no room (``ready()`` false) it stops popping until ``room`` is set, leaving the
    tokens to workers that can take the job. Redis errors are waited out with backoff up to ``retry_max_s``
    (the worker's poll loop reports outages); only cancellation ends ``run``, which then closes ``client``.
    """

    def __init__(
        self,
        client: Redis,
        *,
        timeout_s: float,
        woken: asyncio.Event,
        room: asyncio.Event,
        ready: Callable[[], bool],
        retry_max_s: float,
        key: str = keys.WAKE,
    ) -> None:
        self.client = client
        self.key = key
        self.timeout_s = timeout_s
        self.woken = woken
        self.room = room
        self.ready = ready
        self.retry_max_s = retry_max_s
        self.tokens = 0
        self._stopping = False

    async def run(self) -> None:
        delay = RETRY_FIRST_S
        try:
            while not self._stopping:
                if not self.ready():
                    self.room.clear()
                    if not self.ready():
                        await self.room.wait()
                    continue
                try:
                    popped = await self.client.blpop([self.key], timeout=self.timeout_s)  # type: ignore[misc,arg-type]
                except (RedisError, OSError) as exc:
                    log.debug("wake_wait_failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
                    await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 (jitter, not cryptography)
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                delay = RETRY_FIRST_S
                if popped is not None:
                    self.tokens += 1
                    self.woken.set()
        finally:
            await self.client.aclose(close_connection_pool=True)

    async def stop(self, task: asyncio.Task[None]) -> None:
        """End ``task`` (this waker's ``run``) and wait until it has closed its connection.

        Python 3.11's ``asyncio.wait_for``, which redis-py awaits, can drop a cancellation that arrives as its
        inner future completes; the BLPOP would then block on until its timeout. So the loop also stops on a
        flag, and a read the cancellation missed is broken by dropping the connection under it.
        """
        self._stopping = True
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=0.5)
        if not done:
            await self.client.connection_pool.disconnect(inuse_connections=True)
            await asyncio.wait([task])
