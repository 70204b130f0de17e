"""The operator's views of stored events (DESIGN §8): an event with its actions, and its chain's tree.

Read-only answers built from the store: ``events_page`` for ``GET /events`` (recent deliveries, each
summarised), ``event_view`` for ``GET /events/{id}`` (the ledgers
decoded, each action's attempt history from the event's audit records), ``chain_view`` for
``GET /chains/{id}`` (the lineage tree from the first build of the chain, at most
``MAX_CHAIN_NODES`` events). Both return None for an event that is not stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from chainer.fastjson import loads
from chainer.store import Store, current_error
from chainer.web.params import OUTCOMES

MAX_CHAIN_NODES = 500
SCAN_CAP = 5000  # audit records one GET /events reads at most (as GET /audit)
SUMMARY_CAP = 500  # deliveries one GET /events summarises at most (each reads its event and ledgers)
_SUMMARY_READERS = 8
_ATTEMPT_ENDS = ("attempt.succeeded", "attempt.failed")
_HISTORY_FIELDS = ("attempt", "time", "outcome", "http_status", "error", "downstream_id")
_NODE_FIELDS = ("provider", "kind", "project", "branch", "tag", "commit", "status", "build_url", "workflow")


async def event_view(store: Store, event_id: str) -> dict[str, Any] | None:
    """The event, every rule decision, every action with its attempts, and the event's audit records."""
    stored = await store.get_event(event_id)
    if not stored:
        return None
    action_ids: list[str] = loads(stored.get("actions") or "[]")
    actions = [await store.get_action(a) for a in action_ids]
    records = await store.event_audit(event_id)
    event = loads(stored["event"])
    event["raw"] = loads(stored.get("raw") or "{}")
    return {
        "event": event,
        "received_ms": int(stored.get("received_ms") or 0),
        "rules_version": stored.get("rules_version"),
        "decisions": loads(stored.get("decisions") or "[]"),
        "actions": [action_view(a, records) for a in actions if a],
        "audit": records,
    }


def action_view(ledger: dict[str, str], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The ledger decoded, ``last_error`` only while it explains the state, and ``history``: every
    finished attempt with its outcome, status and error (from the event's audit records)."""
    view: dict[str, Any] = dict(ledger)
    view["params"] = loads(ledger.get("params") or "{}")
    for name in ("attempts", "replays", "depth", "index"):
        if name in view and str(view[name]).isdigit():
            view[name] = int(view[name])
    view["last_error"] = current_error(ledger)
    view["attempt_log"] = [
        r for r in records if r.get("action_id") == ledger.get("action_id") and r["type"].startswith("attempt.")
    ]
    view["history"] = [
        {name: r[name] for name in _HISTORY_FIELDS if r.get(name) is not None}
        for r in view["attempt_log"]
        if r["type"] in _ATTEMPT_ENDS
    ]
    return view


async def chain_view(store: Store, event_id: str) -> dict[str, Any] | None:
    """The lineage tree around an event, from the first build of its chain; ``truncated`` past the node cap."""
    stored = await store.get_event(event_id)
    if not stored:
        return None
    chain = loads(stored["event"]).get("chain") or []
    root = chain[0]["event_id"] if chain else event_id
    budget = [MAX_CHAIN_NODES]
    tree = await _chain_node(store, root, budget)
    return {"event_id": event_id, "root": root, "path": chain, "tree": tree, "truncated": budget[0] <= 0}


async def _chain_node(store: Store, event_id: str, budget: list[int]) -> dict[str, Any]:
    budget[0] -= 1
    stored = await store.get_event(event_id)
    if not stored:
        return {"event_id": event_id, "missing": "expired or never stored"}
    event = loads(stored["event"])
    chain = event.get("chain") or []
    children = [await _chain_node(store, c, budget) for c in await store.children(event_id) if budget[0] > 0]
    actions = []
    for action in loads(stored.get("actions") or "[]"):
        ledger = await store.get_action(action)
        actions.append(
            {
                "action_id": action,
                "rule": ledger.get("rule"),
                "action": ledger.get("action"),
                "state": ledger.get("state"),
                "downstream_id": ledger.get("downstream_id") or None,
                "reason": current_error(ledger),
                "builds": [c for c in children if c.get("caused_by") == action],
            }
        )
    return {
        "event_id": event_id,
        **{name: event.get(name) for name in _NODE_FIELDS},
        "depth": len(chain),
        "caused_by": chain[-1].get("action_id") if chain else None,
        "actions": actions,
    }


async def events_page(store: Store, q: Mapping[str, Any]) -> dict[str, Any]:
    """``GET /events``: one page of deliveries from the audit log (newest first unless ``after``), each with its
    outcome, its event's matched rules and its actions' states. ``next`` continues in the same direction.

    Like ``/audit``'s filtered reads, a page is full unless a bound is reached first: the filters on the records
    go to the store, the ``rule`` filter (the rules the delivery's event matched) is applied to the summaries, and
    reading goes on until ``limit`` deliveries are kept, at most ``SCAN_CAP`` audit records were read or
    ``SUMMARY_CAP`` deliveries summarised; ``next`` is then the position reached, so following it finds the rest
    (None once the range is exhausted)."""
    wanted = set(OUTCOMES) if q["outcome"] is None else {t for t, o in OUTCOMES.items() if o in q["outcome"]}
    match: dict[str, set[str]] = {"type": wanted}
    match |= {name: set(q[name]) for name in ("provider", "project", "branch", "commit") if q[name] is not None}
    after: str | None = q["after"]
    before: str | None = q["before"] if q["before"] is not None or q["after"] is not None else "+"
    rules = set(q["rule"]) if q["rule"] is not None else None
    limit: int = q["limit"]
    items: list[dict[str, Any]] = []
    scanned = summarised = 0
    while True:
        chunk = limit - len(items) if rules is None else min(max(limit, 50), SUMMARY_CAP - summarised)
        page = await store.read_audit(
            after=after,
            before=before,
            since_ms=q["since"],
            until_ms=q["until"],
            limit=chunk,
            match=match,
            event_id=q["event_id"],
            scan_cap=SCAN_CAP - scanned,
        )
        scanned += page.scanned
        summarised += len(page.items)
        for record, item in zip(page.items, await summaries(store, page.items), strict=True):
            if rules is None or rules & set(item["matched"]):
                items.append(item)
                if len(items) == limit:  # the rest of this chunk is read again from here
                    return {"items": items, "next": record["id"]}
        if page.next is None or scanned >= SCAN_CAP or summarised >= SUMMARY_CAP:
            return {"items": items, "next": page.next}
        if before is not None:
            before = page.next
        else:
            after = page.next


async def summaries(store: Store, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``delivery_summary`` of each record, in order, ``_SUMMARY_READERS`` at a time (their reads overlap)."""
    gate = asyncio.Semaphore(_SUMMARY_READERS)

    async def one(record: Mapping[str, Any]) -> dict[str, Any]:
        async with gate:
            return await delivery_summary(store, record)

    return list(await asyncio.gather(*(one(r) for r in records)))


async def delivery_summary(store: Store, record: Mapping[str, Any]) -> dict[str, Any]:
    """A delivery's audit record with its outcome, and for a stored event its matched rules and actions."""
    item: dict[str, Any] = {"id": record["id"], "time": record["time"], "outcome": OUTCOMES.get(record["type"])}
    item |= {name: record.get(name) for name in _SUMMARY_FIELDS}
    item |= {"matched": [], "actions": [], "state": None}
    event_id = record.get("delivery_event_id") or record.get("event_id")
    stored = await store.get_event(event_id) if event_id and record["type"] != "webhook.ignored" else {}
    if stored:
        event = loads(stored["event"])
        item["status"] = item["status"] or event.get("status")
        item["received_ms"] = int(stored.get("received_ms") or 0)
        decisions = loads(stored.get("decisions") or "[]")
        item["matched"] = [d.get("rule") for d in decisions if d.get("matched")]
        for action in loads(stored.get("actions") or "[]"):
            ledger = await store.get_action(action)
            item["actions"].append(
                {name: ledger.get(name) for name in ("action_id", "rule", "action", "state")}
                | {"attempts": int(ledger.get("attempts") or 0)}
            )
        states = {a["state"] for a in item["actions"]}
        item["state"] = next((s for s in _STATE_ORDER if s in states), "no actions" if not states else None)
    return item


_SUMMARY_FIELDS = ("event_id", "provider", "project", "branch", "commit", "status", "reason", "http_status")
_STATE_ORDER = ("dead", "calling", "pending", "skipped", "discarded", "done")
