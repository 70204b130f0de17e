"""Lineage (DESIGN §7): which chained action caused a build, so its event inherits the chain.

When an action succeeds, the worker registers the chain of the build it started under every key
the build's own webhook can later be recognised by: the id the provider returned (CircleCI
pipeline, rerun workflow, v1.1 build number, Codeship v1 build id) or the project, branch and
commit it will build. When that build reports back, intake looks the keys of the new event up,
most specific first, and the event carries the chain (and so its depth, for the loop guard).
CircleCI builds are recognised only by ids (pipeline, workflow, build number), never by branch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chainer.events import BuildEvent, ChainLink

PREFIX = "chainer:lineage:"
ID_TTL_MS = 7 * 86_400_000
# Codeship webhooks carry no id chainer could have been given, so a Codeship build is recognised by
# project, branch and commit (or, when the action named no commit, by project and branch alone for
# an hour: a build someone else starts there in that hour is taken as part of the chain too).
REF_TTL_MS = 3_600_000


def repo_of(project: Any) -> str:
    """``owner/repo`` from a slug (``gh/acme/api``, ``github/acme/api``) or a name (``acme/api``)."""
    parts = [p for p in str(project).split("/") if p]
    return "/".join(parts[-2:]).lower()


def event_keys(event: BuildEvent) -> list[str]:
    """The keys an incoming event may have been registered under, most specific first."""
    keys = []
    pipeline = event.raw.get("pipeline") if isinstance(event.raw, Mapping) else None
    if isinstance(pipeline, Mapping) and isinstance(pipeline.get("id"), str):
        keys.append(f"{PREFIX}pipeline:{pipeline['id']}")
    if event.workflow_id:
        keys.append(f"{PREFIX}workflow:{event.workflow_id}")
    repo = repo_of(event.project or event.project_slug or "")
    if event.build_id is not None:
        keys.append(f"{PREFIX}build:{event.provider}:{repo}:{event.build_id}")
        if event.provider == "codeship":
            keys.append(f"{PREFIX}build:codeship:-:{event.build_id}")
    ref = event.branch or event.tag
    if ref:
        if event.commit:
            keys.append(f"{PREFIX}ref:{event.provider}:{repo}:{ref}:{event.commit}")
        keys.append(f"{PREFIX}ref:{event.provider}:{repo}:{ref}:*")
    return keys


def _branch_of_ref(ref: Any) -> str | None:
    text = str(ref or "")
    for prefix in ("heads/", "tags/"):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text or None


def target_keys(
    action: str, params: Mapping[str, Any], downstream_id: str | None, event: BuildEvent
) -> list[tuple[str, int]]:
    """Keys (with their lifetimes) under which the build an action started will report back."""
    keys: list[tuple[str, int]] = []
    project = params.get("project")
    repo = repo_of(project) if project else ""
    if action == "circleci.trigger_pipeline":
        if downstream_id:
            keys.append((f"{PREFIX}pipeline:{downstream_id}", ID_TTL_MS))
    elif action == "circleci.rerun_workflow" and downstream_id:
        keys.append((f"{PREFIX}workflow:{downstream_id}", ID_TTL_MS))
    elif action in ("circleci.v1_trigger_build", "circleci.v1_retry_build"):
        if downstream_id:
            keys.append((f"{PREFIX}build:circleci:{repo}:{downstream_id}", ID_TTL_MS))
    elif action == "codeship.trigger_build":
        branch = _branch_of_ref(params.get("ref"))
        if branch:
            keys.append((f"{PREFIX}ref:codeship:{repo}:{branch}:{params.get('commit') or '*'}", REF_TTL_MS))
    elif action == "codeship.restart_build":
        if event.branch and event.commit:
            keys.append((f"{PREFIX}ref:codeship:{repo}:{event.branch}:{event.commit}", REF_TTL_MS))
    elif action == "codeship.v1_restart_build" and downstream_id:
        keys.append((f"{PREFIX}build:codeship:-:{downstream_id}", ID_TTL_MS))
    return keys


def child_chain(event: BuildEvent, rule: str, action_id: str) -> list[dict[str, str]]:
    """The chain a build started by ``action_id`` inherits: the cause's chain plus one link."""
    link = ChainLink(event.event_id, rule, event.project or event.project_slug or "", action_id)
    return [*(c.as_dict() for c in event.chain), link.as_dict()]
