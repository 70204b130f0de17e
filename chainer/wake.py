"""Waking idle workers the moment a job is queued, instead of at arq's next poll (DESIGN §9): ``WakingWorker``,
arq's worker with that poll loop, and the ``Waker`` it runs.

Every script that queues a job due now (accept, fire_join, a replay's transition, a lease handed to the
next waiting job) pushes a token on the list ``keys.WAKE`` (``store/scripts/_wake.lua``), capped at
``keys.WAKE_MAX`` tokens. Each worker runs a ``Waker``: a task blocked on that list with ``BLPOP`` on a
connection of its own; a token it pops sets the worker's ``woken`` event, which ends the wait between two
polls of arq's queue (``WakingWorker``, the base of ``chainer.worker.ChainerWorker``). One token wakes one
worker, so an accepted job does not set every worker polling; a worker without room for another job leaves
the tokens to the others.

Nothing depends on a token arriving: the worker still polls every poll delay and when the next queued job
falls due, so a token lost with a dropped connection only costs that delay. arq's queue stays the one
source of truth, and the in-progress key (written by ``CLAIM`` with arq's checks) still decides which
worker runs a job.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import datetime
from typing import Any

from arq import Worker
from arq.connections import create_pool, log_redis_info
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from chainer import clock
from chainer.clock import now_ms
from chainer.store import keys
from chainer.store.connections import dedicated_client

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


class WakingWorker(Worker):
    """arq's Worker whose poll loop starts a queued job at once and a deferred one when it falls due.

    Between two looks at arq's queue, arq sleeps its poll delay. Here the wait also ends when a job is queued
    (the ``Waker`` pops a token a script pushed), when the next deferred job in the queue falls due (retries
    and waits start on time, never early: the pick-up still compares scores with the clock), and when a job of
    this worker ends while it had no room for more; it still ends after the poll delay, so crash recovery
    (arq re-runs a job whose in-progress key expired) and everything else of arq's queue behave as before.
    A deferred retry that a released target lease made due meanwhile is not pushed back by arq's retry
    bookkeeping (``finish_job``), and stopping never strands a job arq had claimed (``_unclaim_cut_short``).
    Subclasses add to ``_poll_iteration`` (which runs ``_poll_once``) and call ``_unclaim_cut_short`` from
    ``close``.
    """

    def __init__(self, *args: Any, wake_timeout_s: float, retry_max_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wake_timeout_s = wake_timeout_s
        self.wake_retry_max_s = retry_max_s
        self.woken = asyncio.Event()  # ends the wait between polls
        self.room = asyncio.Event()  # a job ended: the waker may pop tokens again
        self.waker: Waker | None = None
        self._waker_task: asyncio.Task[None] | None = None
        self._next_due_ms: int | None = None  # the earliest deferred job in the queue, after the last poll
        self._waiting_until_ms: float | None = None  # the end of the current wait, while waiting
        self._cut_short: set[str] = set()  # jobs whose run was cancelled before arq could requeue it
        self._claim: AsyncScript | None = None

    async def main(self) -> None:
        await self._main()

    async def _poll_iteration(self) -> None:
        await self._poll_once()
        self._stop_if_asked()

    async def _main(self) -> None:
        """arq's ``Worker.main`` (0.28.0), with ``_wait`` in place of its fixed sleep between polls."""
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        log.info("Starting worker for %d functions: %s", len(self.functions), ", ".join(self.functions))
        await log_redis_info(self.pool, log.info)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        if not self.burst:
            self._start_waker()
        try:
            loop = asyncio.get_running_loop()
            while True:
                started = loop.time()
                self.woken.clear()
                await self._poll_iteration()
                if self.burst:
                    if 0 <= self.max_burst_jobs <= self._jobs_started():
                        await asyncio.gather(*self.tasks.values())
                        return
                    if await self.pool.zcard(self.queue_name) == 0:
                        await asyncio.gather(*self.tasks.values())
                        return
                await self._wait(until=started + self.poll_delay_s)
        finally:
            await self._stop_waker()

    async def _poll_once(self) -> None:
        """arq's ``Worker._poll_iteration`` (0.28.0), with two changes for a worker that polls on every wake-up:
        the same round trip that reads the due jobs also notes when the earliest deferred one falls due (a
        retry, a wait for a target, the sweep), and jobs this worker is running are not claimed again (arq
        would spend a round trip on each to find its in-progress key)."""
        count = self.queue_read_limit
        if self.burst and self.max_burst_jobs >= 0:
            remaining = self.max_burst_jobs - self._jobs_started()
            if remaining < 1:
                return
            count = min(remaining, count)
        now = now_ms()
        async with self.pool.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(self.queue_name, "-inf", now, start=self._queue_read_offset, num=count)
            pipe.zrangebyscore(self.queue_name, f"({now}", "+inf", start=0, num=1, withscores=True)
            due, ahead = await pipe.execute()
        self._next_due_ms = int(ahead[0][1]) if ahead else None
        if self.allow_pick_jobs and self.job_counter < self.max_jobs:
            running = {job for job, task in self.tasks.items() if not task.done()}
            claim = asyncio.ensure_future(self.start_jobs([job for job in due if job.decode() not in running]))
            try:
                await asyncio.shield(claim)
            except asyncio.CancelledError:
                # Stopping: a claim cut short after Redis wrote its in-progress key (the answer still on its
                # way) would hold the job back until that key expires (job timeout + 10 s). Let the claims
                # finish; close() waits for the runs they start.
                await asyncio.wait([claim])
                raise
        if self.allow_abort_jobs:
            await self._cancel_aborted_jobs()
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                if task.cancelled():  # stopping: close() gives the job back (_unclaim_cut_short)
                    self._cut_short.add(job_id)
                    continue
                task.result()  # as arq does: an error of run_job itself ends the worker
        await self.heart_beat()

    async def _wait(self, *, until: float) -> None:
        """Until a wake-up, the next deferred job's time or the loop time ``until``, whichever comes first."""
        timeout = until - asyncio.get_running_loop().time()
        if self._next_due_ms is not None:
            # One ms late rather than early: a job is picked only once its score is not after the clock.
            timeout = min(timeout, (self._next_due_ms - now_ms() + 1) / 1000)
        if timeout > 0 and not self.woken.is_set():
            self._waiting_until_ms = now_ms() + timeout * 1000
            try:
                async with asyncio.timeout(timeout):
                    await self.woken.wait()
            except TimeoutError:
                pass
            finally:
                self._waiting_until_ms = None
        self._stop_if_asked()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's ``Worker.start_jobs`` (0.28.0) with its claim in one round trip (``chainer.wake.CLAIM``)
        instead of four: the same checks (still queued, due, no in-progress key) and the same in-progress key."""
        if self._claim is None:
            self._claim = self.pool.register_script(CLAIM)
        for job_id_b in job_ids:
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return
            self.job_counter += 1
            job_id = job_id_b.decode()
            names = [self.queue_name, keys.arq_in_progress(job_id)]
            try:
                score = await self._claim(keys=names, args=[job_id, now_ms(), int(self.in_progress_timeout_s * 1000)])
            except BaseException:  # Redis failed (or we were cancelled): the slot was never used, give it back
                self.job_counter -= 1
                self.sem.release()
                raise
            if not score:  # running elsewhere, finished, or deferred again meanwhile
                self.job_counter -= 1
                self.sem.release()
                continue
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def run_cron(self, n: datetime, delay: float, num_windows: int = 2) -> None:
        """arq's cron step; when it queued a job (the sweep), look at the queue again at once rather than
        after the poll delay (it runs after the pick-up, and a job due now pushes no wake token)."""
        before = [job.next_run for job in self.cron_jobs]
        await super().run_cron(n, delay, num_windows)
        if before != [job.next_run for job in self.cron_jobs]:
            self.woken.set()

    def _has_room(self) -> bool:
        return self.allow_pick_jobs and self.job_counter < self.max_jobs

    def _start_waker(self) -> None:
        client = dedicated_client(self.pool, socket_timeout=self.wake_timeout_s + 5)
        self.waker = Waker(
            client,
            timeout_s=self.wake_timeout_s,
            woken=self.woken,
            room=self.room,
            ready=self._has_room,
            retry_max_s=self.wake_retry_max_s,
        )
        self._waker_task = asyncio.create_task(self.waker.run())

    async def _stop_waker(self) -> None:
        task, self._waker_task = self._waker_task, None
        if task is not None and self.waker is not None:
            await self.waker.stop(task)

    def _release_sem_dec_counter_on_complete(self) -> None:
        full = not self._has_room()
        super()._release_sem_dec_counter_on_complete()
        self.room.set()
        if full:  # jobs may have been left in the queue for want of room: look again now
            self.woken.set()

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        """arq's end of a job; a deferred retry is recorded by ``chainer.wake.FINISH_RETRY`` instead of arq's
        transaction (the same two writes), which keeps the job due now if a target's lease was handed to it
        meanwhile, and ends this worker's wait early if the retry falls due before it would. The retry is due on
        the Redis clock, whatever this host's clock says.

        A cron job (the sweep) cancelled by a shutdown is queued again like any other job, without arq's 60 s
        hold on its in-progress key (that hold guards a finished run of a unique cron job against a second
        run; a cancelled one is meant to run again, and its job key still stops a duplicate)."""
        if not finish and keep_in_progress is not None:
            keep_in_progress = None
        if finish or not incr_score:
            await super().finish_job(
                job_id, finish, result_data, result_timeout_s, keep_result_forever, incr_score, keep_in_progress
            )
            return
        # arq computed ``defer + (its clock - the job's score)`` for ZINCRBY, i.e. a due time on this host's clock:
        # shift it onto the Redis clock (chainer.clock), or a host an hour ahead would defer its retries an hour.
        incr_score += round(clock.offset_ms())
        names = [self.queue_name, keys.arq_in_progress(job_id), keys.REWAKE, keys.WAKE]
        due = await self.pool.eval(  # type: ignore[misc]
            FINISH_RETRY, len(names), *names, job_id, str(incr_score), str(now_ms()), str(keys.WAKE_MAX)
        )
        waiting_until = self._waiting_until_ms
        if waiting_until is not None and float(due) < waiting_until:
            self.woken.set()

    def _stop_if_asked(self) -> None:
        # arq stops the poll loop by cancelling its task, but Python 3.11's asyncio.wait_for (which
        # redis-py awaits on every write) drops a cancellation that arrives as its inner future
        # completes. The request is still counted on the task, so honour it here.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    async def _unclaim_cut_short(self) -> None:
        """Give back the jobs whose run was cancelled before arq could deal with it. arq cancels every run at
        shutdown and handles that (the job is queued again at once) only while the job's function runs: a run
        cancelled before, in its first reads, ends without clearing the job's in-progress key, which would hold
        the job back until the key expires (job timeout + 10 s). Such a run's task ends cancelled."""
        cut_short = self._cut_short | {job for job, task in self.tasks.items() if task.cancelled()}
        self._cut_short = set()
        if cut_short:
            await self.pool.delete(*(keys.arq_in_progress(job) for job in cut_short))
