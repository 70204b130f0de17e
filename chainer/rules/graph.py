"""Cycles in the project graph the rules draw: project → project, one edge per rule and action.

A rule's sources are the projects its clauses name (globs expand to every project the rules mention);
its targets are what its actions' target arguments name (``ActionSpec.target``, usually ``project``), or
the source itself when an action acts on the event's own project (restart, rerun). Every cycle is bounded
by the loop guard (DESIGN §7), by the rules' ``max_depth`` or the global one, and the summary says where
each stops.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from chainer.rules.model import ActionTemplate, Pattern, Rule, glob_prefix
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
    """Every cycle of ``rules``' project graph (at most ``limit``); ``depth_of(rule)`` is a rule's depth bound.

    A cycle has at most 12 projects. The search starts from each project in name order and walks the simple
    paths back to it, depth first, each project's edges in order, stopping once ``limit`` cycles are found;
    a cycle is named from the project it is first found from. Only steps that can still lead back to the start
    are taken: to a project in the start's strongly connected component that comes after the start in name
    order (cycles through an earlier project were found from that one) and is close enough to the start to
    close a cycle of 12 (a breadth-first search backwards from the start). The steps left out could not find
    a new cycle, so the cycles and their order are those of the walk that takes every step; its time grows with
    the rules and the cycles found instead of with every path of up to 12 projects.
    """
    edges = _project_edges(rules)
    order = sorted(edges)
    rank = {node: i for i, node in enumerate(order)}
    component = _components(edges)
    # Edges inside a component, reversed: what the backward search walks.
    into: dict[str, list[str]] = {}
    for node, targets in edges.items():
        for target, _ in targets:
            if target != node and component[node] != -1 and component.get(target) == component[node]:
                into.setdefault(target, []).append(node)
    in_order: dict[str, list[tuple[str, str]]] = {}  # a project's edges sorted, for the projects the walk visits
    found: dict[tuple[tuple[str, ...], tuple[str, ...]], Cycle] = {}
    for start in order:
        if len(found) >= limit:
            break
        if component[start] == -1:
            continue  # on no cycle
        near = _distances_to(start, into, rank)
        stack: list[tuple[str, list[str], list[str]]] = [(start, [start], [])]
        while stack and len(found) < limit:
            node, path, names = stack.pop()
            steps_left = _MAX_PATH - len(path)  # projects the path may still add before it closes
            steps = in_order.get(node)
            if steps is None:
                steps = in_order[node] = sorted(edges[node])
            for target, rule in steps:
                if target == start:
                    cycle_rules = [*names, rule]
                    key = (_rotation(path), tuple(sorted(cycle_rules)))
                    if key not in found:
                        depth = min(depth_of(name) for name in cycle_rules)
                        found[key] = Cycle(tuple([*path, start]), tuple(cycle_rules), depth)
                elif steps_left > 0 and near.get(target, _MAX_PATH + 1) <= steps_left and target not in path:
                    stack.append((target, [*path, target], [*names, rule]))
    return [found[k] for k in sorted(found)]


def _components(edges: Mapping[str, Iterable[tuple[str, str]]]) -> dict[str, int]:
    """Each project's strongly connected component (Tarjan's algorithm, iterative); -1 for a project on no cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    component: dict[str, int] = {}
    count = 0
    for root in edges:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work: list[tuple[str, Iterator[tuple[str, str]]]] = [(root, iter(edges[root]))]
        while work:
            node, targets = work[-1]
            for target, _ in targets:
                if target not in edges:
                    continue  # no edge leaves it: on no cycle
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(edges[target])))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    members = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        members.append(member)
                        if member == node:
                            break
                    looped = len(members) > 1 or any(target == node for target, _ in edges[node])
                    for member in members:
                        component[member] = count if looped else -1
                    count += 1
    return component


def _distances_to(start: str, into: Mapping[str, list[str]], rank: Mapping[str, int]) -> dict[str, int]:
    """Edges from each project to ``start``, for projects that follow it in name order and reach it in at most 12
    (breadth first, backwards, inside its component)."""
    first = rank[start]
    near = {start: 0}
    frontier = [start]
    for distance in range(1, _MAX_PATH + 1):
        ahead = []
        for node in frontier:
            for source in into.get(node, ()):
                if source not in near and rank[source] > first:
                    near[source] = distance
                    ahead.append(source)
        if not ahead:
            break
        frontier = ahead
    return near


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
    # The projects a pattern matches (`p.matches(n)`), or that it names (`_repo(p.text) == n`), once per pattern
    # text: a name by lookup; a glob or regex only among the names that start with its literal prefix, a slice of
    # the sorted names. Before, every rule tried every project: rules × projects matches.
    ordered = sorted(nodes)
    matching: dict[str, set[str]] = {}

    def matched_by(p: Pattern) -> set[str]:
        got = matching.get(p.text)
        if got is None:
            named = _repo(p.text)
            if p.literal:
                got = {n for n in (named, p.text) if n in nodes}
            else:
                got = {named} & nodes
                prefix = _regex_prefix(p.text[3:]) if p.text.startswith("re:") else glob_prefix(p.text)
                i = bisect.bisect_left(ordered, prefix)
                while i < len(ordered) and ordered[i].startswith(prefix):
                    if p.matches(ordered[i]):
                        got.add(ordered[i])
                    i += 1
            matching[p.text] = got
        return got

    edges: dict[str, set[tuple[str, str]]] = {}
    for rule in rules:
        patterns = sources[rule.name]
        matched = nodes if patterns is None else set().union(*(matched_by(p) for p in patterns))
        for target in targets[rule.name]:
            if target is None and patterns is None:
                # Acts on whichever project sent the event: one loop on "any project", not one per project.
                edges.setdefault(ANY_PROJECT, set()).add((ANY_PROJECT, rule.name))
                continue
            for source in matched:
                edges.setdefault(source, set()).add((target or source, rule.name))
    return edges


# In a regex: a character that stands for itself, or an escape of a character that is not a letter or digit.
_REGEX_LITERAL = re.compile(r"[^\\.^$*+?{}\[\]|()]|\\([^A-Za-z0-9])")


def _regex_prefix(regex: str) -> str:
    """Text every full match of ``regex`` starts with ("" when unsure): its leading literal characters, without
    one that a quantifier follows, and nothing when the regex has an alternative (`|`) or starts with flags."""
    if "|" in regex:
        return ""
    body = regex.removeprefix("^")
    chars: list[str] = []
    at = 0
    while (literal := _REGEX_LITERAL.match(body, at)) is not None:
        chars.append(literal.group(1) or literal.group(0))
        at = literal.end()
    if chars and body[at : at + 1] in ("*", "+", "?", "{"):
        chars.pop()  # `ab*`: the b may be absent
    return "".join(chars)


def _rotation(path: list[str]) -> tuple[str, ...]:
    smallest = min(range(len(path)), key=lambda i: path[i])
    return tuple(path[smallest:] + path[:smallest])
