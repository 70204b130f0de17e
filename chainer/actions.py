"""The action catalogue (DESIGN §5): every action a rule may name, its arguments and their defaults.

Rules validate ``then`` entries against this table; the worker executes an action by name with the
rendered arguments. An argument left out of a rule takes the triggering event's value where the
table gives a default, so ``codeship.restart_build: {}`` restarts the build that sent the event.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from chainer.events import BuildEvent

# The pipeline parameter that carries an action's lineage when a rule sets ``pass_chain: true``.
CHAIN_PARAMETER = "chainer_chain"

# CircleCI's documented pipeline parameter limits (providers.md §5.4).
CIRCLECI_MAX_PARAMETERS = 100
CIRCLECI_MAX_PARAMETER_KEY = 128
CIRCLECI_MAX_PARAMETER_VALUE = 512


@dataclass(frozen=True, slots=True)
class Param:
    """One argument of an action.

    ``types`` are the Python types a rendered value may have; ``default`` computes the value from
    the triggering event when the rule leaves the argument out (returning None means "no value").
    ``unless`` names arguments that switch the default off when the rule gives any of them: the event's
    build is no default for ``codeship.v1_restart_build`` once the rule names a project, and the event's
    tag none for a trigger whose rule names a branch. ``required`` arguments must end up with a value,
    from the rule or from the default.
    """

    name: str
    types: tuple[type, ...]
    required: bool = False
    default: Callable[[BuildEvent], Any] | None = None
    doc: str = ""
    unless: tuple[str, ...] = ()

    def default_for(self, event: BuildEvent, written: Collection[str]) -> Any:
        """The event's value for this argument when a rule that gives ``written`` leaves it out, else None."""
        if self.default is None or self.name in written or any(name in written for name in self.unless):
            return None
        return self.default(event)


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """An action a rule can name in ``then``: its provider, arguments and mutually exclusive pairs."""

    name: str
    provider: str
    params: tuple[Param, ...]
    doc: str
    exclusive: tuple[tuple[str, str], ...] = ()
    # When set, the rendered arguments must fill at least one of these groups completely; otherwise
    # the action is not sent and ``one_of_reason`` says why (in the audit log and in explain).
    one_of: tuple[tuple[str, ...], ...] = ()
    one_of_reason: str = ""

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)


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
                Param("parameters", _MAP, False, None, "pipeline parameters: integers, strings or booleans"),
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
