"""The action ledger (``chainer:action:<id>``, a Redis hash of text fields) and a typed view of it.

Every field is written as text: at acceptance (rendered params, the event's project, branch and commit,
``state`` pending or skipped …) and by ``Store.transition`` (state changes, attempts, last status and error,
downstream id, result). The action's identity (``action_id``, ``event_id``, ``rule``, ``index``) is its key
and is not stored again (``identity``; ledgers written by earlier versions hold it too). A value longer than
``keys.HASH_CHUNK`` bytes is stored in pieces, so that the hash stays a compact listpack. ``Store.get_action``
and ``Store.get_ledger`` give the whole ledger back; ``Ledger`` decodes one into typed fields; ledgers are only
ever changed through ``Store.transition``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chainer.store.codec import decode_hash

# States in which an action still has work ahead (the sweeper watches them through ``chainer:open``).
OPEN_STATES = frozenset({"pending", "calling"})
# Ledger states in which ``last_error`` says why the action is where it is: waiting for a retry, dead (or
# discarded after dying), skipped. A done or calling action's ``last_error`` is left from an earlier try.
ERROR_STATES = frozenset({"pending", "dead", "discarded", "skipped"})


def identity(action_id: str) -> dict[str, str]:
    """The fields an action id names (``<event id>:<rule>:<index>``, ``chainer.jobs.action_id``): the ledger's
    identity, which its key holds and its hash does not repeat."""
    parts = action_id.split(":")
    if len(parts) != 3:
        return {"action_id": action_id}
    return {"action_id": action_id, "event_id": parts[0], "rule": parts[1], "index": parts[2]}


def current_error(ledger: Mapping[str, str]) -> str | None:
    """The error that explains the action's state now, or None (an earlier try's error is history)."""
    if ledger.get("state") not in ERROR_STATES:
        return None
    return ledger.get("last_error") or None


class LedgerError(ValueError):
    """A hash that is not an action ledger: ``field`` is the field that is missing, ``action_id`` what it named."""

    def __init__(self, message: str, *, action_id: str, field: str) -> None:
        super().__init__(message)
        self.action_id = action_id
        self.field = field


@dataclass(frozen=True, slots=True)
class Ledger:
    """One action's ledger, decoded. ``fields`` is the hash as stored (text), for fields not typed here."""

    action_id: str
    event_id: str
    rule: str
    action: str
    state: str
    index: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)
    attempts: int = 0
    replays: int = 0
    depth: int = 0
    created_ms: int = 0
    updated_ms: int = 0
    project: str | None = None
    branch: str | None = None
    commit: str | None = None
    rules_version: str | None = None
    job_id: str | None = None
    downstream_id: str | None = None
    last_status: int | None = None
    last_error: str | None = None
    dead_reason: str | None = None
    result: Any = None
    fields: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Ledger:
        """Decode a ledger hash as ``HGETALL`` returns it (bytes or text).

        A hash without ``state`` is no ledger (``Store.transition`` calls it missing): ``LedgerError``.
        Empty optional fields read as None, numbers that are not whole numbers as their default.
        """
        hash_ = decode_hash(raw)
        if not hash_.get("state"):
            raise LedgerError(
                f"not an action ledger: no state (action {hash_.get('action_id') or '?'})",
                action_id=hash_.get("action_id", ""),
                field="state",
            )
        return cls(
            action_id=hash_.get("action_id", ""),
            event_id=hash_.get("event_id", ""),
            rule=hash_.get("rule", ""),
            action=hash_.get("action", ""),
            state=hash_["state"],
            index=_int(hash_.get("index")) or 0,
            params=json.loads(hash_.get("params") or "{}"),
            attempts=_int(hash_.get("attempts")) or 0,
            replays=_int(hash_.get("replays")) or 0,
            depth=_int(hash_.get("depth")) or 0,
            created_ms=_int(hash_.get("created_ms")) or 0,
            updated_ms=_int(hash_.get("updated_ms")) or 0,
            project=hash_.get("project") or None,
            branch=hash_.get("branch") or None,
            commit=hash_.get("commit") or None,
            rules_version=hash_.get("rules_version") or None,
            job_id=hash_.get("job_id") or None,
            downstream_id=hash_.get("downstream_id") or None,
            last_status=_int(hash_.get("last_status")),
            last_error=hash_.get("last_error") or None,
            dead_reason=hash_.get("dead_reason") or None,
            result=json.loads(hash_["result"]) if hash_.get("result") else None,
            fields=hash_,
        )

    @property
    def open(self) -> bool:
        """Whether the action still has work ahead (pending or calling)."""
        return self.state in OPEN_STATES

    @property
    def error(self) -> str | None:
        """The error that explains the state now (``current_error``); None when it is only history."""
        return self.last_error if self.state in ERROR_STATES else None


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isascii() and value.isdigit() else None
