"""A JSON Schema (draft 2020-12) of rules.yaml (DESIGN §5), for editors and ``chainer schema``.

Generated from the model the validator uses (its key tuples, status sets, name and duration patterns),
from ``chainer.events`` and from the ``Catalogue`` the caller passes in (actions, their arguments and
limits, what each provider's events carry): a new action, argument or condition there changes the schema
with it. It checks structure only; bad regexes, templates naming unknown fields, duplicate rule names,
durations of zero or over 30 days and project cycles are left to ``chainer lint``.

Arguments that are required but have an event default are optional, except where the default gives
nothing for a provider the rule can see (a trigger's ``project`` taken from another provider's event):
each rule says so with ``if``/``then`` on the providers of its ``when`` (of every ``all`` clause in a fan-in);
a clause on a field only some providers' events carry (``slug``) restricts a ``when`` to those providers
as ``provider:`` does.
"""

from __future__ import annotations

import copy
from typing import Any

from chainer import __version__
from chainer.catalogue import ActionSpec, Catalogue, Param
from chainer.events import KINDS, STATUSES
from chainer.rules.model import (
    CLAUSE_ORDER,
    DURATION,
    EVENT_FIELD_OF,
    FAN_IN_KEYS,
    JOIN_ON,
    LIMIT_KEYS,
    MAX_WITHIN_MS,
    NAME,
    PATTERN_FIELDS,
    RULE_KEYS,
    STATUS_SETS,
    TOP_KEYS,
)

SCHEMA_ID = "urn:chainer:schema:rules:1"
_JSON_TYPES: dict[type, str] = {str: "string", int: "integer", bool: "boolean", dict: "object"}


def _positive(description: str) -> dict[str, Any]:
    """A whole number of at least 1 (a fresh dict each time: callers may edit the schema they get)."""
    return {"type": "integer", "minimum": 1, "description": description}


def _one_or_list(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` alone, or a non-empty list of ``item``."""
    return {"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]}


def _patterns() -> dict[str, Any]:
    """``$defs`` for a glob or ``re:`` pattern, and for a field's patterns: one, a list, or include/exclude."""
    some = _one_or_list({"$ref": "#/$defs/pattern"})
    in_ex = ("include", "exclude")
    return {
        # YAML reads `branch: 2024` as a number; the validator matches it as the text "2024".
        "pattern": {"type": ["string", "number"], "minLength": 1, "description": 'a glob, or "re:<regex>"'},
        "patterns": {
            "description": "a pattern, a list of patterns (any may match), or {include: [...], exclude: [...]}",
            "anyOf": [
                *some["anyOf"],
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {k: {"anyOf": [some, {"type": "array", "maxItems": 0}]} for k in in_ex},
                    "anyOf": [{"required": [k], "properties": {k: some}} for k in in_ex],
                },
            ],
        },
    }


def _clause(catalogue: Catalogue) -> dict[str, Any]:
    """One set of conditions: a plain ``when``, or one item of a fan-in's ``all``."""
    conditions: dict[str, Any] = {
        "provider": _one_or_list({"enum": list(catalogue.providers)}),
        "kind": _one_or_list({"enum": list(KINDS)}),
        "status": {
            **_one_or_list({"enum": [*STATUSES, *STATUS_SETS]}),
            "description": "a status, a list of them, or a named set; left out it means success",
        },
        **{name: _condition(catalogue, name) for name in PATTERN_FIELDS},
    }
    return {"type": "object", "additionalProperties": False, "properties": {k: conditions[k] for k in CLAUSE_ORDER}}


def _condition(catalogue: Catalogue, name: str) -> dict[str, Any]:
    """The patterns of one field; a field only some providers' events carry says so, and which."""
    field = EVENT_FIELD_OF.get(name, name)
    carriers = catalogue.carriers(field)
    if carriers is None:
        return {"$ref": "#/$defs/patterns"}
    owners = [p for p in catalogue.providers if p in carriers]
    described = "; ".join(catalogue.events[p].fields[field] for p in owners)
    titles = " and ".join(catalogue.title(p) for p in owners)
    return {"$ref": "#/$defs/patterns", "description": f"{described}; {titles} events only"}


def _fan_in() -> dict[str, Any]:
    """A ``when`` with ``all``: every clause must see a matching event with the same ``join_on`` value."""
    unit = DURATION.pattern.removeprefix("^").removesuffix("$")
    keys: dict[str, Any] = {
        "all": {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/clause"}},
        "join_on": {
            "enum": list(JOIN_ON),
            "description": (
                "default: commit. commit and tag joins fire once per commit or tag; "
                "a branch join fires each time every clause is green again on the branch"
            ),
        },
        "within": {
            "description": "how far apart the clauses' events may be: 90s, 30m, 2h, 1d (at most 30d) or seconds",
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_WITHIN_MS // 1000},
                {"type": "string", "pattern": rf"^\s*{unit}\s*$"},
            ],
        },
        "reset_on": {"enum": ["failed", None], "description": "a failed event clears what its clause had seen"},
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["all", "within"],
        "properties": {k: keys[k] for k in FAN_IN_KEYS},
    }


def _param(param: Param) -> dict[str, Any]:
    """One argument: its JSON types from ``Param.types``, plus the limits its provider declares (``Param.schema``)."""
    types = [_JSON_TYPES[t] for t in param.types]
    schema: dict[str, Any] = {"type": types[0] if len(types) == 1 else types, "description": param.doc}
    if param.schema is not None:
        schema.update(copy.deepcopy(dict(param.schema)))
    return schema


def _action(spec: ActionSpec) -> dict[str, Any]:
    """The arguments of one action: known names only, typed, required ones, exclusive pairs."""
    required = [p.name for p in spec.params if p.required and p.default is None]
    schema: dict[str, Any] = {
        "description": f"{spec.doc} ({spec.provider})",
        # An action name with nothing after it (`- <action>:`) means no arguments, as `{}` does.
        "type": "object" if required else ["object", "null"],
        "additionalProperties": False,
        "properties": {p.name: _param(p) for p in spec.params},
    }
    if required:
        schema["required"] = required
    if spec.exclusive:
        schema["allOf"] = [
            {"not": {"required": [a, b]}, "description": f"'{a}' and '{b}' cannot both be given"}
            for a, b in spec.exclusive
        ]
    # Arguments that only make sense together (a legacy restart's project and branch).
    together = {
        name: [other for other in group if other != name and (p := spec.param(other)) is not None and not p.default]
        for group in spec.one_of
        if len(group) > 1
        for name in group
    }
    if any(together.values()):
        schema["dependentRequired"] = {name: others for name, others in together.items() if others}
    return schema


def _provider_requirements(catalogue: Catalogue) -> list[dict[str, Any]]:
    """Per provider: unless ``when`` rules its events out, the arguments without a default for it are required."""
    result = []
    for provider in catalogue.providers:
        probe = catalogue.events[provider].probe
        needs = {
            name: [p.name for p in spec.params if p.required and p.default is not None and p.default(probe) is None]
            for name, spec in catalogue.actions.items()
        }
        if not any(needs.values()):
            continue
        others = {
            "anyOf": [
                {"type": "string", "not": {"const": provider}},
                {"type": "array", "not": {"contains": {"const": provider}}},
            ]
        }
        excludes: dict[str, Any] = {"required": ["provider"], "properties": {"provider": others}}
        # A clause on a field this provider's events lack (`slug`) rules its events out as well.
        elsewhere = [{"required": [name]} for name in PATTERN_FIELDS if _lacks(catalogue, provider, name)]
        if elsewhere:
            excludes = {"anyOf": [excludes, *elsewhere]}
        fan_in = {"required": ["all"], "properties": {"all": {"type": "array", "items": excludes}}}
        excluded = {"required": ["when"], "properties": {"when": {"anyOf": [excludes, fan_in]}}}
        item = {"properties": {n: {"type": "object", "required": ps} for n, ps in needs.items() if ps}}
        result.append({"if": {"not": excluded}, "then": {"properties": {"then": {"items": item}}}})
    return result


def _lacks(catalogue: Catalogue, provider: str, name: str) -> bool:
    """Whether ``provider``'s events lack the field of clause ``name`` that only some providers' events carry."""
    carriers = catalogue.carriers(EVENT_FIELD_OF.get(name, name))
    return carriers is not None and provider not in carriers


def rules_schema(catalogue: Catalogue) -> dict[str, Any]:
    """The JSON Schema of a rules file, generated from the validator's model and ``catalogue``."""
    actions = catalogue.actions
    rule_keys: dict[str, Any] = {
        "name": {"type": "string", "pattern": NAME.pattern, "description": "unique rule name"},
        "description": {"type": ["string", "null"]},
        "when": {
            "description": "the conditions an event must meet, or a fan-in (`all`) over several events",
            "if": {"required": ["all"]},
            "then": {"$ref": "#/$defs/fan_in"},
            "else": {"$ref": "#/$defs/clause"},
        },
        "then": {
            "type": "array",
            "minItems": 1,
            "items": {
                "description": "one action: a mapping with the action name as its only key",
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "propertyNames": {"enum": list(actions)},
                "properties": {name: {"$ref": f"#/$defs/{name}"} for name in actions},
            },
        },
        "max_depth": _positive("loop guard for this rule's chains (default: the file's)"),
        "limit": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {k: _positive(f"at most this many actions {k.replace('_', ' ')}") for k in LIMIT_KEYS},
        },
    }
    rule = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "when", "then"],
        # Indexed by the validator's tuple: a key added there without a schema here is a KeyError.
        "properties": {k: rule_keys[k] for k in RULE_KEYS},
        "allOf": _provider_requirements(catalogue),
    }
    top: dict[str, Any] = {
        "version": {"const": 1},
        "max_depth": _positive("loop guard for chains of chains"),
        "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "chainer rules",
        "description": f"rules.yaml of chainer {__version__}: when an upstream build event matches `when`, "
        "run every action in `then` (DESIGN §5). `chainer lint` checks what a schema cannot.",
        "type": "object",
        "additionalProperties": False,
        "required": ["version", "rules"],
        "properties": {k: top[k] for k in TOP_KEYS},
        "$defs": {
            **_patterns(),
            "clause": _clause(catalogue),
            "fan_in": _fan_in(),
            "rule": rule,
            **{name: _action(spec) for name, spec in actions.items()},
        },
    }
