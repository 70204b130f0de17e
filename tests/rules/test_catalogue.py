"""The rules know providers only through the catalogue they are given: a provider, an action, a field only
some providers' events carry, an argument's own limits and how an action carries lineage all come from it,
and chainer/rules/ imports no provider and names none."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from chainer import rules
from chainer.catalogue import ActionSpec, Catalogue, EventFacts, Param
from chainer.errors import RulesError
from chainer.events import BuildEvent, ChainLink
from chainer.providers import catalogue
from tests.helpers import R, document, rule_event

REPO = Path(__file__).resolve().parents[2]
GHA_EVENT = BuildEvent(
    provider="gha",
    kind="workflow",
    event_id="evt_gha",
    project="acme/lib",
    status="success",
    raw_status="completed",
    branch="main",
    commit="b" * 40,
    project_slug="acme/lib",
)


def _labels_check(value: Any) -> list[str]:
    if not isinstance(value, Mapping):
        return []
    problems = [f"labels: {len(value)} entries, at most 2"] if len(value) > 2 else []
    return problems + [f"labels.{k}: the word forbidden is refused" for k, v in value.items() if v == "forbidden"]


def _note_chain(params: dict[str, Any], lineage: str) -> dict[str, Any]:
    return {**params, "note": lineage}


DISPATCH = ActionSpec(
    "gha.dispatch",
    "gha",
    (
        Param("repo", (str,), True, lambda e: e.project if e.provider == "gha" else None, "owner/repo"),
        Param(
            "labels",
            (dict,),
            check=_labels_check,
            entries=lambda v: None if isinstance(v, str) else "labels are text",
            schema={"maxProperties": 2},
        ),
        Param("note", (str,)),
        Param("pass_chain", (bool,)),
    ),
    "Dispatch a GitHub Actions workflow.",
    carry_chain=_note_chain,
    target="repo",
)


def with_gha(*, carries_slug: bool = False) -> Catalogue:
    """The shipped catalogue plus a third provider `gha` with one action (and, if asked, a project slug)."""
    base = catalogue()
    fields = {"project_slug": "the GitHub repository as sent"} if carries_slug else {}
    return dataclasses.replace(
        base,
        providers=(*base.providers, "gha"),
        kinds={**base.kinds, "gha": ("workflow",)},
        actions={**base.actions, DISPATCH.name: DISPATCH},
        events={**base.events, "gha": EventFacts("GitHub Actions", GHA_EVENT, fields)},
    )


def problems(text: str, given: Catalogue) -> list[str]:
    with pytest.raises(RulesError) as info:
        rules.parse_rules(text, catalogue=given)
    return info.value.problems


def test_a_provider_the_catalogue_adds_is_accepted_matched_and_rendered() -> None:
    """A third provider and its action, known only to the catalogue passed in: its rule loads, matches its
    events and renders the argument's default from the event; the shipped catalogue refuses the same rule."""
    text = document(when="{provider: gha}", then="[{gha.dispatch: {}}]")
    ruleset = rules.parse_rules(text, catalogue=with_gha())
    (decision,) = ruleset.evaluate(GHA_EVENT)
    assert decision.matched and [(a.action, a.params, a.error) for a in decision.actions] == [
        ("gha.dispatch", {"repo": "acme/lib"}, None)
    ]
    assert ruleset.evaluate(rule_event()) == []  # a CircleCI event is no candidate of a `provider: gha` rule
    refused = problems(text, catalogue())
    assert f"rules.yaml:4: {R}when.provider: 'gha' is not one of codeship, circleci, github, buildkite" in refused
    assert any("then[0].gha.dispatch: unknown action" in p for p in refused), refused
    # The probe event of each provider the rule can see comes from the catalogue too.
    other = document(when="{provider: codeship}", then="[{gha.dispatch: {}}]")
    assert problems(other, with_gha()) == [
        f"rules.yaml:5: {R}then[0].gha.dispatch: argument 'repo' has no default for codeship events; "
        "set it or restrict when.provider"
    ]


def test_a_field_only_some_providers_carry_narrows_clauses_and_the_schema() -> None:
    """Which providers' events have a `slug` is catalogue data: a slug clause narrows a rule to them in lint,
    in the why-not text and in the schema's per-provider requirements."""
    bare = document(when='{slug: "gh/*"}', then="[{circleci.trigger_pipeline: {}}]")
    assert len(rules.parse_rules(bare, catalogue=with_gha()).rules) == 1  # gha events have no slug here
    assert problems(bare, with_gha(carries_slug=True)) == [
        f"rules.yaml:5: {R}then[0].circleci.trigger_pipeline: argument 'project' has no default for gha events; "
        "set it or restrict when.provider"
    ]
    ruleset = rules.parse_rules(document(when="{slug: nothing/*}"), catalogue=with_gha(carries_slug=True))
    (decision,) = ruleset.explain(rule_event(provider="codeship", project_slug=None))
    assert decision.mismatch is not None
    assert decision.mismatch.text.endswith(
        "(only CircleCI and GitHub Actions events have a slug; this is a codeship event)"
    )
    schema = rules.rules_schema(with_gha(carries_slug=True))
    slug = schema["$defs"]["clause"]["properties"]["slug"]["description"]
    assert "the GitHub repository as sent" in slug and slug.endswith("CircleCI and GitHub Actions events only")
    validator = Draft202012Validator(schema)
    assert list(validator.iter_errors(yaml.safe_load(bare)))
    assert not list(Draft202012Validator(rules.rules_schema(with_gha())).iter_errors(yaml.safe_load(bare)))


def test_an_argument_declares_its_own_limits_for_lint_rendering_and_the_schema() -> None:
    """Param.check and Param.entries run on written values at lint (entry problems at the entry's line) and
    on rendered values; Param.schema lands in the JSON Schema."""
    given = with_gha()
    three = document(when="{provider: gha}", then="[{gha.dispatch: {labels: {a: x, b: y, c: z}}}]")
    assert problems(three, given) == [f"rules.yaml:5: {R}then[0].gha.dispatch: labels: 3 entries, at most 2"]
    numeric = document(when="{provider: gha}", then="\n      - gha.dispatch:\n          labels:\n            a: 1")
    assert problems(numeric, given) == [f"rules.yaml:8: {R}then[0].gha.dispatch.labels.a: labels are text"]
    templated = document(when="{provider: gha}", then="[{gha.dispatch: {labels: {env: '{{ event.branch }}'}}}]")
    ruleset = rules.parse_rules(templated, catalogue=given)
    (ok,) = ruleset.evaluate(GHA_EVENT)[0].actions
    (refused,) = ruleset.evaluate(dataclasses.replace(GHA_EVENT, branch="forbidden"))[0].actions
    assert (ok.error, ok.params["labels"]) == (None, {"env": "main"})
    assert refused.error == "labels.env: the word forbidden is refused"
    schema = rules.rules_schema(given)
    assert schema["$defs"]["gha.dispatch"]["properties"]["labels"]["maxProperties"] == 2
    assert list(Draft202012Validator(schema).iter_errors(yaml.safe_load(three)))


def test_an_action_carries_the_lineage_its_own_way() -> None:
    """`pass_chain: true` hands the lineage to the action's carry_chain hook; without the option nothing is added."""
    given = with_gha()
    chained = dataclasses.replace(GHA_EVENT, chain=(ChainLink("evt_0", "up", "acme/app"),))
    text = document(when="{provider: gha}", then="[{gha.dispatch: {pass_chain: true}}]")
    (action,) = rules.parse_rules(text, catalogue=given).evaluate(chained)[0].actions
    assert action.params == {"repo": "acme/lib", "note": "evt_0:up evt_gha:r"}
    plain = document(when="{provider: gha}", then="[{gha.dispatch: {}}]")
    (action,) = rules.parse_rules(plain, catalogue=given).evaluate(chained)[0].actions
    assert action.params == {"repo": "acme/lib"}


def test_the_argument_an_action_names_its_target_by_feeds_the_project_graph_and_the_loop_guard() -> None:
    """`gha.dispatch` names its downstream project `repo` (ActionSpec.target): lint sees the acme/a → acme/b cycle
    through it, and the loop guard's path ends with the repository it would have dispatched, not the action."""
    text = (
        "version: 1\nmax_depth: 2\nrules:\n"
        "  - {name: a-to-b, when: {project: acme/a}, then: [{gha.dispatch: {repo: acme/b}}]}\n"
        "  - {name: b-to-a, when: {project: acme/b}, then: [{gha.dispatch: {repo: Acme/A}}]}\n"
    )
    ruleset = rules.parse_rules(text, catalogue=with_gha())
    assert [c.text() for c in ruleset.cycles()] == [
        "acme/a → acme/b → acme/a (rules a-to-b, b-to-a), stopped at depth 2"
    ]
    chain = (ChainLink("evt_1", "a-to-b", "acme/a"), ChainLink("evt_2", "b-to-a", "acme/b"))
    (decision,) = ruleset.evaluate(dataclasses.replace(GHA_EVENT, project="acme/a", chain=chain))
    assert [a.error for a in decision.actions] == ["loop guard: acme/a → acme/b → acme/a → acme/b, depth 3 > 2"]


def test_a_catalogue_must_describe_every_provider_it_lists() -> None:
    """A provider without event facts or kinds is refused when the catalogue is built, not met later in lint."""
    base = catalogue()
    with pytest.raises(ValueError, match="gha"):
        dataclasses.replace(base, providers=(*base.providers, "gha"))


ALLOWED = ("chainer.rules", "chainer.events", "chainer.errors", "chainer.catalogue")


@pytest.mark.parametrize("module", sorted((REPO / "chainer" / "rules").glob("*.py")), ids=lambda p: p.name)
def test_the_rules_package_imports_no_provider_and_names_none(module: Path) -> None:
    """chainer/rules/ imports only itself, events, errors and the catalogue types, and names no provider."""
    source = module.read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("chainer"):
            names = [node.module] if node.module != "chainer" else [f"chainer.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("chainer")]
        else:
            continue
        for name in names:
            assert name == "chainer.__version__" or name.startswith(ALLOWED), f"{module.name} imports {name}"
    assert "codeship" not in source.lower() and "circleci" not in source.lower()


def test_the_project_graph_follows_the_argument_each_action_names_its_target_with() -> None:
    """An action whose target argument is not called `project` (`gha.dispatch` names a `repo`) still draws its
    edge: lint sees the loop acme/a → acme/b → acme/a, not one self-loop per rule."""
    text = (
        "version: 1\nmax_depth: 3\nrules:\n"
        "  - name: a-to-b\n    when: {provider: gha, project: acme/a}\n    then: [{gha.dispatch: {repo: acme/b}}]\n"
        "  - name: b-to-a\n    when: {provider: gha, project: acme/b}\n    then: [{gha.dispatch: {repo: acme/a}}]\n"
    )
    cycles = rules.parse_rules(text, catalogue=with_gha()).cycles()
    assert [c.text() for c in cycles] == ["acme/a → acme/b → acme/a (rules a-to-b, b-to-a), stopped at depth 3"]


def test_the_loop_guard_names_the_target_by_the_argument_the_action_declares() -> None:
    """A chained event past max_depth: the skipped action's path ends with what its target argument (`repo`) names."""
    text = (
        "version: 1\nmax_depth: 1\nrules:\n"
        "  - name: a-to-b\n    when: {provider: gha, project: acme/lib}\n    then: [{gha.dispatch: {repo: acme/b}}]\n"
    )
    chained = dataclasses.replace(GHA_EVENT, chain=(ChainLink("evt_0", "x-to-lib", "acme/x"),))
    (decision,) = rules.parse_rules(text, catalogue=with_gha()).evaluate(chained)
    assert [a.error for a in decision.actions] == ["loop guard: acme/x → acme/lib → acme/b, depth 2 > 1"]
