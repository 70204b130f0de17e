"""Buildkite (shared/reference/more-providers.md §2, §4): signed webhooks of builds and jobs, REST API v2.

``parse`` reads deliveries, ``actions`` are what rules may name, ``client`` calls the API, ``facts`` holds
what several of them share, and ``PROVIDER`` is what the registry lists.

Lineage: a build chainer started is recognised when it reports back by the build id (a UUID) Buildkite
answered the create or rebuild call with, and, for a created build, also by the ``chainer:cause`` meta-data
it was created with (the id of the event that caused it), which Buildkite sends back in every webhook of
the build. The id is exact and looked up first; the meta-data key travels with the build itself, so a
build that someone rebuilds by hand in Buildkite (which keeps the meta-data) stays in its chain and
cannot restart a loop at depth 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from chainer.events import BuildEvent
from chainer.providers.base import Hook, HookAuth, Ignored, LineageKey, Provider, repo_of
from chainer.providers.buildkite import parse
from chainer.providers.buildkite.actions import ACTIONS
from chainer.providers.buildkite.client import BuildkiteClient
from chainer.providers.buildkite.facts import CAUSE_KEY, NAME, REQUESTS_PER_MINUTE, TITLE
from chainer.settings import Secret, Settings


def cause_key(pipeline: str, cause: str) -> LineageKey:
    """The lineage key of a build of ``pipeline`` (``<org>/<slug>``) created with ``chainer:cause`` = ``cause``."""
    return LineageKey.build(NAME, repo_of(pipeline.strip()), f"cause:{cause}")


class Buildkite(Provider):
    """Buildkite pipelines. ``clock`` (unix seconds) checks the signatures' timestamps; tests move it."""

    name = NAME
    title = TITLE
    statuses = parse.STATUSES
    kinds = ("build", "job")
    actions = ACTIONS
    client_class = BuildkiteClient
    requests_per_minute = REQUESTS_PER_MINUTE
    hook = Hook(token=False)  # deliveries authenticate with their own headers, never chainer's hook token
    example_action = f"- {NAME}.create_build: {{pipeline: acme/deploy}}"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def parse(self, headers: Mapping[str, str], body: bytes, auth: HookAuth) -> BuildEvent | Ignored:
        return parse.parse(headers, body, auth, now=self.clock())

    def parse_unverified(self, headers: Mapping[str, str], body: bytes) -> BuildEvent | Ignored:
        return parse.parse_unverified(headers, body)

    def secrets(self, settings: Settings) -> list[Secret]:
        return [s for s in (settings.buildkite_webhook_token, settings.buildkite_token) if s]

    def event_keys(self, event: BuildEvent) -> list[LineageKey]:
        build = event.raw.get("build") if isinstance(event.raw, Mapping) else None
        if not isinstance(build, Mapping):
            return []
        found = []
        if isinstance(build.get("id"), str) and build["id"]:
            found.append(LineageKey.build(NAME, None, build["id"]))
        meta = build.get("meta_data")
        cause = meta.get(CAUSE_KEY) if isinstance(meta, Mapping) else None
        if isinstance(cause, str) and cause and event.project:
            found.append(cause_key(event.project, cause))
        return found

    def target_keys(
        self, action: str, params: Mapping[str, Any], downstream_id: str | None, event: BuildEvent
    ) -> list[LineageKey]:
        found = [LineageKey.build(NAME, None, downstream_id)] if downstream_id else []
        pipeline = params.get("pipeline")
        if action == f"{NAME}.create_build" and isinstance(pipeline, str) and pipeline.strip():
            found.append(cause_key(pipeline, event.event_id))
        return found


PROVIDER = Buildkite()
