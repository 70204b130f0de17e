"""rules.yaml (DESIGN §5): load and validate with line numbers, match events, render actions.

Loading reports every problem at once, one line each: ``<file>:<line>: rule '<name>' (rules[i])
<field path>: <message>``. Matching is pure: ``RuleSet.evaluate(event)`` returns one ``Decision`` per
candidate rule, with the first failing clause for rules that did not match. Candidates come from an
index by provider and project, so an event is not checked against every rule in the file.

Patterns: a glob (``fnmatch`` rules, case-sensitive; ``*`` also matches ``/``), ``re:<regex>``
(searched with ``re.fullmatch``), a list of those (any may match), or ``{include: [...],
exclude: [...]}``. An omitted field matches anything; a field the event lacks (no tag, say) never
matches a pattern. An omitted ``status`` means ``success``: the safe default for chaining. ``slug``
matches the CircleCI project slug as the event carries it (``github/acme/api``, or the opaque
``circleci/<org-id>/<project-id>`` of GitHub App and GitLab projects, whose events have no ``project``).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import hashlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from chainer.actions import (
    ACTIONS,
    CHAIN_PARAMETER,
    CIRCLECI_MAX_PARAMETER_KEY,
    CIRCLECI_MAX_PARAMETER_VALUE,
    CIRCLECI_MAX_PARAMETERS,
    ActionSpec,
)
from chainer.errors import ChainerError, RulesError
from chainer.events import EVENT_FIELDS, KINDS, PROVIDERS, STATUSES, BuildEvent

STATUS_SETS: Mapping[str, frozenset[str]] = {
    "finished": frozenset({"success", "failed", "error", "canceled"}),
    "not_success": frozenset({"failed", "error", "canceled"}),
    "any": frozenset(STATUSES),
}
DEFAULT_STATUS = frozenset({"success"})
DEFAULT_MAX_DEPTH = 5
PATTERN_FIELDS = ("project", "slug", "branch", "tag", "workflow", "job")
CLAUSE_ORDER = ("provider", "kind", "project", "slug", "status", "branch", "tag", "workflow", "job")
# Clause names that differ from the event field they match: `slug` is the CircleCI project slug.
EVENT_FIELD_OF = {"slug": "project_slug"}
SLUG_PROVIDERS = frozenset({"circleci"})
_NAME = re.compile(r"^[a-z0-9-]+$")
_TOP_KEYS = ("version", "max_depth", "rules")
_RULE_KEYS = ("name", "description", "when", "then", "max_depth", "limit")
_WHEN_KEYS = (*CLAUSE_ORDER, "all", "join_on", "within", "reset_on")
_FAN_IN = ("all", "join_on", "within", "reset_on")
JOIN_ON = ("commit", "branch", "tag")
_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d)$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_WITHIN_MS = 30 * 86_400_000


def _duration_ms(value: Any) -> int | None:
    """``90s``/``30m``/``2h``/``1d`` or whole seconds → milliseconds; None when malformed or out of range."""
    if isinstance(value, int) and not isinstance(value, bool):
        ms = value * 1000
    elif isinstance(value, str) and (m := _DURATION.match(value.strip())):
        ms = int(m.group(1)) * _UNIT_MS[m.group(2)]
    else:
        return None
    return ms if 0 < ms <= MAX_WITHIN_MS else None


_LIMIT_KEYS = ("per_commit", "per_day")
_GLOB_CHARS = set("*?[")
_TYPE_NAMES: Mapping[type, str] = {str: "a string", int: "a number", bool: "true/false", dict: "a mapping"}


class RenderError(ChainerError):
    """An action's arguments could not be rendered for an event; the message names the argument."""


# ----------------------------------------------------------------------------- YAML with lines


class _Map(dict[str, Any]):
    line: int
    key_lines: dict[str, int]


class _List(list[Any]):
    line: int
    item_lines: list[int]


_MERGE_TAG = "tag:yaml.org,2002:merge"
# A problem met while building the document: (line, field path such as ``rules[0].when``, message).
_Flaw = tuple[int, str, str]


def _compose(text: str, source: str, problems: list[str], flaws: list[_Flaw]) -> Any:
    """The document with lines, or None after a YAML syntax error (then ``problems`` holds it).

    Key-level trouble (duplicate or non-string keys, a merge key without a mapping, self-containing
    aliases, tags the safe loader cannot build) goes to ``flaws`` instead, so that validation goes on
    and each one is reported in its rule.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problems.append(f"{source}:{line}: YAML syntax error: {getattr(exc, 'problem', None) or exc}")
        return None
    finally:
        loader.dispose()
    return None if node is None else _build(node, loader, flaws, "", set())


def _build(node: yaml.Node, loader: yaml.SafeLoader, flaws: list[_Flaw], path: str, open_nodes: set[int]) -> Any:
    if id(node) in open_nodes:
        flaws.append((node.start_mark.line + 1, path, "a YAML alias may not contain itself"))
        return None
    if isinstance(node, yaml.MappingNode):
        open_nodes.add(id(node))
        result = _Map()
        result.line, result.key_lines = node.start_mark.line + 1, {}
        merged: list[tuple[int, Any]] = []
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                value = _build(value_node, loader, flaws, path, open_nodes)
                merged += [(line, v) for v in (value if isinstance(value, _List) else [value])]
                continue
            key = _build(key_node, loader, flaws, path, open_nodes)
            if not isinstance(key, str):
                flaws.append((line, path, f"keys must be strings, got {_plain(key)!r}"))
                continue
            key_path = f"{path}.{key}" if path else key
            if key in result:
                flaws.append((line, key_path, f"duplicate key (first at line {result.key_lines[key]})"))
                continue
            result[key] = _build(value_node, loader, flaws, key_path, open_nodes)
            result.key_lines[key] = line
        # YAML merge keys (`<<: *common`): the mapping's own keys win, then earlier merged mappings.
        for merge_line, base in merged:
            if not isinstance(base, _Map):
                flaws.append((merge_line, path, "a merge key (<<) takes a mapping or a list of mappings"))
                continue
            for key, value in base.items():
                if key not in result:
                    result[key] = value
                    result.key_lines[key] = base.key_lines[key]
        open_nodes.discard(id(node))
        return result
    if isinstance(node, yaml.SequenceNode):
        open_nodes.add(id(node))
        items = _List()
        items.line, items.item_lines = node.start_mark.line + 1, []
        for i, child in enumerate(node.value):
            items.append(_build(child, loader, flaws, f"{path}[{i}]", open_nodes))
            items.item_lines.append(child.start_mark.line + 1)
        open_nodes.discard(id(node))
        return items
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:  # a tag the safe loader refuses (``!!python/name:…``) is a problem, not a crash
        flaws.append((node.start_mark.line + 1, path, f"YAML error: {getattr(exc, 'problem', None) or exc}"))
        return None


def _rule_of(doc: Any, path: str) -> tuple[str, str]:
    """Split a document path into the checker's rule prefix and the field path inside that rule."""
    m = re.match(r"rules\[(\d+)\]\.?", path)
    if m is None:
        return "", path
    position = int(m.group(1))
    items = doc.get("rules") if isinstance(doc, _Map) else None
    item = items[position] if isinstance(items, list) and position < len(items) else None
    name = item.get("name") if isinstance(item, _Map) else None
    if isinstance(name, str) and _NAME.match(name):
        return f"rule '{name}' (rules[{position}]) ", path[m.end() :]
    return f"rules[{position}] ", path[m.end() :]


def _line(container: Any, key: str | int | None = None) -> int:
    if isinstance(container, _Map) and isinstance(key, str) and key in container.key_lines:
        return container.key_lines[key]
    if isinstance(container, _List) and isinstance(key, int) and key < len(container.item_lines):
        return container.item_lines[key]
    return getattr(container, "line", 1)


# ----------------------------------------------------------------------------- patterns


@dataclass(frozen=True, slots=True)
class Pattern:
    """One glob or ``re:`` regex."""

    text: str
    regex: re.Pattern[str]

    @property
    def literal(self) -> bool:
        return not self.text.startswith("re:") and not (_GLOB_CHARS & set(self.text))

    def matches(self, value: str) -> bool:
        return self.regex.fullmatch(value) is not None


def _pattern(text: str) -> Pattern:
    if text.startswith("re:"):
        return Pattern(text, re.compile(text[3:]))
    return Pattern(text, re.compile(fnmatch.translate(text)))


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
            return f"{name} is empty for this event; the rule wants {_show(self.describe())}"
        text = str(value)
        if self.include and not any(p.matches(text) for p in self.include):
            return f"{name} `{text}` does not match {_show([p.text for p in self.include])}"
        for p in self.exclude:
            if p.matches(text):
                return f"{name} `{text}` matched exclude `{p.text}`"
        return None


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(f"`{v}`" for v in value) if value else "nothing"
    if isinstance(value, dict):
        return f"include {_show(value['include'])} exclude {_show(value['exclude'])}"
    return f"`{value}`"


# ----------------------------------------------------------------------------- model


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

    @property
    def possible_providers(self) -> frozenset[str] | None:
        """The providers whose events can match (None: any); only CircleCI events have a ``slug``."""
        if "slug" in self.patterns:
            return (self.providers or frozenset(PROVIDERS)) & SLUG_PROVIDERS
        return self.providers

    def first_mismatch(self, event: BuildEvent) -> Mismatch | None:
        for name in CLAUSE_ORDER:
            if name == "provider" and self.providers is not None and event.provider not in self.providers:
                return Mismatch(name, sorted(self.providers), event.provider,
                                f"provider `{event.provider}` is not {_show(sorted(self.providers))}")  # fmt: skip
            if name == "kind" and self.kinds is not None and event.kind not in self.kinds:
                return Mismatch(name, sorted(self.kinds), event.kind,
                                f"kind `{event.kind}` is not {_show(sorted(self.kinds))}")  # fmt: skip
            if name == "status" and event.status not in self.statuses:
                return Mismatch(name, self.status_written, event.status,
                                f"status `{event.status}` (raw `{event.raw_status}`) is not one of "
                                f"{', '.join(sorted(self.statuses))}")  # fmt: skip
            matcher = self.patterns.get(name)
            if matcher is not None:
                value = getattr(event, EVENT_FIELD_OF.get(name, name))
                reason = matcher.check(name, value)
                if reason is not None:
                    if name == "project" and value is None and event.project_slug:
                        reason = _no_project(event.project_slug, matcher)
                    elif name == "slug" and value is None:
                        reason += f" (only CircleCI events have a slug; this is a {event.provider} event)"
                    return Mismatch(name, matcher.describe(), value, reason)
        return None


def _no_project(slug: str, matcher: FieldMatcher) -> str:
    """Why-not for a `project` clause on a CircleCI event whose payload names no organization or project."""
    return (
        f"project is absent for this event: CircleCI sent empty organization.name/project.name (GitHub App, "
        f"GitLab and Bitbucket DC projects), and its slug `{slug}` is opaque; the rule wants project "
        f"{_show(matcher.describe())}: match the slug with `slug:` instead"
    )


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


# ----------------------------------------------------------------------------- templates

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@dataclass(frozen=True, slots=True)
class _Template:
    source: str
    template: Any

    def render(self, context: Mapping[str, Any]) -> str:
        rendered: str = self.template.render(context)
        return rendered


def _template_problems(text: str, fan_in: int = 0) -> list[str]:
    """Syntax errors and names a template may not use: ``event.<field>``, and ``events[i].<field>`` in fan-in."""
    try:
        tree = _ENV.parse(text)
    except TemplateSyntaxError as exc:
        return [f"template syntax error: {exc.message}"]
    problems = []
    allowed = ("event", "events") if fan_in else ("event",)
    for node in tree.find_all(nodes.Name):
        if node.name not in allowed and node.ctx == "load":
            problems.append(f"template names `{node.name}`; only {' and '.join(f'`{a}`' for a in allowed)} exist here")
    for item in tree.find_all(nodes.Getitem) if fan_in else ():  # outside a fan-in, `events` is refused above
        target = getattr(item, "node", None)
        if isinstance(target, nodes.Name) and target.name == "events":
            index = getattr(getattr(item, "arg", None), "value", None)
            if not isinstance(index, int) or not 0 <= index < fan_in:
                problems.append(f"template names `events[{index}]`; this fan-in has events[0] to events[{fan_in - 1}]")
    for access in tree.find_all((nodes.Getattr, nodes.Getitem)):
        base = getattr(access, "node", None)
        if isinstance(base, nodes.Name) and base.name == "event":
            shown = "event"
        elif isinstance(base, nodes.Getitem) and isinstance(base.node, nodes.Name) and base.node.name == "events":
            shown = f"events[{getattr(base.arg, 'value', '?')}]"
        else:
            continue
        attr = (
            access.attr if isinstance(access, nodes.Getattr) else getattr(getattr(access, "arg", None), "value", None)
        )
        if not isinstance(attr, str) or attr not in EVENT_FIELDS:
            close = difflib.get_close_matches(str(attr), sorted(EVENT_FIELDS), n=1)
            hint = f" (did you mean `{shown}.{close[0]}`?)" if close else ""
            problems.append(f"template names `{shown}.{attr}`, which events do not have{hint}")
    return problems


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


def _compile(value: Any, *, parse: bool = True) -> Any:
    # parse=False marks templates without parsing them: lint checks arguments before it knows they parse.
    if isinstance(value, str):
        return _Template(value, _ENV.from_string(value) if parse else None) if _is_template(value) else value
    if isinstance(value, Mapping):
        return {k: _compile(v, parse=parse) for k, v in value.items()}
    if isinstance(value, list):
        return [_compile(v, parse=parse) for v in value]
    return value


def _render(value: Any, context: Mapping[str, Any], path: str) -> Any:
    if isinstance(value, _Template):
        try:
            return value.render(context)
        except UndefinedError as exc:
            missing = re.search(r"attribute '([^']+)'", str(exc))
            what = f"event.{missing.group(1)}" if missing else "a value"
            raise RenderError(f"argument '{path}': {what} is empty for this event") from None
        except SecurityError as exc:
            raise RenderError(f"argument '{path}': refused by the template sandbox: {exc}") from None
        except Exception as exc:  # any template runtime failure must become a clear error
            raise RenderError(f"argument '{path}': {type(exc).__name__}: {exc}") from None
    if isinstance(value, Mapping):
        return {k: _render(v, context, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _fields(event: BuildEvent) -> dict[str, Any]:
    # Fields without a value are left out so that StrictUndefined names them instead of rendering "None".
    return {k: v for k, v in event.template_context().items() if v is not None and v != ""}


def _context(event: BuildEvent, events: Sequence[BuildEvent] = ()) -> dict[str, Any]:
    context: dict[str, Any] = {"event": _fields(event)}
    if events:
        context["events"] = [_fields(e) for e in events]
    return context


def _argument_problems(spec: ActionSpec, params: Mapping[str, Any], final: bool) -> list[str]:
    """Type, exclusivity, one-of and limit checks; ``final`` adds required-argument checks."""
    problems = []
    for name, value in params.items():
        param = spec.param(name)
        if param is None:
            continue
        if isinstance(value, _Template):
            if str not in param.types:
                wanted = " or ".join(_TYPE_NAMES[t] for t in param.types)
                problems.append(f"argument '{name}' is a template, which renders text, but must be {wanted}")
            continue
        ok = isinstance(value, param.types) and not (bool not in param.types and isinstance(value, bool))
        if not ok:
            wanted = " or ".join(_TYPE_NAMES[t] for t in param.types)
            problems.append(f"argument '{name}' must be {wanted}, got {type(value).__name__} {value!r}")
    for a, b in spec.exclusive:
        if params.get(a) is not None and params.get(b) is not None:
            problems.append(f"arguments '{a}' and '{b}' cannot both be given")
    if final and spec.one_of and not any(all(_given(params.get(n)) for n in g) for g in spec.one_of):
        needs = "needs " + " or ".join("+".join(f"'{n}'" for n in g) for g in spec.one_of)
        problems.append(f"{needs}: {spec.one_of_reason}" if spec.one_of_reason else needs)
    parameters = params.get("parameters")
    if spec.name == "circleci.trigger_pipeline" and isinstance(parameters, Mapping):
        if len(parameters) > CIRCLECI_MAX_PARAMETERS:
            problems.append(f"parameters: {len(parameters)} entries, CircleCI allows {CIRCLECI_MAX_PARAMETERS}")
        for key, value in parameters.items():
            if len(str(key)) > CIRCLECI_MAX_PARAMETER_KEY:
                problems.append(f"parameters: key {str(key)[:20]!r}… is over {CIRCLECI_MAX_PARAMETER_KEY} characters")
            if isinstance(value, str) and len(value) > CIRCLECI_MAX_PARAMETER_VALUE:
                problems.append(f"parameters.{key}: value is over {CIRCLECI_MAX_PARAMETER_VALUE} characters")
            if final and (problem := parameter_value_problem(value)):
                problems.append(f"parameters.{key}: {problem}")
    return problems


def _given(value: Any) -> bool:
    """Whether a rendered argument has a value: None, empty and blank text count as left out."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def parameter_value_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a CircleCI pipeline parameter (integers, strings and booleans only), or None."""
    if isinstance(value, str | int | bool | _Template):
        return None
    kind = {float: f"a decimal number ({value!r})", dict: "a mapping", list: "a list", type(None): "empty (null)"}
    shown = next((text for t, text in kind.items() if isinstance(value, t)), type(value).__name__)
    return f"{shown} is not allowed: CircleCI pipeline parameters are integers, strings or booleans"


def render_actions(
    rule: Rule, event: BuildEvent, events: Sequence[BuildEvent] = (), context: Mapping[str, Any] | None = None
) -> tuple[PlannedAction, ...]:
    """Render ``rule``'s actions for ``event``: written arguments, then defaults from the event.

    For a fan-in, ``events`` are the contributing events (``events[i]`` in templates) and ``event``
    is the one that completed the join.
    """
    context = context if context is not None else _context(event, events)
    planned = []
    for template in rule.actions:
        spec = template.spec
        params: dict[str, Any] = {}
        error: str | None = None
        try:
            for name, value in template.compiled.items():
                params[name] = _render(value, context, name)
        except RenderError as exc:
            error = str(exc)
        for param in spec.params:
            value = param.default_for(event, template.args)
            if value is not None:
                params[param.name] = value
        if params.pop("pass_chain", False) is True and isinstance(params.get("parameters") or {}, Mapping):
            # The lineage travels with the pipeline: the cause's chain and this action, deepest last.
            links = [f"{link.event_id}:{link.rule}" for link in event.chain] + [f"{event.event_id}:{rule.name}"]
            params["parameters"] = {**(params.get("parameters") or {}), CHAIN_PARAMETER: " ".join(links)[-512:]}
        if error is None:
            missing = [p.name for p in spec.params if p.required and params.get(p.name) in (None, "")]
            if missing:
                error = f"argument '{missing[0]}' has no value: set it in the rule (no default for this event)"
        if error is None:
            problems = _argument_problems(spec, params, final=True)
            error = problems[0] if problems else None
        planned.append(PlannedAction(rule.name, template.index, spec.name, params, error))
    return tuple(planned)


# ----------------------------------------------------------------------------- rule set


@dataclass(frozen=True)
class RuleSet:
    """A validated rules file with its matching index."""

    version: str
    path: str
    rules: tuple[Rule, ...]
    max_depth: int = DEFAULT_MAX_DEPTH
    _by_project: Mapping[str, tuple[int, ...]] = field(default_factory=dict, repr=False)
    _wildcard: tuple[int, ...] = field(default=(), repr=False)
    _by_prefix: Mapping[str, tuple[int, ...]] = field(default_factory=dict, repr=False)
    _prefix_lengths: tuple[int, ...] = field(default=(), repr=False)

    @classmethod
    def build(cls, version: str, path: str, rules: Sequence[Rule], max_depth: int) -> RuleSet:
        # A rule is reachable through its project patterns: literal names go into a dict by name,
        # globs into a dict by their literal prefix (the text before the first * ? or [). Rules with
        # a regex project, or without a project clause, are checked for every event. A rule that is
        # not among an event's candidates can never match it, which `explain` still reports.
        by_project: dict[str, set[int]] = {}
        by_prefix: dict[str, set[int]] = {}
        wildcard: list[int] = []
        for i, rule in enumerate(rules):
            matchers = [c.patterns.get("project") for c in rule.clauses]
            patterns = [p for m in matchers if m is not None for p in m.include]
            if any(m is None or not m.include for m in matchers) or any(p.text.startswith("re:") for p in patterns):
                wildcard.append(i)
                continue
            for p in patterns:
                if p.literal:
                    by_project.setdefault(p.text, set()).add(i)
                else:
                    by_prefix.setdefault(_literal_prefix(p.text), set()).add(i)
        return cls(version, path, tuple(rules), max_depth,
                   {k: tuple(sorted(v)) for k, v in by_project.items()}, tuple(wildcard),
                   {k: tuple(sorted(v)) for k, v in by_prefix.items()},
                   tuple(sorted({len(k) for k in by_prefix})))  # fmt: skip

    @property
    def limits(self) -> dict[str, Mapping[str, int]]:
        """Each rule's ``limit`` budgets, by rule name (rules without one are left out)."""
        return {r.name: r.limit for r in self.rules if r.limit}

    def _candidates(self, event: BuildEvent) -> Iterator[Rule]:
        project = event.project or ""
        groups = [self._by_project.get(project, ()), self._wildcard]
        groups += [self._by_prefix.get(project[:n], ()) for n in self._prefix_lengths if n <= len(project)]
        present = [g for g in groups if g]
        indexes: Sequence[int] = present[0] if len(present) == 1 else sorted({i for g in present for i in g})
        for i in indexes:
            rule = self.rules[i]
            if any(c.providers is None or event.provider in c.providers for c in rule.clauses):
                yield rule

    def rule(self, name: str) -> Rule | None:
        """The rule called ``name``, or None."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        return None

    def fire(self, rule: Rule, events: Sequence[BuildEvent], last: BuildEvent) -> tuple[PlannedAction, ...]:
        """Render a completed fan-in's actions: ``events`` in clause order, ``last`` completed the join."""
        return self._guard(rule, last, render_actions(rule, last, events))

    def _guard(self, rule: Rule, event: BuildEvent, actions: tuple[PlannedAction, ...]) -> tuple[PlannedAction, ...]:
        limit = rule.max_depth or self.max_depth
        depth = event.depth + 1
        if depth <= limit:
            return actions
        # The loop guard (DESIGN §7): the rule matched, but its actions are not sent.
        hops = [link.project for link in event.chain] + [event.project or event.project_slug or event.event_id]
        return tuple(
            dataclasses.replace(
                a,
                error=f"loop guard: {' → '.join([*hops, str(a.params.get('project') or a.action)])}, "
                f"depth {depth} > {limit}",
            )
            for a in actions
        )

    def _join_step(self, rule: Rule, join: Join, event: BuildEvent) -> Decision:
        contributes, resets, misses = [], [], []
        for i, clause in enumerate(join.clauses):
            mismatch = clause.first_mismatch(event)
            if mismatch is None:
                contributes.append(i)
                continue
            misses.append((i, mismatch))
            relaxed = dataclasses.replace(clause, statuses=STATUS_SETS["any"])
            if (
                join.reset_on_failure
                and event.status in STATUS_SETS["not_success"]
                and not relaxed.first_mismatch(event)
            ):
                resets.append(i)
        if not contributes and not resets:
            i, first = misses[0]
            text = "; ".join(f"all[{j}]: {m.text}" for j, m in misses)
            return Decision(rule.name, False, Mismatch(f"all[{i}].{first.field}", first.expected, first.actual, text))
        value = getattr(event, join.on)
        if not value:
            text = f"join_on {join.on}: the event has no {join.on}"
            return Decision(rule.name, False, Mismatch("join_on", join.on, None, text))
        step = JoinStep(rule.name, join.on, str(value), tuple(contributes), tuple(resets), len(join.clauses),
                        join.within_ms)  # fmt: skip
        if not contributes:
            text = f"{event.status} event resets all[{', '.join(map(str, resets))}] (reset_on: failed)"
            return Decision(rule.name, False, Mismatch("status", "reset", event.status, text), join=step)
        return Decision(rule.name, True, None, join=step)

    def _decide(self, rule: Rule, event: BuildEvent, cache: dict[str, Any]) -> Decision:
        if rule.join is not None:
            return self._join_step(rule, rule.join, event)
        assert rule.clause is not None  # noqa: S101 (a rule has a clause or a join)
        mismatch = rule.clause.first_mismatch(event)
        if mismatch is not None:
            return Decision(rule.name, False, mismatch)
        if "context" not in cache:  # built once per event, only when some rule matched
            cache["context"] = _context(event)
        actions = render_actions(rule, event, context=cache["context"])
        return Decision(rule.name, True, None, self._guard(rule, event, actions))

    def evaluate(self, event: BuildEvent) -> list[Decision]:
        """Decisions for the candidate rules of ``event``, in file order."""
        cache: dict[str, Any] = {}
        return [self._decide(rule, event, cache) for rule in self._candidates(event)]

    def explain(self, event: BuildEvent) -> list[Decision]:
        """Decisions for every rule, candidates or not, in file order."""
        cache: dict[str, Any] = {}
        return [self._decide(rule, event, cache) for rule in self.rules]

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "path": self.path,
            "max_depth": self.max_depth,
            "rules": [
                {
                    "name": r.name,
                    "description": r.description or None,
                    "when": _plain(r.written.get("when")),
                    "then": _plain(r.written.get("then")),
                    "limit": dict(r.limit) or None,
                    "max_depth": r.max_depth,
                }
                for r in self.rules
            ],
        }

    def summary(self) -> str:
        lines = [f"{self.path}: {len(self.rules)} rule(s), version {self.version}, max_depth {self.max_depth}"]
        for r in self.rules:
            actions = ", ".join(a.name for a in r.actions)
            if r.join is not None:
                when = f"fan-in of {len(r.join.clauses)} clauses on {r.join.on} within {r.join.within_ms // 1000} s"
            elif r.clause is None or "status" not in (r.written.get("when") or {}):
                when = "status success (default)"
            else:
                when = f"status {_status_text(r.clause.status_written)}"
            lines.append(f"  {r.name}: {when} → {actions}")
        cycles = self.cycles()
        if cycles:
            lines.append(f"{len(cycles)} cycle(s) in the project graph, each cut by the loop guard:")
            lines += [f"  {c.text()}" for c in cycles]
        return "\n".join(lines)

    def cycles(self, limit: int = 50) -> list[Cycle]:
        """Cycles in the graph project → project that the rules' actions draw, with their depth bound.

        A rule's sources are the projects its clauses name (globs expand to every project the rules
        mention); its targets are its actions' ``project`` arguments, or the source itself when an
        action acts on the event's own project (restart, rerun). Every cycle is bounded, by the
        rules' ``max_depth`` or the global one, and the summary says where each stops.
        """
        edges = _project_edges(self.rules)
        found: dict[tuple[tuple[str, ...], tuple[str, ...]], Cycle] = {}
        for start in sorted(edges):
            stack: list[tuple[str, list[str], list[str]]] = [(start, [start], [])]
            while stack and len(found) < limit:
                node, path, rules = stack.pop()
                for target, rule in sorted(edges.get(node, ())):
                    if target == start:
                        cycle_rules = [*rules, rule]
                        key = (_rotation(path), tuple(sorted(cycle_rules)))
                        if key not in found:
                            depth = min(self._rule_depth(name) for name in cycle_rules)
                            found[key] = Cycle(tuple([*path, start]), tuple(cycle_rules), depth)
                    elif target not in path and len(path) < 12:
                        stack.append((target, [*path, target], [*rules, rule]))
        return [found[k] for k in sorted(found)]

    def _rule_depth(self, name: str) -> int:
        rule = self.rule(name)
        return (rule.max_depth if rule else None) or self.max_depth


@dataclass(frozen=True, slots=True)
class Cycle:
    """A loop in the project graph: ``projects`` (first repeated at the end), the rules, the depth bound."""

    projects: tuple[str, ...]
    rules: tuple[str, ...]
    max_depth: int

    def text(self) -> str:
        return f"{' → '.join(self.projects)} (rules {', '.join(self.rules)}), stopped at depth {self.max_depth}"


ANY_PROJECT = "(any project)"


def _literal_prefix(glob: str) -> str:
    cut = min((glob.index(c) for c in "*?[" if c in glob), default=len(glob))
    return glob[:cut]


def _repo(project: str) -> str:
    return "/".join([p for p in project.split("/") if p][-2:]).lower()


def _project_edges(rules: Sequence[Rule]) -> dict[str, set[tuple[str, str]]]:
    sources: dict[str, list[Pattern] | None] = {}
    targets: dict[str, set[str | None]] = {}
    for rule in rules:
        patterns: list[Pattern] | None = []
        for clause in rule.clauses:
            matcher = clause.patterns.get("project")
            if matcher is None or patterns is None:
                patterns = None
            else:
                patterns += list(matcher.include)
        sources[rule.name] = patterns
        targets[rule.name] = {
            _repo(a.args["project"]) if isinstance(a.args.get("project"), str) and not _is_template(a.args["project"])
            else None
            for a in rule.actions
        }  # fmt: skip
    nodes = {t for ts in targets.values() for t in ts if t} | {
        _repo(p.text) for ps in sources.values() if ps for p in ps if p.literal
    }
    edges: dict[str, set[tuple[str, str]]] = {}
    for rule in rules:
        patterns = sources[rule.name]
        matched = {n for n in nodes if patterns is None or any(p.matches(n) or _repo(p.text) == n for p in patterns)}
        for target in targets[rule.name]:
            if target is None and patterns is None:
                # Acts on whichever project sent the event: one loop on "any project", not one per project.
                edges.setdefault(ANY_PROJECT, set()).add((ANY_PROJECT, rule.name))
                continue
            for source in matched:
                edges.setdefault(source, set()).add((target or source, rule.name))
    return edges


def _rotation(path: list[str]) -> tuple[str, ...]:
    smallest = min(range(len(path)), key=lambda i: path[i])
    return tuple(path[smallest:] + path[:smallest])


def _status_text(written: Any) -> str:
    return ", ".join(map(str, written)) if isinstance(written, list) else str(written)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------- validation


class _Checker:
    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        self.where = ""

    def add(self, line: int, path: str, message: str) -> None:
        subject = f"{self.where}{path}".rstrip()
        where = f"{self.source}:{line}: {subject}" if subject else f"{self.source}:{line}"
        self.problems.append(f"{where}: {message}")

    def unknown_keys(self, mapping: _Map, allowed: Sequence[str], path: str) -> None:
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(allowed)})"
                self.add(_line(mapping, key), f"{path}{key}", f"unknown key{hint}")

    def positive_int(self, container: _Map, key: str, path: str) -> int | None:
        value = container.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.add(_line(container, key), path, f"must be a whole number of at least 1, got {value!r}")
            return None
        return value

    def patterns(self, container: _Map, key: str, path: str) -> FieldMatcher | None:
        value = container[key]
        line = _line(container, key)
        if isinstance(value, _Map):
            self.unknown_keys(value, ("include", "exclude"), f"{path}.")
            include = self.pattern_list(value.get("include", []), f"{path}.include", _line(value, "include"))
            exclude = self.pattern_list(value.get("exclude", []), f"{path}.exclude", _line(value, "exclude"))
            if include is None or exclude is None:
                return None
            if not include and not exclude:
                self.add(line, path, "needs include and/or exclude patterns")
                return None
            return FieldMatcher(tuple(include), tuple(exclude))
        include = self.pattern_list(value, path, line)
        if include is None:
            return None
        if not include:
            self.add(line, path, "an empty list matches nothing; leave the field out to match anything")
            return None
        return FieldMatcher(tuple(include))

    def pattern_list(self, value: Any, path: str, line: int) -> list[Pattern] | None:
        items = value if isinstance(value, list) else [value]
        result: list[Pattern] = []
        ok = True
        for i, item in enumerate(items):
            item_path = f"{path}[{i}]" if isinstance(value, list) else path
            item_line = _line(value, i) if isinstance(value, _List) else line
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str) or not item:
                self.add(item_line, item_path, f"a pattern must be a non-empty string, got {item!r}")
                ok = False
                continue
            try:
                result.append(_pattern(item))
            except re.error as exc:
                self.add(item_line, item_path, f"bad regex {item!r}: {exc}")
                ok = False
        return result if ok else None

    def choices(self, container: _Map, key: str, path: str, allowed: Sequence[str]) -> frozenset[str] | None:
        value = container[key]
        items = value if isinstance(value, list) else [value]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            self.add(_line(container, key), path, f"{bad[0] if bad else value!r} is not one of {', '.join(allowed)}")
            return None
        return frozenset(items)

    def status(self, container: _Map, path: str) -> tuple[frozenset[str], Any] | None:
        value = container["status"]
        items = value if isinstance(value, list) else [value]
        statuses: set[str] = set()
        for item in items:
            if isinstance(item, str) and item in STATUS_SETS:
                statuses |= STATUS_SETS[item]
            elif isinstance(item, str) and item in STATUSES:
                statuses.add(item)
            else:
                allowed = ", ".join([*STATUSES, *STATUS_SETS])
                self.add(_line(container, "status"), path, f"{item!r} is not a status or named set ({allowed})")
                return None
        if not statuses:
            self.add(_line(container, "status"), path, "an empty list matches nothing")
            return None
        return frozenset(statuses), _plain(value)

    def clause(self, when: Any, line: int, path: str = "when", *, nested: bool = False) -> Clause | None:
        if not isinstance(when, _Map):
            self.add(line, path, f"must be a mapping of conditions, got {type(_plain(when)).__name__}")
            return None
        self.unknown_keys(when, CLAUSE_ORDER if nested else _WHEN_KEYS, f"{path}.")
        for key in _FAN_IN:
            if key in when and not nested:
                self.add(_line(when, key), f"{path}.{key}", "only a fan-in uses this; add `all:` with its clauses")
        count = len(self.problems)
        providers = self.choices(when, "provider", f"{path}.provider", PROVIDERS) if "provider" in when else None
        kinds = self.choices(when, "kind", f"{path}.kind", KINDS) if "kind" in when else None
        status = self.status(when, f"{path}.status") if "status" in when else (DEFAULT_STATUS, "success")
        matchers = {}
        for name in PATTERN_FIELDS:
            if name in when:
                matcher = self.patterns(when, name, f"{path}.{name}")
                if matcher is not None:
                    matchers[name] = matcher
        if len(self.problems) > count or status is None:
            return None
        return Clause(providers, kinds, status[0], status[1], matchers)

    def join(self, when: _Map) -> Join | None:
        """A fan-in ``when``: ``all`` (two or more clauses), ``join_on``, ``within``, ``reset_on``."""
        count = len(self.problems)
        for key in when:
            if key not in _FAN_IN and key in _WHEN_KEYS:
                self.add(_line(when, key), f"when.{key}", "conditions of a fan-in go inside each `all` clause")
        items = when["all"]
        clauses: list[Clause] = []
        if not isinstance(items, list) or len(items) < 2:
            self.add(_line(when, "all"), "when.all", "a fan-in needs a list of at least two clauses")
        else:
            for i, item in enumerate(items):
                clause = self.clause(item, _line(items, i), f"when.all[{i}]", nested=True)
                if clause is not None:
                    clauses.append(clause)
        on = when.get("join_on", "commit")
        if on not in JOIN_ON:
            self.add(_line(when, "join_on"), "when.join_on", f"{on!r} is not one of {', '.join(JOIN_ON)}")
        within_ms = None
        if "within" not in when:
            self.add(when.line, "when.within", "a fan-in needs `within`, the time its clauses may be apart (e.g. 2h)")
        else:
            within_ms = _duration_ms(when["within"])
            if within_ms is None:
                self.add(_line(when, "within"), "when.within",
                         f"{when['within']!r} is not a duration like 90s, 30m, 2h or 1d (at most 30d)")  # fmt: skip
        reset = when.get("reset_on")
        if reset is not None and reset != "failed":
            self.add(_line(when, "reset_on"), "when.reset_on", f"{reset!r}: the only reset is `failed`")
        if len(self.problems) > count or within_ms is None:
            return None
        return Join(tuple(clauses), str(on), within_ms, reset == "failed")

    def action(
        self, item: Any, index: int, line: int, providers: frozenset[str] | None, fan_in: int = 0
    ) -> ActionTemplate | None:
        path = f"then[{index}]"
        if not isinstance(item, _Map) or len(item) != 1:
            self.add(line, path, "each action is a mapping with exactly one key, the action name, e.g. "
                                 "`- circleci.trigger_pipeline: {project: gh/acme/api}`")  # fmt: skip
            return None
        ((name, args),) = item.items()
        spec = ACTIONS.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(ACTIONS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(ACTIONS)})"
            self.add(_line(item, name), f"{path}.{name}", f"unknown action{hint}")
            return None
        args = _Map() if args is None else args
        if not isinstance(args, _Map):
            self.add(_line(item, name), f"{path}.{name}", "arguments must be a mapping (use {} for none)")
            return None
        count = len(self.problems)
        self.unknown_keys(args, spec.param_names, f"{path}.{name}.")
        for key, value in args.items():
            for text in _strings(value):
                for problem in _template_problems(text, fan_in) if _is_template(text) else ():
                    self.add(_line(args, key), f"{path}.{name}.{key}", problem)
        # Templates marked (not parsed: a syntax error is reported above, not raised), so that templated
        # values count for exclusivity and limits but skip the type check.
        for problem in _argument_problems(spec, _compile(_plain(args), parse=False), final=False):
            self.add(_line(item, name), f"{path}.{name}", problem)
        parameters = args.get("parameters") if spec.name == "circleci.trigger_pipeline" else None
        for key, value in parameters.items() if isinstance(parameters, _Map) else ():
            if (flaw := parameter_value_problem(value)) is not None:
                self.add(_line(parameters, key), f"{path}.{name}.parameters.{key}", flaw)
        for group in spec.one_of:
            given = [n for n in group if n in args]
            for missing in [n for n in group if n not in args] if given else ():
                param = spec.param(missing)
                if param is None or param.default is None:
                    together = " and ".join(f"'{n}'" for n in group)
                    self.add(_line(item, name), f"{path}.{name}",
                             f"argument '{given[0]}' needs '{missing}' too: {together} go together")  # fmt: skip
        possible = providers or frozenset(PROVIDERS)
        for param in spec.params:
            if not param.required or param.name in args:
                continue
            if param.default is None:
                self.add(_line(item, name), f"{path}.{name}", f"missing required argument '{param.name}'")
                continue
            for provider in sorted(possible):
                if param.default_for(_probe(provider), args) is None:
                    self.add(_line(item, name), f"{path}.{name}",
                             f"argument '{param.name}' has no default for {provider} events; "
                             "set it or restrict when.provider")  # fmt: skip
        if len(self.problems) > count:
            return None
        return ActionTemplate(index, spec, _plain(args), _compile(_plain(args)))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _probe(provider: str) -> BuildEvent:
    """A fully populated event of ``provider``, to learn whether an argument's default can apply."""
    return BuildEvent(
        provider=provider, kind="build" if provider == "codeship" else "workflow", event_id="evt_probe",
        project="org/repo", status="success", raw_status="success", project_id=1, project_slug="github/org/repo",
        branch="main", commit="0" * 40, build_id=1, build_url="https://ci.example.org/1", workflow="w",
        workflow_id="wf", job="j", pipeline_number=1,
    )  # fmt: skip


def parse_rules(text: str | bytes, source: str = "rules.yaml") -> RuleSet:
    """Validate a rules document; raise RulesError listing every problem."""
    raw = text.encode() if isinstance(text, str) else text
    problems: list[str] = []
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RulesError([f"{source}:1: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    flaws: list[_Flaw] = []
    doc = _compose(decoded, source, problems, flaws)
    if problems:
        raise RulesError(problems)
    check = _Checker(source, problems)
    for flaw_line, flaw_path, message in flaws:
        check.where, field_path = _rule_of(doc, flaw_path)
        check.add(flaw_line, field_path, message)
    check.where = ""
    if not isinstance(doc, _Map):
        check.add(1, "", "the file must be a mapping with `version: 1` and `rules:`")
        raise RulesError(_in_file_order(problems, source))
    check.unknown_keys(doc, _TOP_KEYS, "")
    if doc.get("version") != 1:
        check.add(_line(doc, "version"), "version", f"must be 1, got {doc.get('version')!r}")
    max_depth = DEFAULT_MAX_DEPTH
    if "max_depth" in doc:
        max_depth = check.positive_int(doc, "max_depth", "max_depth") or DEFAULT_MAX_DEPTH
    items = doc.get("rules")
    if not isinstance(items, list):
        check.add(_line(doc, "rules"), "rules", "must be a list of rules")
        items = []
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for position, item in enumerate(items):
        line = _line(items, position)
        check.where = f"rules[{position}] "
        if not isinstance(item, _Map):
            check.add(line, "", "a rule must be a mapping with name, when and then")
            continue
        name = item.get("name")
        if isinstance(name, str) and _NAME.match(name):
            check.where = f"rule '{name}' (rules[{position}]) "
            if name in seen:
                check.add(_line(item, "name"), "name", f"duplicate rule name (first at line {seen[name]})")
            seen.setdefault(name, _line(item, "name"))
        else:
            check.add(_line(item, "name"), "name", f"must match [a-z0-9-]+, got {name!r}")
        count = len(problems)
        check.unknown_keys(item, _RULE_KEYS, "")
        when = item.get("when")
        clause: Clause | None = None
        join: Join | None = None
        if isinstance(when, _Map) and "all" in when:
            join = check.join(when)
        elif "when" in item:
            clause = check.clause(when, _line(item, "when"))
        else:
            check.add(line, "when", "missing (what should trigger this rule?)")
        clauses = join.clauses if join else (clause,) if clause else ()
        fan_in = len(when["all"]) if isinstance(when, _Map) and isinstance(when.get("all"), list) else 0
        then = item.get("then")
        actions: list[ActionTemplate] = []
        if not isinstance(then, list) or not then:
            check.add(_line(item, "then"), "then", "must be a non-empty list of actions")
        else:
            providers: frozenset[str] | None = frozenset()
            for c in clauses:
                possible = c.possible_providers
                providers = None if providers is None or possible is None else providers | possible
            for index, action in enumerate(then):
                built = check.action(action, index, _line(then, index), providers or None, fan_in)
                if built is not None:
                    actions.append(built)
        rule_depth = check.positive_int(item, "max_depth", "max_depth") if "max_depth" in item else None
        limit: dict[str, int] = {}
        if "limit" in item:
            value = item["limit"]
            if isinstance(value, _Map) and value:
                check.unknown_keys(value, _LIMIT_KEYS, "limit.")
                for key in _LIMIT_KEYS:
                    if key in value and (n := check.positive_int(value, key, f"limit.{key}")) is not None:
                        limit[key] = n
            else:
                check.add(_line(item, "limit"), "limit", "must be a mapping like {per_commit: 2, per_day: 20}")
        description = item.get("description") or ""
        if not isinstance(description, str):
            check.add(_line(item, "description"), "description", "must be text")
        if len(problems) == count and (clause or join) and isinstance(name, str):
            rules.append(Rule(name, position, clause, tuple(actions), _plain(item), str(description),
                              rule_depth, limit, join))  # fmt: skip
    if problems:
        raise RulesError(_in_file_order(problems, source))
    version = hashlib.sha256(raw).hexdigest()[:12]
    return RuleSet.build(version, source, rules, max_depth)


def _in_file_order(problems: list[str], source: str) -> list[str]:
    # Checks run by topic (a rule's unknown keys before its `when`), so sort by line; ties keep check order.
    def line(problem: str) -> int:
        head = problem[len(source) + 1 :].split(":", 1)[0]
        return int(head) if problem.startswith(f"{source}:") and head.isdigit() else 0

    return sorted(problems, key=line)


def load_rules(path: str | os.PathLike[str]) -> RuleSet:
    """Read and validate a rules file; a missing or unreadable file is a RulesError naming the path."""
    target = Path(path)
    try:
        data = target.read_bytes()
    except OSError as exc:
        raise RulesError([f"{target}: cannot read the rules file: {exc.strerror or exc}"]) from None
    return parse_rules(data, str(target))
