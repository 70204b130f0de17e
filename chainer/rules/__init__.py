"""rules.yaml (DESIGN §5): load and validate with line numbers, match events, render actions, describe.

The public face of the package. Loading reports every problem at once, one line each: ``<file>:<line>:
rule '<name>' (rules[i]) <field path>: <message>``. The actions a rule may name, their arguments and
what each provider's events carry arrive as a ``Catalogue`` (``chainer.catalogue``): this
package never imports a provider, and callers pass the registry's catalogue to ``parse_rules``,
``load_rules`` and ``rules_schema``.

Modules: ``_yaml`` (YAML with line numbers), ``model`` (patterns, clauses, rules, decisions),
``templates`` (sandboxed rendering and argument checks), ``ruleset`` (index, evaluate, explain, join
steps, loop guard), ``graph`` (project cycles), ``validate`` (the checker), ``schema`` (JSON Schema).
"""

from __future__ import annotations

from chainer.errors import RenderError
from chainer.rules.graph import Cycle
from chainer.rules.model import (
    ActionTemplate,
    Clause,
    Decision,
    FieldMatcher,
    Join,
    JoinStep,
    Mismatch,
    Pattern,
    PlannedAction,
    Rule,
)
from chainer.rules.ruleset import RuleSet
from chainer.rules.schema import rules_schema
from chainer.rules.templates import render_actions
from chainer.rules.validate import load_rules, parse_rules

__all__ = [
    "ActionTemplate",
    "Clause",
    "Cycle",
    "Decision",
    "FieldMatcher",
    "Join",
    "JoinStep",
    "Mismatch",
    "Pattern",
    "PlannedAction",
    "RenderError",
    "Rule",
    "RuleSet",
    "load_rules",
    "parse_rules",
    "render_actions",
    "rules_schema",
]
