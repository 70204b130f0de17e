"""A validated rules file with its matching index: evaluate, explain, fan-in join steps, the loop guard.

Matching is pure: ``RuleSet.evaluate(event)`` returns one ``Decision`` per candidate rule, with the
first failing clause for rules that did not match. Candidates come from an index by provider and
project, so an event is not checked against every rule in the file; ``explain`` checks them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chainer.catalogue import Catalogue
from chainer.events import BuildEvent
from chainer.rules._yaml import collector_paused, plain
from chainer.rules.graph import Cycle, find_cycles
from chainer.rules.model import (
    DEFAULT_MAX_DEPTH,
    STATUS_SETS,
    Decision,
    Join,
    JoinStep,
    Mismatch,
    PlannedAction,
    Rule,
    glob_prefix,
)
from chainer.rules.templates import context_for, render_actions


@dataclass(frozen=True)
class RuleSet:
    """A validated rules file with its matching index, and the catalogue it was validated against."""

    version: str
    path: str
    rules: tuple[Rule, ...]
    catalogue: Catalogue = field(repr=False, compare=False)
    max_depth: int = DEFAULT_MAX_DEPTH
    _by_project: Mapping[str, tuple[int, ...]] = field(default_factory=dict, repr=False)
    _wildcard: tuple[int, ...] = field(default=(), repr=False)
    _by_prefix: Mapping[str, tuple[int, ...]] = field(default_factory=dict, repr=False)
    _prefix_lengths: tuple[int, ...] = field(default=(), repr=False)

    @classmethod
    def build(cls, version: str, path: str, rules: Sequence[Rule], max_depth: int, catalogue: Catalogue) -> RuleSet:
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
                    by_prefix.setdefault(glob_prefix(p.text), set()).add(i)
        return cls(
            version,
            path,
            tuple(rules),
            catalogue,
            max_depth,
            {k: tuple(sorted(v)) for k, v in by_project.items()},
            tuple(wildcard),
            {k: tuple(sorted(v)) for k, v in by_prefix.items()},
            tuple(sorted({len(k) for k in by_prefix})),
        )

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
                error=f"loop guard: {' → '.join([*hops, str(self._target(a) or a.action)])}, depth {depth} > {limit}",
            )
            for a in actions
        )

    def _target(self, action: PlannedAction) -> Any:
        """What the action's target argument (``ActionSpec.target``, usually ``project``) names, if anything."""
        spec = self.catalogue.actions.get(action.action)
        return action.params.get(spec.target if spec is not None else "project")

    def _join_step(self, rule: Rule, join: Join, event: BuildEvent) -> Decision:
        contributes, resets, misses = [], [], []
        for i, clause in enumerate(join.clauses):
            mismatch = clause.first_mismatch(event, self.catalogue)
            if mismatch is None:
                contributes.append(i)
                continue
            misses.append((i, mismatch))
            relaxed = dataclasses.replace(clause, statuses=STATUS_SETS["any"])
            if (
                join.reset_on_failure
                and event.status in STATUS_SETS["not_success"]
                and not relaxed.first_mismatch(event, self.catalogue)
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
        step = JoinStep(
            rule.name, join.on, str(value), tuple(contributes), tuple(resets), len(join.clauses), join.within_ms
        )
        if not contributes:
            text = f"{event.status} event resets all[{', '.join(map(str, resets))}] (reset_on: failed)"
            return Decision(rule.name, False, Mismatch("status", "reset", event.status, text), join=step)
        return Decision(rule.name, True, None, join=step)

    def _decide(self, rule: Rule, event: BuildEvent, cache: dict[str, Any]) -> Decision:
        if rule.join is not None:
            return self._join_step(rule, rule.join, event)
        assert rule.clause is not None  # noqa: S101 (a rule has a clause or a join)
        mismatch = rule.clause.first_mismatch(event, self.catalogue)
        if mismatch is not None:
            return Decision(rule.name, False, mismatch)
        if "context" not in cache:  # built once per event, only when some rule matched
            cache["context"] = context_for(event)
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
                    "when": plain(r.written.get("when")),
                    "then": plain(r.written.get("then")),
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
        """Cycles in the graph project → project that the rules' actions draw, with their depth bound."""
        depths: dict[str, int] = {}
        for rule in self.rules:  # by name, as `rule(name)` finds them (the first of a name), without a scan per cycle
            depths.setdefault(rule.name, rule.max_depth or self.max_depth)
        with collector_paused():
            return find_cycles(self.rules, lambda name: depths.get(name) or self.max_depth, limit)


def _status_text(written: Any) -> str:
    return ", ".join(map(str, written)) if isinstance(written, list) else str(written)
