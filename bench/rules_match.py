"""Benchmark: matching one build event against rule sets of 10 to 10 000 rules (DESIGN §9).

Run from the repository root: ``python bench/rules_match.py`` (stdlib only, about 30 s on 2 cores).

For each size it generates a rules file with a realistic mix (mostly literal projects ``org/repo-N``,
about 5 % glob projects, some ``re:`` branches, include/exclude lists, provider and kind restrictions,
templated arguments), loads it with ``chainer.rules.parse_rules`` (given the action catalogue) and times
two calls per event:

* ``RuleSet.evaluate(event)``: the production path, candidates from the provider/project index;
* ``RuleSet.explain(event)``: the baseline, every rule of the file checked in order.

Events are a fixed-seed mix of projects that have rules (most of which fire and render their
actions), projects no rule names, and projects only glob rules can match. Results: a table on
stdout and ``bench/results/rules_match.json`` with the machine and the date.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chainer.events import BuildEvent
from chainer.providers import catalogue
from chainer.rules import RuleSet, parse_rules

SIZES = (10, 100, 1_000, 10_000)
GLOB_SHARE = 0.05
TARGET_US = 100.0  # per event at 10 000 rules
EVENTS = 2_000
SEED = 20_240_601
RESULTS = Path(__file__).resolve().parent / "results" / "rules_match.json"


def make_rules(n: int, rng: random.Random) -> str:
    """A rules file of ``n`` rules in flow style, as an operator would write it.

    Projects: mostly literal ``org/repo-N`` (one in ten a list with a mirror), ``GLOB_SHARE`` globs over
    50 team prefixes, one regex project per 2 000 rules, and 1 + n/1 000 rules without a project clause
    (retry-on-infrastructure-error rules that every event is a candidate for).
    """
    lines = ["version: 1", "rules:"]
    release = '"re:^release/\\\\d+\\\\.\\\\d+$"'  # YAML-escaped: the regex ^release/\d+\.\d+$
    branches = ["main", '[main, "release/*"]', release, '{include: ["*"], exclude: ["dependabot/*"]}']
    for i in range(n):
        if i == 0 or i % 1000 == 500:
            lines.append(f"  - name: rule-{i}\n    when: {{provider: codeship, status: error}}\n    then:")
            lines.append("      - codeship.restart_build: {}\n    limit: {per_commit: 2, per_day: 20}")
            continue
        when: list[str] = []
        provider = rng.choices([None, "circleci", "codeship"], [40, 35, 25])[0]
        if provider:
            when.append(f"provider: {provider}")
        if provider == "circleci" and rng.random() < 0.5:
            when.append("kind: workflow")
        if i % 2000 == 1000:
            when.append(f'project: "re:^org/legacy-{i}-\\\\d+$"')
        elif rng.random() < GLOB_SHARE:
            when.append(f'project: "org/team-{i % 50}-*"')
        elif rng.random() < 0.1:
            when.append(f"project: [org/repo-{i}, org/repo-{i}-mirror]")
        else:
            when.append(f"project: org/repo-{i}")
        branch = rng.choices([*branches, None], [55, 20, 10, 5, 10])[0]
        if branch:
            when.append(f"branch: {branch}")
        if provider == "circleci" and rng.random() < 0.3:
            when.append("workflow: build-and-test")
        status = rng.choices(["success", "finished", "not_success", "[error, canceled]"], [70, 15, 10, 5])[0]
        when.append(f"status: {status}")
        if rng.random() < 0.6:
            action = (
                f'circleci.trigger_pipeline: {{project: gh/org/down-{i}, branch: "{{{{ event.branch }}}}", '
                f'parameters: {{upstream_sha: "{{{{ event.commit }}}}"}}}}'
            )
        elif rng.random() < 0.8:
            action = f'codeship.trigger_build: {{project: org/down-{i}, ref: "heads/{{{{ event.branch }}}}"}}'
        else:
            action = "codeship.restart_build: {}"
        lines.append(f"  - name: rule-{i}\n    when: {{{', '.join(when)}}}\n    then:\n      - {action}")
        if rng.random() < 0.1:
            lines.append("    limit: {per_commit: 2, per_day: 20}")
    return "\n".join(lines) + "\n"


def make_event(i: int, project: str, rng: random.Random) -> BuildEvent:
    """A finished build event of ``project`` with a random provider, branch and mostly successful status."""
    provider = rng.choice(["circleci", "codeship"])
    branch = rng.choices(["main", "release/1.2", "feature/x"], [70, 15, 15])[0]
    return BuildEvent(
        provider=provider,
        kind="workflow" if provider == "circleci" else "build",
        event_id=f"evt_{i}",
        project=project,
        status=rng.choices(["success", "failed", "error"], [80, 15, 5])[0],
        raw_status="x",
        project_id=i,
        project_slug=f"gh/{project}",
        branch=branch,
        commit=f"{i:040x}",
        build_id=i,
        build_url=f"https://ci.example.org/{i}",
        workflow="build-and-test",
        workflow_id=f"wf-{i}",
        job="test",
        pipeline_number=i,
    )


def make_events(n_rules: int, rng: random.Random) -> list[tuple[str, BuildEvent]]:
    """45 % projects with rules, 45 % projects no rule names, 10 % projects only glob rules can match."""
    events = []
    for i in range(EVENTS):
        group = rng.choices(["ruled", "unknown", "glob"], [45, 45, 10])[0]
        project = {
            "ruled": f"org/repo-{rng.randrange(n_rules)}",
            "unknown": f"other/repo-{i}",
            "glob": f"org/team-{rng.randrange(50)}-api",
        }[group]
        events.append((group, make_event(i, project, rng)))
    return events


def time_calls(call: Callable[[BuildEvent], object], events: Sequence[BuildEvent], budget: float) -> list[float]:
    """Seconds per call, one sample per event, cycling over ``events`` until ``budget`` seconds are spent
    (at least every event once when the budget allows, at least 20 calls)."""
    samples: list[float] = []
    clock = time.perf_counter
    started = clock()
    while True:
        for event in events:
            t0 = clock()
            call(event)
            samples.append(clock() - t0)
            if len(samples) >= 20 and clock() - started > budget:
                return samples
        if len(samples) >= 3 * len(events):
            return samples


def summary(samples: list[float]) -> dict[str, float]:
    """Mean, median and 99th percentile in microseconds."""
    us = sorted(s * 1e6 for s in samples)
    return {
        "mean_us": round(statistics.fmean(us), 2),
        "p50_us": round(us[len(us) // 2], 2),
        "p99_us": round(us[min(len(us) - 1, int(len(us) * 0.99))], 2),
        "calls": len(us),
    }


def bench_size(n: int, rng: random.Random) -> dict[str, Any]:
    """Load ``n`` generated rules, then time evaluate (per event group and overall) and explain."""
    text = make_rules(n, rng)
    t0 = time.perf_counter()
    ruleset: RuleSet = parse_rules(text, f"generated-{n}.yaml", catalogue=catalogue())
    load_s = time.perf_counter() - t0
    events = make_events(n, rng)
    every = [e for _, e in events]
    decisions = [ruleset.evaluate(e) for e in every]  # also the warm-up
    result: dict[str, Any] = {
        "rules": n,
        "load_s": round(load_s, 3),
        # Rules checked for every event (regex or no project), and glob prefixes in the index.
        "wildcard_rules": len(ruleset._wildcard),
        "prefix_buckets": len(getattr(ruleset, "_by_prefix", {})),
        "mean_candidates": round(statistics.fmean(len(d) for d in decisions), 1),
        "mean_matches": round(statistics.fmean(sum(x.matched for x in d) for d in decisions), 2),
        "evaluate": summary(time_calls(ruleset.evaluate, every, 1.5)),
        "explain": summary(time_calls(ruleset.explain, every, 2.5)),
    }
    for group in ("ruled", "unknown", "glob"):
        chosen = [e for g, e in events if g == group]
        result[f"evaluate_{group}"] = summary(time_calls(ruleset.evaluate, chosen, 0.4))
    result["evaluate_over_explain"] = round(result["evaluate"]["mean_us"] / result["explain"]["mean_us"], 4)
    return result


def source_version() -> str:
    """The commit measured, ``+dirty`` when the measured modules have uncommitted changes ("unknown" outside git)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        measured = ["chainer/rules", "chainer/events.py", "chainer/providers"]
        dirty = subprocess.run(["git", "status", "--porcelain", *measured], cwd=root, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else "unknown"


def main() -> int:
    """Run every size, print the table and write the JSON (a missed target is reported, not an exit status)."""
    rng = random.Random(SEED)
    started = time.perf_counter()
    rows = [bench_size(n, rng) for n in SIZES]
    first, last = rows[0], rows[-1]
    growth = last["evaluate"]["mean_us"] / first["evaluate"]["mean_us"]
    header = (
        f"{'rules':>6} {'load s':>7} {'wild':>5} {'cand':>6} {'evaluate µs':>12} {'p99':>8} {'ruled':>8} "
        f"{'unknown':>8} {'glob':>8} {'explain µs':>11} {'eval/expl':>9}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['rules']:>6} {r['load_s']:>7.2f} {r['wildcard_rules']:>5} {r['mean_candidates']:>6.1f} "
            f"{r['evaluate']['mean_us']:>12.1f} {r['evaluate']['p99_us']:>8.1f} {r['evaluate_ruled']['mean_us']:>8.1f} "
            f"{r['evaluate_unknown']['mean_us']:>8.1f} {r['evaluate_glob']['mean_us']:>8.1f} "
            f"{r['explain']['mean_us']:>11.1f} {r['evaluate_over_explain']:>9.4f}"
        )
    met = last["evaluate"]["mean_us"] <= TARGET_US
    print(
        f"evaluate growth {first['rules']} → {last['rules']} rules: ×{growth:.1f} "
        f"(rules ×{last['rules'] // first['rules']}); "
        f"target ≤ {TARGET_US:.0f} µs at {last['rules']} rules: {'met' if met else 'MISSED'} "
        f"({last['evaluate']['mean_us']:.1f} µs); total {time.perf_counter() - started:.1f} s"
    )
    report = {
        "benchmark": "rules_match",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": source_version(),
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "settings": {"sizes": list(SIZES), "glob_share": GLOB_SHARE, "events": EVENTS, "seed": SEED},
        "baseline": "RuleSet.explain(event): every rule checked in file order",
        "target": {"evaluate_mean_us_at_10000": TARGET_US, "met": met},
        "evaluate_growth_10_to_10000": round(growth, 2),
        "sizes": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
