"""The arq worker (DESIGN §1, §6): ``WorkerSettings`` plus the startup that builds the jobs' ``Services``.

``chainer worker`` runs ``create_worker(settings)``, a ``ChainerWorker``: arq's worker plus riding out
Redis outages and a liveness heartbeat (``chainer.heartbeat``), built from ``WorkerSettings`` the way
arq's own ``create_worker`` reads a settings class (``arq.worker.get_kwargs``). The arq CLI can also
load ``WorkerSettings`` but then reads Redis from arq's defaults and gets neither, so prefer the
chainer command. Startup reads nothing at import time: ``ServicesBuilder`` builds the ``Services`` every job
reads from ``ctx["services"]`` (``chainer.jobs.Services``) when the worker starts, from the
environment unless ``create_worker`` handed it settings (and, for tests, rules, provider clients or a
retry policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from arq.cron import CronJob, cron
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function, func, get_kwargs
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chainer import heap, heartbeat
from chainer.errors import DownstreamError
from chainer.fanin import fire_join
from chainer.housekeeping import sweep, trim_audit
from chainer.jobs import (
    FIRE_JOIN,
    RUN_ACTION,
    SERVICES,
    RetryPolicy,
    Services,
    run_action,
)
from chainer.limits import InflightLocks
from chainer.providers import Downstream, catalogue
from chainer.providers.http import default_http_client
from chainer.reload import RulesWatcher
from chainer.rules import RuleSet, load_rules
from chainer.settings import Settings
from chainer.store import Store
from chainer.store.codec import job_deserializer, job_serializer
from chainer.store.connections import connect_arq
from chainer.wake import WakingWorker

log = logging.getLogger(__name__)

JOB_TIMEOUT_S = 60
# chainer decides when an action is exhausted (from its ledger's real attempts); arq's own try
# counter also counts waits for outbound limits, so its bound is only a guard against endless loops.
ARQ_MAX_TRIES = 1000
# Redis refusing work for a while, by the error code of its answer: a primary turned replica, too
# few replicas for min-replicas-to-write, a failed background save, maxmemory with noeviction,
# still loading its data, a replica without its primary.
REDIS_REFUSALS = frozenset({"READONLY", "NOREPLICAS", "MISCONF", "OOM", "LOADING", "MASTERDOWN"})
RECONNECT_FIRST_S = 0.5


def redis_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis cannot serve the worker right now (as opposed to a bug)."""
    # Refused or dropped connections (a refused connect can surface as a bare OSError, arq-redis.md
    # §1.7), timeouts, and LOADING (redis-py's BusyLoadingError is a ConnectionError).
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return True
    return isinstance(exc, ResponseError) and str(exc).split(" ", 1)[0] in REDIS_REFUSALS


class _ActiveRules:
    """The worker's active rules: fan-in jobs render with them; reloaded like the web's."""

    def __init__(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset

    def __call__(self) -> RuleSet:
        return self.ruleset

    def activate(self, new: RuleSet) -> None:
        self.ruleset = new


@dataclass(frozen=True, slots=True)
class ServicesBuilder:
    """Builds the ``Services`` every job shares; its ``startup`` is the worker's arq ``on_startup``.

    What is None is built when the worker starts: ``settings`` from the environment, ``ruleset`` from the rules file,
    ``downstream`` (the provider clients) from the settings over one HTTP client this worker owns, ``retry_policy``
    from the settings' backoff.
    """

    settings: Settings | None = None
    ruleset: RuleSet | None = None
    downstream: Downstream | None = None
    retry_policy: RetryPolicy | None = None

    async def startup(self, ctx: dict[str, Any]) -> None:
        """arq's ``on_startup``: the Services on arq's pool, into ``ctx["services"]``; then the heap is settled
        (``chainer.heap``): what lives now lives as long as the worker."""
        ctx[SERVICES] = await self.build(ctx["redis"])
        heap.settle()

    async def build(self, redis: Any) -> Services:
        """The Services on ``redis`` (arq's pool): store, locks, rules (watched), provider clients."""
        settings = self.settings or Settings.from_env(os.environ)
        store = Store.configured(redis, settings)
        load = functools.partial(load_rules, catalogue=catalogue())
        rules = _ActiveRules(self.ruleset or load(settings.rules_path))
        watcher = RulesWatcher(settings.rules_path, rules, rules.activate, store, load=load)
        rules_task = asyncio.create_task(watcher.watch(settings.rules_poll_seconds))
        http = None
        downstream = self.downstream
        if downstream is None:
            http = default_http_client(settings.job_timeout_seconds)
            try:
                downstream = await _provider_clients(settings, http, redis)
            except BaseException:  # no Services to shut down: release what was started here
                rules_task.cancel()
                await http.aclose()
                raise
        return Services(
            settings=settings,
            store=store,
            rules=rules,
            downstream=downstream,
            locks=InflightLocks(
                redis, lease_s=settings.target_lease_seconds, renew_s=settings.target_lease_renew_seconds
            ),
            retry_policy=self.retry_policy or retry_policy(settings),
            sweep_grace_ms=int(settings.sweep_grace_seconds * 1000),
            http=http,
            rules_task=rules_task,
        )


def retry_policy(settings: Settings) -> RetryPolicy:
    """The backoff, number of tries and busy-target recheck ``settings`` ask for."""
    return RetryPolicy(
        max_tries=settings.retry_max_tries,
        base_s=settings.retry_base_seconds,
        cap_s=settings.retry_cap_seconds,
        busy_s=settings.worker_busy_recheck_seconds,
    )


def _timed(settings: Settings) -> dict[str, Any]:
    """The arq options that follow the settings' job timings: timeouts, the sweeper's schedule, the poll."""
    timeout = settings.job_timeout_seconds
    every = settings.sweep_interval_seconds
    return {
        "functions": (
            func(run_action, name=RUN_ACTION, max_tries=ARQ_MAX_TRIES, timeout=timeout),
            func(fire_join, name=FIRE_JOIN, max_tries=5, timeout=timeout),
        ),
        "cron_jobs": (
            cron(
                sweep,
                name="sweep",
                second={s for s in range(60) if (s - 30) % every == 0},
                run_at_startup=True,
                timeout=timeout,
            ),
            cron(trim_audit, name="trim_audit", second=45, run_at_startup=True, timeout=timeout),
        ),
        "job_timeout": timeout,
        "poll_delay": settings.worker_poll_seconds,
    }


async def _provider_clients(settings: Settings, http: httpx.AsyncClient, redis: Any) -> Downstream:
    """Every registered provider's client over ``http``, with its own outbound limits shared through ``redis``;
    each client's start-up check runs once: its warnings, or its failure, are logged and the worker carries on."""
    downstream = Downstream(settings, http, redis=redis)
    for name, client in downstream.clients.items():
        try:
            for warning in await client.check():
                log.warning(f"{name}_auth_warning", extra={"warning": warning})
        except DownstreamError as exc:  # report it, keep serving the other providers
            log.error(f"{name}_auth_failed", extra={"error": str(exc)})
    return downstream


async def shutdown(ctx: dict[str, Any]) -> None:
    """arq's ``on_shutdown``: stop following the rules file, close the HTTP client startup made."""
    shared: Services | None = ctx.get(SERVICES)  # absent when startup itself failed
    if shared is None:
        return
    if shared.rules_task is not None:
        shared.rules_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await shared.rules_task
    if shared.http is not None:
        await shared.http.aclose()


class WorkerSettings:
    """arq settings; every attribute is set on this class itself (arq ignores inherited ones)."""

    functions: Sequence[WorkerCoroutine | Function] = (
        func(run_action, name=RUN_ACTION, max_tries=ARQ_MAX_TRIES, timeout=JOB_TIMEOUT_S),
        func(fire_join, name=FIRE_JOIN, max_tries=5, timeout=JOB_TIMEOUT_S),
    )
    cron_jobs: Sequence[CronJob] | None = (
        cron(sweep, name="sweep", second=30, run_at_startup=True, timeout=JOB_TIMEOUT_S),
        cron(trim_audit, name="trim_audit", second=45, run_at_startup=True, timeout=JOB_TIMEOUT_S),
    )
    on_startup: StartupShutdown | None = ServicesBuilder().startup
    on_shutdown: StartupShutdown | None = shutdown
    job_serializer = job_serializer
    job_deserializer = job_deserializer
    job_timeout = JOB_TIMEOUT_S
    max_jobs = 20
    keep_result = 3600
    retry_jobs = True
    health_check_interval = 15
    job_completion_wait = 25


class ChainerWorker(WakingWorker):
    """arq's Worker that starts a queued job at once (``chainer.wake.WakingWorker``), outlives Redis outages and
    tells the web it is alive.

    arq lets a Redis error out of its poll loop end the process (shared/reference/arq-redis.md §1.7).
    Here a poll that finds Redis gone or refusing writes (``redis_unavailable``) logs ``redis_lost``
    once, then probes with exponential backoff (capped at ``settings.worker_reconnect_max_seconds``)
    and logs ``redis_restored`` once when Redis takes a write again; polling, and so the queued jobs,
    resume from there. Running jobs are left alone (their own Redis calls retry or fail as they
    would). The same wait covers a Redis that is not up yet when the worker starts. Every
    ``settings.worker_heartbeat_seconds`` a successful poll renews the worker's entry in
    ``chainer:workers``; a clean shutdown removes it.
    """

    def __init__(self, *args: Any, settings: Settings, **kwargs: Any) -> None:
        super().__init__(
            *args,
            wake_timeout_s=settings.worker_wake_timeout_seconds,
            retry_max_s=settings.worker_reconnect_max_seconds,
            **kwargs,
        )
        self.worker_id = heartbeat.worker_id()
        self.reconnect_max_s = settings.worker_reconnect_max_seconds
        self.heartbeat_s = settings.worker_heartbeat_seconds
        self.in_progress_timeout_s = settings.lease_seconds  # arq's own rule is the longest timeout + 10 s
        # Three periods (and never less than three polls), so one late beat does not look like a death.
        self.heartbeat_ttl_ms = int(3000 * max(self.heartbeat_s, self.poll_delay_s))
        self.redis_down = False
        self._next_beat = 0.0

    async def main(self) -> None:
        if self._pool is not None:
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                if not redis_unavailable(exc):
                    raise
                await self._ride_out(exc)
        await self._main()

    async def _poll_iteration(self) -> None:
        try:
            await self._poll_once()
            if time.monotonic() >= self._next_beat:
                await self._beat()
        except (RedisError, OSError) as exc:
            if not redis_unavailable(exc):
                raise
            await self._ride_out(exc)
        self._stop_if_asked()

    async def _beat(self) -> None:
        # A write, so it also fails while Redis loads its data or has turned replica, not only when
        # it is unreachable: a passing beat means jobs can be claimed again.
        await heartbeat.beat(self.pool, self.worker_id, self.heartbeat_ttl_ms)
        self._next_beat = time.monotonic() + self.heartbeat_s

    async def _ride_out(self, exc: BaseException) -> None:
        """Wait, probing with backoff, until Redis answers again; one log line when lost, one when back."""
        self.redis_down = True
        lost_at = time.monotonic()
        log.warning("redis_lost", extra={"worker": self.worker_id, "error": f"{type(exc).__name__}: {exc}"[:300]})
        delay = min(RECONNECT_FIRST_S, self.reconnect_max_s)
        while True:
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 (jitter, not cryptography)
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                if not redis_unavailable(exc):
                    raise
                self._stop_if_asked()
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            break
        self.redis_down = False
        down_s = round(time.monotonic() - lost_at, 1)
        log.info("redis_restored", extra={"worker": self.worker_id, "down_s": down_s})

    async def close(self) -> None:
        """arq's close, except that it lets a stopping poll loop finish first, and that a Redis outage
        can neither skip ``on_shutdown`` nor raise out of it."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        await self._stop_waker()
        main = self.main_task
        if main is not None and main is not asyncio.current_task() and main.cancelling():
            await asyncio.wait([main])  # asked to stop (above or by a signal): let it stop using the pool
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        if not self.redis_down:
            try:
                await self._unclaim_cut_short()
                await heartbeat.leave(self.pool, self.worker_id)
                await self.pool.delete(self.health_check_key)
            except (RedisError, OSError) as exc:  # the entry then expires on its own
                log.warning("worker_not_deregistered", extra={"worker": self.worker_id, "error": str(exc)[:300]})
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        await self.pool.close(close_connection_pool=True)
        self._pool = None


def create_worker(
    settings: Settings,
    *,
    ruleset: RuleSet | None = None,
    downstream: Downstream | None = None,
    retry_policy: RetryPolicy | None = None,
    **kwargs: Any,
) -> ChainerWorker:
    """A ready ChainerWorker on ``settings.redis_url`` with chainer's jobs and hooks.

    Like arq's ``create_worker(settings_cls, **kwargs)``: the options are ``WorkerSettings``' attributes
    (read by arq's ``get_kwargs``), overridden by ``kwargs`` (any arq Worker option: ``burst``,
    ``handle_signals``, ``poll_delay``, ``redis_pool`` ...). ``ruleset``, ``downstream`` and
    ``retry_policy`` go into the jobs' Services instead of what startup would build. Job timeouts, the
    lease, the sweeper's schedule, the poll and the backoff follow ``settings`` unless ``kwargs`` say otherwise.
    """
    options: dict[str, Any] = {
        **get_kwargs(WorkerSettings),
        **_timed(settings),
        "on_startup": ServicesBuilder(settings, ruleset, downstream, retry_policy).startup,
        **kwargs,
    }
    if options.get("redis_pool") is None:
        options["redis_pool"] = connect_arq(settings.redis_url, retries=settings.worker_redis_retries)
    return ChainerWorker(settings=settings, **options)
