"""The dead-letter list (DESIGN §6): list, replay and discard dead actions; each change is audited.

Shared by the operator API and ``chainer dlq``. A replay moves the action from ``dead`` back to
``pending`` and queues a new arq job (``act:<action>:<n>``) in the same atomic step; a second replay
while the first is pending finds the action no longer dead and is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chainer.jobs import job_bytes, job_id, ledger_context
from chainer.store import Store, Transition, now_ms


@dataclass(frozen=True, slots=True)
class DlqChange:
    """The result of a replay or discard: ``ok``, or why not (``missing`` / the action's current state)."""

    ok: bool
    action_id: str
    state: str
    message: str


def dead_entry(ledger: dict[str, str]) -> dict[str, Any]:
    """The operator's view of one dead action."""
    return {
        "action_id": ledger.get("action_id"),
        "event_id": ledger.get("event_id"),
        "rule": ledger.get("rule"),
        "action": ledger.get("action"),
        "params": json.loads(ledger.get("params") or "{}"),
        "state": ledger.get("state"),
        "reason": ledger.get("dead_reason") or None,
        "attempts": int(ledger.get("attempts") or 0),
        "replays": int(ledger.get("replays") or 0),
        "last_status": int(ledger["last_status"]) if (ledger.get("last_status") or "").isdigit() else None,
        "last_error": ledger.get("last_error") or None,
        "project": ledger.get("project") or None,
        "branch": ledger.get("branch") or None,
        "commit": ledger.get("commit") or None,
        "updated_ms": int(ledger.get("updated_ms") or 0),
    }


async def list_dead(store: Store, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """Dead actions, oldest death first."""
    entries = []
    for action in await store.dead_actions(limit=limit, offset=offset):
        ledger = await store.get_action(action)
        if ledger:
            entries.append(dead_entry(ledger))
    return entries


async def replay(store: Store, action: str, actor: str) -> DlqChange:
    """Queue a dead action again; refused unless it is dead right now."""
    ledger = await store.get_action(action)
    if not ledger:
        return DlqChange(False, action, "missing", f"no action {action!r}")
    if ledger.get("state") != "dead":
        return _refused(action, ledger.get("state", ""), "replay")
    number = int(ledger.get("replays") or 0) + 1
    new_job = job_id(action, number)
    at = now_ms()
    record = {"type": "action.replayed", **ledger_context(ledger), "actor": actor, "replay": number, "job_id": new_job}
    result = await store.transition(
        Transition(
            action,
            ledger["event_id"],
            from_states=("dead",),
            set={"state": "pending", "job_id": new_job, "updated_ms": str(at), "replays": str(number)},
            audit=[record],
            dlq="remove",
            job_id=new_job,
            job=job_bytes(action, at),
            score_ms=at,
        )
    )
    if not result.ok:
        return _refused(action, result.previous_state, "replay")
    return DlqChange(True, action, "pending", f"replay {number} queued as {new_job}")


async def discard(store: Store, action: str, actor: str) -> DlqChange:
    """Drop a dead action for good; refused unless it is dead right now."""
    ledger = await store.get_action(action)
    if not ledger:
        return DlqChange(False, action, "missing", f"no action {action!r}")
    record = {"type": "action.discarded", **ledger_context(ledger), "actor": actor}
    result = await store.transition(
        Transition(
            action,
            ledger["event_id"],
            from_states=("dead",),
            set={"state": "discarded", "updated_ms": str(now_ms())},
            audit=[record],
            dlq="remove",
        )
    )
    if not result.ok:
        return _refused(action, result.previous_state, "discard")
    return DlqChange(True, action, "discarded", "discarded")


def _refused(action: str, state: str, verb: str) -> DlqChange:
    return DlqChange(False, action, state, f"cannot {verb} {action!r}: it is {state!r}, not dead")
