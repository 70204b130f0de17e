"""Lineage (DESIGN §7): which chained action caused a build, so its event inherits the chain.

When an action succeeds, the worker registers the chain of the build it started under every key
the build's own webhook can later be recognised by. When that build reports back, intake looks the
keys of the new event up, most specific first, and the event carries the chain (and so its depth,
for the loop guard). Which keys those are is each provider's knowledge (``Provider.event_keys`` and
``Provider.target_keys``: an id the provider returned, or the project, branch and commit it will
build); this module asks the registry, names the Redis keys and says how long each lives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chainer import providers
from chainer.events import BuildEvent, ChainLink
from chainer.providers.base import LineageKey
from chainer.store import keys


def key(mark: LineageKey) -> str:
    """The Redis key of a lineage key."""
    if mark.kind == "pipeline":
        return keys.lineage_pipeline(mark.value)
    if mark.kind == "workflow":
        return keys.lineage_workflow(mark.value)
    if mark.kind == "build":
        return keys.lineage_build(mark.provider, keys.LINEAGE_ANY_REPO if mark.repo is None else mark.repo, mark.value)
    return keys.lineage_ref(mark.provider, mark.repo or "", mark.value, mark.commit)


def lifetime_ms(mark: LineageKey) -> int:
    """How long a registered key waits for its build: an id for a week, a guess by ref for an hour."""
    return keys.LINEAGE_REF_TTL_MS if mark.kind == "ref" else keys.LINEAGE_ID_TTL_MS


def event_keys(event: BuildEvent) -> list[str]:
    """The keys an incoming event may have been registered under, most specific first."""
    return [key(mark) for mark in providers.get(event.provider).event_keys(event)]


def target_keys(
    action: str, params: Mapping[str, Any], downstream_id: str | None, event: BuildEvent
) -> list[tuple[str, int]]:
    """Keys (with their lifetimes) under which the build an action started will report back."""
    marks = providers.of_action(action).target_keys(action, params, downstream_id, event)
    return [(key(mark), lifetime_ms(mark)) for mark in marks]


def child_chain(event: BuildEvent, rule: str, action_id: str) -> list[dict[str, str]]:
    """The chain a build started by ``action_id`` inherits: the cause's chain plus one link."""
    link = ChainLink(event.event_id, rule, event.project or event.project_slug or "", action_id)
    return [*(c.as_dict() for c in event.chain), link.as_dict()]
