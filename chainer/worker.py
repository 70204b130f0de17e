"""The arq worker (DESIGN §1, §6): ``WorkerSettings`` plus the startup that builds shared clients.

``chainer worker`` runs ``create_worker(settings)``; the arq CLI can also load ``WorkerSettings`` but
then reads Redis from arq's defaults, so prefer the chainer command. Startup reads nothing at
import time: settings are built in ``startup`` from the environment unless a caller put them in ctx.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from typing import Any

from arq import Worker
from arq.cron import cron
from arq.worker import func

from chainer.actions import catalogue
from chainer.connections import connect_arq
from chainer.downstream import Downstream, default_http_client
from chainer.errors import DownstreamError
from chainer.fanin import fire_join
from chainer.jobs import FIRE_JOIN, RUN_ACTION, RetryPolicy, job_deserializer, job_serializer, run_action, sweep
from chainer.limits import InflightLocks, RateLimiter
from chainer.reload import RulesWatcher
from chainer.rules import RuleSet, load_rules
from chainer.settings import Settings
from chainer.store import Store

log = logging.getLogger("chainer.worker")

JOB_TIMEOUT_S = 60
POLICY = RetryPolicy()
# chainer decides when an action is exhausted (from its ledger's real attempts); arq's own try
# counter also counts waits for outbound limits, so its bound is only a guard against endless loops.
ARQ_MAX_TRIES = 1000
CODESHIP_PER_MINUTE = 60
CODESHIP_RATE_KEY = "chainer:rate:codeship"


async def startup(ctx: dict[str, Any]) -> None:
    """Build what every job shares: settings, the store, one HTTP client, the provider clients."""
    settings: Settings = ctx.get("settings") or Settings.from_env(os.environ)
    ctx["settings"] = settings
    ctx.setdefault("retry_policy", POLICY)
    ctx.setdefault("store", Store(ctx["redis"], retention_ms=settings.audit_retention_ms))
    ctx.setdefault("locks", InflightLocks(ctx["redis"], lease_s=JOB_TIMEOUT_S + 10))
    _watch_rules(ctx, settings)
    if "downstream" not in ctx:
        ctx["http"] = default_http_client()
        limiter = RateLimiter(ctx["redis"], CODESHIP_RATE_KEY, limit=CODESHIP_PER_MINUTE, window_s=60, label="Codeship")
        ctx["downstream"] = Downstream(settings, ctx["http"], codeship_throttle=limiter)
        if settings.codeship_user:
            try:
                for warning in await ctx["downstream"].check_codeship_auth():
                    log.warning("codeship_auth_warning", extra={"warning": warning})
            except DownstreamError as exc:  # report it, keep serving the other providers
                log.error("codeship_auth_failed", extra={"error": str(exc)})


def _watch_rules(ctx: dict[str, Any], settings: Settings) -> None:
    """Hold the active rules in ctx (fan-in jobs render with them) and reload them like the web does."""
    load = functools.partial(load_rules, catalogue=catalogue())
    if "ruleset" not in ctx:
        ctx["ruleset"] = load(settings.rules_path)
    ctx["rules"] = lambda: ctx["ruleset"]

    def activate(new: RuleSet) -> None:
        ctx["ruleset"] = new

    watcher = RulesWatcher(settings.rules_path, ctx["rules"], activate, ctx["store"], load=load)
    ctx["rules_task"] = asyncio.create_task(watcher.watch(settings.rules_poll_seconds))


async def shutdown(ctx: dict[str, Any]) -> None:
    task = ctx.get("rules_task")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    http = ctx.get("http")
    if http is not None:
        await http.aclose()


class WorkerSettings:
    """arq settings; every attribute is set on this class itself (arq ignores inherited ones)."""

    functions = (
        func(run_action, name=RUN_ACTION, max_tries=ARQ_MAX_TRIES, timeout=JOB_TIMEOUT_S),
        func(fire_join, name=FIRE_JOIN, max_tries=5, timeout=JOB_TIMEOUT_S),
    )
    cron_jobs = (cron(sweep, name="sweep", second=30, run_at_startup=True, timeout=JOB_TIMEOUT_S),)
    on_startup = startup
    on_shutdown = shutdown
    job_serializer = job_serializer
    job_deserializer = job_deserializer
    job_timeout = JOB_TIMEOUT_S
    max_jobs = 20
    keep_result = 3600
    retry_jobs = True
    health_check_interval = 15
    job_completion_wait = 25


def create_worker(settings: Settings, *, burst: bool = False, handle_signals: bool = True, **overrides: Any) -> Worker:
    """A ready arq Worker on ``settings.redis_url`` with chainer's job and hooks."""
    ctx = overrides.pop("ctx", {})
    ctx.setdefault("settings", settings)
    options: dict[str, Any] = {
        name: getattr(WorkerSettings, name)
        for name in (
            "functions",
            "cron_jobs",
            "on_startup",
            "on_shutdown",
            "job_serializer",
            "job_deserializer",
            "job_timeout",
            "max_jobs",
            "keep_result",
            "retry_jobs",
            "health_check_interval",
            "job_completion_wait",
        )
    }
    options.update(overrides)
    pool = options.pop("redis_pool", None) or connect_arq(settings.redis_url)
    return Worker(redis_pool=pool, burst=burst, handle_signals=handle_signals, ctx=ctx, **options)
