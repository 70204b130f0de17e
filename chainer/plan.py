"""What an accepted event writes, computed without I/O (DESIGN §3, §5): intake and fan-in share it.

``ignored_reason`` says when an event is ignored instead (a status that is not final, which no rule asks for);
``plan_accept`` turns an event and the active rules' decisions into one ``AcceptPlan`` (the event,
a ledger, job and audit record per action, the join steps), which the store writes atomically.
``queue_actions`` and ``budgets_for`` are its parts that a completed fan-in (``chainer.fanin``) reuses
for the actions it renders later. Nothing here reads Redis, the clock or the network: the caller
passes the time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from arq.jobs import serialize_job

from chainer import audit, fastjson
from chainer.events import BuildEvent
from chainer.jobs import FIRE_JOIN, action_id, job_bytes, job_id
from chainer.rules import Decision, JoinStep, PlannedAction
from chainer.store import AcceptPlan, ActionSlot, Budget, JoinPlan, QueuedAction, keys
from chainer.store.codec import job_serializer


def _compact(value: Any) -> str:
    return fastjson.dumps_str(value)


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
        context = {
            **audit.event_context(event, rules_version),
            "rule": planned.rule,
            "action_id": aid,
            "action": planned.action,
        }
        ledger = {  # its identity (action_id, event_id, rule, index) is its key: chainer.store.ledger.identity
            "action": planned.action,
            "params": _compact(planned.params),
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
                # written only when a budget is spent, so only made for an action that has one
                audit.action_skipped(context, "budget spent", params=planned.params) if budgets else {},
            )
        )
    return queued


def ignored_reason(event: BuildEvent, decisions: Sequence[Decision]) -> str | None:
    """Why a parsed delivery is ignored rather than accepted, or None: its status is not final and no rule asks
    for it (``webhook.ignored``)."""
    if event.terminal or any(d.matched for d in decisions):
        return None
    return f"status `{event.status}` (raw `{event.raw_status}`) is not final and no rule asks for it"


def plan_accept(
    event: BuildEvent,
    decisions: Sequence[Decision],
    rules_version: str,
    at_ms: int,
    limits: Mapping[str, Mapping[str, int]] | None = None,
    *,
    lineage_keys: Sequence[str] = (),
    lineage: str = "",
) -> AcceptPlan:
    """Everything an accepted event writes: the event, one ledger and job per action, the audit trail.

    ``limits`` maps rule names to their ``limit`` budgets (per_commit, per_day), spent atomically at
    acceptance; an action whose budget is spent is recorded as skipped with the reason. ``lineage_keys``
    and ``lineage``: the keys the event's build may be registered under and the value of the first that
    exists ("" for none), from which ``event.chain`` came; the store writes the plan only while it holds.
    """
    delivery = event.dedupe_keys[0] if event.dedupe_keys else event.event_id
    records: list[dict[str, Any] | ActionSlot] = [audit.webhook_received(event, rules_version, delivery)]
    actions: list[QueuedAction] = []
    joins: list[JoinPlan] = []
    for decision in decisions:
        if decision.join is not None:
            joins.append(join_plan(event, decision.join, rules_version, at_ms))
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
        "event": _compact(event.as_dict()),
        "raw": _compact(dict(event.raw)),
        "received_ms": str(at_ms),
        "rules_version": rules_version,
        "delivery": delivery,
        "decisions": _compact([decision_summary(d) for d in decisions]),
        "actions": fastjson.dumps_str([a.action_id for a in actions]),
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
        lineage_keys=tuple(lineage_keys),
        lineage=lineage,
    )


def join_key(step: JoinStep) -> str:
    """The Redis key of a fan-in join: one per rule and join value (commit, branch or tag)."""
    return keys.join(step.rule, step.on, step.value)


def join_plan(event: BuildEvent, step: JoinStep, rules_version: str, at_ms: int) -> JoinPlan:
    """The write of ``event``'s step into its fan-in join, and the ``fire_join`` job queued if it completes it."""
    key = join_key(step)
    # A branch join fires once per round: the step that completes it moves the round aside (``fired_key``) so the
    # branch's next builds start a new one. A commit or tag join fires once for that commit or tag.
    fired_key = f"{key}:fired:{event.event_id}" if step.on == "branch" else key
    jid = "join:" + hashlib.sha256(fired_key.encode()).hexdigest()[:24]
    record = {
        "type": "join.progress",
        **audit.event_context(event, rules_version),
        "rule": step.rule,
        "join": {"on": step.on, "value": step.value, "clauses": step.clauses},
        "contributed": list(step.contributes),
        "reset": list(step.resets) or None,
    }
    job = serialize_job(FIRE_JOIN, (fired_key,), {}, None, at_ms, serializer=job_serializer)
    return JoinPlan(
        key=key,
        fired_key=fired_key,
        rule=step.rule,
        on=step.on,
        value=step.value,
        clauses=step.clauses,
        contributes=step.contributes,
        resets=step.resets,
        within_ms=step.within_ms,
        job_id=jid,
        job=job,
        record=record,
    )


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


def decision_summary(decision: Decision) -> dict[str, Any]:
    """One rule's decision as the event stores it: matched, and the first mismatch when not."""
    summary: dict[str, Any] = {"rule": decision.rule, "matched": decision.matched}
    if decision.mismatch is not None:
        m = decision.mismatch
        summary["mismatch"] = {"field": m.field, "expected": m.expected, "actual": m.actual, "text": m.text}
    return summary
