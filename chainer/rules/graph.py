"""Cycles in the project graph the rules draw: project → project, one edge per rule and action.

A rule's sources are the projects its clauses name (globs expand to every project the rules mention);
its targets are what its actions' target arguments name (``ActionSpec.target``, usually ``project``), or
the source itself when an action acts on the event's own project (restart, rerun). Every cycle is bounded
by the loop guard (DESIGN §7), by the rules' ``max_depth`` or the global one, and the summary says where
each stops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chainer.rules.model import ActionTemplate, Pattern, Rule
from chainer.rules.templates import is_template

ANY_PROJECT = "(any project)"
_MAX_PATH = 12


@dataclass(frozen=True, slots=True)
class Cycle:
    """A loop in the project graph: ``projects`` (first repeated at the end), the rules, the depth bound."""

    projects: tuple[str, ...]
    rules: tuple[str, ...]
    max_depth: int

    def text(self) -> str:
        return f"{' → '.join(self.projects)} (rules {', '.join(self.rules)}), stopped at depth {self.max_depth}"


def find_cycles(rules: Sequence[Rule], depth_of: Callable[[str], int], limit: int = 50) -> list[Cycle]:
    """Every cycle of ``rules``' project graph (at most ``limit``); ``depth_of(rule)`` is a rule's depth bound."""
    edges = _project_edges(rules)
    found: dict[tuple[tuple[str, ...], tuple[str, ...]], Cycle] = {}
    for start in sorted(edges):
        stack: list[tuple[str, list[str], list[str]]] = [(start, [start], [])]
        while stack and len(found) < limit:
            node, path, names = stack.pop()
            for target, rule in sorted(edges.get(node, ())):
                if target == start:
                    cycle_rules = [*names, rule]
                    key = (_rotation(path), tuple(sorted(cycle_rules)))
                    if key not in found:
                        depth = min(depth_of(name) for name in cycle_rules)
                        found[key] = Cycle(tuple([*path, start]), tuple(cycle_rules), depth)
                elif target not in path and len(path) < _MAX_PATH:
                    stack.append((target, [*path, target], [*names, rule]))
    return [found[k] for k in sorted(found)]


def _repo(project: str) -> str:
    return "/".join([p for p in project.split("/") if p][-2:]).lower()


def _target(action: ActionTemplate) -> str | None:
    """The project an action's target argument names literally, or None (the event's own, or a template)."""
    project = action.args.get(action.spec.target)
    return _repo(project) if isinstance(project, str) and not is_template(project) else None


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
        targets[rule.name] = {_target(a) for a in rule.actions}
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
