"""The job contract: action and job ids, JSON job bytes, retry policy, the worker's ``Services``, ``run_action``.

An accepted event's actions are written by the acceptance script as arq jobs named ``run_action``
whose only argument is the action id; everything else (rendered parameters, state, attempts) lives
in the action's ledger hash. The ledger makes the downstream call at most once per action: it turns
``calling`` right before the request that can take effect (look-ups and authentication happen while
it is still ``pending``), and a job re-run after a crash that finds it in ``calling`` does not call
again (DESIGN §6).

Jobs read what they share (store, settings, provider clients, locks, retry policy) from one typed
``Services`` object in arq's ctx, ``ctx["services"]``, built once by the worker's startup
(``chainer.worker``); ``services(ctx)`` gets it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from arq import Retry
from arq.jobs import serialize_job

from chainer import audit, lineage, metrics
from chainer.errors import (
    AmbiguousDownstreamError,
    ChainerError,
    DownstreamError,
    PermanentDownstreamError,
    StoreUnavailableError,
    ThrottledError,
    TransientDownstreamError,
)
from chainer.events import BuildEvent
from chainer.limits import Busy, InflightLocks, inflight_key
from chainer.providers import Downstream, catalogue
from chainer.providers.http import BeforeEffect, CallResult
from chainer.rules import RuleSet
from chainer.settings import Settings
from chainer.store import Store, Transition, now_ms
from chainer.store.codec import UnreadableValueError, job_serializer

log = logging.getLogger(__name__)

RUN_ACTION = "run_action"
FIRE_JOIN = "fire_join"
TERMINAL_STATES = frozenset({"done", "dead", "skipped", "discarded"})
SERVICES = "services"  # the ctx key of the worker's Services
SWEEP_GRACE_MS = 5 * 60_000


def action_id(event_id: str, rule: str, index: int) -> str:
    """The deterministic id of the ``index``-th action of ``rule`` for ``event_id``."""
    return f"{event_id}:{rule}:{index}"


def job_id(action: str, replay: int = 0) -> str:
    """The arq job id of an action's ``replay``-th run (0 for the first)."""
    return f"act:{action}:{replay}"


def job_bytes(action: str, enqueue_ms: int) -> bytes:
    """The serialized arq job for ``run_action(action)``, as arq's own enqueue would write it."""
    return serialize_job(RUN_ACTION, (action,), {}, None, enqueue_ms, serializer=job_serializer)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with equal jitter: try n waits between d/2 and d, d = min(cap, base·3^(n-1)).

    ``busy_s``: how often the job next in line for a busy target looks again when no release woke it (and
    the jitter that spreads out jobs waiting for an outbound rate limit).
    """

    max_tries: int = 8
    base_s: float = 15.0
    cap_s: float = 3600.0

    busy_s: float = 1.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based), at least ``retry_after``."""
        nominal = min(self.cap_s, self.base_s * 3 ** max(attempt - 1, 0))
        jittered = random.uniform(nominal / 2, nominal)  # noqa: S311 (jitter, not cryptography)
        return min(max(jittered, retry_after or 0.0), max(self.cap_s, retry_after or 0.0))

    def throttle_delay(self, retry_after: float | None) -> float:
        """Wait for an outbound limit: its own estimate plus a little jitter so waiters spread out."""
        return (retry_after or self.busy_s) + random.uniform(0, self.busy_s / 2)  # noqa: S311

    def busy_delay(self, busy: Busy, lease_s: float) -> float:
        """How long a job parks while another call to its target runs. The release hands it the lease and
        wakes it sooner; this is only the look it takes when no release came (the holder died). The next in
        line looks when the holder's lease would run out, or every ``busy_s`` if that is sooner; the jobs
        behind it every three lease lengths (a release also brings the next one's look forward)."""
        if busy.position == 0:
            return max(min(busy.expires_s + 0.01, self.busy_s), 0.001)
        return 3 * max(busy.expires_s, lease_s)


@dataclass(frozen=True, slots=True)
class Services:
    """What every job shares, built once by the worker's startup and kept in ``ctx["services"]``.

    ``rules`` returns the active rules (fan-in jobs render with them; they change on reload).
    ``locks`` holds one lease per downstream target while a call is in flight; None takes no lease
    (for a caller that runs one job at a time). ``http`` and ``rules_task`` are what the worker
    owns and releases at shutdown: the HTTP client it made for ``downstream`` (None when the
    provider clients were handed in) and the task that follows the rules file.
    """

    settings: Settings
    store: Store
    rules: Callable[[], RuleSet]
    downstream: Downstream
    locks: InflightLocks | None = None
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    sweep_grace_ms: int = SWEEP_GRACE_MS
    http: httpx.AsyncClient | None = None
    rules_task: asyncio.Task[None] | None = None


def services(ctx: Mapping[str, Any]) -> Services:
    """The worker's Services in an arq job's ``ctx``."""
    found = ctx[SERVICES]
    if not isinstance(found, Services):
        raise TypeError(f"ctx[{SERVICES!r}] is {type(found).__name__}, not Services")
    return found


def ledger_context(ledger: Mapping[str, str]) -> dict[str, Any]:
    """The fields every audit record about this action carries."""
    return {
        "event_id": ledger.get("event_id"),
        "rule": ledger.get("rule"),
        "action_id": ledger.get("action_id"),
        "action": ledger.get("action"),
        "project": ledger.get("project") or None,
        "branch": ledger.get("branch") or None,
        "commit": ledger.get("commit") or None,
        "rules_version": ledger.get("rules_version") or None,
    }


async def run_action(ctx: dict[str, Any], action: str) -> str:
    """Execute one action: take its target's lease, claim its ledger, call the provider once, record.

    Returns the final state for arq's result. Raises ``arq.Retry`` to wait (transient failure with
    tries left, outbound limit, target busy); every other outcome is recorded in the ledger and the
    audit log, never raised.
    """
    shared = services(ctx)
    store, policy = shared.store, shared.retry_policy
    ledger = await store.get_action(action)
    if not ledger:
        log.warning("action_missing", extra={"action_id": action})
        return "missing"
    state = ledger.get("state", "")
    context = ledger_context(ledger)
    if state in TERMINAL_STATES:
        await _let_go(shared, ctx, ledger)
        return state
    if state == "calling":
        # An earlier run sent the request and died before recording the answer: calling again could
        # build twice, so the action goes to the dead-letter list for a human to replay or discard.
        await dead_letter(
            store, context, "ambiguous", "an earlier attempt was interrupted after sending the request", None
        )
        await _let_go(shared, ctx, ledger)
        return "dead"
    params = json.loads(ledger.get("params") or "{}")
    if shared.settings.dry_run:
        await store.transition(
            Transition(
                action,
                ledger["event_id"],
                from_states=("pending",),
                set={"state": "skipped", "updated_ms": str(now_ms())},
                audit=[audit.action_skipped(context, "dry run (CHAINER_DRY_RUN=1): nothing was sent", params=params)],
            )
        )
        metrics.ACTIONS.labels(ledger["action"], "skipped").inc()
        return "skipped"
    locks = shared.locks
    if locks is None:
        return await _attempt(shared, ledger, params)
    key, holder = target_key(ledger["action"], params), _holder(ctx, action)
    busy = await locks.claim(key, holder, arrival_ms=_arrival_ms(ctx))
    if busy is not None:
        log.info(
            "target_busy",
            extra={"action_id": action, "target": key, "holder": busy.holder, "position": busy.position},
        )
        raise Retry(defer=policy.busy_delay(busy, locks.lease_s))
    async with locks.renewing(key, holder) as lease:
        return await _attempt(shared, ledger, params, call_ended=lease.end)


def target_key(action: str, params: Mapping[str, Any]) -> str:
    """The lease key of the downstream target an action's rendered ``params`` name (its catalogue entry says
    which argument holds the project)."""
    spec = catalogue().actions.get(action)
    return inflight_key(action, params, spec.target if spec is not None else "project")


def _holder(ctx: Mapping[str, Any], action: str) -> str:
    """Who holds a target's lease: the arq job (a release hands the lease to the next waiting job by its id)."""
    job = ctx.get("job_id")
    return job if isinstance(job, str) and job else action


def _arrival_ms(ctx: Mapping[str, Any]) -> int:
    """When the job was queued (the order in which jobs for one target get its lease)."""
    queued = ctx.get("enqueue_time")
    return round(queued.timestamp() * 1000) if isinstance(queued, datetime) else now_ms()


async def _let_go(shared: Services, ctx: Mapping[str, Any], ledger: Mapping[str, str]) -> None:
    """Pass on a target's lease that a release handed to this job, which has nothing left to send."""
    if shared.locks is None or not ledger.get("action"):
        return
    params = json.loads(ledger.get("params") or "{}")
    await shared.locks.release(target_key(ledger["action"], params), _holder(ctx, ledger.get("action_id", "")))


class ClaimLostError(ChainerError):
    """Another run of the same action moved its ledger out of ``pending`` first; nothing was sent."""

    def __init__(self, state: str) -> None:
        super().__init__(f"the action is {state or 'missing'}, not pending")
        self.state = state


async def _nothing() -> None:
    return None


async def _attempt(
    shared: Services,
    ledger: Mapping[str, str],
    params: dict[str, Any],
    *,
    call_ended: Callable[[], Awaitable[None]] = _nothing,
) -> str:
    store, policy = shared.store, shared.retry_policy
    action, event_id = ledger["action_id"], ledger["event_id"]
    context = ledger_context(ledger)
    attempt = int(ledger.get("attempts") or 0) + 1
    started = await store.transition(
        Transition(
            action,
            event_id,
            from_states=("pending",),
            set={"updated_ms": str(now_ms())},
            incr={"attempts": 1},
            audit=[audit.attempt_started(context, attempt)],
        )
    )
    if not started.ok:
        return started.previous_state or "missing"
    # The ledger stays pending through the look-ups (auth, project and build lists): they change
    # nothing, so an attempt interrupted there is simply run again. It says ``calling`` only once the
    # request that can take effect is about to go out (DESIGN §6).
    state = "pending"

    async def before_effect() -> None:
        nonlocal state
        if state == "calling":  # a second effectful request of the same attempt (a token renewed after a 401)
            return
        claimed = await store.transition(
            Transition(
                action,
                event_id,
                from_states=("pending",),
                set={"state": "calling", "updated_ms": str(now_ms())},
            )
        )
        if not claimed.ok:
            raise ClaimLostError(claimed.previous_state)
        state = "calling"

    try:
        event_json = await store.get_event_field(event_id, "event")
    except UnreadableValueError as exc:  # damaged in Redis: no call can be made for it, now or on a retry
        message = f"the stored event {event_id} cannot be read: {exc}"
        await dead_letter(store, context, "unreadable", message, None, from_state="pending")
        return "dead"
    event = BuildEvent.from_dict(json.loads(event_json or "{}"))
    started_at = time.perf_counter()
    try:
        result = await _call(shared.downstream, ledger["action"], params, event, before_effect, call_ended)
    except ClaimLostError as exc:
        log.warning("action_state_conflict", extra={"action_id": action, "state": exc.state, "wanted": "calling"})
        return exc.state or "missing"
    except ThrottledError as exc:
        # Nothing was sent: give the attempt back and wait for the limit, without counting a try.
        metrics.attempt_done(ledger["action"], "throttled", started_at)
        defer = policy.throttle_delay(exc.retry_after)
        await store.transition(
            Transition(
                action,
                event_id,
                from_states=(state,),
                set={"state": "pending", "updated_ms": str(now_ms())},
                incr={"attempts": -1},
                audit=[audit.retry_scheduled(context, attempt, defer, reason=exc.message)],
            )
        )
        raise Retry(defer=defer) from exc
    except TransientDownstreamError as exc:
        metrics.attempt_done(ledger["action"], "transient", started_at)
        # A 429 with Retry-After: the provider refused before doing anything and said when to come back. That is
        # a wait, however long (even past the job's timeout and lease), not a failed try: the attempt is given
        # back and never exhausts the action.
        waited = exc.status == 429 and exc.retry_after is not None
        if attempt >= policy.max_tries and not waited:
            await dead_letter(
                store, context, "exhausted", exc.message, exc.status, attempt=attempt, from_state=state, exc=exc
            )
            return "dead"
        defer = policy.delay(attempt, exc.retry_after)
        await store.transition(
            Transition(
                action,
                event_id,
                from_states=(state,),
                set={"state": "pending", "last_status": str(exc.status or ""), "last_error": exc.message[:512]},
                incr={"attempts": -1} if waited else {},
                audit=[
                    audit.attempt_failed(context, attempt, exc, "transient"),
                    audit.retry_scheduled(context, attempt if waited else attempt + 1, defer),
                ],
            )
        )
        metrics.RETRIES.labels(metrics.provider_of(ledger["action"])).inc()
        raise Retry(defer=defer) from exc
    except AmbiguousDownstreamError as exc:
        metrics.attempt_done(ledger["action"], "ambiguous", started_at)
        await dead_letter(
            store, context, "ambiguous", exc.message, exc.status, attempt=attempt, from_state=state, exc=exc
        )
        return "dead"
    except PermanentDownstreamError as exc:
        metrics.attempt_done(ledger["action"], "permanent", started_at)
        await dead_letter(
            store, context, "permanent", exc.message, exc.status, attempt=attempt, from_state=state, exc=exc
        )
        return "dead"
    done = Transition(
        action,
        event_id,
        from_states=(state,),
        set={
            "state": "done",
            "last_status": str(result.status),
            "downstream_id": result.downstream_id or "",
            "result": json.dumps(result.detail, default=str),
            "updated_ms": str(now_ms()),
        },
        audit=[audit.attempt_succeeded(context, attempt, result.status, result.downstream_id, result.detail)],
    )
    await _record_through_outage(store, done, patience_s=shared.settings.job_timeout_seconds / 3)
    metrics.attempt_done(ledger["action"], "succeeded", started_at, finished=True)
    await _register_lineage(store, ledger, params, result.downstream_id, event)
    return "done"


async def _record_through_outage(store: Store, transition: Transition, *, patience_s: float) -> None:
    """Record the outcome of a call that took effect, trying again through a short Redis outage.

    Only this process knows the call succeeded: if the record is given up, the action stays ``calling``
    and the next run of its job (or the sweeper) dead-letters it as ``ambiguous``, never as replayable.
    """
    deadline = time.monotonic() + patience_s
    delay = 0.05
    while True:
        try:
            await store.transition(transition)
            return
        except StoreUnavailableError as exc:
            if time.monotonic() + delay > deadline:
                log.warning("outcome_not_recorded", extra={"action_id": transition.action_id, "error": str(exc)[:300]})
                raise
            log.info("outcome_record_retry", extra={"action_id": transition.action_id, "error": str(exc)[:300]})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def _call(
    downstream: Downstream,
    action: str,
    params: Mapping[str, Any],
    event: BuildEvent,
    before_effect: BeforeEffect,
    call_ended: Callable[[], Awaitable[None]],
) -> CallResult:
    """The provider call; ``call_ended`` (the target's lease handed on) as soon as it has returned or failed,
    so the next action for the target starts while this one records its outcome."""
    try:
        return await downstream.execute(action, params, event, before_effect=before_effect)
    finally:
        await call_ended()


async def _register_lineage(
    store: Store, ledger: Mapping[str, str], params: Mapping[str, Any], downstream_id: str | None, event: BuildEvent
) -> None:
    keys = lineage.target_keys(ledger["action"], params, downstream_id, event)
    chain = json.dumps(lineage.child_chain(event, ledger["rule"], ledger["action_id"]))
    try:
        await store.set_many([(key, chain, ttl) for key, ttl in keys])
    except StoreUnavailableError as exc:
        # The call is done and recorded; only the loop guard for its build loses its lineage.
        log.warning("lineage_not_recorded", extra={"action_id": ledger["action_id"], "error": str(exc)})


async def dead_letter(
    store: Store,
    context: Mapping[str, Any],
    reason: str,
    message: str,
    status: int | None,
    *,
    attempt: int | None = None,
    from_state: str = "calling",
    exc: DownstreamError | None = None,
) -> None:
    records = []
    if exc is not None and attempt is not None:
        records.append(audit.attempt_failed(context, attempt, exc, reason))
    records.append(audit.action_dead(context, reason, message, status))
    result = await store.transition(
        Transition(
            str(context["action_id"]),
            str(context["event_id"]),
            from_states=(from_state,),
            set={
                "state": "dead",
                "dead_reason": reason,
                "last_status": str(status or ""),
                "last_error": message[:512],
                "updated_ms": str(now_ms()),
            },
            audit=records,
            dlq="add",
        )
    )
    if not result.ok:
        log.warning(
            "action_state_conflict",
            extra={"action_id": context["action_id"], "state": result.previous_state, "wanted": "dead"},
        )
    else:
        metrics.action_dead(str(context["action"]), reason)
