"""GitHub Actions (DESIGN §10, shared/reference/more-providers.md §1, §4): signed webhooks in, REST calls out.

``parse`` reads deliveries (``workflow_run``, ``workflow_job``, ``ping``; JSON or form-encoded), ``actions``
are what rules may name, ``client`` calls the REST API (``auth`` mints GitHub App installation tokens),
``facts`` holds what several of them share, and ``PROVIDER`` is what the registry lists.

A run is recognised when it reports back by its run id: the id a workflow dispatch answered with
(``return_run_details``), or the run a re-run started again (a new attempt keeps the id). A dispatch answered
without details (GitHub Enterprise Server's 204) leaves only a guess by repository and ref, kept an hour.
A ``repository_dispatch`` starts runs GitHub does not name, so they start chains of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chainer.events import BuildEvent
from chainer.providers.base import Hook, HookAuth, Ignored, LineageKey, Provider, build_and_ref_keys, repo_of
from chainer.providers.github import parse
from chainer.providers.github.actions import ACTIONS
from chainer.providers.github.client import GitHubClient
from chainer.providers.github.facts import FORM_TYPE, NAME, TITLE
from chainer.settings import Secret, Settings


class GitHub(Provider):
    """GitHub Actions on github.com, GitHub Enterprise Cloud and Server."""

    name = NAME
    title = TITLE
    statuses = parse.STATUSES
    kinds = ("workflow", "job")
    actions = ACTIONS
    # No requests_per_minute: GitHub's own answers say when to wait (rate limits are deferred retries).
    client_class = GitHubClient
    # GitHub signs every delivery (no hook token in the URL) and can send form-encoded bodies.
    hook = Hook(token=False, content_types=(FORM_TYPE,))
    example_action = f"- {NAME}.dispatch_workflow: {{repo: acme/api, workflow: deploy.yml}}"

    def parse(self, headers: Mapping[str, str], body: bytes, auth: HookAuth) -> BuildEvent | Ignored:
        return parse.parse(headers, body, auth)

    def parse_unverified(self, headers: Mapping[str, str], body: bytes) -> BuildEvent | Ignored:
        return parse.parse_unverified(headers, body)

    def secrets(self, settings: Settings) -> list[Secret]:
        return [
            s for s in (*settings.github_webhook_secrets, settings.github_token, settings.github_app_private_key) if s
        ]

    def event_keys(self, event: BuildEvent) -> list[LineageKey]:
        # The run id first (build_and_ref_keys: the build key of the repository, then its ref).
        return build_and_ref_keys(event)

    def target_keys(
        self, action: str, params: Mapping[str, Any], downstream_id: str | None, event: BuildEvent
    ) -> list[LineageKey]:
        repo = params.get("repo")
        if not repo:
            return []
        if action == f"{NAME}.dispatch_workflow":
            if downstream_id:
                return [LineageKey.build(NAME, repo_of(repo), downstream_id)]
            ref = str(params.get("ref") or "").removeprefix("refs/heads/").removeprefix("refs/tags/")
            return [LineageKey.ref(NAME, repo_of(repo), ref)] if ref else []
        if action == f"{NAME}.rerun_workflow_run" and downstream_id:
            return [LineageKey.build(NAME, repo_of(repo), downstream_id)]
        return []


PROVIDER = GitHub()
