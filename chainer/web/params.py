"""Operator API query parameters (DESIGN §8), checked before Redis sees them.

Each operator endpoint declares the parameters it takes as a ``Spec`` (name → kind); ``parse_query``
checks a request's query string against it and returns the parsed values. Every problem raises
``ParamError`` whose message starts with the parameter's name, so the answer is a 400 that names it;
Redis only ever gets values it accepts, and its errors stay what they are (unavailable: 503).

What Redis refuses and why the limits are what they are: stream ids (cursors, times) are two unsigned
64-bit numbers ``<ms>-<seq>``; the audit ranges are exclusive at the cursor, and Redis refuses an
exclusive start after the last possible id or an exclusive end before ``0-0``. ZRANGE offsets are
signed 64-bit, far beyond any dead-letter list, so offsets are capped at ``MAX_OFFSET``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

U64_MAX = 2**64 - 1
MAX_LIMIT = 500
MAX_OFFSET = 1_000_000_000
_DIGITS = re.compile(r"[0-9]{1,20}")  # ASCII only: str.isdigit and \d also take other scripts' digits
_STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_SHOWN_CHARS = 60


class ParamError(ValueError):
    """A query parameter chainer cannot use or Redis would refuse; the message starts with its name."""


@dataclass(frozen=True, slots=True)
class Count:
    """A whole number from ``low`` to ``high`` (ASCII digits only), ``default`` when absent."""

    low: int
    high: int
    default: int

    def parse(self, name: str, value: str) -> int:
        number = int(value) if _DIGITS.fullmatch(value) else None
        if number is None or not self.low <= number <= self.high:
            raise ParamError(f"{name}: must be a whole number from {self.low} to {self.high}, got {_shown(value)}")
        return number


@dataclass(frozen=True, slots=True)
class Cursor:
    """An audit record id (``<ms>-<seq>`` or ``<ms>``) used as an exclusive ``bound`` of a range.

    ``latest`` also allows ``+`` (page backwards from the newest record).
    """

    bound: Literal["start", "end"]
    latest: bool = False

    def parse(self, name: str, value: str) -> str:
        if self.latest and value == "+":
            return value
        found = _STREAM_ID.fullmatch(value)
        if found is None or any(int(part) > U64_MAX for part in found.groups() if part is not None):
            raise ParamError(
                f"{name}: {_shown(value)} is not a cursor; use the id or next value of a record "
                f"(<ms>-<seq>, each from 0 to {U64_MAX})"
            )
        ms, seq = int(found[1]), found[2]
        if self.bound == "end" and ms == 0 and seq is not None and int(seq) == 0:
            raise ParamError(f"{name}: no record comes before {_shown(value)}, the first possible id")
        if self.bound == "start" and ms == U64_MAX and seq is not None and int(seq) == U64_MAX:
            raise ParamError(f"{name}: no record comes after {_shown(value)}, the last possible id")
        return value


@dataclass(frozen=True, slots=True)
class Time:
    """A moment as epoch milliseconds or an ISO 8601 time with a zone; parsed to epoch milliseconds."""

    def parse(self, name: str, value: str) -> int:
        if _DIGITS.fullmatch(value):
            ms = int(value)
        else:
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ParamError(
                    f"{name}: {_shown(value)} is neither epoch milliseconds nor an ISO 8601 time"
                ) from None
            if moment.tzinfo is None:
                raise ParamError(f"{name}: {_shown(value)} has no time zone; add Z or an offset")
            try:
                ms = int(moment.timestamp() * 1000)
            except (OverflowError, ValueError):
                ms = -1
        if not 0 <= ms <= U64_MAX:
            raise ParamError(
                f"{name}: {_shown(value)} is out of range (from 1970-01-01T00:00:00Z, or 0 to {U64_MAX} ms)"
            )
        return ms


@dataclass(frozen=True, slots=True)
class Text:
    """Any non-empty text (an event id, say)."""

    def parse(self, name: str, value: str) -> str:
        return value


@dataclass(frozen=True, slots=True)
class Values:
    """One value or a comma-separated list; any one of them matches."""

    def parse(self, name: str, value: str) -> frozenset[str]:
        items = value.split(",")
        if not all(items):
            raise ParamError(f"{name}: {_shown(value)} has an empty item; separate values with single commas")
        return frozenset(items)


Param = Count | Cursor | Time | Text | Values
Spec = Mapping[str, Param]

NO_PARAMS: Spec = {}
AUDIT_PARAMS: Spec = {
    "after": Cursor("start"),
    "before": Cursor("end", latest=True),
    "limit": Count(1, MAX_LIMIT, default=100),
    "since": Time(),
    "until": Time(),
    "event_id": Text(),
    "type": Values(),
    "rule": Values(),
    "project": Values(),
    "branch": Values(),
    "commit": Values(),
}
AUDIT_FILTERS = ("type", "rule", "project", "branch", "commit")
# GET /events: deliveries (newest first unless ``after``), with /audit's filters; ``outcome`` instead of ``type``.
EVENTS_PARAMS: Spec = {
    "after": Cursor("start"),
    "before": Cursor("end", latest=True),
    "limit": Count(1, 100, default=50),
    "since": Time(),
    "until": Time(),
    "event_id": Text(),
    "outcome": Values(),
    "provider": Values(),
    "rule": Values(),
    "project": Values(),
    "branch": Values(),
    "commit": Values(),
}
OUTCOMES = {
    "webhook.received": "accepted",
    "webhook.duplicate": "duplicate",
    "webhook.ignored": "ignored",
    "webhook.rejected": "rejected",
}
DLQ_PARAMS: Spec = {
    "limit": Count(1, MAX_LIMIT, default=100),
    "offset": Count(0, MAX_OFFSET, default=0),
}


def parse_query(items: Iterable[tuple[str, str]], spec: Spec) -> dict[str, Any]:
    """``items`` (name, value pairs of a query string) checked against ``spec``: every name known,
    given once and not empty. Absent parameters are their default (``Count``) or None."""
    pairs = list(items)
    unknown = sorted({name for name, _ in pairs} - set(spec))
    if unknown:
        takes = ", ".join(spec) if spec else "no query parameters"
        shown = ", ".join(_shown(name) for name in unknown)
        raise ParamError(f"unknown query parameter(s): {shown}; this endpoint takes {takes}")
    for name, count in Counter(name for name, _ in pairs).items():
        if count > 1:
            raise ParamError(f"{name}: given {count} times; give it once (lists are comma-separated)")
    given = dict(pairs)
    parsed: dict[str, Any] = {}
    for name, kind in spec.items():
        value = given.get(name)
        if value is None:
            parsed[name] = kind.default if isinstance(kind, Count) else None
        elif value == "":
            raise ParamError(f"{name}: is empty; give a value or leave the parameter out")
        else:
            parsed[name] = kind.parse(name, value)
    return parsed


def _shown(value: str) -> str:
    clipped = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
    return repr(clipped)
