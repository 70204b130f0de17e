"""The model of a validated rules file: patterns, clauses, fan-in joins, action templates, rules, decisions.

Patterns: a glob (``fnmatch`` rules, case-sensitive; ``*`` also matches ``/``), ``re:<regex>``
(searched with ``re.fullmatch``), a list of those (any may match), or ``{include: [...],
exclude: [...]}``. An omitted field matches anything; a field the event lacks (no tag, say) never
matches a pattern. An omitted ``status`` means ``success``: the safe default for chaining. ``slug``
matches the project slug as the event carries it, for the providers whose events have one.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chainer.catalogue import ActionSpec, Catalogue
from chainer.events import STATUSES, BuildEvent

STATUS_SETS: Mapping[str, frozenset[str]] = {
    "finished": frozenset({"success", "failed", "error", "canceled"}),
    "not_success": frozenset({"failed", "error", "canceled"}),
    "any": frozenset(STATUSES),
}
DEFAULT_STATUS = frozenset({"success"})
DEFAULT_MAX_DEPTH = 5
PATTERN_FIELDS = ("project", "slug", "branch", "tag", "workflow", "job")
CLAUSE_ORDER = ("provider", "kind", "project", "slug", "status", "branch", "tag", "workflow", "job")
# Clause names that differ from the event field they match: `slug` is the project slug.
EVENT_FIELD_OF = {"slug": "project_slug"}
NAME = re.compile(r"^[a-z0-9-]+$")
TOP_KEYS = ("version", "max_depth", "rules")
RULE_KEYS = ("name", "description", "when", "then", "max_depth", "limit")
WHEN_KEYS = (*CLAUSE_ORDER, "all", "join_on", "within", "reset_on")
FAN_IN_KEYS = ("all", "join_on", "within", "reset_on")
LIMIT_KEYS = ("per_commit", "per_day")
JOIN_ON = ("commit", "branch", "tag")
DURATION = re.compile(r"^(\d+)\s*(s|m|h|d)$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_WITHIN_MS = 30 * 86_400_000
_GLOB_CHARS = set("*?[")


def duration_ms(value: Any) -> int | None:
    """``90s``/``30m``/``2h``/``1d`` or whole seconds → milliseconds; None when malformed or out of range."""
    if isinstance(value, int) and not isinstance(value, bool):
        ms = value * 1000
    elif isinstance(value, str) and (m := DURATION.match(value.strip())):
        ms = int(m.group(1)) * _UNIT_MS[m.group(2)]
    else:
        return None
    return ms if 0 < ms <= MAX_WITHIN_MS else None


# ----------------------------------------------------------------------------- patterns


@dataclass(frozen=True, slots=True)
class Pattern:
    """One glob or ``re:`` regex; a glob without ``*``, ``?`` or ``[`` is a plain name (``regex`` None)."""

    text: str
    regex: re.Pattern[str] | None

    @property
    def literal(self) -> bool:
        return self.regex is None

    def matches(self, value: str) -> bool:
        # A glob without wildcards matches its own text only: a comparison instead of a regex.
        return value == self.text if self.regex is None else self.regex.fullmatch(value) is not None


@functools.lru_cache(maxsize=4096)
def pattern(text: str) -> Pattern:
    """Compile a glob or ``re:`` regex; raises ``re.error`` for a bad regex. Patterns are immutable: a file
    naming the same one many times (`main`, `release/*`) compiles it once."""
    if text.startswith("re:"):
        return Pattern(text, re.compile(text[3:]))
    if not _GLOB_CHARS.intersection(text):
        return Pattern(text, None)
    return Pattern(text, re.compile(fnmatch.translate(text)))


def glob_prefix(glob: str) -> str:
    """The text before a glob's first ``*``, ``?`` or ``[``: every name it matches starts with it."""
    cut = min((glob.index(c) for c in "*?[" if c in glob), default=len(glob))
    return glob[:cut]


@dataclass(frozen=True, slots=True)
class FieldMatcher:
    """Include patterns (any may match; none given means everything) minus exclude patterns."""

    include: tuple[Pattern, ...]
    exclude: tuple[Pattern, ...] = ()

    def describe(self) -> Any:
        inc = [p.text for p in self.include]
        if not self.exclude:
            return inc[0] if len(inc) == 1 else inc
        return {"include": inc, "exclude": [p.text for p in self.exclude]}

    def check(self, name: str, value: Any) -> str | None:
        """None when ``value`` matches, else the sentence saying why not."""
        if value is None or value == "":
            return f"{name} is empty for this event; the rule wants {show(self.describe())}"
        text = str(value)
        if self.include and not any(p.matches(text) for p in self.include):
            return f"{name} `{text}` does not match {show([p.text for p in self.include])}"
        for p in self.exclude:
            if p.matches(text):
                return f"{name} `{text}` matched exclude `{p.text}`"
        return None


def show(value: Any) -> str:
    """A pattern, a list of them or an include/exclude mapping, quoted for a message."""
    if isinstance(value, list):
        return ", ".join(f"`{v}`" for v in value) if value else "nothing"
    if isinstance(value, dict):
        return f"include {show(value['include'])} exclude {show(value['exclude'])}"
    return f"`{value}`"


# ----------------------------------------------------------------------------- clauses


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The first failing clause of a rule for an event."""

    field: str
    expected: Any
    actual: Any
    text: str


@dataclass(frozen=True, slots=True)
class Clause:
    """The conditions of a ``when``; fields left out match anything (status defaults to success)."""

    providers: frozenset[str] | None = None
    kinds: frozenset[str] | None = None
    statuses: frozenset[str] = DEFAULT_STATUS
    status_written: Any = "success"
    patterns: Mapping[str, FieldMatcher] = field(default_factory=dict)

    def possible_providers(self, catalogue: Catalogue) -> frozenset[str] | None:
        """The providers whose events can match (None: any).

        A clause on a field only some providers' events carry (``slug``) matches only theirs.
        """
        possible = self.providers
        for name in self.patterns:
            carriers = catalogue.carriers(EVENT_FIELD_OF.get(name, name))
            if carriers is not None:
                possible = (possible or frozenset(catalogue.providers)) & carriers
        return possible

    def first_mismatch(self, event: BuildEvent, catalogue: Catalogue) -> Mismatch | None:
        """The first clause, in ``CLAUSE_ORDER``, that ``event`` fails; None when it meets them all."""
        for name in CLAUSE_ORDER:
            if name == "provider" and self.providers is not None and event.provider not in self.providers:
                shown = show(sorted(self.providers))
                text = f"provider `{event.provider}` is not {shown}"
                return Mismatch(name, sorted(self.providers), event.provider, text)
            if name == "kind" and self.kinds is not None and event.kind not in self.kinds:
                text = f"kind `{event.kind}` is not {show(sorted(self.kinds))}"
                return Mismatch(name, sorted(self.kinds), event.kind, text)
            if name == "status" and event.status not in self.statuses:
                wanted = ", ".join(sorted(self.statuses))
                text = f"status `{event.status}` (raw `{event.raw_status}`) is not one of {wanted}"
                return Mismatch(name, self.status_written, event.status, text)
            matcher = self.patterns.get(name)
            if matcher is not None:
                value = getattr(event, EVENT_FIELD_OF.get(name, name))
                reason = matcher.check(name, value)
                if reason is not None:
                    if value is None:
                        reason = _absent(name, matcher, event, catalogue, reason)
                    return Mismatch(name, matcher.describe(), value, reason)
        return None


def _absent(name: str, matcher: FieldMatcher, event: BuildEvent, catalogue: Catalogue, reason: str) -> str:
    """Why-not for a pattern on a field the event lacks, with what the catalogue knows about why it is absent."""
    if name == "project" and event.project_slug:
        return _no_project(event, matcher, catalogue)
    carriers = catalogue.carriers(EVENT_FIELD_OF.get(name, name))
    if carriers is None:
        return reason
    titles = " and ".join(catalogue.title(p) for p in catalogue.providers if p in carriers)
    return f"{reason} (only {titles} events have a {name}; this is a {event.provider} event)"


def _no_project(event: BuildEvent, matcher: FieldMatcher, catalogue: Catalogue) -> str:
    """Why-not for a `project` clause on an event whose payload names no project, only an opaque slug."""
    facts = catalogue.events.get(event.provider)
    why = (
        facts.no_project if facts is not None and facts.no_project else f"{catalogue.title(event.provider)} named none"
    )
    return (
        f"project is absent for this event: {why}, and its slug `{event.project_slug}` is opaque; the rule wants "
        f"project {show(matcher.describe())}: match the slug with `slug:` instead"
    )


# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class ActionTemplate:
    """One ``then`` item: the action and its arguments as written, with templates compiled."""

    index: int
    spec: ActionSpec
    args: Mapping[str, Any]
    compiled: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class Join:
    """A fan-in: every clause must see a matching event with the same ``on`` value within ``within_ms``."""

    clauses: tuple[Clause, ...]
    on: str
    within_ms: int
    reset_on_failure: bool = False


@dataclass(frozen=True, slots=True)
class JoinStep:
    """What one event does to a fan-in rule's join: the clauses it satisfies and those it resets."""

    rule: str
    on: str
    value: str
    contributes: tuple[int, ...]
    resets: tuple[int, ...]
    clauses: int
    within_ms: int


@dataclass(frozen=True, slots=True)
class Rule:
    """A validated rule: a single ``clause``, or a fan-in ``join`` (then ``clause`` is None)."""

    name: str
    position: int
    clause: Clause | None
    actions: tuple[ActionTemplate, ...]
    written: Mapping[str, Any]
    description: str = ""
    max_depth: int | None = None
    limit: Mapping[str, int] = field(default_factory=dict)
    join: Join | None = None

    @property
    def clauses(self) -> tuple[Clause, ...]:
        return self.join.clauses if self.join is not None else (self.clause,) if self.clause else ()


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """An action rendered for one event; ``error`` says why it cannot be sent (then params may be partial)."""

    rule: str
    index: int
    action: str
    params: dict[str, Any]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """A rule's verdict on an event; for a fan-in rule, ``matched`` means the event fed its join."""

    rule: str
    matched: bool
    mismatch: Mismatch | None
    actions: tuple[PlannedAction, ...] = ()
    join: JoinStep | None = None
