"""`chainer lint` on big files, and the cycles of the project graph (DESIGN §5, §7): the search that lists them
takes only the steps that can close a cycle, and lists exactly what walking every path of up to 12 projects
lists, in the same order."""

from __future__ import annotations

import gc
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chainer.cli import main
from chainer.rules import Cycle, Pattern, Rule, graph
from tests.helpers import load_rules, parse_rules

RING = 2000  # projects org/p0000 … org/p1999 in a ring: a cycle of 2000 projects, far longer than the 12 looked at
BACK = 1000  # where a rule leads back three steps, closing three short cycles


def _ring_file(path: Path) -> None:
    """5 000 rules: a ring of 2 000 projects each with a step of one and a step of two (4 000 rules, paths by the
    billion), one rule leading back from p1003 to p1000, a self-loop, a restart on any project, and 997 glob rules
    from the 100 projects org/p19* to ten sinks (about 100 000 edges)."""
    lines = ["version: 1", "rules:"]
    for i in range(RING):
        one, two = f"org/p{(i + 1) % RING:04d}", f"org/p{(i + 2) % RING:04d}"
        step = f"codeship.trigger_build: {{project: {one}}}"
        chord = f"circleci.trigger_pipeline: {{project: gh/{two}, branch: main}}"
        lines.append(f"  - {{name: ring-{i}, when: {{project: org/p{i:04d}}}, then: [{{{step}}}]}}")
        lines.append(f"  - {{name: chord-{i}, when: {{project: org/p{i:04d}}}, then: [{{{chord}}}]}}")
    back = f"codeship.trigger_build: {{project: org/p{BACK}}}"
    lines.append(f"  - {{name: back, when: {{project: org/p{BACK + 3}}}, max_depth: 3, then: [{{{back}}}]}}")
    lines.append("  - {name: self, when: {project: org/q}, then: [{codeship.trigger_build: {project: org/q}}]}")
    restart = "[{codeship.restart_build: {}}]"
    lines.append(f"  - {{name: restart-any, when: {{provider: codeship, status: error}}, then: {restart}}}")
    for i in range(997):
        sink = f"codeship.trigger_build: {{project: org/sink-{i % 10}}}"
        lines.append(f"  - {{name: glob-{i}, when: {{project: 'org/p19*'}}, then: [{{{sink}}}]}}")
    path.write_text("\n".join(lines) + "\n")


def test_lint_of_5000_rules_with_a_long_cycle_and_many_edges(tmp_path: Path) -> None:
    """`chainer lint` of a file of 5 000 rules whose project graph is one ring of 2 000 projects with about
    100 000 edges finishes and lists exactly its five cycles of at most 12 projects, in order, each with the
    depth that stops it; the ring itself is longer than any cycle lint looks for."""
    path = tmp_path / "rules.yaml"
    _ring_file(path)
    result = CliRunner().invoke(main, ["lint", str(path)])
    assert result.exit_code == 0, result.output[-2000:]
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{path}: 5000 rule(s), version ")
    a, b, c, d = (f"org/p{BACK + k}" for k in range(4))
    assert lines[-6:] == [
        "5 cycle(s) in the project graph, each cut by the loop guard:",
        "  (any project) → (any project) (rules restart-any), stopped at depth 5",
        f"  {a} → {b} → {c} → {d} → {a} (rules ring-{BACK}, ring-{BACK + 1}, ring-{BACK + 2}, back), "
        "stopped at depth 3",
        f"  {a} → {b} → {d} → {a} (rules ring-{BACK}, chord-{BACK + 1}, back), stopped at depth 3",
        f"  {a} → {c} → {d} → {a} (rules chord-{BACK}, ring-{BACK + 2}, back), stopped at depth 3",
        "  org/q → org/q (rules self), stopped at depth 5",
    ]


def test_the_project_graph_tries_each_pattern_once_on_the_projects_it_could_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building the graph of the 5 000 rules matches the one glob text once against the 100 projects that
    start with its literal part, instead of every rule against each of the 2 000+ projects (ten million tries)."""
    path = tmp_path / "rules.yaml"
    _ring_file(path)
    ruleset = load_rules(path)
    tried: list[str] = []
    matches = Pattern.matches

    def counted(self: Pattern, value: str) -> bool:
        tried.append(value)
        return matches(self, value)

    monkeypatch.setattr(Pattern, "matches", counted)
    assert len(ruleset.cycles()) == 5
    assert sorted(tried) == [f"org/p{i}" for i in range(1900, 2000)]


def test_drawing_the_graph_pauses_the_cyclic_garbage_collector(tmp_path: Path) -> None:
    """The graph of a big file is drawn without collections of the cyclic garbage collector (two thirds of
    its time went to walking the objects of the rules again and again), which is on again after."""
    path = tmp_path / "rules.yaml"
    _ring_file(path)
    ruleset = load_rules(path)
    runs: list[dict[str, Any]] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            runs.append(info)

    threshold = gc.get_threshold()
    gc.collect()
    gc.callbacks.append(record)
    gc.set_threshold(50)  # a collection every 50 new objects, were the collector on
    try:
        assert len(ruleset.cycles()) == 5
        assert len(runs) <= 1 and gc.isenabled()  # at most the one due when it is back on
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(record)


# ----------------------------------------------------------------------------- the same cycles as every path gives


def _every_path_cycles(rules: Sequence[Rule], depth_of: Callable[[str], int], limit: int) -> list[Cycle]:
    """The specification: each project's edges from every rule tried on every project, then from each project in
    name order every simple path of up to 12 projects, depth first, until ``limit`` cycles are found."""
    sources = {}
    for rule in rules:
        matchers = [clause.patterns.get("project") for clause in rule.clauses]
        sources[rule.name] = None if None in matchers else [p for m in matchers if m for p in m.include]
    targets = {rule.name: {graph._target(a) for a in rule.actions} for rule in rules}
    nodes = {t for ts in targets.values() for t in ts if t}
    nodes |= {graph._repo(p.text) for ps in sources.values() if ps for p in ps if p.literal}
    edges: dict[str, set[tuple[str, str]]] = {}
    for rule in rules:
        patterns = sources[rule.name]
        matched = {
            n for n in nodes if patterns is None or any(p.matches(n) or graph._repo(p.text) == n for p in patterns)
        }
        for target in targets[rule.name]:
            if target is None and patterns is None:
                edges.setdefault(graph.ANY_PROJECT, set()).add((graph.ANY_PROJECT, rule.name))
                continue
            for source in matched:
                edges.setdefault(source, set()).add((target or source, rule.name))
    found: dict[tuple[tuple[str, ...], tuple[str, ...]], Cycle] = {}
    for start in sorted(edges):
        stack = [(start, [start], [])]
        while stack and len(found) < limit:
            node, path, names = stack.pop()
            for target, rule_name in sorted(edges.get(node, ())):
                if target == start:
                    smallest = path.index(min(path))
                    key = (tuple(path[smallest:] + path[:smallest]), tuple(sorted([*names, rule_name])))
                    if key not in found:
                        cycle_rules = (*names, rule_name)
                        found[key] = Cycle((*path, start), cycle_rules, min(map(depth_of, cycle_rules)))
                elif target not in path and len(path) < 12:
                    stack.append((target, [*path, target], [*names, rule_name]))
    return [found[k] for k in sorted(found)]


PROJECTS = [f"org/p{i}" for i in range(10)] + ["Org/P1", "gh/org/p2", "other/p3"]
WHENS = [
    "{project: [%s, %s]}",
    "{project: 'org/p%d*'}",
    "{project: 'org/p?'}",
    "{project: 're:^org/p1\\d*$'}",
    "{project: 're:org/(p1|p2)'}",
    "{project: 're:(?i)ORG/P1'}",
    "{project: 're:.*3'}",
    "{provider: codeship}",
    "{all: [{project: %s}, {project: %s}], within: 2h}",
    "{all: [{project: %s}, {branch: main}], within: 2h}",
]


def _random_rules(rng: random.Random, count: int, projects: int) -> str:
    lines = ["version: 1", "rules:"]
    for i in range(count):
        when = rng.choice(["{project: %s}"] * 6 + WHENS)
        if "%d" in when:
            when %= rng.randrange(projects)
        else:
            when %= tuple(rng.choice(PROJECTS[:projects]) for _ in range(when.count("%s")))
        actions = []
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            target = rng.choice(PROJECTS[:projects] + PROJECTS[-3:])
            actions.append(
                rng.choice(
                    [
                        f"codeship.trigger_build: {{project: {target}}}",
                        f"circleci.trigger_pipeline: {{project: gh/{target}, branch: main}}",
                        "codeship.restart_build: {}",
                        "codeship.trigger_build: {project: '{{ event.project }}'}",
                    ]
                )
            )
        depth = f", max_depth: {rng.randint(1, 9)}" if rng.random() < 0.3 else ""
        then = ", ".join(f"{{{a}}}" for a in actions)
        lines.append(f"  - {{name: r{i}, when: {when}, then: [{then}]{depth}}}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("seed", range(8))
def test_cycles_are_those_of_the_walk_of_every_path(seed: int) -> None:
    """On random files (literal, glob and regex projects, fan-ins, restarts, templated targets, per-rule depths)
    the cycles and their order are those of walking every path, for a limit met early, late or never."""
    rng = random.Random(seed)
    checked = 0
    for _ in range(12):
        ruleset = parse_rules(_random_rules(rng, rng.randint(2, 30), rng.randint(3, 10)))
        depths = {rule.name: rule.max_depth or ruleset.max_depth for rule in ruleset.rules}
        for limit in (1, 4, 50):
            expected = _every_path_cycles(ruleset.rules, depths.__getitem__, limit)
            assert graph.find_cycles(ruleset.rules, depths.__getitem__, limit) == expected
            checked += len(expected)
        assert ruleset.cycles() == _every_path_cycles(ruleset.rules, depths.__getitem__, 50)
    assert checked > 100  # not vacuous: the files have cycles, many of them
