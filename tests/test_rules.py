"""rules.yaml (DESIGN §5): every validation problem with its rule and line, matching, the first failing clause,
rendering in the sandbox, the candidate index against a full scan, and the example file."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from chainer.actions import ACTIONS, ActionSpec, Param
from chainer.errors import RulesError
from chainer.events import STATUSES, BuildEvent
from chainer.rules import CLAUSE_ORDER, Mismatch, PlannedAction, RuleSet, load_rules, parse_rules, render_actions

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "rules"
RESTART = "[{codeship.restart_build: {}}]"
BASE_EVENT = BuildEvent(
    provider="circleci", kind="workflow", event_id="evt_1", project="acme/lib", status="success",
    raw_status="success", project_id="p1", project_slug="gh/acme/lib", branch="main", commit="a" * 40,
    build_id=7, build_url="https://ci.example.org/7", workflow="build", workflow_id="wf-1", job="test",
    pipeline_number=3, occurred_at="2024-01-01T00:00:00Z",
)  # fmt: skip


def event(**changes: Any) -> BuildEvent:
    """A green CircleCI workflow of acme/lib on main with every field set, with ``changes`` applied."""
    return dataclasses.replace(BASE_EVENT, **changes)


def document(when: str = "{}", then: str = RESTART, extra: str = "") -> str:
    """One rule `r`: `name` on line 3, `when` on line 4, `then` on line 5, then the ``extra`` lines."""
    return f"version: 1\nrules:\n  - name: r\n    when: {when}\n    then: {then}\n{extra}"


def problems_of(text: str | bytes) -> list[str]:
    """The problems parse_rules reports for ``text`` (the test fails if it accepts the document)."""
    with pytest.raises(RulesError) as info:
        parse_rules(text)
    return info.value.problems


def only_rule(text: str) -> RuleSet:
    """parse_rules on a document that must hold exactly one rule."""
    ruleset = parse_rules(text)
    assert len(ruleset.rules) == 1
    return ruleset


# ----------------------------------------------------------------------------- validation: one problem each

R = "rule 'r' (rules[0]) "
PARAMS_101 = json.dumps({f"p{i}": "v" for i in range(101)})

# (id, document, line, subject before ": ", fragment of the message)
ONE_PROBLEM = [
    (
        "version-missing",
        "rules:\n  - name: r\n    when: {}\n    then: " + RESTART + "\n",
        1,
        "version",
        "must be 1, got None",
    ),
    ("version-2", document().replace("version: 1", "version: 2"), 1, "version", "must be 1, got 2"),
    ("version-text", document().replace("version: 1", 'version: "1"'), 1, "version", "must be 1, got '1'"),
    ("top-key-not-text", document(extra="7: seven\n"), 6, "", "keys must be strings, got 7"),
    ("rules-not-a-list", "version: 1\nrules: {r: 1}\n", 2, "rules", "must be a list of rules"),
    ("rule-not-a-mapping", "version: 1\nrules:\n  - just-a-name\n", 3, "rules[0]", "a rule must be a mapping"),
    ("bad-name", document().replace("name: r", "name: Deploy_API"), 3, "rules[0] name", "got 'Deploy_API'"),
    ("missing-name", document().replace("- name: r\n    when", "- when"), 3, "rules[0] name", "got None"),
    ("name-not-text", document().replace("name: r", "name: [r]"), 3, "rules[0] name", "got ['r']"),
    ("when-missing", "version: 1\nrules:\n  - name: r\n    then: " + RESTART + "\n", 3, R + "when", "missing"),
    ("when-a-list", document(when="[main]"), 4, R + "when", "must be a mapping of conditions, got list"),
    ("when-text", document(when="main"), 4, R + "when", "must be a mapping of conditions, got str"),
    ("then-a-mapping", document(then="{codeship.restart_build: {}}"), 5, R + "then", "non-empty list of actions"),
    ("then-empty", document(then="[]"), 5, R + "then", "must be a non-empty list of actions"),
    ("then-missing", "version: 1\nrules:\n  - name: r\n    when: {}\n", 3, R + "then", "non-empty list of actions"),
    ("description-a-list", document(extra="    description: [a, b]\n"), 6, R + "description", "must be text"),
    ("limit-a-number", document(extra="    limit: 3\n"), 6, R + "limit", "must be a mapping like {per_commit"),
    ("limit-empty", document(extra="    limit: {}\n"), 6, R + "limit", "must be a mapping like {per_commit"),
    ("limit-per-commit-0", document(extra="    limit: {per_commit: 0}\n"), 6, R + "limit.per_commit", "got 0"),
    ("limit-per-day-negative", document(extra="    limit:\n      per_day: -1\n"), 7, R + "limit.per_day", "got -1"),
    ("limit-per-day-true", document(extra="    limit: {per_day: true}\n"), 6, R + "limit.per_day", "got True"),
    ("limit-per-day-text", document(extra="    limit: {per_day: many}\n"), 6, R + "limit.per_day", "got 'many'"),
    ("max-depth-0", document(extra="    max_depth: 0\n"), 6, R + "max_depth", "whole number of at least 1, got 0"),
    ("top-max-depth-0", document().replace("version: 1\n", "version: 1\nmax_depth: 0\n"), 2, "max_depth", "got 0"),
    ("top-max-depth-text", document() + "max_depth: deep\n", 6, "max_depth", "got 'deep'"),
    ("bad-regex", document(when="{branch: 're:release/(['}"), 4, R + "when.branch", "bad regex 're:release/(['"),
    (
        "bad-regex-in-list",
        document(when="\n      branch:\n        - main\n        - 're:(?P<x'"),
        7,
        R + "when.branch[1]",
        "bad regex",
    ),
    (
        "bad-regex-in-exclude",
        document(when="{branch: {exclude: ['re:*x']}}"),
        4,
        R + "when.branch.exclude[0]",
        "bad regex",
    ),
    (
        "pattern-null-in-block-list",
        document(when="\n      project:\n        - acme/lib\n        - null"),
        7,
        R + "when.project[1]",
        "a pattern must be a non-empty string, got None",
    ),
    ("pattern-empty-text", document(when='{tag: ""}'), 4, R + "when.tag", "a pattern must be a non-empty string"),
    (
        "pattern-mapping-unknown-key",
        document(when="{job: {include: [lint], inclde: [e2e]}}"),
        4,
        R + "when.job.inclde",
        "unknown key (did you mean 'include'?)",
    ),
    ("empty-pattern-list", document(when="{branch: []}"), 4, R + "when.branch", "an empty list matches nothing"),
    (
        "empty-include-exclude",
        document(when="{branch: {include: [], exclude: []}}"),
        4,
        R + "when.branch",
        "needs include and/or exclude",
    ),
    ("bad-status", document(when="{status: green}"), 4, R + "when.status", "'green' is not a status or named set"),
    (
        "bad-named-set",
        document(when="\n      status: [finished, done]"),
        5,
        R + "when.status",
        "'done' is not a status or named set (success, failed, error, canceled, running, other, finished, not_success",
    ),
    ("status-a-number", document(when="{status: 1}"), 4, R + "when.status", "1 is not a status"),
    ("empty-status-list", document(when="{status: []}"), 4, R + "when.status", "an empty list matches nothing"),
    ("bad-provider", document(when="{provider: travis}"), 4, R + "when.provider", "'travis' is not one of codeship"),
    ("bad-provider-in-list", document(when="{provider: [codeship, gitlab]}"), 4, R + "when.provider", "'gitlab'"),
    (
        "bad-kind",
        document(when="{kind: pipeline}"),
        4,
        R + "when.kind",
        "'pipeline' is not one of build, workflow, job",
    ),
    (
        "unknown-action-with-hint",
        document(then="\n      - circleci.trigger_pipline: {project: gh/acme/api}"),
        6,
        R + "then[0].circleci.trigger_pipline",
        "unknown action (did you mean 'circleci.trigger_pipeline'?)",
    ),
    (
        "unknown-action-lists-known",
        document(then="[{jenkins.build: {}}]"),
        5,
        R + "then[0].jenkins.build",
        "unknown action (known: codeship.trigger_build, codeship.restart_build,",
    ),
    (
        "action-with-two-keys",
        document(then="\n      - codeship.restart_build: {}\n        circleci.rerun_workflow: {}"),
        6,
        R + "then[0]",
        "each action is a mapping with exactly one key",
    ),
    (
        "action-a-string",
        document(then="[codeship.restart_build]"),
        5,
        R + "then[0]",
        "exactly one key, the action name",
    ),
    (
        "second-action-empty-mapping",
        document(then="\n      - codeship.restart_build: {}\n      - {}"),
        7,
        R + "then[1]",
        "exactly one key",
    ),
    (
        "arguments-a-list",
        document(then="[{codeship.restart_build: [acme/lib]}]"),
        5,
        R + "then[0].codeship.restart_build",
        "arguments must be a mapping (use {} for none)",
    ),
    (
        "no-default-for-codeship",
        document(then="[{circleci.rerun_workflow: {}}]"),
        5,
        R + "then[0].circleci.rerun_workflow",
        "argument 'workflow' has no default for codeship events; set it or restrict when.provider",
    ),
    (
        "no-default-when-provider-is-codeship",
        document(when="{provider: codeship}", then="[{circleci.trigger_pipeline: {branch: main}}]"),
        5,
        R + "then[0].circleci.trigger_pipeline",
        "argument 'project' has no default for codeship events; set it or restrict when.provider",
    ),
    (
        "branch-and-tag",
        document(then="[{circleci.trigger_pipeline: {project: gh/acme/api, branch: main, tag: v1}}]"),
        5,
        R + "then[0].circleci.trigger_pipeline",
        "arguments 'branch' and 'tag' cannot both be given",
    ),
    (
        "bool-as-text",
        document(then="[{circleci.rerun_workflow: {workflow: wf-1, from_failed: 'yes'}}]"),
        5,
        R + "then[0].circleci.rerun_workflow",
        "argument 'from_failed' must be true/false, got str 'yes'",
    ),
    (
        "template-where-a-bool-goes",
        document(then="[{circleci.rerun_workflow: {workflow: wf-1, from_failed: '{{ event.status }}'}}]"),
        5,
        R + "then[0].circleci.rerun_workflow",
        "argument 'from_failed' is a template, which renders text, but must be true/false",
    ),
    (
        "templated-branch-and-tag",
        document(then="[{circleci.trigger_pipeline: {project: gh/a/b, branch: main, tag: '{{ event.tag }}'}}]"),
        5,
        R + "then[0].circleci.trigger_pipeline",
        "arguments 'branch' and 'tag' cannot both be given",
    ),
    (
        "text-as-number",
        document(then="[{codeship.trigger_build: {project: 42}}]"),
        5,
        R + "then[0].codeship.trigger_build",
        "argument 'project' must be a string, got int 42",
    ),
    (
        "text-as-bool",
        document(then="[{codeship.trigger_build: {project: acme/x, ref: true}}]"),
        5,
        R + "then[0].codeship.trigger_build",
        "argument 'ref' must be a string, got bool True",
    ),
    (
        "mapping-as-list",
        document(then="[{circleci.trigger_pipeline: {project: gh/acme/api, parameters: [a, b]}}]"),
        5,
        R + "then[0].circleci.trigger_pipeline",
        "argument 'parameters' must be a mapping, got list ['a', 'b']",
    ),
    (
        "build-number-as-bool",
        document(then="[{codeship.v1_restart_build: {build: false}}]"),
        5,
        R + "then[0].codeship.v1_restart_build",
        "argument 'build' must be a number or a string, got bool False",
    ),
    (
        "template-syntax-error",
        document(
            then="\n      - codeship.trigger_build:\n          project: acme/x\n          ref: 'heads/{{ event.branch '"
        ),
        8,
        R + "then[0].codeship.trigger_build.ref",
        "template syntax error: unexpected end of template",
    ),
    (
        "template-unknown-event-field",
        document(
            then="\n      - codeship.trigger_build:\n          project: acme/x\n          commit: '{{ event.sha }}'"
        ),
        8,
        R + "then[0].codeship.trigger_build.commit",
        "template names `event.sha`, which events do not have",
    ),
    (
        "template-event-field-with-hint",
        document(then="[{codeship.trigger_build: {project: acme/x, ref: 'heads/{{ event.brnch }}'}}]"),
        5,
        R + "then[0].codeship.trigger_build.ref",
        "template names `event.brnch`, which events do not have (did you mean `event.branch`?)",
    ),
    (
        "template-event-item",
        document(then="""[{codeship.trigger_build: {project: acme/x, commit: "{{ event['sha'] }}"}}]"""),
        5,
        R + "then[0].codeship.trigger_build.commit",
        "template names `event.sha`",
    ),
    (
        "template-other-variable",
        document(then="[{codeship.trigger_build: {project: acme/x, ref: '{{ env.HOME }}'}}]"),
        5,
        R + "then[0].codeship.trigger_build.ref",
        "template names `env`; only `event` exist here",
    ),
    (
        "template-events-outside-fan-in",
        document(then="[{codeship.trigger_build: {project: acme/x, commit: '{{ events[0].commit }}'}}]"),
        5,
        R + "then[0].codeship.trigger_build.commit",
        "template names `events`; only `event` exist here",
    ),
    (
        "template-in-nested-parameter",
        document(
            when="{provider: circleci}",
            then="\n      - circleci.trigger_pipeline:\n          parameters:\n            sha: '{{ event.sha1 }}'",
        ),
        7,
        R + "then[0].circleci.trigger_pipeline.parameters",
        "template names `event.sha1`",
    ),
    (
        "circleci-101-parameters",
        document(then=f"[{{circleci.trigger_pipeline: {{project: gh/acme/api, parameters: {PARAMS_101}}}}}]"),
        5,
        R + "then[0].circleci.trigger_pipeline",
        "parameters: 101 entries, CircleCI allows 100",
    ),
    (
        "circleci-129-character-key",
        document(then=f"[{{circleci.trigger_pipeline: {{project: gh/acme/api, parameters: {{{'k' * 129}: v}}}}}}]"),
        5,
        R + "then[0].circleci.trigger_pipeline",
        f"parameters: key '{'k' * 20}'… is over 128 characters",
    ),
    (
        "circleci-513-character-value",
        document(then=f"[{{circleci.trigger_pipeline: {{project: gh/acme/api, parameters: {{k: {'v' * 513}}}}}}}]"),
        5,
        R + "then[0].circleci.trigger_pipeline",
        "parameters.k: value is over 512 characters",
    ),
    (
        "circleci-float-parameter",
        document(
            then="\n      - circleci.trigger_pipeline:\n          project: gh/acme/api\n          parameters:\n"
            "            ok: 1\n            ratio: 0.5"
        ),
        10,
        R + "then[0].circleci.trigger_pipeline.parameters.ratio",
        "a decimal number (0.5) is not allowed: CircleCI pipeline parameters are integers, strings or booleans",
    ),
    (
        "circleci-nested-parameter",
        document(
            then="\n      - circleci.trigger_pipeline:\n          project: gh/acme/api\n          parameters:\n"
            "            flag: true\n            deploy: {region: eu}"
        ),
        10,
        R + "then[0].circleci.trigger_pipeline.parameters.deploy",
        "a mapping is not allowed: CircleCI pipeline parameters are integers, strings or booleans",
    ),
    (
        "circleci-list-parameter",
        document(then="[{circleci.trigger_pipeline: {project: gh/acme/api, parameters: {regions: [eu, us]}}}]"),
        5,
        R + "then[0].circleci.trigger_pipeline.parameters.regions",
        "a list is not allowed",
    ),
    (
        "circleci-null-parameter",
        document(then="[{circleci.trigger_pipeline: {project: gh/acme/api, parameters: {region: null}}}]"),
        5,
        R + "then[0].circleci.trigger_pipeline.parameters.region",
        "empty (null) is not allowed",
    ),
    (
        "slug-bad-regex",
        document(when="{slug: 're:circleci/(['}"),
        4,
        R + "when.slug",
        "bad regex 're:circleci/(['",
    ),
    (
        "slug-empty-list",
        document(when="{slug: []}"),
        4,
        R + "when.slug",
        "an empty list matches nothing",
    ),
    (
        "unknown-when-key-with-hint",
        document(when="\n      provider: codeship\n      stauts: error"),
        6,
        R + "when.stauts",
        "unknown key (did you mean 'status'?)",
    ),
    (
        "unknown-argument-lists-known",
        document(then="[{codeship.restart_build: {zzz: 1}}]"),
        5,
        R + "then[0].codeship.restart_build.zzz",
        "unknown key (known: project, build)",
    ),
    (
        "fan-in-key-without-all",
        document(when="\n      branch: main\n      within: 2h"),
        6,
        R + "when.within",
        "only a fan-in uses this; add `all:` with its clauses",
    ),
    (
        "fan-in-one-clause",
        document(when="\n      all: [{project: acme/api}]\n      within: 2h"),
        5,
        R + "when.all",
        "a fan-in needs a list of at least two clauses",
    ),
    (
        "fan-in-condition-outside-all",
        document(when="\n      all: [{project: acme/api}, {project: acme/web}]\n      branch: main\n      within: 2h"),
        6,
        R + "when.branch",
        "conditions of a fan-in go inside each `all` clause",
    ),
    (
        "fan-in-without-within",
        document(when="\n      all: [{project: acme/api}, {project: acme/web}]"),
        5,
        R + "when.within",
        "a fan-in needs `within`",
    ),
    (
        "fan-in-bad-within",
        document(when="\n      all: [{project: acme/api}, {project: acme/web}]\n      within: 31d"),
        6,
        R + "when.within",
        "'31d' is not a duration like 90s, 30m, 2h or 1d (at most 30d)",
    ),
    (
        "fan-in-bad-join-on",
        document(when="\n      all: [{project: acme/api}, {project: acme/web}]\n      within: 2h\n      join_on: sha"),
        7,
        R + "when.join_on",
        "'sha' is not one of commit, branch, tag",
    ),
    (
        "fan-in-clause-bad-status",
        document(when="\n      all:\n        - {project: acme/api}\n        - {status: green}\n      within: 2h"),
        7,
        R + "when.all[1].status",
        "'green' is not a status",
    ),
    (
        "fan-in-nested-all",
        document(when="\n      all:\n        - {project: acme/api}\n        - {all: []}\n      within: 2h"),
        7,
        R + "when.all[1].all",
        "unknown key",
    ),
    (
        "fan-in-events-index-out-of-range",
        document(
            when="{all: [{project: acme/api}, {project: acme/web}], within: 2h}",
            then="[{codeship.trigger_build: {project: acme/x, commit: '{{ events[2].commit }}'}}]",
        ),
        5,
        R + "then[0].codeship.trigger_build.commit",
        "template names `events[2]`; this fan-in has events[0] to events[1]",
    ),
    (
        "duplicate-key-in-when",
        document(when="\n      branch: main\n      branch: dev"),
        6,
        R + "when.branch",
        "duplicate key (first at line 5)",
    ),
    ("key-not-text-in-when", document(when="{1: x}"), 4, R + "when", "keys must be strings, got 1"),
    (
        "unsafe-yaml-tag",
        document(extra="    description: !!python/name:os.system ''\n"),
        6,
        R + "description",
        "YAML error: could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'",
    ),
    (
        "merge-key-without-a-mapping",
        document(when="\n      <<: 5\n      status: error"),
        5,
        R + "when",
        "a merge key (<<) takes a mapping or a list of mappings",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "subject", "fragment"), [c[1:] for c in ONE_PROBLEM], ids=[c[0] for c in ONE_PROBLEM]
)
def test_parse_rules_reports_the_problem_with_rule_path_and_line(
    text: str, line: int, subject: str, fragment: str
) -> None:
    """Each broken document gives exactly one problem: `rules.yaml:<line>: <rule> <path>: <message>`."""
    (problem,) = problems_of(text)
    prefix = f"rules.yaml:{line}: {subject}: " if subject else f"rules.yaml:{line}: "
    assert problem.startswith(prefix), problem
    assert fragment in problem[len(prefix) :], problem


# (file, [(line, subject, fragment), ...]) in the order parse_rules must report them
FILES = [
    ("syntax_error.yaml", [(7, "", "YAML syntax error: expected <block end>")]),
    ("not_a_mapping.yaml", [(1, "", "the file must be a mapping with `version: 1` and `rules:`")]),
    (
        "unknown_keys.yaml",
        [
            (3, "max_dept", "unknown key (did you mean 'max_depth'?)"),
            (6, "rule 'typo-everywhere' (rules[0]) descripton", "unknown key (did you mean 'description'?)"),
            (9, "rule 'typo-everywhere' (rules[0]) when.branhc", "unknown key (did you mean 'branch'?)"),
            (
                12,
                "rule 'typo-everywhere' (rules[0]) then[0].codeship.trigger_build.projcet",
                "unknown key (did you mean 'project'?)",
            ),
            (14, "rule 'typo-everywhere' (rules[0]) limit.per_dya", "unknown key (did you mean 'per_day'?)"),
        ],
    ),
    ("duplicate_names.yaml", [(12, "rule 'deploy' (rules[2]) name", "duplicate rule name (first at line 4)")]),
    (
        "duplicate_keys.yaml",
        [
            (9, "rule 'twice' (rules[0]) then[0].codeship.trigger_build.project", "duplicate key (first at line 8)"),
            (10, "rule 'twice' (rules[0]) when", "duplicate key (first at line 5)"),
            (11, "version", "duplicate key (first at line 2)"),
        ],
    ),
    (
        "five_problems.yaml",
        [
            (7, "rule 'first' (rules[0]) when.status", "'green' is not a status or named set"),
            (
                9,
                "rule 'first' (rules[0]) then[0].circleci.trigger_pipeline.branch",
                "template names `event.brnch`, which events do not have (did you mean `event.branch`?)",
            ),
            (
                12,
                "rule 'second' (rules[1]) then[0].codeship.restart_buidl",
                "unknown action (did you mean 'codeship.restart_build'?)",
            ),
            (14, "rule 'second' (rules[1]) when.branch", "bad regex 're:release/(['"),
            (15, "rule 'first' (rules[2]) name", "duplicate rule name (first at line 5)"),
        ],
    ),
]


@pytest.mark.parametrize(("name", "expected"), FILES, ids=[Path(name).stem for name, _ in FILES])
def test_load_rules_reports_every_problem_of_a_file_in_file_order(
    name: str, expected: list[tuple[int, str, str]]
) -> None:
    """load_rules on a broken file of tests/data/rules reports exactly the expected problems, with path and line."""
    path = DATA / name
    with pytest.raises(RulesError) as info:
        load_rules(path)
    problems = info.value.problems
    assert len(problems) == len(expected), problems
    for problem, (line, subject, fragment) in zip(problems, expected, strict=True):
        prefix = f"{path}:{line}: {subject}: " if subject else f"{path}:{line}: "
        assert problem.startswith(prefix), problem
        assert fragment in problem[len(prefix) :], problem


def test_five_mistakes_give_five_problems_in_file_order() -> None:
    """One file with five unrelated mistakes yields five problems at once, sorted by line although
    the second rule puts `then` before `when`."""
    with pytest.raises(RulesError) as info:
        load_rules(DATA / "five_problems.yaml")
    lines = [int(p.split(":")[1]) for p in info.value.problems]
    assert lines == [7, 9, 12, 14, 15]
    assert str(info.value) == "\n".join(info.value.problems)


def test_parse_rules_names_a_required_argument_without_any_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """An action argument that is required and has no default must be written in the rule."""
    spec = ActionSpec("codeship.test_only", "codeship", (Param("project", (str,), required=True),), "test action")
    monkeypatch.setitem(ACTIONS, spec.name, spec)
    (problem,) = problems_of(document(then="[{codeship.test_only: {}}]"))
    assert problem == f"rules.yaml:5: {R}then[0].codeship.test_only: missing required argument 'project'"
    assert only_rule(document(then="[{codeship.test_only: {project: acme/x}}]")).rules[0].actions[0].name == spec.name


MERGED = """
version: 1
rules:
  - name: restart
    when: &infra {provider: codeship, status: error, branch: main}
    then: [{codeship.restart_build: {}}]
  - name: report
    when:
      <<: *infra
      status: failed
    then: [{codeship.restart_build: {}}]
"""


def test_merge_keys_share_conditions_and_own_keys_win() -> None:
    """A YAML merge key (`<<: *anchor`) copies conditions into a rule; keys the rule writes itself take precedence."""
    restart, report = parse_rules(MERGED).rules
    assert report.clause is not None and restart.clause is not None
    assert report.clause.providers == frozenset({"codeship"})
    assert report.clause.statuses == frozenset({"failed"})
    assert report.clause.patterns["branch"] == restart.clause.patterns["branch"]


def test_a_self_containing_alias_is_a_problem_not_a_crash() -> None:
    """An alias inside its own anchor (`&r [*r]`) is reported with its line instead of recursing forever."""
    problems = problems_of("version: 1\nrules: &r\n  - *r\n")
    assert problems[0] == "rules.yaml:2: rules[0]: a YAML alias may not contain itself"


# ----------------------------------------------------------------------------- matching

# (id, when, event changes, matched)
MATCHING = [
    ("glob-exact", "{branch: main}", {"branch": "main"}, True),
    ("glob-whole-value-only", "{branch: main}", {"branch": "main-old"}, False),
    ("glob-case-sensitive", "{branch: main}", {"branch": "Main"}, False),
    ("glob-star", '{branch: "release/*"}', {"branch": "release/1.2"}, True),
    ("glob-star-crosses-slash", '{branch: "release/*"}', {"branch": "release/1.2/hotfix"}, True),
    ("glob-star-needs-prefix", '{branch: "release/*"}', {"branch": "prerelease/1"}, False),
    ("glob-question-one-char", '{branch: "v?"}', {"branch": "v1"}, True),
    ("glob-question-not-two", '{branch: "v?"}', {"branch": "v10"}, False),
    ("glob-class", '{branch: "rc-[0-9]"}', {"branch": "rc-7"}, True),
    ("glob-class-miss", '{branch: "rc-[0-9]"}', {"branch": "rc-x"}, False),
    ("glob-numeric-pattern", "{branch: 2024}", {"branch": "2024"}, True),
    ("list-first", '{branch: [main, "release/*"]}', {"branch": "main"}, True),
    ("list-second", '{branch: [main, "release/*"]}', {"branch": "release/3"}, True),
    ("list-none", '{branch: [main, "release/*"]}', {"branch": "dev"}, False),
    (
        "include-exclude-kept",
        '{branch: {include: ["release/*"], exclude: ["release/1.*"]}}',
        {"branch": "release/2.0"},
        True,
    ),
    (
        "include-exclude-cut",
        '{branch: {include: ["release/*"], exclude: ["release/1.*"]}}',
        {"branch": "release/1.2"},
        False,
    ),
    (
        "include-exclude-outside",
        '{branch: {include: ["release/*"], exclude: ["release/1.*"]}}',
        {"branch": "dev"},
        False,
    ),
    ("exclude-only-kept", "{branch: {exclude: [wip, 'dependabot/*']}}", {"branch": "main"}, True),
    ("exclude-only-cut", "{branch: {exclude: [wip, 'dependabot/*']}}", {"branch": "dependabot/npm"}, False),
    ("exclude-only-needs-a-value", "{branch: {exclude: [wip]}}", {"branch": None}, False),
    ("regex-fullmatch", r"{branch: 're:release/\d+'}", {"branch": "release/12"}, True),
    ("regex-not-search-suffix", r"{branch: 're:release/\d+'}", {"branch": "release/12-rc"}, False),
    ("regex-not-search-prefix", r"{branch: 're:release/\d+'}", {"branch": "old-release/12"}, False),
    ("regex-anchors-allowed", r"{branch: 're:^hotfix-\d+$'}", {"branch": "hotfix-4"}, True),
    ("regex-alternation", "{project: 're:acme/(lib|api)'}", {"project": "acme/api"}, True),
    ("regex-in-list", r"{branch: [main, 're:feature/[A-Z]+-\d+']}", {"branch": "feature/OPS-12"}, True),
    ("tag-glob", '{tag: "v*"}', {"tag": "v1.0.0"}, True),
    ("tag-glob-miss", '{tag: "v*"}', {"tag": "nightly"}, False),
    ("tag-absent-never-matches", '{tag: "*"}', {"tag": None}, False),
    ("tag-empty-never-matches", '{tag: "*"}', {"tag": ""}, False),
    ("tag-omitted-matches-tagless", "{branch: main}", {"tag": None}, True),
    ("workflow", '{workflow: "build*"}', {"workflow": "build-and-test"}, True),
    ("workflow-miss", '{workflow: "build*"}', {"workflow": "deploy"}, False),
    ("workflow-absent", '{workflow: "*"}', {"provider": "codeship", "kind": "build", "workflow": None}, False),
    ("job-list", "{job: [lint, test]}", {"job": "test"}, True),
    ("job-list-miss", "{job: [lint, test]}", {"job": "deploy"}, False),
    ("status-single", "{status: failed}", {"status": "failed"}, True),
    ("status-single-miss", "{status: failed}", {"status": "error"}, False),
    ("status-list", "{status: [failed, canceled]}", {"status": "canceled"}, True),
    ("status-list-miss", "{status: [failed, canceled]}", {"status": "error"}, False),
    ("status-finished-error", "{status: finished}", {"status": "error"}, True),
    ("status-finished-success", "{status: finished}", {"status": "success"}, True),
    ("status-finished-not-running", "{status: finished}", {"status": "running"}, False),
    ("status-finished-not-other", "{status: finished}", {"status": "other"}, False),
    ("status-not-success-canceled", "{status: not_success}", {"status": "canceled"}, True),
    ("status-not-success-not-success", "{status: not_success}", {"status": "success"}, False),
    ("status-not-success-not-running", "{status: not_success}", {"status": "running"}, False),
    ("status-any-running", "{status: any}", {"status": "running"}, True),
    ("status-any-other", "{status: any}", {"status": "other"}, True),
    ("status-set-and-name", "{status: [not_success, running]}", {"status": "running"}, True),
    ("status-omitted-success", "{}", {"status": "success"}, True),
    ("status-omitted-not-failed", "{}", {"status": "failed"}, False),
    ("status-omitted-not-running", "{}", {"status": "running"}, False),
    ("status-omitted-not-error", "{}", {"status": "error"}, False),
    ("provider-single", "{provider: circleci}", {}, True),
    ("provider-single-miss", "{provider: codeship}", {}, False),
    ("provider-list", "{provider: [codeship, circleci]}", {"provider": "codeship"}, True),
    ("kind-single", "{kind: workflow}", {}, True),
    ("kind-list-miss", "{kind: [build, job]}", {"kind": "workflow"}, False),
    ("kind-list", "{kind: [build, job]}", {"kind": "job"}, True),
    ("project-literal", "{project: acme/lib}", {}, True),
    ("project-glob-owner", '{project: "acme/*"}', {"project": "acme/web"}, True),
    ("project-glob-owner-miss", '{project: "acme/*"}', {"project": "other/web"}, False),
    ("project-list", "{project: [acme/api, acme/lib]}", {}, True),
    ("slug-literal", "{slug: gh/acme/lib}", {}, True),
    ("slug-glob", '{slug: "circleci/ORG/*"}', {"project": None, "project_slug": "circleci/ORG/PROJ"}, True),
    ("slug-glob-miss", '{slug: "circleci/ORG/*"}', {"project": None, "project_slug": "circleci/OTHER/PROJ"}, False),
    ("slug-list", "{slug: [circleci/A/B, gh/acme/lib]}", {}, True),
    ("slug-regex", "{slug: 're:circleci/[A-Za-z0-9]+/X1'}", {"project": None, "project_slug": "circleci/Q8m/X1"}, True),
    ("slug-exclude", "{slug: {exclude: ['gh/acme/*']}}", {}, False),
    ("slug-exclude-other", "{slug: {exclude: ['gh/other/*']}}", {}, True),
    ("slug-no-slug", "{slug: '*'}", {"provider": "codeship", "project_slug": None}, False),
    (
        "every-field",
        "{provider: circleci, kind: workflow, project: acme/lib, branch: main, workflow: build, job: test}",
        {},
        True,
    ),
    ("no-conditions", "{}", {"project": "anyone/anything"}, True),
]


@pytest.mark.parametrize(("when", "changes", "matched"), [c[1:] for c in MATCHING], ids=[c[0] for c in MATCHING])
def test_when_matches_events(when: str, changes: dict[str, Any], matched: bool) -> None:
    """A one-rule document matches, or does not match, the base event with ``changes`` applied."""
    ruleset = only_rule(document(when=when))
    (decision,) = ruleset.explain(event(**changes))
    assert decision.matched is matched, decision.mismatch
    assert (decision.mismatch is None) is matched


# ----------------------------------------------------------------------------- the first failing clause

# (id, when, event changes, Mismatch)
MISMATCHES = [
    (
        "provider",
        "{provider: codeship}",
        {},
        Mismatch("provider", ["codeship"], "circleci", "provider `circleci` is not `codeship`"),
    ),
    (
        "kind",
        "{kind: [build, job]}",
        {},
        Mismatch("kind", ["build", "job"], "workflow", "kind `workflow` is not `build`, `job`"),
    ),
    (
        "project",
        '{project: "acme/web-*"}',
        {},
        Mismatch("project", "acme/web-*", "acme/lib", "project `acme/lib` does not match `acme/web-*`"),
    ),
    (
        "project-absent-opaque-slug",
        "{project: acme/lib}",
        {"project": None, "project_slug": "circleci/ORG/PROJ"},
        Mismatch(
            "project",
            "acme/lib",
            None,
            "project is absent for this event: CircleCI sent empty organization.name/project.name (GitHub App, "
            "GitLab and Bitbucket DC projects), and its slug `circleci/ORG/PROJ` is opaque; the rule wants project "
            "`acme/lib`: match the slug with `slug:` instead",
        ),
    ),
    (
        "slug",
        '{slug: "circleci/ORG/*"}',
        {},
        Mismatch("slug", "circleci/ORG/*", "gh/acme/lib", "slug `gh/acme/lib` does not match `circleci/ORG/*`"),
    ),
    (
        "slug-of-a-codeship-event",
        "{slug: gh/acme/lib}",
        {"provider": "codeship", "project_slug": None},
        Mismatch(
            "slug",
            "gh/acme/lib",
            None,
            "slug is empty for this event; the rule wants `gh/acme/lib` (only CircleCI events have a slug; "
            "this is a codeship event)",
        ),
    ),
    (
        "status-named-set",
        "{status: not_success}",
        {},
        Mismatch(
            "status", "not_success", "success", "status `success` (raw `success`) is not one of canceled, error, failed"
        ),
    ),
    (
        "status-default",
        "{}",
        {"status": "error", "raw_status": "infrastructure_fail"},
        Mismatch("status", "success", "error", "status `error` (raw `infrastructure_fail`) is not one of success"),
    ),
    (
        "status-list",
        "{status: [failed, error]}",
        {"status": "canceled", "raw_status": "canceled"},
        Mismatch(
            "status", ["failed", "error"], "canceled", "status `canceled` (raw `canceled`) is not one of error, failed"
        ),
    ),
    (
        "branch-exclude",
        "{branch: {include: ['*'], exclude: ['release/*']}}",
        {"branch": "release/1.2"},
        Mismatch(
            "branch",
            {"include": ["*"], "exclude": ["release/*"]},
            "release/1.2",
            "branch `release/1.2` matched exclude `release/*`",
        ),
    ),
    (
        "branch-list",
        '{branch: [main, "release/*"]}',
        {"branch": "dev"},
        Mismatch("branch", ["main", "release/*"], "dev", "branch `dev` does not match `main`, `release/*`"),
    ),
    (
        "branch-empty",
        "{branch: main}",
        {"branch": None},
        Mismatch("branch", "main", None, "branch is empty for this event; the rule wants `main`"),
    ),
    (
        "tag-absent",
        '{tag: "v*"}',
        {"tag": None},
        Mismatch("tag", "v*", None, "tag is empty for this event; the rule wants `v*`"),
    ),
    ("tag", '{tag: "v*"}', {"tag": "nightly"}, Mismatch("tag", "v*", "nightly", "tag `nightly` does not match `v*`")),
    (
        "workflow-regex",
        "{workflow: 're:^deploy-.*'}",
        {},
        Mismatch("workflow", "re:^deploy-.*", "build", "workflow `build` does not match `re:^deploy-.*`"),
    ),
    (
        "job",
        "{job: [lint, e2e]}",
        {},
        Mismatch("job", ["lint", "e2e"], "test", "job `test` does not match `lint`, `e2e`"),
    ),
]


@pytest.mark.parametrize(("when", "changes", "expected"), [c[1:] for c in MISMATCHES], ids=[c[0] for c in MISMATCHES])
def test_explain_gives_the_failing_clause_with_expected_actual_and_text(
    when: str, changes: dict[str, Any], expected: Mismatch
) -> None:
    """A rule that does not match reports the field, what it wanted as written, what the event had, and why."""
    (decision,) = only_rule(document(when=when)).explain(event(**changes))
    assert decision.matched is False
    assert decision.mismatch == expected
    assert decision.actions == ()


FULL_WHEN = (
    "{provider: circleci, kind: workflow, project: acme/lib, slug: gh/acme/*, status: success, branch: main, "
    "tag: 'v*', workflow: build, job: test}"
)
BROKEN = {
    "provider": {"provider": "codeship"},
    "kind": {"kind": "job"},
    "project": {"project": "acme/other"},
    "slug": {"project_slug": "gh/other/lib"},
    "status": {"status": "failed"},
    "branch": {"branch": "dev"},
    "tag": {"tag": "nightly"},
    "workflow": {"workflow": "deploy"},
    "job": {"job": "lint"},
}


def test_the_documented_clause_order() -> None:
    """Clauses are checked in DESIGN's order: provider, kind, project (then its slug), status, branch, tag,
    workflow, job."""
    assert CLAUSE_ORDER == ("provider", "kind", "project", "slug", "status", "branch", "tag", "workflow", "job")
    assert list(BROKEN) == list(CLAUSE_ORDER)


@pytest.mark.parametrize("first", CLAUSE_ORDER, ids=[f"from-{name}" for name in CLAUSE_ORDER])
def test_with_several_clauses_failing_the_earliest_is_reported(first: str) -> None:
    """Breaking every clause from ``first`` on reports ``first``, whatever fails after it."""
    ruleset = only_rule(document(when=FULL_WHEN))
    assert ruleset.explain(event(tag="v1"))[0].matched
    changes: dict[str, Any] = {"tag": "v1"}
    for name in CLAUSE_ORDER[CLAUSE_ORDER.index(first) :]:
        changes.update(BROKEN[name])
    (decision,) = ruleset.explain(event(**changes))
    assert decision.mismatch is not None and decision.mismatch.field == first


def test_status_is_reported_before_branch() -> None:
    """An event failing both branch and status reports status, the earlier clause."""
    (decision,) = only_rule(document(when="{branch: 'release/*', status: success}")).explain(
        event(branch="main", status="failed", raw_status="failed")
    )
    assert decision.mismatch == Mismatch(
        "status", "success", "failed", "status `failed` (raw `failed`) is not one of success"
    )


# ----------------------------------------------------------------------------- rendering


def planned(then: str, when: str = "{status: any}", **changes: Any) -> PlannedAction:
    """The one action of a one-rule document rendered for the base event with ``changes``."""
    (rule,) = only_rule(document(when=when, then=then)).rules
    (action,) = render_actions(rule, event(**changes))
    return action


def test_templates_render_event_fields() -> None:
    """Templates read the event's fields, in plain and nested arguments; numbers render as text."""
    action = planned(
        "\n      - circleci.trigger_pipeline:\n          project: gh/acme/api\n          branch: '{{ event.branch }}'\n"
        "          parameters: {sha: '{{ event.commit }}', from: '{{ event.project }}#{{ event.pipeline_number }}'}"
    )
    assert action.error is None
    assert action.params == {
        "project": "gh/acme/api",
        "branch": "main",
        "parameters": {"sha": "a" * 40, "from": "acme/lib#3"},
    }
    assert (action.rule, action.index, action.action) == ("r", 0, "circleci.trigger_pipeline")


# (id, when, then, event changes, rendered params)
DEFAULTS = [
    (
        "codeship-restart-gets-project",
        "{provider: codeship, status: error}",
        "[{codeship.restart_build: {}}]",
        {"provider": "codeship", "kind": "build", "project": "acme/web"},
        {"project": "acme/web"},
    ),
    (
        "circleci-rerun-gets-workflow-and-from-failed",
        "{provider: circleci}",
        "[{circleci.rerun_workflow: {}}]",
        {},
        {"workflow": "wf-1", "from_failed": True},
    ),
    (
        "written-from-failed-wins",
        "{provider: circleci}",
        "[{circleci.rerun_workflow: {from_failed: false}}]",
        {},
        {"workflow": "wf-1", "from_failed": False},
    ),
    (
        "codeship-trigger-gets-ref-from-branch",
        "{}",
        "[{codeship.trigger_build: {project: acme/release}}]",
        {"branch": "release/2"},
        {"project": "acme/release", "ref": "heads/release/2"},
    ),
    (
        "pipeline-gets-slug-and-branch",
        "{provider: circleci}",
        "[{circleci.trigger_pipeline: {}}]",
        {},
        {"project": "gh/acme/lib", "branch": "main"},
    ),
    (
        "pipeline-on-tag-gets-no-branch",
        "{provider: circleci}",
        "[{circleci.trigger_pipeline: {tag: '{{ event.tag }}'}}]",
        {"tag": "v2.0.0"},
        {"project": "gh/acme/lib", "tag": "v2.0.0"},
    ),
    (
        "codeship-v1-restart-gets-build-id",
        "{provider: codeship}",
        "[{codeship.v1_restart_build: {}}]",
        {"provider": "codeship", "kind": "build", "build_id": 4411},
        {"build": 4411},
    ),
    (
        "circleci-v1-retry-gets-legacy-slug-and-build",
        "{provider: circleci}",
        "[{circleci.v1_retry_build: {}}]",
        {"project_slug": "bb/acme/lib"},
        {"project": "bitbucket/acme/lib", "build": 7},
    ),
    (
        "circleci-v1-trigger-gets-branch",
        "{provider: circleci}",
        "[{circleci.v1_trigger_build: {project: github/acme/pkg}}]",
        {},
        {"project": "github/acme/pkg", "branch": "main"},
    ),
]


@pytest.mark.parametrize(("when", "then", "changes", "params"), [c[1:] for c in DEFAULTS], ids=[c[0] for c in DEFAULTS])
def test_omitted_arguments_default_from_the_event(
    when: str, then: str, changes: dict[str, Any], params: dict[str, Any]
) -> None:
    """Arguments a rule leaves out take the triggering event's value where the catalogue gives a default."""
    action = planned(then, when=when, **changes)
    assert action.error is None
    assert action.params == params


# (id, when, then, event changes, fragment of the error, argument missing from params)
RENDER_ERRORS = [
    (
        "tag-absent",
        "{provider: circleci}",
        "[{circleci.trigger_pipeline: {tag: '{{ event.tag }}'}}]",
        {"tag": None},
        "argument 'tag': event.tag is empty for this event",
        "tag",
    ),
    (
        "tag-absent-in-a-parameter",
        "{provider: circleci}",
        "[{circleci.trigger_pipeline: {parameters: {release: 'v={{ event.tag }}'}}}]",
        {"tag": None},
        "argument 'parameters.release': event.tag is empty for this event",
        "parameters",
    ),
    (
        "tag-empty-text",
        "{provider: circleci}",
        "[{circleci.trigger_pipeline: {tag: '{{ event.tag }}'}}]",
        {"tag": ""},
        "event.tag is empty",
        "tag",
    ),
    (
        "ref-without-branch",
        "{}",
        "[{codeship.trigger_build: {project: acme/release}}]",
        {"branch": None, "tag": "v1"},
        "argument 'ref' has no value: set it in the rule (no default for this event)",
        "ref",
    ),
    (
        "pipeline-without-slug",
        "{provider: circleci}",
        "[{circleci.trigger_pipeline: {}}]",
        {"project_slug": None},
        "argument 'project' has no value",
        "project",
    ),
    (
        "rerun-without-workflow-id",
        "{provider: circleci}",
        "[{circleci.rerun_workflow: {}}]",
        {"workflow_id": None},
        "argument 'workflow' has no value",
        "workflow",
    ),
    (
        "v1-restart-for-a-circleci-event",
        "{provider: codeship}",
        "[{codeship.v1_restart_build: {}}]",
        {},
        "needs 'build' or 'project'+'branch'",
        "build",
    ),
    (
        "rendered-text-over-the-circleci-limit",
        "{provider: circleci}",
        "[{circleci.trigger_pipeline: {parameters: {long: '{{ event.commit * 13 }}'}}}]",
        {},
        "parameters.long: value is over 512 characters",
        "",
    ),
]


@pytest.mark.parametrize(
    ("when", "then", "changes", "fragment", "absent"), [c[1:] for c in RENDER_ERRORS], ids=[c[0] for c in RENDER_ERRORS]
)
def test_an_action_that_cannot_be_sent_carries_an_error(
    when: str, then: str, changes: dict[str, Any], fragment: str, absent: str
) -> None:
    """An empty field, a required argument still missing or a limit broken after rendering gives PlannedAction.error."""
    action = planned(then, when=when, **changes)
    assert action.error is not None and fragment in action.error, action.error
    assert "None" not in action.error
    if absent:
        assert absent not in action.params
    assert all(value is not None and "None" not in str(value) for value in action.params.values())


SANDBOX = [
    ("dunder-on-a-field", "{{ event.branch.__class__ }}"),
    ("subclasses-walk", "{{ event.branch.__class__.__mro__[1].__subclasses__() }}"),
    ("attr-filter", "{{ event | attr('__class__') }}"),
    ("method-globals", "{{ event.branch.format.__globals__ }}"),
    ("literal-dunder", "{{ ''.__class__.__base__ }}"),
    ("number-dunder", "{{ (7).__class__ }}"),
]


@pytest.mark.parametrize("template", [t for _, t in SANDBOX], ids=[i for i, _ in SANDBOX])
def test_the_sandbox_refuses_attribute_tricks_at_render_time(template: str) -> None:
    """Tricks lint cannot see in the template's names pass validation but are refused by the sandbox on render."""
    action = planned(f"[{{codeship.trigger_build: {{project: acme/x, ref: {json.dumps(template)}}}}}]")
    assert action.error is not None and action.error.startswith("argument 'ref': refused by the template sandbox: ")
    assert "unsafe" in action.error
    assert "ref" not in action.params


def test_the_sandbox_stops_an_exploit_that_runs_in_plain_jinja(tmp_path: Path) -> None:
    """A template that runs a shell command under plain Jinja passes lint, but rendering it runs nothing."""
    canary = tmp_path / "canary"
    template = (
        "{{ (event.branch.__class__.__mro__[1].__subclasses__() | selectattr('__name__', 'equalto', '_wrap_close')"
        f" | first).__init__.__globals__['system']('touch {canary}') }}}}"
    )
    jinja2.Environment(autoescape=True).from_string(template).render(event={"branch": "main"})
    assert canary.exists(), "the control: without the sandbox the template does run a command"
    canary.unlink()
    action = planned(f"[{{codeship.trigger_build: {{project: acme/x, ref: {json.dumps(template)}}}}}]")
    assert action.error is not None and "refused by the template sandbox" in action.error
    assert not canary.exists()


LINT_REFUSED = [
    ("dunder-on-event", "{{ event.__class__ }}", "template names `event.__class__`, which events do not have"),
    ("dunder-item-on-event", "{{ event['__init__'] }}", "template names `event.__init__`"),
    ("method-of-event", "{{ event.items() }}", "template names `event.items`"),
    ("raw-payload", "{{ event.raw }}", "template names `event.raw`"),
    ("jinja-global", "{{ cycler.__init__.__globals__.os.system('true') }}", "template names `cycler`"),
    ("lipsum-global", "{{ lipsum.__globals__['os'] }}", "template names `lipsum`"),
    ("range-global", "{{ range(10 ** 9) | list }}", "template names `range`"),
    ("self-reference", "{{ self }}", "template names `self`"),
    ("loop-variable", "{% for c in event.chain %}{{ c }}{% endfor %}", "template names `c`"),
]


@pytest.mark.parametrize(("template", "fragment"), [c[1:] for c in LINT_REFUSED], ids=[c[0] for c in LINT_REFUSED])
def test_lint_refuses_templates_reaching_past_the_event(template: str, fragment: str) -> None:
    """Templates naming anything but the event's canonical fields fail validation, before anything renders."""
    problems = problems_of(
        document(then=f"[{{codeship.trigger_build: {{project: acme/x, ref: {json.dumps(template)}}}}}]")
    )
    assert any(
        p.startswith(f"rules.yaml:5: {R}then[0].codeship.trigger_build.ref: ") and fragment in p for p in problems
    ), problems


FILTERS = [
    ("upper", "{{ event.branch | upper }}", "MAIN"),
    ("replace", "{{ event.project | replace('/', '-') }}", "acme-lib"),
    ("slice", "{{ event.commit[:7] }}", "aaaaaaa"),
    ("arithmetic", "{{ event.pipeline_number + 1 }}", "4"),
    ("default-for-an-empty-field", "{{ event.tag | default('untagged') }}", "untagged"),
    ("conditional", "{% if event.status == 'success' %}green{% else %}red{% endif %}", "green"),
    ("str-method", "{{ event.branch.upper() }}", "MAIN"),
]


@pytest.mark.parametrize(("template", "rendered"), [c[1:] for c in FILTERS], ids=[c[0] for c in FILTERS])
def test_filters_and_expressions_work_on_event_fields(template: str, rendered: str) -> None:
    """Ordinary Jinja filters and expressions on event fields render in the sandbox."""
    action = planned(f"[{{codeship.trigger_build: {{project: acme/x, ref: {json.dumps(template)}}}}}]")
    assert action.error is None
    assert action.params["ref"] == rendered


def test_evaluate_renders_the_actions_of_matching_rules_only() -> None:
    """evaluate attaches rendered actions to a matching rule and none to a rule that does not match."""
    text = (
        "version: 1\nrules:\n"
        "  - name: hit\n    when: {project: acme/lib}\n"
        "    then: [{codeship.trigger_build: {project: acme/release, commit: '{{ event.commit }}'}}]\n"
        "  - name: miss\n    when: {project: acme/lib, branch: dev}\n    then: " + RESTART + "\n"
    )
    hit, miss = parse_rules(text).evaluate(event())
    assert hit.matched and hit.actions[0].params == {"project": "acme/release", "ref": "heads/main", "commit": "a" * 40}
    assert not miss.matched and miss.actions == ()


# ----------------------------------------------------------------------------- the index against a full scan

UNIVERSE = [
    "acme/lib", "acme/lib-v2", "acme/api", "acme/web", "acme/web-admin", "acme/web-shop", "other/lib",
    "other/tools", "solo", "deep/nested/repo", "acme/123", "x/y",
]  # fmt: skip
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


def test_load_rules_on_a_missing_file_names_the_path(tmp_path: Path) -> None:
    """A missing rules file is one problem naming its path, not an OSError."""
    path = tmp_path / "absent.yaml"
    with pytest.raises(RulesError) as info:
        load_rules(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: cannot read the rules file: ")


def test_load_rules_on_a_directory_names_the_path(tmp_path: Path) -> None:
    """A directory where the file should be is one problem naming the path."""
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{tmp_path}: cannot read the rules file: ")


def test_load_rules_refuses_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 is one problem with the path and the offending byte."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(document().encode() + b"# caf\xe9\n")
    with pytest.raises(RulesError) as info:
        load_rules(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:1: not UTF-8 text (invalid continuation byte at byte ")
