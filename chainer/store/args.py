"""How a plan becomes a Lua script's arguments: each action's keys, ledger, job and budgets, and the audit trail as
indexes into ARGV, where the records go compressed in the store's format."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chainer.store import keys
from chainer.store.codec import Packer, encode_record
from chainer.store.plans import ActionSlot, QueuedAction


def _argv(records: list[bytes], offset: int, record: Mapping[str, Any], packer: Packer) -> int:
    """Add a compressed record to a script's arguments, which hold ``offset`` others before ``records``; the
    record's index in ARGV (counted from 1, as Lua does), by which the plan names it."""
    records.append(packer.pack_record(record))
    return offset + len(records)


def encode_actions(
    actions: Sequence[QueuedAction], records: list[bytes], offset: int, packer: Packer
) -> tuple[list[str], list[dict[str, Any]]]:
    """The keys and script arguments of ``actions`` (ledger, job, budgets); their records go to ``records``."""
    names: list[str] = []
    encoded = []
    for action in actions:
        names += [keys.action(action.action_id), keys.arq_job(action.job_id or action.action_id)]
        names += [b.key for b in action.budgets]
        encoded.append(
            {
                "ledger": [x for kv in action.ledger.items() for x in kv],
                "action_id": action.action_id,
                "job_id": action.job_id,
                "job": action.job.decode(),
                "score": action.score_ms,
                "record": _argv(records, offset, action.record, packer),
                "skip": encode_record(action.skip_record) if action.budgets else "",  # read only when one is spent
                "budget": [[b.limit, b.ttl_ms, b.reason] for b in action.budgets],
            }
        )
    return names, encoded


def encode_audit(
    audit: Sequence[Mapping[str, Any] | ActionSlot], records: list[bytes], offset: int, packer: Packer
) -> list[Any]:
    """A plan's audit trail for a script: each record's index in ARGV (the record added to ``records``), or the
    action whose record stands in its place."""
    return [{"a": r.index + 1} if isinstance(r, ActionSlot) else _argv(records, offset, r, packer) for r in audit]
