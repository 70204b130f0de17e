"""Codeship (shared/reference/providers.md §1-§3): unsigned notification webhooks, API v2 and legacy v1.

``parse`` reads deliveries, ``actions`` are what rules may name, ``client`` calls the API, and ``PROVIDER``
is what the registry lists.
A Codeship build is recognised when it reports back by project, branch and commit (its webhooks carry
no id chainer could have been given), or by the build id a v1 restart answered with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chainer.events import BuildEvent
from chainer.providers.base import (
    HookAuth,
    Ignored,
    LineageKey,
    Provider,
    build_and_ref_keys,
    repo_of,
)
from chainer.providers.codeship.actions import ACTIONS
from chainer.providers.codeship.client import CodeshipClient
from chainer.providers.codeship.parse import NAME, STATUSES, authenticate, parse_codeship
from chainer.settings import Secret, Settings

# Codeship allows 60 API requests a minute per account, v1 and v2 together (providers.md §3.1).
REQUESTS_PER_MINUTE = 60


def _branch_of_ref(ref: Any) -> str | None:
    text = str(ref or "")
    for prefix in ("heads/", "tags/"):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text or None


class Codeship(Provider):
    """Codeship Basic and Pro."""

    name = NAME
    title = "Codeship"
    statuses = STATUSES
    kinds = ("build",)
    actions = ACTIONS
    client_class = CodeshipClient
    requests_per_minute = REQUESTS_PER_MINUTE

    def parse(self, headers: Mapping[str, str], body: bytes, auth: HookAuth) -> BuildEvent | Ignored:
        authenticate(auth)
        return parse_codeship(body)

    def parse_unverified(self, headers: Mapping[str, str], body: bytes) -> BuildEvent | Ignored:
        return parse_codeship(body)

    def secrets(self, settings: Settings) -> list[Secret]:
        return [s for s in (settings.codeship_password, settings.codeship_api_key) if s]

    def event_keys(self, event: BuildEvent) -> list[LineageKey]:
        keys = build_and_ref_keys(event)
        if event.build_id is not None:
            # A v1 restart answers with the new build's id but no project: the id alone names it too.
            keys.insert(1, LineageKey.build(NAME, None, event.build_id))
        return keys

    def target_keys(
        self, action: str, params: Mapping[str, Any], downstream_id: str | None, event: BuildEvent
    ) -> list[LineageKey]:
        project = params.get("project")
        repo = repo_of(project) if project else ""
        if action == f"{NAME}.trigger_build":
            branch = _branch_of_ref(params.get("ref"))
            if branch:
                commit = params.get("commit")
                return [LineageKey.ref(NAME, repo, branch, str(commit) if commit else None)]
        elif action == f"{NAME}.restart_build":
            if event.branch and event.commit:
                return [LineageKey.ref(NAME, repo, event.branch, event.commit)]
        elif action == f"{NAME}.v1_restart_build" and downstream_id:
            return [LineageKey.build(NAME, None, downstream_id)]
        return []


PROVIDER = Codeship()
