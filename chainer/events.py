"""The canonical build event (DESIGN §4): the one shape every rule and audit record speaks."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("build", "workflow", "job")
STATUSES = ("success", "failed", "error", "canceled", "running", "other")
TERMINAL_STATUSES = frozenset({"success", "failed", "error", "canceled"})


def make_event_id(provider: str, dedupe_key: str) -> str:
    """A stable event id: the same upstream event always gets the same id, whichever delivery carried it."""
    digest = hashlib.sha256(f"{provider}|{dedupe_key}".encode()).hexdigest()
    return f"evt_{digest[:24]}"


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One step of an event's lineage: the event and rule whose action caused the next build."""

    event_id: str
    rule: str
    project: str
    action_id: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"event_id": self.event_id, "rule": self.rule, "project": self.project, "action_id": self.action_id}


@dataclass(frozen=True, slots=True)
class BuildEvent:
    """A normalized upstream build notification.

    ``dedupe_keys`` lists every key under which this event counts as already seen (the first one
    derives ``event_id``); ``raw`` is the payload as received, kept for the audit view only.
    """

    provider: str
    kind: str
    event_id: str
    project: str | None  # None when the provider names no project (an opaque slug)
    status: str
    raw_status: str
    project_id: str | int | None = None
    project_slug: str | None = None
    branch: str | None = None
    tag: str | None = None
    commit: str | None = None
    build_id: int | None = None
    build_url: str | None = None
    workflow: str | None = None
    workflow_id: str | None = None
    job: str | None = None
    pipeline_number: int | None = None
    occurred_at: str | None = None
    chain: tuple[ChainLink, ...] = ()
    dedupe_keys: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def terminal(self) -> bool:
        """True when the build has finished (success, failed, error or canceled)."""
        return self.status in TERMINAL_STATUSES

    @property
    def depth(self) -> int:
        """How many chained actions led to this event (0 for a build nobody chained)."""
        return len(self.chain)

    def as_dict(self, *, with_raw: bool = False) -> dict[str, Any]:
        """The event as JSON-safe data, in the field order of DESIGN §4 (``raw`` only on request)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in _DICT_FIELDS}
        data["chain"] = [link.as_dict() for link in self.chain]  # in its place: the key exists
        if with_raw:
            data["raw"] = dict(self.raw)
        return data

    def template_context(self) -> dict[str, Any]:
        """What templates see as ``event``: every canonical field except ``raw``."""
        return self.as_dict()

    def with_chain(self, chain: tuple[ChainLink, ...]) -> BuildEvent:
        """A copy of the event carrying the given lineage."""
        return dataclasses.replace(self, chain=chain)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildEvent:
        """Rebuild an event from ``as_dict`` output (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["chain"] = tuple(ChainLink(**link) for link in data.get("chain") or ())
        kwargs["dedupe_keys"] = tuple(data.get("dedupe_keys") or ())
        return cls(**kwargs)


# ``as_dict``'s fields in class order, named once (it runs on every accept; ``dataclasses.fields`` is slow).
_DICT_FIELDS = tuple(f.name for f in dataclasses.fields(BuildEvent) if f.name not in ("raw", "dedupe_keys"))

# The event fields a template or a rule may name (DESIGN §4, minus ``raw``).
EVENT_FIELDS = frozenset(_DICT_FIELDS)
