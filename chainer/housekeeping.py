"""The worker's housekeeping cron jobs: the sweeper that dead-letters actions whose arq job vanished, and the
audit log's trim by time. Both skip a run while Redis is unavailable (the next run does the work)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from arq.typing import WorkerCoroutine

from chainer.errors import StoreUnavailableError
from chainer.jobs import dead_letter, ledger_context, services
from chainer.store import now_ms

log = logging.getLogger(__name__)


def _housekeeping(job: Callable[[dict[str, Any]], Awaitable[int]]) -> WorkerCoroutine:
    """A cron job that skips its run, with one warning line and no traceback, while Redis is unavailable: the
    next run (a minute or an interval later) does the work, and the worker rides out the outage meanwhile."""

    @functools.wraps(job)
    async def run(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> int:
        try:
            return await job(ctx)
        except StoreUnavailableError as exc:
            log.warning("housekeeping_skipped", extra={"job": job.__name__, "error": str(exc)[:300]})
            return 0

    return run


@_housekeeping
async def trim_audit(ctx: dict[str, Any]) -> int:
    """Drop audit records older than ``CHAINER_AUDIT_RETENTION_DAYS`` in bounded steps (``Store.trim_audit``); a
    cron job of every worker (arq runs each due run once), so no request ever waits on a trim."""
    removed = await services(ctx).store.trim_audit()
    if removed:
        log.info("audit_trimmed", extra={"records": removed})
    return removed


@_housekeeping
async def sweep(ctx: dict[str, Any]) -> int:
    """Dead-letter actions whose arq job vanished before they finished; returns how many it found.

    arq drops a job without calling any hook when it expires, cannot be deserialized or runs out
    of tries (shared/reference/arq-redis.md §1.4); its ledger would stay pending for ever. Every
    action still open ``SWEEP_GRACE_MS`` after it was queued and without a job is marked ``lost``
    (``ambiguous`` if its request may have gone out).
    """
    shared = services(ctx)
    store = shared.store
    cutoff = now_ms() - shared.sweep_grace_ms
    lost = 0
    for action in await store.open_actions(cutoff):
        ledger = await store.get_action(action)
        state = ledger.get("state", "")
        if state not in ("pending", "calling"):
            await store.forget_open(action)
            continue
        if await store.job_exists(ledger.get("job_id", "")):
            continue
        if state == "calling":
            # Its request may have gone out (the run died, or Redis failed, after sending it): a replay could
            # build twice, so a human looks at the provider first.
            reason = "ambiguous"
            message = "the job disappeared after its request was sent; it may have taken effect"
        else:
            reason = "lost"
            message = "the queued job disappeared before the action finished (expired, unreadable or out of tries)"
        await dead_letter(store, ledger_context(ledger), reason, message, None, from_state=state)
        lost += 1
    if lost:
        log.warning("actions_lost", extra={"count": lost})
    return lost
