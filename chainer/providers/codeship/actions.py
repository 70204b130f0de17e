"""Codeship's actions (DESIGN §5): what a rule may name, each argument's type and default from the event.

``chainer.providers.codeship.client`` executes them; the rules receive them through the registry's catalogue.
"""

from __future__ import annotations

from chainer.catalogue import ActionSpec, Param
from chainer.events import BuildEvent
from chainer.providers.base import same_provider
from chainer.providers.codeship.parse import NAME

_STR = (str,)
_INT_OR_STR = (int, str)


def _heads_ref(event: BuildEvent) -> str | None:
    return f"heads/{event.branch}" if event.branch else None


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec(
        f"{NAME}.trigger_build",
        NAME,
        (
            Param("project", _STR, True, lambda e: e.project, "owner/repo or project uuid"),
            Param("ref", _STR, True, _heads_ref, "git ref in Codeship form, e.g. heads/main"),
            Param("commit", _STR, False, None, "commit SHA to build (optional)"),
        ),
        "Create a build with Codeship API v2.",
    ),
    ActionSpec(
        f"{NAME}.restart_build",
        NAME,
        (
            Param("project", _STR, True, lambda e: e.project, "owner/repo or project uuid"),
            Param("build", _STR, False, None, "build uuid; default: the event's build, looked up"),
        ),
        "Restart a build with Codeship API v2.",
    ),
    ActionSpec(
        f"{NAME}.v1_restart_build",
        NAME,
        (
            Param(
                "build",
                _INT_OR_STR,
                False,
                same_provider(NAME, lambda e: e.build_id),
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
)
