"""The JSON Schema of rules.yaml: valid draft 2020-12, generated from the validator's model, and in
agreement with `parse_rules` on the example file, on every rules document the tests use and on a table
of invalid documents."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from chainer.errors import RulesError
from chainer.events import KINDS, STATUSES
from chainer.providers import catalogue
from chainer.rules.model import (
    CLAUSE_ORDER,
    FAN_IN_KEYS,
    JOIN_ON,
    LIMIT_KEYS,
    NAME,
    RULE_KEYS,
    STATUS_SETS,
    TOP_KEYS,
    WHEN_KEYS,
)
from tests.helpers import load_rules, parse_rules, rules_schema

REPO = Path(__file__).resolve().parents[2]
ACTIONS = catalogue().actions
PROVIDERS = catalogue().providers
SCHEMA = rules_schema()
VALIDATOR = Draft202012Validator(SCHEMA)
JSON_TYPES = {str: "string", int: "integer", bool: "boolean", dict: "object"}
# Validator problems a JSON Schema cannot see: regex syntax, template contents, names unique across
# rules, YAML-level errors (syntax, aliases, tags, keys). A rejected document counts as schema-expressible unless
# every problem is one of these.
NOT_IN_SCHEMA = ("bad regex", "template", "duplicate", "YAML", "not UTF-8", "keys must be strings", "merge key")


def schema_errors(doc: Any) -> list[str]:
    """Every schema violation of ``doc``, as ``path: message`` lines (empty when valid)."""
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def validator_problems(text: str) -> list[str]:
    """The problems `parse_rules` reports for ``text`` (empty when it accepts the document)."""
    try:
        parse_rules(text)
    except RulesError as exc:
        return exc.problems
    return []


def loads(text: str) -> bool:
    """Whether PyYAML's safe loader can turn ``text`` into data a JSON Schema can check."""
    try:
        yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return True


def _rules_documents() -> list[tuple[str, str]]:
    """Rules documents of the test suite: tests/data/rules/*.yaml and rules-shaped string constants in tests/**/*.py."""
    found = [(str(p.relative_to(REPO)), p.read_text()) for p in sorted((REPO / "tests/data/rules").glob("*.yaml"))]
    for module in sorted((REPO / "tests").rglob("*.py")):
        if module == Path(__file__).resolve():
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "rules" in node.value:
                try:
                    doc = yaml.safe_load(node.value)
                except yaml.YAMLError:
                    continue
                if isinstance(doc, dict) and "rules" in doc:
                    found.append((f"{module.relative_to(REPO / 'tests')}:{node.lineno}", node.value))
    return found


DOCUMENTS = _rules_documents()
ACCEPTED = [(name, text) for name, text in DOCUMENTS if not validator_problems(text)]
REJECTED = [
    (name, text)
    for name, text in DOCUMENTS
    if any(not any(marker in p for marker in NOT_IN_SCHEMA) for p in validator_problems(text)) and loads(text)
]

BASE = """
version: 1
max_depth: 4
rules:
  - name: api-after-lib
    description: the rule every case below breaks in one place
    when: {provider: circleci, kind: workflow, project: acme/lib, branch: main, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api, branch: "{{ event.branch }}", parameters: {a: b}}
    limit: {per_commit: 2, per_day: 20}
"""
LINE = '      - circleci.trigger_pipeline: {project: gh/acme/api, branch: "{{ event.branch }}", parameters: {a: b}}'
PARAMS_101 = ", ".join(f"p{i}: v" for i in range(101))


def mutate(*edits: str, base: str = BASE) -> str:
    """``base`` with each (old, new) pair of ``edits`` applied; every old text must occur exactly once."""
    for old, new in zip(edits[::2], edits[1::2], strict=True):
        assert base.count(old) == 1, old
        base = base.replace(old, new)
    return base


FAN_IN = """
version: 1
rules:
  - name: release-after-both
    when:
      all:
        - {provider: codeship, project: acme/api, status: success}
        - {provider: circleci, project: acme/web, branch: main}
      join_on: commit
      within: 2h
      reset_on: failed
    then:
      - codeship.trigger_build: {project: acme/release, commit: "{{ events[0].commit }}"}
"""
FAN_IN_ITEM = '      - codeship.trigger_build: {project: acme/release, commit: "{{ events[0].commit }}"}'


# (case id, document, a fragment of the problem parse_rules should report)
INVALID = [
    ("unknown-top-key", mutate("max_depth: 4", "max_depht: 4"), "unknown key"),
    ("unknown-rule-key", mutate("    limit:", "    limits:"), "unknown key"),
    ("unknown-when-key", mutate("branch: main,", "branches: main,"), "unknown key"),
    (
        "fan-in-one-clause",
        mutate("        - {provider: circleci, project: acme/web, branch: main}\n", "", base=FAN_IN),
        "at least two",
    ),
    ("fan-in-no-within", mutate("      within: 2h\n", "", base=FAN_IN), "needs `within`"),
    ("fan-in-bad-within", mutate("within: 2h", "within: 2 hours", base=FAN_IN), "is not a duration"),
    ("fan-in-bad-join-on", mutate("join_on: commit", "join_on: sha", base=FAN_IN), "is not one of"),
    ("fan-in-bad-reset-on", mutate("reset_on: failed", "reset_on: error", base=FAN_IN), "the only reset"),
    (
        "fan-in-outer-condition",
        mutate("      join_on:", "      status: success\n      join_on:", base=FAN_IN),
        "inside each",
    ),
    ("fan-in-nested-fan-in", mutate("branch: main}", "branch: main, within: 1h}", base=FAN_IN), "unknown key"),
    (
        "fan-in-missing-required-argument",
        mutate(FAN_IN_ITEM, "      - circleci.rerun_workflow: {}", base=FAN_IN),
        "has no default for codeship events",
    ),
    ("bad-name", mutate("name: api-after-lib", "name: Api_After_Lib"), "must match [a-z0-9-]+"),
    ("unknown-action", mutate("circleci.trigger_pipeline:", "circleci.trigger:"), "unknown action"),
    ("unknown-argument", mutate("{project: gh/acme/api,", "{projekt: gh/acme/api,"), "unknown key"),
    ("argument-type", mutate("parameters: {a: b}", "parameters: [a, b]"), "must be a mapping"),
    (
        "missing-required-argument",
        mutate("provider: circleci", "provider: [circleci, codeship]", "{project: gh/acme/api,", "{"),
        "has no default for codeship events",
    ),
    (
        "missing-required-no-provider",
        mutate("provider: circleci, ", "", LINE, "      - circleci.rerun_workflow: {}"),
        "no default",
    ),
    ("bad-status", mutate("status: success", "status: sucess"), "is not a status"),
    ("empty-status-list", mutate("status: success", "status: []"), "matches nothing"),
    ("bad-provider", mutate("provider: circleci", "provider: gitlab"), "is not one of"),
    ("bad-kind", mutate("kind: workflow", "kind: pipeline"), "is not one of"),
    ("empty-pattern-list", mutate("branch: main", "branch: []"), "matches nothing"),
    ("empty-include-exclude", mutate("branch: main", "branch: {include: [], exclude: []}"), "needs include"),
    ("branch-and-tag", mutate('branch: "{{ event.branch }}"', "branch: main, tag: v1"), "cannot both be given"),
    ("101-parameters", mutate("parameters: {a: b}", f"parameters: {{{PARAMS_101}}}"), "CircleCI allows 100"),
    ("long-parameter-key", mutate("parameters: {a: b}", f"parameters: {{{'k' * 129}: v}}"), "over 128 characters"),
    ("long-parameter-value", mutate("parameters: {a: b}", f"parameters: {{a: {'v' * 513}}}"), "over 512 characters"),
    ("float-parameter", mutate("parameters: {a: b}", "parameters: {a: 1.5}"), "a decimal number (1.5)"),
    ("nested-parameter", mutate("parameters: {a: b}", "parameters: {a: {b: c}}"), "a mapping is not allowed"),
    ("list-parameter", mutate("parameters: {a: b}", "parameters: {a: [b]}"), "a list is not allowed"),
    ("null-parameter", mutate("parameters: {a: b}", "parameters: {a: null}"), "empty (null) is not allowed"),
    (
        "v1-restart-build-and-project",
        mutate(LINE, "      - codeship.v1_restart_build: {build: 1, project: 2, branch: m}"),
        "cannot both be given",
    ),
    ("v1-restart-project-alone", mutate(LINE, "      - codeship.v1_restart_build: {project: 2}"), "needs 'branch' too"),
    (
        "v1-restart-branch-alone",
        mutate(LINE, "      - codeship.v1_restart_build: {branch: main}"),
        "needs 'project' too",
    ),
    ("slug-empty-list", mutate("branch: main", "slug: []"), "matches nothing"),
    ("limit-zero", mutate("per_commit: 2", "per_commit: 0"), "at least 1"),
    ("limit-unknown-key", mutate("per_day: 20", "per_hour: 20"), "unknown key"),
    ("limit-empty", mutate("limit: {per_commit: 2, per_day: 20}", "limit: {}"), "must be a mapping like"),
    ("max-depth-zero", mutate("max_depth: 4", "max_depth: 0"), "at least 1"),
    ("version-2", mutate("version: 1", "version: 2"), "must be 1"),
    ("empty-then", mutate(LINE, "      []"), "non-empty list of actions"),
    ("two-actions-in-one-item", mutate(LINE, LINE + "\n        circleci.rerun_workflow: {}"), "exactly one key"),
    (
        "description-not-text",
        mutate("description: the rule every case below breaks in one place", "description: [a, b]"),
        "must be text",
    ),
    # Templated values count: a template renders text, and counts as given.
    (
        "templated-bool",
        mutate(LINE, '      - circleci.rerun_workflow: {from_failed: "{{ event.status }}"}'),
        "renders text",
    ),
    ("templated-mapping", mutate("parameters: {a: b}", 'parameters: "{{ event.commit }}"'), "renders text"),
    (
        "templated-branch-with-tag",
        mutate('branch: "{{ event.branch }}"', 'branch: "{{ event.branch }}", tag: v1'),
        "cannot both be given",
    ),
    (
        "templated-101-parameters",
        mutate("parameters: {a: b}", f'parameters: {{{PARAMS_101}, sha: "{{{{ event.commit }}}}"}}'),
        "CircleCI allows 100",
    ),
    ("fan-in-keys-without-all", mutate("branch: main,", "branch: main, join_on: tag, within: 2h,"), "only a fan-in"),
]
# Documents the validator accepts that a naive schema would refuse.
VALID = [
    ("numeric-branch", mutate("branch: main", "branch: 2024")),
    ("include-one-string", mutate("branch: main", 'branch: {include: "release/*"}')),
    ("exclude-only", mutate("branch: main", "branch: {include: [], exclude: [wip]}")),
    ("regex-and-list", mutate("branch: main", 'branch: ["re:^hotfix-\\\\d+$", main]')),
    ("status-set-list", mutate("status: success", "status: [not_success, running]")),
    ("provider-list", mutate("provider: circleci", "provider: [circleci]")),
    (
        "no-conditions",
        mutate("{provider: circleci, kind: workflow, project: acme/lib, branch: main, status: success}", "{}"),
    ),
    ("null-arguments", mutate(LINE, "      - codeship.restart_build:")),
    ("codeship-only-default", mutate("provider: circleci", "provider: codeship")),
    ("fan-in", FAN_IN),
    ("fan-in-seconds", mutate("within: 2h", "within: 7200", "reset_on: failed", "reset_on:", base=FAN_IN)),
    (
        "fan-in-one-provider",
        mutate(
            "{provider: codeship,",
            "{provider: circleci,",
            FAN_IN_ITEM,
            "      - circleci.rerun_workflow: {}",
            base=FAN_IN,
        ),
    ),
    ("null-description", mutate("description: the rule every case below breaks in one place", "description:")),
    ("slug-glob", mutate("project: acme/lib", 'slug: "circleci/Q8mW*/*"')),
    ("slug-and-project", mutate("project: acme/lib", "project: acme/lib, slug: github/acme/lib")),
    ("slug-include-exclude", mutate("project: acme/lib", 'slug: {include: ["circleci/*"], exclude: ["*/X/*"]}')),
    ("slug-regex-list", mutate("project: acme/lib", 'slug: ["re:^circleci/[^/]+/P1$", gh/acme/lib]')),
    ("typed-parameters", mutate("parameters: {a: b}", "parameters: {a: b, n: 3, flag: false}")),
    ("v1-restart-project-and-branch", mutate(LINE, "      - codeship.v1_restart_build: {project: 2, branch: main}")),
]


def test_schema_is_valid_draft_2020_12() -> None:
    """The generated schema passes the draft 2020-12 meta-schema and identifies itself."""
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["$id"] and SCHEMA["title"] and SCHEMA["description"]


def test_schema_is_plain_json_and_fresh_per_call() -> None:
    """The schema round-trips through JSON unchanged and each call returns an independent copy."""
    assert json.loads(json.dumps(SCHEMA)) == SCHEMA
    mine = rules_schema()
    mine["$defs"]["rule"]["properties"]["limit"]["properties"]["per_day"]["minimum"] = 99
    assert rules_schema() == SCHEMA


def test_example_rules_file_validates() -> None:
    """The example rules.yaml is accepted by load_rules and by the schema."""
    load_rules(REPO / "rules.yaml")
    assert schema_errors(yaml.safe_load((REPO / "rules.yaml").read_text())) == []


def test_the_suite_provides_rules_documents() -> None:
    """The documents collected from the suite include enough accepted ones for the agreement tests to mean something."""
    assert len(ACCEPTED) >= 5, DOCUMENTS


@pytest.mark.parametrize(("name", "text"), ACCEPTED, ids=[name for name, _ in ACCEPTED])
def test_documents_the_validator_accepts_validate(name: str, text: str) -> None:
    """Every rules document of the suite that parse_rules accepts is valid under the schema."""
    assert schema_errors(yaml.safe_load(text)) == []


@pytest.mark.parametrize(("name", "text"), REJECTED, ids=[name for name, _ in REJECTED])
def test_documents_the_validator_rejects_for_schema_reasons_fail(name: str, text: str) -> None:
    """Every rules document of the suite that parse_rules rejects for a structural reason fails the schema too."""
    assert schema_errors(yaml.safe_load(text)), validator_problems(text)


def test_base_document_is_valid() -> None:
    """The document the invalid cases start from is accepted by both, so each case breaks exactly one thing."""
    assert validator_problems(BASE) == []
    assert schema_errors(yaml.safe_load(BASE)) == []


@pytest.mark.parametrize(("text", "problem"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_documents_are_rejected_by_schema_and_validator(text: str, problem: str) -> None:
    """Each invalid document fails parse_rules for the intended reason and fails the schema at exactly one place
    (one error, or the same error from several providers' requirements: an argument no default fills)."""
    problems = validator_problems(text)
    assert any(problem in p for p in problems), problems
    assert len(set(schema_errors(yaml.safe_load(text)))) == 1, text


@pytest.mark.parametrize("text", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_lenient_documents_are_accepted_by_schema_and_validator(text: str) -> None:
    """Forms the validator accepts (numeric patterns, null arguments, exclude-only, named sets) validate too."""
    assert validator_problems(text) == []
    assert schema_errors(yaml.safe_load(text)) == []


def test_every_action_and_argument_has_a_schema() -> None:
    """Each action of ACTIONS has a then-item branch whose properties, types, required set and exclusive pairs
    follow its Params, and the schema names no action ACTIONS lacks."""
    defs = SCHEMA["$defs"]
    item = defs["rule"]["properties"]["then"]["items"]
    assert item["propertyNames"]["enum"] == list(ACTIONS)
    assert set(item["properties"]) == set(ACTIONS)
    for name, spec in ACTIONS.items():
        assert item["properties"][name] == {"$ref": f"#/$defs/{name}"}
        branch = defs[name]
        assert branch["additionalProperties"] is False
        assert list(branch["properties"]) == list(spec.param_names), name
        for param in spec.params:
            types = branch["properties"][param.name]["type"]
            assert ([types] if isinstance(types, str) else types) == [JSON_TYPES[t] for t in param.types]
        assert branch.get("required", []) == [p.name for p in spec.params if p.required and p.default is None]
        assert [c["not"]["required"] for c in branch.get("allOf", [])] == [list(pair) for pair in spec.exclusive]


def _bare_action_documents() -> list[tuple[str, str]]:
    """Every action with no arguments, under each provider restriction (none, one, both, fan-in)."""
    whens = {"any": "{}", **{p: f"{{provider: {p}}}" for p in PROVIDERS}, "both": f"{{provider: {list(PROVIDERS)}}}"}
    whens.update({f"all-{p}": f"{{all: [{{provider: {p}}}, {{provider: {p}}}], within: 1h}}" for p in PROVIDERS})
    return [
        (f"{action}-{label}", f"version: 1\nrules:\n  - name: r\n    when: {when}\n    then: [{{{action}: {{}}}}]\n")
        for action in ACTIONS
        for label, when in whens.items()
    ]


BARE = _bare_action_documents()


@pytest.mark.parametrize("text", [t for _, t in BARE], ids=[n for n, _ in BARE])
def test_argument_defaults_per_provider_agree(text: str) -> None:
    """An action with no arguments is accepted by the schema exactly when parse_rules finds a default for
    every required argument under the rule's providers."""
    assert (schema_errors(yaml.safe_load(text)) == []) == (validator_problems(text) == [])


def test_some_actions_need_arguments_for_some_providers() -> None:
    """The per-provider agreement test is not vacuous: bare actions are rejected for some providers only."""
    rejected = {name for name, text in BARE if validator_problems(text)}
    assert "circleci.trigger_pipeline-codeship" in rejected and "circleci.trigger_pipeline-any" in rejected
    assert "circleci.trigger_pipeline-circleci" not in rejected and "codeship.restart_build-any" not in rejected


def test_keys_and_enums_follow_the_validator() -> None:
    """Top, rule, clause, fan-in and limit keys, statuses, providers, kinds, join_on and the name pattern follow
    chainer.rules."""
    rule = SCHEMA["$defs"]["rule"]
    assert list(SCHEMA["properties"]) == list(TOP_KEYS)
    assert list(rule["properties"]) == list(RULE_KEYS)
    clause, fan_in = SCHEMA["$defs"]["clause"], SCHEMA["$defs"]["fan_in"]
    assert list(clause["properties"]) == list(CLAUSE_ORDER)
    assert list(fan_in["properties"]) == list(FAN_IN_KEYS)
    assert [*clause["properties"], *fan_in["properties"]] == list(WHEN_KEYS)
    assert fan_in["properties"]["join_on"]["enum"] == list(JOIN_ON)
    assert list(rule["properties"]["limit"]["properties"]) == list(LIMIT_KEYS)
    when = clause["properties"]
    assert when["status"]["anyOf"][0]["enum"] == [*STATUSES, *STATUS_SETS]
    assert when["provider"]["anyOf"][0]["enum"] == list(PROVIDERS)
    assert when["kind"]["anyOf"][0]["enum"] == list(KINDS)
    assert rule["properties"]["name"]["pattern"] == NAME.pattern
    assert SCHEMA["properties"]["version"] == {"const": 1}


def test_slug_clause_and_parameter_types_are_described() -> None:
    """The schema offers `slug` in every clause (a fan-in's too) with a description, and restricts pipeline
    parameter values to CircleCI's integer, string and boolean."""
    slug = SCHEMA["$defs"]["clause"]["properties"]["slug"]
    assert slug["$ref"] == "#/$defs/patterns" and "CircleCI project slug" in slug["description"]
    web = "        - {provider: circleci, project: acme/web, branch: main}"
    fan_in = mutate(web, '        - {slug: "circleci/O/*", branch: main}', base=FAN_IN)
    assert validator_problems(fan_in) == [] and schema_errors(yaml.safe_load(fan_in)) == []
    values = SCHEMA["$defs"]["circleci.trigger_pipeline"]["properties"]["parameters"]["additionalProperties"]
    assert values["type"] == ["string", "integer", "boolean"]
