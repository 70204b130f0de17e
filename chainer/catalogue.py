"""The action catalogue as plain data: what rules, lint and the schema know about providers (DESIGN §5).

Providers declare their actions with ``Param`` and ``ActionSpec`` and the registry gathers them into a
``Catalogue``; ``chainer.rules`` receives that object as an argument. This module imports nothing but
the canonical event, so the rules (and anything else that only needs the catalogue's shape) never load
provider or HTTP code.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from chainer.events import BuildEvent


@dataclass(frozen=True, slots=True)
class Param:
    """One argument of an action.

    ``types`` are the Python types a rendered value may have; ``default`` computes the value from
    the triggering event when the rule leaves the argument out (returning None means "no value").
    ``unless`` names arguments that switch the default off when the rule gives any of them: the event's
    build is no default for an action that restarts a build once the rule names a project, and the event's
    tag none for a trigger whose rule names a branch. ``required`` arguments must end up with a value,
    from the rule or from the default.

    The provider's own limits travel with the argument: ``check`` returns the problems of a value beyond
    its type (each a sentence starting with the argument's name, such as ``parameters: 101 entries, …``),
    for values written in a rule and values rendered for an event alike; ``entries`` says why one entry
    of a mapping argument is refused (None when it is fine); ``schema`` holds the JSON Schema keywords
    that express the same limits for editors.
    """

    name: str
    types: tuple[type, ...]
    required: bool = False
    default: Callable[[BuildEvent], Any] | None = None
    doc: str = ""
    unless: tuple[str, ...] = ()
    check: Callable[[Any], list[str]] | None = None
    entries: Callable[[Any], str | None] | None = None
    schema: Mapping[str, Any] | None = None

    def default_for(self, event: BuildEvent, written: Collection[str]) -> Any:
        """The event's value for this argument when a rule that gives ``written`` leaves it out, else None."""
        if self.default is None or self.name in written or any(name in written for name in self.unless):
            return None
        return self.default(event)


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """An action a rule can name in ``then``: its provider, arguments and mutually exclusive pairs."""

    name: str
    provider: str
    params: tuple[Param, ...]
    doc: str
    exclusive: tuple[tuple[str, str], ...] = ()
    # When set, the rendered arguments must fill at least one of these groups completely; otherwise
    # the action is not sent and ``one_of_reason`` says why (in the audit log and in explain).
    one_of: tuple[tuple[str, ...], ...] = ()
    one_of_reason: str = ""
    # How the action carries its lineage when a rule sets ``pass_chain: true``: given the rendered
    # arguments and the lineage (``<event id>:<rule>`` links separated by spaces, deepest last), the
    # arguments to send. None: the action cannot carry it.
    carry_chain: Callable[[dict[str, Any], str], dict[str, Any]] | None = None
    # The argument that names the project the action builds (``owner/repo``, or a provider's own two-part
    # name such as ``<org>/<pipeline>``), for the project graph lint draws its cycles on. When a
    # rule leaves it out (or the action has no such argument), the action acts on the event's own project.
    target: str = "project"

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What rules, lint and the schema need to know about one provider's events.

    ``probe`` is a fully populated event of the provider, to learn whether an argument's default can
    apply to its events. ``fields`` names the event fields only some providers' events carry (with a
    sentence describing each, for the schema): a rule clause on such a field matches this provider's
    events and no others'. ``no_project`` says why its events may come without a ``project``.
    """

    title: str
    probe: BuildEvent
    fields: Mapping[str, str]
    no_project: str = ""


@dataclass(frozen=True)
class Catalogue:
    """Everything the rules know about providers, handed to them as data.

    ``providers`` in registration order, the ``kinds`` of event each emits, every ``actions`` a rule may
    name, per-provider ``events`` facts, and ``example_action``: one ``then`` item shown in messages.
    """

    providers: tuple[str, ...]
    kinds: Mapping[str, tuple[str, ...]]
    actions: Mapping[str, ActionSpec]
    events: Mapping[str, EventFacts]
    example_action: str

    def __post_init__(self) -> None:
        missing = [p for p in self.providers if p not in self.events or p not in self.kinds]
        if missing:
            raise ValueError(f"catalogue: no event facts or kinds for {', '.join(missing)}")

    def carriers(self, field: str) -> frozenset[str] | None:
        """The providers whose events carry ``field`` when only some do; None when any provider's may."""
        owners = frozenset(p for p in self.providers if field in self.events[p].fields)
        return owners or None

    def title(self, provider: str) -> str:
        """How messages name ``provider`` (its own name when the catalogue does not know it)."""
        facts = self.events.get(provider)
        return facts.title if facts is not None else provider
