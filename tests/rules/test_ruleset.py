"""The rule set: the candidate index against a full scan, the example file, its summary and its version."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from chainer.events import STATUSES, BuildEvent
from tests.helpers import (
    RESTART,
    load_rules,
    parse_rules,
)
from tests.helpers import rule_event as event

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "rules"


# ----------------------------------------------------------------------------- the index against a full scan

UNIVERSE = "acme/lib acme/lib-v2 acme/api acme/web acme/web-admin acme/web-shop other/lib other/tools solo".split()
UNIVERSE += ["deep/nested/repo", "acme/123", "x/y"]
STRANGERS = ["nobody/else", "acme/unlisted", "acme", "", "ACME/LIB", "acme/lib/extra"]
GLOBS = ["acme/*", "acme/web*", "*/lib", "*", "acme/lib?", "[ao]*/lib", "other/t*", "acme/web-[as]*", "*-v2", "x/?"]
REGEXES = ["re:acme/(lib|api)", "re:.*-admin", "re:other/.+", "re:(?!acme/).*", "re:acme/\\d+"]


def _project_condition(rng: random.Random) -> tuple[str, str | None]:
    """A kind label and a `project:` value in YAML flow form (None: no project clause)."""
    literal = rng.choice([*UNIVERSE, "missing/one"])
    kind = rng.choice(["literal", "literal-list", "glob", "regex", "mixed-list", "include-exclude", "none"])
    value = {
        "literal": json.dumps(literal),
        "literal-list": json.dumps(rng.sample(UNIVERSE, 2)),
        "glob": json.dumps(rng.choice(GLOBS)),
        "regex": json.dumps(rng.choice(REGEXES)),
        "mixed-list": json.dumps([literal, rng.choice(GLOBS + REGEXES)]),
        "include-exclude": json.dumps({"include": [rng.choice([literal, *GLOBS])], "exclude": [rng.choice(GLOBS)]}),
        "none": None,
    }[kind]
    return kind, value


def _random_rules(rng: random.Random, count: int) -> tuple[str, list[str]]:
    """A rules document of ``count`` rules (some of them fan-ins) and the pattern kind of each."""
    lines, kinds = ["version: 1", "rules:"], []
    for i in range(count):
        kind, project = _project_condition(rng)
        conditions = {"project": project} if project else {}
        provider = rng.choice([None, None, "codeship", "circleci", '["codeship", "circleci"]'])
        if provider:
            conditions["provider"] = provider
        conditions["status"] = rng.choice(["success", "any", "not_success", "finished", '["failed", "error"]'])
        if rng.random() < 0.3:
            conditions["branch"] = rng.choice(['"main"', '["main", "release/*"]', '{"exclude": ["wip"]}'])
        if rng.random() < 0.2:
            conditions["kind"] = rng.choice(['"build"', '["workflow", "job"]'])
        when = "{" + ", ".join(f"{k}: {v}" for k, v in conditions.items()) + "}"
        if rng.random() < 0.1:
            other_kind, other = _project_condition(rng)
            second = f"{{project: {other}}}" if other else "{status: any}"
            when = f"{{all: [{when}, {second}], within: 1h}}"
            kind = f"fan-in-{kind}-{other_kind}"
        lines.append(f"  - name: r{i:03d}-{kind}\n    when: {when}\n    then: {RESTART}")
        kinds.append(kind)
    return "\n".join(lines) + "\n", kinds


def _random_event(rng: random.Random, i: int) -> BuildEvent:
    """An event of a random provider, kind, project (mostly ones the rules mention), status and branch."""
    return event(
        event_id=f"evt_{i}",
        provider=rng.choice(["codeship", "circleci"]),
        kind=rng.choice(["build", "workflow", "job"]),
        project=rng.choice(UNIVERSE * 3 + STRANGERS),
        status=rng.choice(STATUSES),
        branch=rng.choice(["main", "dev", "release/1", "wip", None]),
    )


@pytest.mark.parametrize("seed", [0, 1, 2], ids=["seed-0", "seed-1", "seed-2"])
def test_evaluate_finds_what_explain_finds_in_file_order(seed: int) -> None:
    """For 200 random rules and 300 random events, the indexed evaluate matches exactly the rules a full scan
    matches, with the same decisions, in file order."""
    rng = random.Random(seed)
    text, kinds = _random_rules(rng, 200)
    ruleset = parse_rules(text)
    assert len(ruleset.rules) == 200
    position = {rule.name: i for i, rule in enumerate(ruleset.rules)}
    matches = pruned = 0
    for i in range(300):
        current = _random_event(rng, i)
        indexed = ruleset.evaluate(current)
        scanned = {d.rule: d for d in ruleset.explain(current)}
        assert {d.rule for d in indexed if d.matched} == {name for name, d in scanned.items() if d.matched}, current
        order = [position[d.rule] for d in indexed]
        assert order == sorted(set(order)), current
        assert all(d == scanned[d.rule] for d in indexed)
        matches += sum(d.matched for d in indexed)
        pruned += len(scanned) - len(indexed)
    # Not vacuous: every kind of project condition occurs, events match, and the index does leave rules out.
    assert {"literal", "literal-list", "glob", "regex", "mixed-list", "include-exclude", "none"} <= set(kinds)
    assert matches > 300 and pruned > 300 * 50


# ----------------------------------------------------------------------------- the example file and its version

EXAMPLE = REPO / "rules.yaml"


def test_the_example_loads_and_its_summary_names_every_rule() -> None:
    """The example rules.yaml is valid; the summary names every rule, and as_dict is JSON listing them in order."""
    names = [rule["name"] for rule in yaml.safe_load(EXAMPLE.read_text())["rules"]]
    ruleset = load_rules(EXAMPLE)
    assert [rule.name for rule in ruleset.rules] == names
    summary = ruleset.summary()
    assert summary.startswith(f"{EXAMPLE}: {len(names)} rule(s), version {ruleset.version}")
    assert all(f"  {name}: " in summary for name in names)
    data = json.loads(json.dumps(ruleset.as_dict()))
    assert data == ruleset.as_dict()
    assert [rule["name"] for rule in data["rules"]] == names
    assert (data["version"], data["path"], data["max_depth"]) == (ruleset.version, str(EXAMPLE), ruleset.max_depth)


def test_the_version_follows_the_bytes() -> None:
    """The version is a hash of the file's bytes: the same bytes give the same version, any change a new one."""
    raw = EXAMPLE.read_bytes()
    version = load_rules(EXAMPLE).version
    assert len(version) == 12 and set(version) <= set("0123456789abcdef")
    assert parse_rules(raw).version == version
    assert parse_rules(raw.decode()).version == version
    assert parse_rules(raw + b"# a comment changes the version too\n").version != version
    assert parse_rules(raw.replace(b"per_day: 20", b"per_day: 21", 1)).version != version
