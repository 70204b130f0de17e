"""CircleCI's actions (DESIGN §5): what a rule may name, each argument's type, default from the event and limits.

``chainer.providers.circleci.client`` executes them; the rules receive them through the registry's catalogue.
CircleCI's pipeline parameter limits (``facts``) travel with the ``parameters`` argument, for lint, rendering
and the schema alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chainer.catalogue import ActionSpec, Param
from chainer.events import BuildEvent
from chainer.providers.base import same_provider
from chainer.providers.circleci.facts import (
    CHAIN_PARAMETER,
    MAX_PARAMETER_KEY,
    MAX_PARAMETER_VALUE,
    MAX_PARAMETERS,
    NAME,
    VCS_ALIASES,
)

_STR = (str,)
_INT_OR_STR = (int, str)
_BOOL = (bool,)
_MAP = (dict,)


def _branch_unless_tag(event: BuildEvent) -> str | None:
    """The event's branch, unless it built a tag: then the tag is what to build (``tag`` defaults to it)."""
    return event.branch if not event.tag else None


def _legacy_slug(event: BuildEvent) -> str | None:
    """``<vcs>/<org>/<repo>`` for API v1.1, from a CircleCI event's long-form project slug."""
    if event.provider != NAME or not event.project_slug:
        return None
    parts = event.project_slug.split("/")
    vcs = VCS_ALIASES.get(parts[0])  # as CircleCI writes it: gh, github, bb or bitbucket
    if len(parts) != 3 or vcs is None:
        return None
    return f"{vcs}/{parts[1]}/{parts[2]}"


def _pipeline_parameter_limits(value: Any) -> list[str]:
    """CircleCI's limits on pipeline parameters (providers.md §5.4): entries, key length, text length."""
    if not isinstance(value, Mapping):
        return []
    problems = []
    if len(value) > MAX_PARAMETERS:
        problems.append(f"parameters: {len(value)} entries, CircleCI allows {MAX_PARAMETERS}")
    for key, item in value.items():
        if len(str(key)) > MAX_PARAMETER_KEY:
            problems.append(f"parameters: key {str(key)[:20]!r}… is over {MAX_PARAMETER_KEY} characters")
        if isinstance(item, str) and len(item) > MAX_PARAMETER_VALUE:
            problems.append(f"parameters.{key}: value is over {MAX_PARAMETER_VALUE} characters")
    return problems


def _pipeline_parameter_value(value: Any) -> str | None:
    """Why ``value`` cannot be a CircleCI pipeline parameter (integers, strings and booleans only), or None."""
    if isinstance(value, str | int | bool):
        return None
    kind = {float: f"a decimal number ({value!r})", dict: "a mapping", list: "a list", type(None): "empty (null)"}
    shown = next((text for t, text in kind.items() if isinstance(value, t)), type(value).__name__)
    return f"{shown} is not allowed: CircleCI pipeline parameters are integers, strings or booleans"


# The same limits for editors, as JSON Schema keywords of the `parameters` argument.
_PIPELINE_PARAMETERS_SCHEMA: Mapping[str, Any] = {
    "maxProperties": MAX_PARAMETERS,
    "propertyNames": {"maxLength": MAX_PARAMETER_KEY},
    "additionalProperties": {
        "type": ["string", "integer", "boolean"],
        "maxLength": MAX_PARAMETER_VALUE,
        "description": "CircleCI pipeline parameters are integers, strings or booleans",
    },
}


def _chain_parameter(params: dict[str, Any], lineage: str) -> dict[str, Any]:
    """The lineage travels with the pipeline as the parameter ``chainer_chain`` (its newest links that fit)."""
    parameters = params.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        return params
    return {**params, "parameters": {**parameters, CHAIN_PARAMETER: lineage[-MAX_PARAMETER_VALUE:]}}


# Why a CircleCI trigger without a branch or tag is not sent: an empty trigger body builds the default branch.
_NO_REF = (
    "no branch or tag to build: the rule names neither and the event has neither "
    "(CircleCI would build the default branch)"
)


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec(
        f"{NAME}.trigger_pipeline",
        NAME,
        (
            Param("project", _STR, True, same_provider(NAME, lambda e: e.project_slug), "project slug"),
            Param("branch", _STR, False, _branch_unless_tag, "branch to build", unless=("tag",)),
            Param("tag", _STR, False, lambda e: e.tag, "tag to build (instead of a branch)", unless=("branch",)),
            Param(
                "parameters",
                _MAP,
                False,
                None,
                "pipeline parameters: integers, strings or booleans",
                check=_pipeline_parameter_limits,
                entries=_pipeline_parameter_value,
                schema=_PIPELINE_PARAMETERS_SCHEMA,
            ),
            Param(
                "pass_chain",
                _BOOL,
                False,
                None,
                "add the lineage as the pipeline parameter `chainer_chain` (the config must declare it)",
            ),
        ),
        "Trigger a pipeline with CircleCI API v2.",
        exclusive=(("branch", "tag"),),
        one_of=(("branch",), ("tag",)),
        one_of_reason=_NO_REF,
        carry_chain=_chain_parameter,
    ),
    ActionSpec(
        f"{NAME}.rerun_workflow",
        NAME,
        (
            Param("workflow", _STR, True, same_provider(NAME, lambda e: e.workflow_id), "workflow id"),
            Param("from_failed", _BOOL, False, lambda e: True, "rerun only the failed jobs"),
        ),
        "Rerun a workflow with CircleCI API v2.",
    ),
    ActionSpec(
        f"{NAME}.v1_trigger_build",
        NAME,
        (
            Param("project", _STR, True, _legacy_slug, "<vcs>/<org>/<repo>"),
            Param("branch", _STR, False, _branch_unless_tag, "branch to build", unless=("tag",)),
            Param("tag", _STR, False, lambda e: e.tag, "tag to build (instead of a branch)", unless=("branch",)),
            Param("revision", _STR, False, None, "commit SHA (optional; not with a tag)"),
            Param("build_parameters", _MAP, False, None, "environment variables for the job"),
        ),
        "Trigger a job on a branch or tag with CircleCI API v1.1.",
        exclusive=(("branch", "tag"), ("tag", "revision")),
        one_of=(("branch",), ("tag",)),
        one_of_reason=_NO_REF,
    ),
    ActionSpec(
        f"{NAME}.v1_retry_build",
        NAME,
        (
            Param("project", _STR, True, _legacy_slug, "<vcs>/<org>/<repo>"),
            Param("build", _INT_OR_STR, True, same_provider(NAME, lambda e: e.build_id), "build_num"),
        ),
        "Retry a build with CircleCI API v1.1.",
    ),
)
