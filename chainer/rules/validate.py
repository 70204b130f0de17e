"""Load and validate rules.yaml (DESIGN §5), reporting every problem at once with its line.

Each problem is one line: ``<file>:<line>: rule '<name>' (rules[i]) <field path>: <message>``, in file
order. Actions, their arguments and what each provider's events carry come from the ``Catalogue``
the caller passes in; this module knows no provider by name.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from chainer.catalogue import Catalogue, Param
from chainer.errors import RulesError
from chainer.events import KINDS, STATUSES
from chainer.rules._yaml import Flaw, LinedList, LinedMap, collector_paused, compose, line_of, plain
from chainer.rules.model import (
    CLAUSE_ORDER,
    DEFAULT_MAX_DEPTH,
    DEFAULT_STATUS,
    FAN_IN_KEYS,
    JOIN_ON,
    LIMIT_KEYS,
    NAME,
    PATTERN_FIELDS,
    RULE_KEYS,
    STATUS_SETS,
    TOP_KEYS,
    WHEN_KEYS,
    ActionTemplate,
    Clause,
    FieldMatcher,
    Join,
    Pattern,
    Rule,
    duration_ms,
    pattern,
)
from chainer.rules.ruleset import RuleSet
from chainer.rules.templates import argument_problems, compile_value, is_template, template_problems


class _Checker:
    """Collects problems as ``<source>:<line>: <where><path>: <message>``; ``where`` names the current rule."""

    def __init__(self, source: str, problems: list[str], catalogue: Catalogue) -> None:
        self.source = source
        self.problems = problems
        self.catalogue = catalogue
        self.where = ""

    def add(self, line: int, path: str, message: str) -> None:
        subject = f"{self.where}{path}".rstrip()
        where = f"{self.source}:{line}: {subject}" if subject else f"{self.source}:{line}"
        self.problems.append(f"{where}: {message}")

    def unknown_keys(self, mapping: LinedMap, allowed: Sequence[str], path: str) -> None:
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(allowed)})"
                self.add(line_of(mapping, key), f"{path}{key}", f"unknown key{hint}")

    def positive_int(self, container: LinedMap, key: str, path: str) -> int | None:
        value = container.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.add(line_of(container, key), path, f"must be a whole number of at least 1, got {value!r}")
            return None
        return value

    def patterns(self, container: LinedMap, key: str, path: str) -> FieldMatcher | None:
        value = container[key]
        line = line_of(container, key)
        if isinstance(value, LinedMap):
            self.unknown_keys(value, ("include", "exclude"), f"{path}.")
            include = self.pattern_list(value.get("include", []), f"{path}.include", line_of(value, "include"))
            exclude = self.pattern_list(value.get("exclude", []), f"{path}.exclude", line_of(value, "exclude"))
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
            item_line = line_of(value, i) if isinstance(value, LinedList) else line
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str) or not item:
                self.add(item_line, item_path, f"a pattern must be a non-empty string, got {item!r}")
                ok = False
                continue
            try:
                result.append(pattern(item))
            except re.error as exc:
                self.add(item_line, item_path, f"bad regex {item!r}: {exc}")
                ok = False
        return result if ok else None

    def choices(self, container: LinedMap, key: str, path: str, allowed: Sequence[str]) -> frozenset[str] | None:
        value = container[key]
        items = value if isinstance(value, list) else [value]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            self.add(line_of(container, key), path, f"{bad[0] if bad else value!r} is not one of {', '.join(allowed)}")
            return None
        return frozenset(items)

    def status(self, container: LinedMap, path: str) -> tuple[frozenset[str], Any] | None:
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
                self.add(line_of(container, "status"), path, f"{item!r} is not a status or named set ({allowed})")
                return None
        if not statuses:
            self.add(line_of(container, "status"), path, "an empty list matches nothing")
            return None
        return frozenset(statuses), plain(value)

    def clause(self, when: Any, line: int, path: str = "when", *, nested: bool = False) -> Clause | None:
        if not isinstance(when, LinedMap):
            self.add(line, path, f"must be a mapping of conditions, got {type(plain(when)).__name__}")
            return None
        self.unknown_keys(when, CLAUSE_ORDER if nested else WHEN_KEYS, f"{path}.")
        for key in FAN_IN_KEYS:
            if key in when and not nested:
                self.add(line_of(when, key), f"{path}.{key}", "only a fan-in uses this; add `all:` with its clauses")
        count = len(self.problems)
        providers = self.catalogue.providers
        chosen = self.choices(when, "provider", f"{path}.provider", providers) if "provider" in when else None
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
        return Clause(chosen, kinds, status[0], status[1], matchers)

    def join(self, when: LinedMap) -> Join | None:
        """A fan-in ``when``: ``all`` (two or more clauses), ``join_on``, ``within``, ``reset_on``."""
        count = len(self.problems)
        for key in when:
            if key not in FAN_IN_KEYS and key in WHEN_KEYS:
                self.add(line_of(when, key), f"when.{key}", "conditions of a fan-in go inside each `all` clause")
        items = when["all"]
        clauses: list[Clause] = []
        if not isinstance(items, list) or len(items) < 2:
            self.add(line_of(when, "all"), "when.all", "a fan-in needs a list of at least two clauses")
        else:
            for i, item in enumerate(items):
                clause = self.clause(item, line_of(items, i), f"when.all[{i}]", nested=True)
                if clause is not None:
                    clauses.append(clause)
        on = when.get("join_on", "commit")
        if on not in JOIN_ON:
            self.add(line_of(when, "join_on"), "when.join_on", f"{on!r} is not one of {', '.join(JOIN_ON)}")
        within_ms = None
        if "within" not in when:
            self.add(when.line, "when.within", "a fan-in needs `within`, the time its clauses may be apart (e.g. 2h)")
        else:
            within_ms = duration_ms(when["within"])
            if within_ms is None:
                wrong = f"{when['within']!r} is not a duration like 90s, 30m, 2h or 1d (at most 30d)"
                self.add(line_of(when, "within"), "when.within", wrong)
        reset = when.get("reset_on")
        if reset is not None and reset != "failed":
            self.add(line_of(when, "reset_on"), "when.reset_on", f"{reset!r}: the only reset is `failed`")
        if len(self.problems) > count or within_ms is None:
            return None
        return Join(tuple(clauses), str(on), within_ms, reset == "failed")

    def action(
        self, item: Any, index: int, line: int, providers: frozenset[str] | None, fan_in: int = 0
    ) -> ActionTemplate | None:
        path = f"then[{index}]"
        actions = self.catalogue.actions
        if not isinstance(item, LinedMap) or len(item) != 1:
            example = self.catalogue.example_action
            self.add(line, path, f"each action is a mapping with exactly one key, the action name, e.g. `{example}`")
            return None
        ((name, args),) = item.items()
        spec = actions.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(actions), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(actions)})"
            self.add(line_of(item, name), f"{path}.{name}", f"unknown action{hint}")
            return None
        args = LinedMap() if args is None else args
        if not isinstance(args, LinedMap):
            self.add(line_of(item, name), f"{path}.{name}", "arguments must be a mapping (use {} for none)")
            return None
        count = len(self.problems)
        here = line_of(item, name)
        self.unknown_keys(args, spec.param_names, f"{path}.{name}.")
        for key, value in args.items():
            for text in _strings(value):
                for problem in template_problems(text, fan_in) if is_template(text) else ():
                    self.add(line_of(args, key), f"{path}.{name}.{key}", problem)
        # Templates marked (not parsed: a syntax error is reported above, not raised), so that templated
        # values count for exclusivity and limits but skip the type check.
        written = plain(args)
        for problem in argument_problems(spec, compile_value(written, parse=False), final=False):
            self.add(here, f"{path}.{name}", problem)
        for param in spec.params:
            self.entries(param, args.get(param.name), f"{path}.{name}.{param.name}")
        for group in spec.one_of:
            given = [n for n in group if n in args]
            for missing in [n for n in group if n not in args] if given else ():
                other = spec.param(missing)
                if other is None or other.default is None:
                    together = " and ".join(f"'{n}'" for n in group)
                    self.add(
                        here, f"{path}.{name}", f"argument '{given[0]}' needs '{missing}' too: {together} go together"
                    )
        possible = providers or frozenset(self.catalogue.providers)
        for param in spec.params:
            if not param.required or param.name in args:
                continue
            if param.default is None:
                self.add(here, f"{path}.{name}", f"missing required argument '{param.name}'")
                continue
            for provider in sorted(possible):
                if param.default_for(self.catalogue.events[provider].probe, args) is None:
                    no_default = f"argument '{param.name}' has no default for {provider} events"
                    self.add(here, f"{path}.{name}", f"{no_default}; set it or restrict when.provider")
        if len(self.problems) > count:
            return None
        return ActionTemplate(index, spec, written, compile_value(written))

    def entries(self, param: Param, value: Any, path: str) -> None:
        """Each entry of a mapping argument that its provider refuses, at the entry's own line."""
        check = param.entries
        if check is None or not isinstance(value, LinedMap):
            return
        for key, entry in value.items():
            if (flaw := check(entry)) is not None:
                self.add(line_of(value, key), f"{path}.{key}", flaw)

    def rule(self, item: LinedMap, position: int, line: int) -> Rule | None:
        """One item of ``rules``: its name, ``when`` (a clause or a fan-in), ``then``, depth and limits."""
        name = item.get("name")
        count = len(self.problems)
        self.unknown_keys(item, RULE_KEYS, "")
        when = item.get("when")
        clause: Clause | None = None
        join: Join | None = None
        if isinstance(when, LinedMap) and "all" in when:
            join = self.join(when)
        elif "when" in item:
            clause = self.clause(when, line_of(item, "when"))
        else:
            self.add(line, "when", "missing (what should trigger this rule?)")
        clauses = join.clauses if join else (clause,) if clause else ()
        fan_in = len(when["all"]) if isinstance(when, LinedMap) and isinstance(when.get("all"), list) else 0
        then = item.get("then")
        actions: list[ActionTemplate] = []
        if not isinstance(then, list) or not then:
            self.add(line_of(item, "then"), "then", "must be a non-empty list of actions")
        else:
            providers: frozenset[str] | None = frozenset()
            for c in clauses:
                possible = c.possible_providers(self.catalogue)
                providers = None if providers is None or possible is None else providers | possible
            for index, action in enumerate(then):
                built = self.action(action, index, line_of(then, index), providers or None, fan_in)
                if built is not None:
                    actions.append(built)
        rule_depth = self.positive_int(item, "max_depth", "max_depth") if "max_depth" in item else None
        limit = self.limit(item) if "limit" in item else {}
        description = item.get("description") or ""
        if not isinstance(description, str):
            self.add(line_of(item, "description"), "description", "must be text")
        if len(self.problems) > count or not (clause or join) or not isinstance(name, str):
            return None
        return Rule(name, position, clause, tuple(actions), plain(item), str(description), rule_depth, limit, join)

    def limit(self, item: LinedMap) -> dict[str, int]:
        value = item["limit"]
        limit: dict[str, int] = {}
        if isinstance(value, LinedMap) and value:
            self.unknown_keys(value, LIMIT_KEYS, "limit.")
            for key in LIMIT_KEYS:
                if key in value and (n := self.positive_int(value, key, f"limit.{key}")) is not None:
                    limit[key] = n
        else:
            self.add(line_of(item, "limit"), "limit", "must be a mapping like {per_commit: 2, per_day: 20}")
        return limit


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):  # a YAML mapping
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _rule_of(doc: Any, path: str) -> tuple[str, str]:
    """Split a document path into the checker's rule prefix and the field path inside that rule."""
    m = re.match(r"rules\[(\d+)\]\.?", path)
    if m is None:
        return "", path
    position = int(m.group(1))
    items = doc.get("rules") if isinstance(doc, LinedMap) else None
    item = items[position] if isinstance(items, list) and position < len(items) else None
    name = item.get("name") if isinstance(item, LinedMap) else None
    if isinstance(name, str) and NAME.match(name):
        return f"rule '{name}' (rules[{position}]) ", path[m.end() :]
    return f"rules[{position}] ", path[m.end() :]


def parse_rules(text: str | bytes, source: str = "rules.yaml", *, catalogue: Catalogue) -> RuleSet:
    """Validate a rules document against ``catalogue``; raise RulesError listing every problem."""
    with collector_paused():
        return _parse_rules(text, source, catalogue)


def _parse_rules(text: str | bytes, source: str, catalogue: Catalogue) -> RuleSet:
    raw = text.encode() if isinstance(text, str) else text
    problems: list[str] = []
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RulesError([f"{source}:1: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    flaws: list[Flaw] = []
    doc = compose(decoded, source, problems, flaws)
    if problems:
        raise RulesError(problems)
    check = _Checker(source, problems, catalogue)
    for flaw_line, flaw_path, message in flaws:
        check.where, field_path = _rule_of(doc, flaw_path)
        check.add(flaw_line, field_path, message)
    check.where = ""
    if not isinstance(doc, LinedMap):
        check.add(1, "", "the file must be a mapping with `version: 1` and `rules:`")
        raise RulesError(_in_file_order(problems, source))
    check.unknown_keys(doc, TOP_KEYS, "")
    if doc.get("version") != 1:
        check.add(line_of(doc, "version"), "version", f"must be 1, got {doc.get('version')!r}")
    max_depth = DEFAULT_MAX_DEPTH
    if "max_depth" in doc:
        max_depth = check.positive_int(doc, "max_depth", "max_depth") or DEFAULT_MAX_DEPTH
    items = doc.get("rules")
    if not isinstance(items, list):
        check.add(line_of(doc, "rules"), "rules", "must be a list of rules")
        items = []
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for position, item in enumerate(items):
        line = line_of(items, position)
        check.where = f"rules[{position}] "
        if not isinstance(item, LinedMap):
            check.add(line, "", "a rule must be a mapping with name, when and then")
            continue
        name = item.get("name")
        if isinstance(name, str) and NAME.match(name):
            check.where = f"rule '{name}' (rules[{position}]) "
            if name in seen:
                check.add(line_of(item, "name"), "name", f"duplicate rule name (first at line {seen[name]})")
            seen.setdefault(name, line_of(item, "name"))
        else:
            check.add(line_of(item, "name"), "name", f"must match [a-z0-9-]+, got {name!r}")
        count = len(problems)
        rule = check.rule(item, position, line)
        if rule is not None and len(problems) == count:
            rules.append(rule)
    if problems:
        raise RulesError(_in_file_order(problems, source))
    version = hashlib.sha256(raw).hexdigest()[:12]
    return RuleSet.build(version, source, rules, max_depth, catalogue)


def _in_file_order(problems: list[str], source: str) -> list[str]:
    # Checks run by topic (a rule's unknown keys before its `when`), so sort by line; ties keep check order.
    def line(problem: str) -> int:
        head = problem[len(source) + 1 :].split(":", 1)[0]
        return int(head) if problem.startswith(f"{source}:") and head.isdigit() else 0

    return sorted(problems, key=line)


def load_rules(path: str | os.PathLike[str], *, catalogue: Catalogue) -> RuleSet:
    """Read and validate a rules file; a missing or unreadable file is a RulesError naming the path."""
    target = Path(path)
    try:
        data = target.read_bytes()
    except OSError as exc:
        raise RulesError([f"{target}: cannot read the rules file: {exc.strerror or exc}"]) from None
    return parse_rules(data, str(target), catalogue=catalogue)
