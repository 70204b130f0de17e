"""CircleCI (shared/reference/providers.md §4-§6): signed outbound webhooks, legacy payloads, API v2 and v1.1.

``parse`` reads deliveries, ``actions`` are what rules may name, ``client`` calls the API, ``facts`` holds
what several of them share, and ``PROVIDER`` is what the registry lists. A CircleCI build is recognised
when it reports back only by an id chainer was given (pipeline, rerun workflow, v1.1 build number),
never by branch.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from chainer.events import BuildEvent
from chainer.providers.base import HookAuth, Ignored, LineageKey, Provider, build_and_ref_keys, repo_of
from chainer.providers.circleci import parse
from chainer.providers.circleci.actions import ACTIONS
from chainer.providers.circleci.client import CircleCIClient
from chainer.providers.circleci.facts import NAME, TITLE
from chainer.settings import Secret, Settings


class CircleCI(Provider):
    """CircleCI cloud and server."""

    name = NAME
    title = TITLE
    statuses = parse.STATUSES
    kinds = ("workflow", "job")
    actions = ACTIONS
    client_class = CircleCIClient
    event_fields = MappingProxyType(
        {
            "project_slug": "the CircleCI project slug as sent (github/acme/api, or circleci/<org-id>/<project-id> "
            "for GitHub App and GitLab projects, whose events have no project)"
        }
    )
    no_project = "CircleCI sent empty organization.name/project.name (GitHub App, GitLab and Bitbucket DC projects)"
    example_action = f"- {NAME}.trigger_pipeline: {{project: gh/acme/api}}"

    def parse(self, headers: Mapping[str, str], body: bytes, auth: HookAuth) -> BuildEvent | Ignored:
        return parse.parse(headers, body, auth)

    def parse_unverified(self, headers: Mapping[str, str], body: bytes) -> BuildEvent | Ignored:
        return parse.parse_unverified(headers, body)

    def secrets(self, settings: Settings) -> list[Secret]:
        return [s for s in (*settings.circleci_webhook_secrets, settings.circleci_token) if s]

    def event_keys(self, event: BuildEvent) -> list[LineageKey]:
        keys = []
        pipeline = event.raw.get("pipeline") if isinstance(event.raw, Mapping) else None
        if isinstance(pipeline, Mapping) and isinstance(pipeline.get("id"), str):
            keys.append(LineageKey.pipeline(pipeline["id"]))
        if event.workflow_id:
            keys.append(LineageKey.workflow(event.workflow_id))
        return keys + build_and_ref_keys(event)

    def target_keys(
        self, action: str, params: Mapping[str, Any], downstream_id: str | None, event: BuildEvent
    ) -> list[LineageKey]:
        if not downstream_id:
            return []
        if action == f"{NAME}.trigger_pipeline":
            return [LineageKey.pipeline(downstream_id)]
        if action == f"{NAME}.rerun_workflow":
            return [LineageKey.workflow(downstream_id)]
        if action in (f"{NAME}.v1_trigger_build", f"{NAME}.v1_retry_build"):
            project = params.get("project")
            return [LineageKey.build(NAME, repo_of(project) if project else "", downstream_id)]
        return []


PROVIDER = CircleCI()
