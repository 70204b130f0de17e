"""Everything chainer keeps in Redis: accepted events, action ledgers, arq jobs and the audit log.

    keys.py         every key name and TTL (``chainer:*`` and arq's), in one place
    core.py         ``Store``: atomic accept, ledger transitions, fan-in fires, audit reads
    plans.py        what callers ask the store to write (``AcceptPlan``, ``QueuedAction``, ``Transition`` …)
    args.py         how a plan becomes a Lua script's arguments
    ledger.py       the action ledger: ``Ledger`` (typed view), states, ``current_error``
    lua.py          the Lua scripts in ``scripts/*.lua`` and the batcher that runs them
    codec.py        times, audit records and stream entries in and out of Redis
    connections.py  Redis clients from CHAINER_REDIS_URL (plain, TLS, unix socket, Sentinel) and arq's pool

Acceptance is one Lua script per event: dedupe, event, ledgers, audit records and arq jobs are written
together or not at all, and concurrent accepts share round trips.
"""

from __future__ import annotations

from chainer.store import keys
from chainer.store.codec import encode_record, ms_to_iso, now_ms
from chainer.store.core import Store
from chainer.store.ledger import ERROR_STATES, OPEN_STATES, Ledger, LedgerError, current_error
from chainer.store.plans import (
    AcceptOutcome,
    AcceptPlan,
    ActionSlot,
    AuditPage,
    Budget,
    JoinPlan,
    QueuedAction,
    Transition,
    TransitionResult,
)

# The key names ``chainer.store`` offered before ``keys`` held them all; they are the same objects.
PREFIX = keys.PREFIX
AUDIT_KEY = keys.AUDIT
DLQ_KEY = keys.DLQ
OPEN_KEY = keys.OPEN
QUEUE_KEY = keys.ARQ_QUEUE
JOB_PREFIX = keys.ARQ_JOB_PREFIX
DEDUPE_DAYS = keys.DEDUPE_DAYS
event_key = keys.event
event_audit_key = keys.event_audit
action_key = keys.action
children_key = keys.children
seen_key = keys.seen

__all__ = [
    "AUDIT_KEY",
    "DEDUPE_DAYS",
    "DLQ_KEY",
    "ERROR_STATES",
    "JOB_PREFIX",
    "OPEN_KEY",
    "OPEN_STATES",
    "PREFIX",
    "QUEUE_KEY",
    "AcceptOutcome",
    "AcceptPlan",
    "ActionSlot",
    "AuditPage",
    "Budget",
    "JoinPlan",
    "Ledger",
    "LedgerError",
    "QueuedAction",
    "Store",
    "Transition",
    "TransitionResult",
    "action_key",
    "children_key",
    "current_error",
    "encode_record",
    "event_audit_key",
    "event_key",
    "keys",
    "ms_to_iso",
    "now_ms",
    "seen_key",
]
