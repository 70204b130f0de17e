"""Firing a completed fan-in (DESIGN §5 ``when.all``): the worker's ``fire_join`` job.

The accept script records each event's step in the join's hash and, in the same atomic step, marks
the join fired and queues this job when the step completes it, so two halves arriving together at
two web processes fire it once. The job renders the rule's actions with every contributing event
(``events[i]``, and ``event`` = the one that completed the join) and writes their ledgers, jobs and
audit records through a script that refuses to write a join twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from chainer import audit
from chainer.events import BuildEvent
from chainer.jobs import services
from chainer.plan import budgets_for, queue_actions
from chainer.store import ActionSlot, now_ms

log = logging.getLogger(__name__)


async def fire_join(ctx: dict[str, Any], key: str) -> str:
    """Render and queue the actions of the completed join at ``key``; returns what happened."""
    shared = services(ctx)
    store, ruleset = shared.store, shared.rules()
    join = await store.get_join(key)
    if not join:
        log.warning("join_missing", extra={"join": key})
        return "missing"
    if join.get("done"):
        return "done"
    ids = [join.get(f"c{i}", "") for i in range(int(join.get("n") or 0))]
    events: list[BuildEvent] = []
    for event_id in ids:
        stored = await store.get_event_field(event_id, "event") if event_id else None
        if stored:
            events.append(BuildEvent.from_dict(json.loads(stored)))
    last_id = join.get("fired") or (ids[-1] if ids else "")
    last = next((e for e in events if e.event_id == last_id), events[-1] if events else None)
    rule = ruleset.rule(join.get("rule", ""))
    if last is None:
        log.error("join_events_missing", extra={"join": key})
        return "missing"
    context = {**audit.event_context(last, ruleset.version), "rule": join.get("rule")}
    fired = {
        **context,
        "type": "join.fired",
        "join": {"on": join.get("on"), "value": join.get("value")},
        "events": ids,
    }
    reason = None
    if rule is None or rule.join is None:
        reason = f"rule `{join.get('rule')}` is no longer a fan-in of the active rules ({ruleset.version})"
    elif len(events) != len(ids):
        reason = "a contributing event is no longer stored (older than the retention window)"
    if reason is not None:
        await store.fire_join(key, last.event_id, [], [fired, {**context, "type": "action.skipped", "reason": reason}])
        return "skipped"
    assert rule is not None  # noqa: S101 (checked above)
    at = now_ms()
    planned = ruleset.fire(rule, events, last)
    queued = queue_actions(last, planned, ruleset.version, at, budgets_for(last, rule.name, rule.limit, at))
    records: list[Mapping[str, Any] | ActionSlot] = [fired, *(ActionSlot(i) for i in range(len(queued)))]
    result = await store.fire_join(key, last.event_id, queued, records)
    return "done" if result is None else "fired"
