"""rules.yaml validation (DESIGN §5): each kind of mistake gives one problem naming its rule, field path and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chainer.providers import catalogue
from tests.helpers import (
    RESTART,
    R,
    document,
    problems_of,
)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "rules"


# ----------------------------------------------------------------------------- validation: one problem each

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
    # A value its tag cannot take was a traceback out of the loader; it is a problem at its line.
    ("bad-int-tag", document(extra="    description: !!int many\n"), 6, R + "description", "'many' is not a valid"),
    ("bad-bool-tag", document(extra="    description: !!bool maybe\n"), 6, R + "description", "not a valid !!bool"),
    (
        "bad-timestamp-tag",
        document(extra="    description: !!timestamp 2001-1214\n"),
        6,
        R + "description",
        "YAML error: '2001-1214' is not a valid !!timestamp",
    ),
    (
        "template-unknown-filter",
        document(then="[{codeship.trigger_build: {project: acme/x, ref: '{{ event.branch | nosuch }}'}}]"),
        5,
        R + "then[0].codeship.trigger_build.ref",
        "template syntax error: No filter named 'nosuch'",
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


def test_an_argument_no_default_fills_is_reported_for_each_provider_whose_events_lack_it() -> None:
    """A rule that can see every provider's events and leaves out an argument only CircleCI events fill gets one
    problem per other registered provider (Codeship, Buildkite, ...), each at the action's line."""
    found = problems_of(document(then="[{circleci.rerun_workflow: {}}]"))
    others = sorted(p for p in catalogue().providers if p != "circleci")
    assert "codeship" in others and found == [
        f"rules.yaml:5: {R}then[0].circleci.rerun_workflow: argument 'workflow' has no default for {p} events; "
        "set it or restrict when.provider"
        for p in others
    ]
