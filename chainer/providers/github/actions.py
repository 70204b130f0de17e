"""GitHub's actions (DESIGN §10): what a rule may name, each argument's type, default from the event and limits.

``chainer.providers.github.client`` executes them; the rules receive them through the registry's catalogue.
GitHub's limits on workflow inputs and on ``client_payload`` (more-providers §1.6) travel with the arguments,
for lint, rendering and the schema alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from chainer.catalogue import ActionSpec, Param
from chainer.events import BuildEvent
from chainer.providers.base import same_provider
from chainer.providers.github.facts import (
    CHAIN_INPUT,
    MAX_CLIENT_PAYLOAD_BYTES,
    MAX_CLIENT_PAYLOAD_KEYS,
    MAX_EVENT_TYPE,
    MAX_INPUTS,
    MAX_INPUTS_CHARS,
    NAME,
)

_STR = (str,)
_INT_OR_STR = (int, str)
_BOOL = (bool,)
_MAP = (dict,)


def _ref(event: BuildEvent) -> str | None:
    """The event's branch, else its tag: what a dispatched workflow should run on."""
    return event.branch or event.tag


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str))


def _inputs_limits(value: Any) -> list[str]:
    """GitHub's limits on workflow_dispatch inputs: 25 top-level keys, 65,535 characters in all."""
    if not isinstance(value, Mapping):
        return []
    problems = []
    if len(value) > MAX_INPUTS:
        problems.append(f"inputs: {len(value)} entries, GitHub allows {MAX_INPUTS}")
    if _size(value) > MAX_INPUTS_CHARS:
        problems.append(f"inputs: over {MAX_INPUTS_CHARS} characters in all, GitHub's limit")
    return problems


def _input_value(value: Any) -> str | None:
    """Why ``value`` cannot be a workflow input (strings, numbers and booleans only), or None."""
    if isinstance(value, str | int | float | bool):
        return None
    kinds: dict[type, str] = {dict: "a mapping", list: "a list", type(None): "empty (null)"}
    shown = next((text for t, text in kinds.items() if isinstance(value, t)), type(value).__name__)
    return f"{shown} is not allowed: workflow inputs are strings, numbers or booleans"


def _client_payload_limits(value: Any) -> list[str]:
    """GitHub's limits on a repository_dispatch ``client_payload``: 10 top-level keys, under 64 KB."""
    if not isinstance(value, Mapping):
        return []
    problems = []
    if len(value) > MAX_CLIENT_PAYLOAD_KEYS:
        problems.append(f"client_payload: {len(value)} entries, GitHub allows {MAX_CLIENT_PAYLOAD_KEYS}")
    if _size(value) >= MAX_CLIENT_PAYLOAD_BYTES:
        problems.append(f"client_payload: {MAX_CLIENT_PAYLOAD_BYTES // 1024} KB or more, GitHub's limit")
    return problems


def _event_type_limits(value: Any) -> list[str]:
    if isinstance(value, str) and len(value) > MAX_EVENT_TYPE:
        return [f"event_type: {len(value)} characters, GitHub allows {MAX_EVENT_TYPE}"]
    return []


_INPUTS_SCHEMA: Mapping[str, Any] = {
    "maxProperties": MAX_INPUTS,
    "additionalProperties": {
        "type": ["string", "number", "boolean"],
        "description": "workflow inputs are strings, numbers or booleans",
    },
}
_CLIENT_PAYLOAD_SCHEMA: Mapping[str, Any] = {"maxProperties": MAX_CLIENT_PAYLOAD_KEYS}


def _chain_input(params: dict[str, Any], lineage: str) -> dict[str, Any]:
    """The lineage travels with the run as the workflow input ``chainer_chain`` (the workflow must declare it)."""
    inputs = params.get("inputs") or {}
    if not isinstance(inputs, Mapping):
        return params
    return {**params, "inputs": {**inputs, CHAIN_INPUT: lineage[-1000:]}}


def _chain_payload(params: dict[str, Any], lineage: str) -> dict[str, Any]:
    """The lineage travels in ``client_payload.chainer_chain``."""
    payload = params.get("client_payload") or {}
    if not isinstance(payload, Mapping):
        return params
    return {**params, "client_payload": {**payload, CHAIN_INPUT: lineage}}


_REPO = Param("repo", _STR, True, same_provider(NAME, lambda e: e.project), "owner/repo (default: the event's)")
_CARRY = "add the lineage as `chainer_chain` ({})"

ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec(
        f"{NAME}.dispatch_workflow",
        NAME,
        (
            _REPO,
            Param("workflow", _INT_OR_STR, True, None, "workflow id or file name (deploy.yml)"),
            Param("ref", _STR, True, _ref, "branch or tag to run on (default: the event's branch, else its tag)"),
            Param(
                "inputs",
                _MAP,
                False,
                None,
                "workflow_dispatch inputs: strings, numbers or booleans",
                check=_inputs_limits,
                entries=_input_value,
                schema=_INPUTS_SCHEMA,
            ),
            Param("pass_chain", _BOOL, False, None, _CARRY.format("an input the workflow must declare")),
        ),
        "Start a workflow run (workflow_dispatch) with the GitHub REST API; the run id it answers feeds lineage.",
        carry_chain=_chain_input,
        target="repo",
    ),
    ActionSpec(
        f"{NAME}.repository_dispatch",
        NAME,
        (
            _REPO,
            Param(
                "event_type",
                _STR,
                True,
                None,
                "the type workflows listen for (on: repository_dispatch: types)",
                check=_event_type_limits,
            ),
            Param(
                "client_payload",
                _MAP,
                False,
                None,
                "JSON the workflows see as github.event.client_payload",
                check=_client_payload_limits,
                schema=_CLIENT_PAYLOAD_SCHEMA,
            ),
            Param("pass_chain", _BOOL, False, None, _CARRY.format("a client_payload key")),
        ),
        "Send a repository_dispatch event with the GitHub REST API.",
        carry_chain=_chain_payload,
        target="repo",
    ),
    ActionSpec(
        f"{NAME}.rerun_workflow_run",
        NAME,
        (
            _REPO,
            Param("run", _INT_OR_STR, True, same_provider(NAME, lambda e: e.build_id), "workflow run id"),
            Param("failed_only", _BOOL, False, lambda e: True, "rerun only the failed jobs (and their dependents)"),
        ),
        "Re-run a workflow run (its failed jobs by default) with the GitHub REST API.",
        target="repo",
    ),
)
