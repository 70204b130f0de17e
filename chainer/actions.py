"""The action catalogue (DESIGN §5): every action a rule may name, its arguments and their defaults.

Rules validate ``then`` entries against this table, handed to them as data by ``catalogue()``; the
worker executes an action by name with the rendered arguments. An argument left out of a rule takes
the triggering event's value where the table gives a default, so ``codeship.restart_build: {}``
restarts the build that sent the event. CircleCI's pipeline parameter limits are declared here once,
on the ``parameters`` argument, for lint, rendering and the schema alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from chainer.events import PROVIDERS, BuildEvent
from chainer.providers.base import ActionSpec, Catalogue, EventFacts, Param

# The pipeline parameter that carries an action's lineage when a rule sets ``pass_chain: true``.
CHAIN_PARAMETER = "chainer_chain"

# CircleCI's documented pipeline parameter limits (providers.md §5.4).
CIRCLECI_MAX_PARAMETERS = 100
CIRCLECI_MAX_PARAMETER_KEY = 128
CIRCLECI_MAX_PARAMETER_VALUE = 512


def _branch_unless_tag(event: BuildEvent) -> str | None:
    """The event's branch, unless it built a tag: then the tag is what to build (``tag`` defaults to it)."""
    return event.branch if not event.tag else None


def _heads_ref(event: BuildEvent) -> str | None:
    return f"heads/{event.branch}" if event.branch else None


def _same_provider(provider: str, getter: Callable[[BuildEvent], Any]) -> Callable[[BuildEvent], Any]:
    """A default that only applies when the event came from ``provider`` (ids mean nothing elsewhere)."""

    def default(event: BuildEvent) -> Any:
        return getter(event) if event.provider == provider else None

    return default


def _legacy_slug(event: BuildEvent) -> str | None:
    """``<vcs>/<org>/<repo>`` for API v1.1, from a CircleCI event's long-form project slug."""
    if event.provider != "circleci" or not event.project_slug:
        return None
    parts = event.project_slug.split("/")
    vcs = {"gh": "github", "bb": "bitbucket"}.get(parts[0], parts[0])
    if len(parts) != 3 or vcs not in ("github", "bitbucket"):
        return None
    return f"{vcs}/{parts[1]}/{parts[2]}"


def _pipeline_parameter_limits(value: Any) -> list[str]:
    """CircleCI's limits on pipeline parameters (providers.md §5.4): entries, key length, text length."""
    if not isinstance(value, Mapping):
        return []
    problems = []
    if len(value) > CIRCLECI_MAX_PARAMETERS:
        problems.append(f"parameters: {len(value)} entries, CircleCI allows {CIRCLECI_MAX_PARAMETERS}")
    for key, item in value.items():
        if len(str(key)) > CIRCLECI_MAX_PARAMETER_KEY:
            problems.append(f"parameters: key {str(key)[:20]!r}… is over {CIRCLECI_MAX_PARAMETER_KEY} characters")
        if isinstance(item, str) and len(item) > CIRCLECI_MAX_PARAMETER_VALUE:
            problems.append(f"parameters.{key}: value is over {CIRCLECI_MAX_PARAMETER_VALUE} characters")
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
    "maxProperties": CIRCLECI_MAX_PARAMETERS,
    "propertyNames": {"maxLength": CIRCLECI_MAX_PARAMETER_KEY},
    "additionalProperties": {
        "type": ["string", "integer", "boolean"],
        "maxLength": CIRCLECI_MAX_PARAMETER_VALUE,
        "description": "CircleCI pipeline parameters are integers, strings or booleans",
    },
}


def _chain_parameter(params: dict[str, Any], lineage: str) -> dict[str, Any]:
    """The lineage travels with the pipeline as the parameter ``chainer_chain`` (its newest links that fit)."""
    parameters = params.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        return params
    return {**params, "parameters": {**parameters, CHAIN_PARAMETER: lineage[-CIRCLECI_MAX_PARAMETER_VALUE:]}}


# Why a CircleCI trigger without a branch or tag is not sent: an empty trigger body builds the default branch.
_NO_REF = (
    "no branch or tag to build: the rule names neither and the event has neither "
    "(CircleCI would build the default branch)"
)

_STR = (str,)
_INT_OR_STR = (int, str)
_BOOL = (bool,)
_MAP = (dict,)

ACTIONS: Mapping[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec(
            "codeship.trigger_build",
            "codeship",
            (
                Param("project", _STR, True, lambda e: e.project, "owner/repo or project uuid"),
                Param("ref", _STR, True, _heads_ref, "git ref in Codeship form, e.g. heads/main"),
                Param("commit", _STR, False, None, "commit SHA to build (optional)"),
            ),
            "Create a build with Codeship API v2.",
        ),
        ActionSpec(
            "codeship.restart_build",
            "codeship",
            (
                Param("project", _STR, True, lambda e: e.project, "owner/repo or project uuid"),
                Param("build", _STR, False, None, "build uuid; default: the event's build, looked up"),
            ),
            "Restart a build with Codeship API v2.",
        ),
        ActionSpec(
            "codeship.v1_restart_build",
            "codeship",
            (
                Param(
                    "build",
                    _INT_OR_STR,
                    False,
                    _same_provider("codeship", lambda e: e.build_id),
                    "numeric id; default: the event's build, unless the rule names a project",
                    unless=("project",),
                ),
                Param("project", _INT_OR_STR, False, None, "numeric project id, with branch"),
                Param("branch", _STR, False, None, "restart the newest build of this branch"),
            ),
            "Restart a build with the legacy Codeship API v1.",
            exclusive=(("build", "project"),),
            one_of=(("build",), ("project", "branch")),
            one_of_reason="no build to restart: give 'build', or 'project' and 'branch' for the newest build there",
        ),
        ActionSpec(
            "circleci.trigger_pipeline",
            "circleci",
            (
                Param("project", _STR, True, _same_provider("circleci", lambda e: e.project_slug), "project slug"),
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
            "circleci.rerun_workflow",
            "circleci",
            (
                Param("workflow", _STR, True, _same_provider("circleci", lambda e: e.workflow_id), "workflow id"),
                Param("from_failed", _BOOL, False, lambda e: True, "rerun only the failed jobs"),
            ),
            "Rerun a workflow with CircleCI API v2.",
        ),
        ActionSpec(
            "circleci.v1_trigger_build",
            "circleci",
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
            "circleci.v1_retry_build",
            "circleci",
            (
                Param("project", _STR, True, _legacy_slug, "<vcs>/<org>/<repo>"),
                Param("build", _INT_OR_STR, True, _same_provider("circleci", lambda e: e.build_id), "build_num"),
            ),
            "Retry a build with CircleCI API v1.1.",
        ),
    )
}


def _probe(provider: str, kind: str) -> BuildEvent:
    """A fully populated event of ``provider``, to learn whether an argument's default can apply."""
    return BuildEvent(
        provider=provider,
        kind=kind,
        event_id="evt_probe",
        project="org/repo",
        status="success",
        raw_status="success",
        project_id=1,
        project_slug="github/org/repo",
        branch="main",
        commit="0" * 40,
        build_id=1,
        build_url="https://ci.example.org/1",
        workflow="w",
        workflow_id="wf",
        job="j",
        pipeline_number=1,
    )


_KINDS: Mapping[str, tuple[str, ...]] = {"codeship": ("build",), "circleci": ("workflow", "job")}
_EVENTS: Mapping[str, EventFacts] = {
    "codeship": EventFacts("Codeship", _probe("codeship", "build"), {}),
    "circleci": EventFacts(
        "CircleCI",
        _probe("circleci", "workflow"),
        {
            "project_slug": "the CircleCI project slug as sent (github/acme/api, or circleci/<org-id>/<project-id> "
            "for GitHub App and GitLab projects, whose events have no project)"
        },
        no_project="CircleCI sent empty organization.name/project.name (GitHub App, GitLab and Bitbucket DC projects)",
    ),
}


@functools.cache
def catalogue() -> Catalogue:
    """The action catalogue and provider facts, as the rules loader, lint and the schema receive them."""
    return Catalogue(
        providers=PROVIDERS,
        kinds=MappingProxyType(dict(_KINDS)),
        actions=MappingProxyType(dict(ACTIONS)),
        events=MappingProxyType(dict(_EVENTS)),
        example_action="- circleci.trigger_pipeline: {project: gh/acme/api}",
    )
