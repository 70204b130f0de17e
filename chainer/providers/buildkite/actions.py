"""Buildkite's actions (DESIGN §10): what a rule may name, each argument's type, default from the event and limits.

``chainer.providers.buildkite.client`` executes them; the rules receive them through the registry's catalogue.
A pipeline is named ``<org>/<pipeline-slug>``, as Buildkite events name their project, so a Buildkite event's
own pipeline is the default. The event's build is a default only for Buildkite events: API paths need the
build number, which no other provider's event has.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chainer.catalogue import ActionSpec, Param
from chainer.events import BuildEvent
from chainer.providers.base import same_provider
from chainer.providers.buildkite.facts import CAUSE_KEY, NAME

_STR = (str,)
_INT_OR_STR = (int, str)
_MAP = (dict,)
PIPELINE = re.compile(r"[^/\s]+/[^/\s]+")


def _pipeline_problems(value: Any) -> list[str]:
    if isinstance(value, str) and not PIPELINE.fullmatch(value.strip()):
        return [f"pipeline: {value[:60]!r} is not <org>/<pipeline-slug>"]
    return []


def text_value(value: Any) -> str | None:
    """Why ``value`` cannot be a Buildkite env or meta-data value (text; whole numbers are sent as text), or None."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return None
    kind = {bool: "true/false (quote it)", float: "a decimal number (quote it)", dict: "a mapping", list: "a list"}
    shown = next((text for t, text in kind.items() if isinstance(value, t)), "empty (null)")
    return f"{shown} is not allowed: Buildkite takes text values"


def _meta_data_problems(value: Any) -> list[str]:
    if isinstance(value, Mapping) and CAUSE_KEY in value:
        return [f"meta_data: {CAUSE_KEY!r} is chainer's own key (it records which event caused the build)"]
    return []


def _branch(event: BuildEvent) -> str | None:
    """The event's branch; for a tag build, the tag (Buildkite builds a tag as the branch of that name)."""
    return event.branch or event.tag


def _commit(event: BuildEvent) -> str:
    """The event's commit, else ``HEAD`` (the newest commit of the branch)."""
    return event.commit or "HEAD"


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec(
        f"{NAME}.create_build",
        NAME,
        (
            Param(
                "pipeline",
                _STR,
                True,
                same_provider(NAME, lambda e: e.project),
                "<org>/<pipeline-slug> (default: a Buildkite event's pipeline)",
                check=_pipeline_problems,
            ),
            Param("branch", _STR, True, _branch, "branch to build (default: the event's branch, or its tag)"),
            Param(
                "commit",
                _STR,
                True,
                _commit,
                "commit SHA, ref or HEAD (default: the event's commit, else HEAD; "
                "set HEAD when the pipeline builds another repository)",
            ),
            Param("message", _STR, False, None, "the build's message"),
            Param("env", _MAP, False, None, "environment variables of the build (text)", entries=text_value),
            Param(
                "meta_data",
                _MAP,
                False,
                None,
                f"build meta-data (text); chainer adds {CAUSE_KEY!r}",
                check=_meta_data_problems,
                entries=text_value,
            ),
        ),
        "Create a build with the Buildkite REST API (token scope write_builds).",
        target="pipeline",
    ),
    ActionSpec(
        f"{NAME}.rebuild",
        NAME,
        (
            Param(
                "pipeline",
                _STR,
                True,
                same_provider(NAME, lambda e: e.project),
                "<org>/<pipeline-slug> (default: a Buildkite event's pipeline)",
                check=_pipeline_problems,
            ),
            Param(
                "build",
                _INT_OR_STR,
                True,
                same_provider(NAME, lambda e: e.build_id),
                "build number (default: a Buildkite event's build)",
            ),
        ),
        "Rebuild a build (a new build of the same commit) with the Buildkite REST API (token scope write_builds).",
        target="pipeline",
    ),
)
