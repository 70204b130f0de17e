"""Helpers shared by the test modules (a test module never imports another test module).

Rules: ``parse_rules``, ``load_rules`` and ``rules_schema`` as production calls them, with the
provider catalogue the composition roots pass; and the small builders the rules tests share.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from chainer import rules
from chainer.actions import catalogue
from chainer.errors import RulesError
from chainer.events import BuildEvent

# ----------------------------------------------------------------------------- rules, with the catalogue


def parse_rules(text: str | bytes, source: str = "rules.yaml") -> rules.RuleSet:
    """``chainer.rules.parse_rules`` with the provider catalogue, as the app, worker and CLI call it."""
    return rules.parse_rules(text, source, catalogue=catalogue())


def load_rules(path: str | os.PathLike[str]) -> rules.RuleSet:
    """``chainer.rules.load_rules`` with the provider catalogue, as the app, worker and CLI call it."""
    return rules.load_rules(path, catalogue=catalogue())


def rules_schema() -> dict[str, Any]:
    """The JSON Schema of rules.yaml for the provider catalogue, as ``chainer schema`` prints it."""
    return rules.rules_schema(catalogue())


# ----------------------------------------------------------------------------- rules documents and events

RESTART = "[{codeship.restart_build: {}}]"
# How a problem in the one rule of ``document()`` names its rule.
R = "rule 'r' (rules[0]) "
BASE_EVENT = BuildEvent(
    provider="circleci",
    kind="workflow",
    event_id="evt_1",
    project="acme/lib",
    status="success",
    raw_status="success",
    project_id="p1",
    project_slug="gh/acme/lib",
    branch="main",
    commit="a" * 40,
    build_id=7,
    build_url="https://ci.example.org/7",
    workflow="build",
    workflow_id="wf-1",
    job="test",
    pipeline_number=3,
    occurred_at="2024-01-01T00:00:00Z",
)


def rule_event(**changes: Any) -> BuildEvent:
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


def only_rule(text: str) -> rules.RuleSet:
    """parse_rules on a document that must hold exactly one rule."""
    ruleset = parse_rules(text)
    assert len(ruleset.rules) == 1
    return ruleset
