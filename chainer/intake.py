"""From delivery to durable decision: authenticate, parse, match, plan, accept (DESIGN §3).

This is the webhook pipeline without HTTP: ``Intake.receive`` takes the provider name, headers, raw
body and token and returns the status code and JSON body to answer with. The web app adds only
transport concerns (size cap, content type, routing).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from arq.jobs import serialize_job

from chainer import audit, lineage, providers
from chainer.errors import StoreUnavailableError, WebhookError
from chainer.events import BuildEvent, ChainLink
from chainer.jobs import FIRE_JOIN, action_id, job_bytes, job_id, job_serializer
from chainer.providers.base import HookAuth, Ignored
from chainer.rules import Decision, JoinStep, PlannedAction, RuleSet
from chainer.settings import Settings
from chainer.store import AcceptPlan, ActionSlot, Budget, JoinPlan, QueuedAction, Store, keys, now_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Reply:
    """What to answer a delivery with."""

    status_code: int
    body: dict[str, Any]


def queue_actions(
    event: BuildEvent,
    planned_actions: Sequence[PlannedAction],
    rules_version: str,
    at_ms: int,
    budgets: Sequence[Budget] = (),
) -> list[QueuedAction]:
    """A ledger, job and audit record for each rendered action; actions that cannot be sent are skipped."""
    queued: list[QueuedAction] = []
    for planned in planned_actions:
        aid = action_id(event.event_id, planned.rule, planned.index)
        context = {**audit.event_context(event, rules_version), "rule": planned.rule, "action_id": aid,
                   "action": planned.action}  # fmt: skip
        ledger = {
            "action_id": aid,
            "event_id": event.event_id,
            "rule": planned.rule,
            "index": str(planned.index),
            "action": planned.action,
            "params": json.dumps(planned.params, separators=(",", ":"), default=str),
            "attempts": "0",
            "replays": "0",
            "depth": str(event.depth + 1),
            "created_ms": str(at_ms),
            "updated_ms": str(at_ms),
            "project": event.project or "",
            "branch": event.branch or "",
            "commit": event.commit or "",
            "rules_version": rules_version,
        }
        if planned.error:
            ledger |= {"state": "skipped", "last_error": planned.error}
            queued.append(QueuedAction(aid, ledger, audit.action_skipped(context, planned.error)))
            continue
        jid = job_id(aid)
        ledger |= {"state": "pending", "job_id": jid}
        queued.append(
            QueuedAction(
                aid,
                ledger,
                audit.action_queued(context, jid, planned.params),
                jid,
                job_bytes(aid, at_ms),
                at_ms,
                budgets,
                audit.action_skipped(context, "budget spent", params=planned.params),
            )
        )
    return queued


def plan_accept(
    event: BuildEvent,
    decisions: Sequence[Decision],
    rules_version: str,
    at_ms: int,
    limits: Mapping[str, Mapping[str, int]] | None = None,
) -> AcceptPlan:
    """Everything an accepted event writes: the event, one ledger and job per action, the audit trail.

    ``limits`` maps rule names to their ``limit`` budgets (per_commit, per_day), spent atomically at
    acceptance; an action whose budget is spent is recorded as skipped with the reason.
    """
    delivery = event.dedupe_keys[0] if event.dedupe_keys else event.event_id
    records: list[dict[str, Any] | ActionSlot] = [audit.webhook_received(event, rules_version, delivery)]
    actions: list[QueuedAction] = []
    joins: list[JoinPlan] = []
    for decision in decisions:
        if decision.join is not None:
            joins.append(_join_plan(event, decision.join, rules_version, at_ms))
        if not decision.matched:
            m = decision.mismatch
            if m is not None:
                records.append(
                    audit.rule_not_matched(event, rules_version, decision.rule, m.field, m.expected, m.actual, m.text)
                )
            continue
        if decision.join is not None:
            step = decision.join
            join = {"on": step.on, "value": step.value, "clauses": list(step.contributes)}
            records.append(audit.rule_matched(event, rules_version, decision.rule, 0) | {"join": join})
            continue
        records.append(audit.rule_matched(event, rules_version, decision.rule, len(decision.actions)))
        budgets = budgets_for(event, decision.rule, (limits or {}).get(decision.rule) or {}, at_ms)
        for queued in queue_actions(event, decision.actions, rules_version, at_ms, budgets):
            records.append(ActionSlot(len(actions)))
            actions.append(queued)
    event_fields = {
        "event": json.dumps(event.as_dict(), separators=(",", ":"), default=str),
        "raw": json.dumps(dict(event.raw), separators=(",", ":"), default=str),
        "received_ms": str(at_ms),
        "rules_version": rules_version,
        "delivery": delivery,
        "decisions": json.dumps([_decision_summary(d) for d in decisions], separators=(",", ":"), default=str),
        "actions": json.dumps([a.action_id for a in actions]),
    }
    return AcceptPlan(
        event_id=event.event_id,
        dedupe_keys=event.dedupe_keys or (event.event_id,),
        event_fields=event_fields,
        audit=records,
        duplicate_record=audit.webhook_duplicate(event, rules_version, delivery),
        actions=actions,
        parent=event.chain[-1].event_id if event.chain else "",
        joins=joins,
    )


def join_key(step: JoinStep) -> str:
    """The Redis key of a fan-in join: one per rule and join value (commit, branch or tag)."""
    return keys.join(step.rule, step.on, step.value)


def _join_plan(event: BuildEvent, step: JoinStep, rules_version: str, at_ms: int) -> JoinPlan:
    key = join_key(step)
    jid = "join:" + hashlib.sha256(key.encode()).hexdigest()[:24]
    record = {
        "type": "join.progress",
        **audit.event_context(event, rules_version),
        "rule": step.rule,
        "join": {"on": step.on, "value": step.value, "clauses": step.clauses},
        "contributed": list(step.contributes),
        "reset": list(step.resets) or None,
    }
    job = serialize_job(FIRE_JOIN, (key,), {}, None, at_ms, serializer=job_serializer)
    return JoinPlan(key, step.rule, step.on, step.value, step.clauses, step.contributes, step.resets,
                    step.within_ms, jid, job, record)  # fmt: skip


def budgets_for(event: BuildEvent, rule: str, limit: Mapping[str, int], at_ms: int) -> tuple[Budget, ...]:
    """The counters a rule's ``limit`` spends for ``event`` (per commit, per UTC day)."""
    budgets = []
    per_commit = limit.get("per_commit")
    if per_commit and event.commit:
        budgets.append(
            Budget(
                keys.budget_commit(rule, event.commit),
                per_commit,
                keys.BUDGET_COMMIT_TTL_MS,
                f"budget spent: rule `{rule}` allows {per_commit} action run(s) per commit "
                f"and commit {event.commit[:12]} has used them",
            )
        )
    per_day = limit.get("per_day")
    if per_day:
        day = datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%d")
        budgets.append(
            Budget(
                keys.budget_day(rule, day),
                per_day,
                keys.BUDGET_DAY_TTL_MS,
                f"budget spent: rule `{rule}` allows {per_day} action run(s) per day (UTC) and {day} has used them",
            )
        )
    return tuple(budgets)


def _decision_summary(decision: Decision) -> dict[str, Any]:
    summary: dict[str, Any] = {"rule": decision.rule, "matched": decision.matched}
    if decision.mismatch is not None:
        m = decision.mismatch
        summary["mismatch"] = {"field": m.field, "expected": m.expected, "actual": m.actual, "text": m.text}
    return summary


class _RejectionSampler:
    """Lets at most ``burst`` rejection records per ``window`` seconds into the log, counting the rest.

    A flood of bad deliveries must not grow the audit stream without bound; the next record that
    gets through says how many were suppressed.
    """

    def __init__(self, burst: int = 50, window: float = 10.0) -> None:
        self.burst, self.window = burst, window
        self.started, self.count, self.suppressed = 0.0, 0, 0

    def admit(self) -> int | None:
        now = time.monotonic()
        if now - self.started > self.window:
            self.started, self.count = now, 0
        if self.count >= self.burst:
            self.suppressed += 1
            return None
        self.count += 1
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed


class Intake:
    """The webhook pipeline. ``rules`` returns the active rule set (it changes on reload)."""

    def __init__(self, settings: Settings, store: Store, rules: Callable[[], RuleSet]) -> None:
        self.settings = settings
        self.store = store
        self.rules = rules
        self._sampler = _RejectionSampler()

    async def receive(
        self, provider: str, headers: Mapping[str, str], body: bytes, token: str | None, remote: str | None = None
    ) -> Reply:
        """Authenticate, parse, match and durably accept one delivery; never raises for bad input."""
        try:
            parsed = self._parse(provider, headers, body, token)
        except WebhookError as exc:
            return await self.reject(provider, exc, remote)
        ruleset = self.rules()
        if isinstance(parsed, Ignored):
            return await self._ignore(provider, parsed.reason, ruleset.version, None)
        try:
            parsed = await self._with_lineage(parsed)
        except StoreUnavailableError:
            return _unavailable(parsed.event_id)
        decisions = ruleset.evaluate(parsed)
        matched = [d.rule for d in decisions if d.matched]
        if not parsed.terminal and not matched:
            reason = f"status `{parsed.status}` (raw `{parsed.raw_status}`) is not final and no rule asks for it"
            return await self._ignore(provider, reason, ruleset.version, parsed)
        plan = plan_accept(parsed, decisions, ruleset.version, now_ms(), ruleset.limits)
        try:
            outcome = await self.store.accept(plan)
        except StoreUnavailableError as exc:
            log.error("accept_failed", extra={"event_id": parsed.event_id, "error": str(exc)})
            return _unavailable(parsed.event_id)
        if outcome.duplicate:
            return Reply(200, {"status": "duplicate", "event_id": outcome.event_id})
        answer = {"event_id": parsed.event_id, "status": "accepted", "matched": matched, "queued": outcome.queued}
        return Reply(202, answer)

    async def _with_lineage(self, event: BuildEvent) -> BuildEvent:
        """The event with the chain of the action that started its build, when chainer started it."""
        found = await self.store.first_value(lineage.event_keys(event))
        if not found:
            return event
        try:
            links = tuple(ChainLink(**link) for link in json.loads(found))
        except (ValueError, TypeError):
            log.warning("lineage_unreadable", extra={"event_id": event.event_id})
            return event
        return event.with_chain(links)

    def _parse(self, provider: str, headers: Mapping[str, str], body: bytes, token: str | None) -> BuildEvent | Ignored:
        """The registered provider's parse; UnknownProviderError (404) for a name nobody registered."""
        return providers.get(provider).parse(headers, body, HookAuth(self.settings, token))

    async def reject(self, provider: str, exc: WebhookError, remote: str | None) -> Reply:
        """Answer a bad delivery with its status and cause, and log the rejection (without the body)."""
        suppressed = self._sampler.admit()
        if suppressed is not None:
            record = audit.webhook_rejected(provider, exc.status, str(exc), remote)
            if suppressed:
                record["suppressed_before"] = suppressed
            try:
                await self.store.append_audit([record])
            except StoreUnavailableError as store_exc:
                log.warning("rejection_not_logged", extra={"error": str(store_exc)})
        return Reply(exc.status, {"status": "rejected", "error": str(exc)})

    async def _ignore(self, provider: str, reason: str, version: str, event: BuildEvent | None) -> Reply:
        record = audit.webhook_ignored(provider, reason, version, event)
        try:
            await self.store.append_audit([record], event_id=event.event_id if event else None)
        except StoreUnavailableError:
            return _unavailable(event.event_id if event else None)
        body: dict[str, Any] = {"status": "ignored", "reason": reason}
        if event is not None:
            body["event_id"] = event.event_id
        return Reply(202, body)


def _unavailable(event_id: str | None) -> Reply:
    body: dict[str, Any] = {"status": "unavailable", "error": "Redis cannot durably take the event; retry later"}
    if event_id:
        body["event_id"] = event_id
    return Reply(503, body)
