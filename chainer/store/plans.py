"""What the store is asked to write, and what it answers: plain frozen dataclasses, no I/O.

Callers (intake, fan-in, jobs, the DLQ) build these; ``Store`` encodes them for its Lua scripts (``store.args``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Budget:
    """A counter an action spends at acceptance; at ``limit`` the action is skipped with ``reason``."""

    key: str
    limit: int
    ttl_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class QueuedAction:
    """One action to write at acceptance: its ledger, its arq job (unless skipped) and its audit record.

    ``record`` is written when the action is queued; when one of ``budgets`` is spent the action is
    skipped instead and ``skip_record`` is written with the budget's reason.
    """

    action_id: str
    ledger: Mapping[str, str]
    record: Mapping[str, Any]
    job_id: str = ""
    job: bytes = b""
    score_ms: int = 0
    budgets: Sequence[Budget] = ()
    skip_record: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JoinPlan:
    """One event's step in a fan-in join; the script fires ``job`` when the step completes the join, and the join
    hash is then kept at ``fired_key`` (``key`` itself, or a key of that round when the join starts over)."""

    key: str
    fired_key: str
    rule: str
    on: str
    value: str
    clauses: int
    contributes: Sequence[int]
    resets: Sequence[int]
    within_ms: int
    job_id: str
    job: bytes
    record: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ActionSlot:
    """The place of the ``index``-th action's record in an accept plan's audit trail."""

    index: int


@dataclass(frozen=True, slots=True)
class AcceptPlan:
    """Everything one accepted event writes, prepared in Python and applied by one atomic script.

    ``audit`` holds records, and for each action an ``ActionSlot`` where its record (queued or
    skipped, decided inside the script) goes.
    """

    event_id: str
    dedupe_keys: Sequence[str]
    event_fields: Mapping[str, str]
    audit: Sequence[Mapping[str, Any] | ActionSlot]
    duplicate_record: Mapping[str, Any]
    actions: Sequence[QueuedAction] = field(default_factory=tuple)
    parent: str = ""  # the event whose action caused this one (lineage), if any
    joins: Sequence[JoinPlan] = ()
    # The keys the event's build may have been registered under (most specific first), and the value of the
    # first that exists, as the plan assumed it ("" for none): the script checks it before writing anything.
    lineage_keys: Sequence[str] = ()
    lineage: str = ""


@dataclass(frozen=True, slots=True)
class AcceptOutcome:
    """What ``Store.accept`` did. ``lineage`` is None when it wrote (or found a duplicate); otherwise nothing
    was written, because the event's lineage is ``lineage`` ("" for none), not what the plan assumed."""

    duplicate: bool
    event_id: str
    queued: int = 0
    lineage: str | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """A compare-and-set on an action ledger with its audit records (see ``Store.transition``)."""

    action_id: str
    event_id: str
    from_states: Sequence[str] = ()
    set: Mapping[str, str] = field(default_factory=dict)
    incr: Mapping[str, int] = field(default_factory=dict)
    audit: Sequence[Mapping[str, Any]] = ()
    dlq: str = ""  # "add" | "remove" | ""
    job_id: str = ""
    job: bytes = b""
    score_ms: int = 0


@dataclass(frozen=True, slots=True)
class TransitionResult:
    ok: bool
    previous_state: str  # "" when the ledger does not exist


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: list[dict[str, Any]]
    next: str | None
    scanned: int = 0  # records read to find ``items`` (filters drop the others)
