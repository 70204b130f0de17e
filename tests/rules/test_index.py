"""The candidate index (literal names, glob prefixes, wildcards) finds exactly what a full scan finds."""

from __future__ import annotations

import random

from chainer.events import BuildEvent
from tests.helpers import parse_rules


def _rules(rng: random.Random, n: int) -> str:
    lines = ["version: 1", "rules:"]
    for i in range(n):
        literal, glob, pair = f"acme/repo-{i % 40}", f'"acme/repo-{i % 7}*"', f'[acme/repo-{i % 40}, "other/{i % 3}?"]'
        project = rng.choice(
            [literal, glob, '"acme/*"', '"re:^acme/repo-[0-3]$"', None, pair, '"*"', '"acme/repo-1[0-9]"']
        )
        when = [f"project: {project}"] if project else []
        provider = rng.choice([None, "codeship", "circleci"])
        if provider:
            when.append(f"provider: {provider}")
        when.append("status: any")
        then = "[{circleci.trigger_pipeline: {project: gh/acme/x, branch: main}}]"
        lines.append(f"  - {{name: r{i}, when: {{{', '.join(when)}}}, then: {then}}}")
    return "\n".join(lines) + "\n"


def _event(rng: random.Random, i: int) -> BuildEvent:
    project = rng.choice([f"acme/repo-{rng.randrange(60)}", f"other/{rng.randrange(12)}", "acme", "zeta/q", ""])
    provider = rng.choice(["codeship", "circleci"])
    return BuildEvent(
        provider=provider,
        kind="build",
        event_id=f"evt_{i}",
        project=project,
        status="success",
        raw_status="success",
        branch="main",
    )


def test_evaluate_matches_exactly_what_a_full_scan_matches() -> None:
    """Over 300 random rules and 500 random events, evaluate and explain agree on the matched rules, in order."""
    rng = random.Random(11)
    ruleset = parse_rules(_rules(rng, 300))
    for i in range(500):
        event = _event(rng, i)
        indexed = [d.rule for d in ruleset.evaluate(event) if d.matched]
        scanned = [d.rule for d in ruleset.explain(event) if d.matched]
        assert indexed == scanned, event.project
    assert len(ruleset._by_prefix) > 1 and ruleset._wildcard
