"""The provider registry: the one place the rest of chainer learns which CI providers exist.

Each provider is a module (or subpackage) under ``chainer/providers/`` that subclasses
``chainer.providers.base.Provider``, registered here with one line. Intake, explain, the web hooks,
the rules catalogue, lineage and the worker's ``Downstream`` all ask this module; none of them names
a provider. A name that is not registered is refused (``UnknownProviderError``), never taken for
another provider.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import httpx

from chainer.catalogue import Catalogue
from chainer.errors import PermanentDownstreamError, UnknownProviderError
from chainer.events import BuildEvent
from chainer.providers import buildkite, circleci, codeship, github
from chainer.providers.base import Client, Provider
from chainer.providers.http import BeforeEffect, CallResult, Scrubber, Throttle
from chainer.settings import Secret, Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

_REGISTRY: dict[str, Provider] = {}

# Every registered provider by name, in registration order (read-only; change it with register/unregister).
PROVIDERS: Mapping[str, Provider] = MappingProxyType(_REGISTRY)


def register(provider: Provider) -> Provider:
    """Add ``provider`` to the registry; ValueError when its name is taken or is not a plain lower-case word."""
    name = provider.name
    if not (name.isascii() and name.isidentifier() and name.islower()):
        raise ValueError(f"provider name {name!r} must be a lower-case identifier (it is a URL segment and a prefix)")
    if name in _REGISTRY:
        raise ValueError(f"provider {name!r} is already registered")
    _REGISTRY[name] = provider
    catalogue.cache_clear()
    return provider


def unregister(name: str) -> Provider:
    """Remove the provider called ``name`` and return it (tests that register a provider restore the registry)."""
    provider = get(name)
    del _REGISTRY[name]
    catalogue.cache_clear()
    return provider


def get(name: str) -> Provider:
    """The provider called ``name``; UnknownProviderError when none is."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownProviderError(name, names()) from None


def names() -> tuple[str, ...]:
    """The registered providers' names, in registration order."""
    return tuple(_REGISTRY)


def of_action(action: str) -> Provider:
    """The provider of an action name (``<provider>.<verb>``); UnknownProviderError when none is."""
    return get(action.partition(".")[0])


@functools.cache
def catalogue() -> Catalogue:
    """What the rules loader, lint, the schema and explain know about the registered providers, as data."""
    registered = tuple(_REGISTRY.values())
    examples = [p.example_action for p in registered if p.example_action]
    actions = {spec.name: spec for p in registered for spec in p.actions}
    return Catalogue(
        providers=names(),
        kinds=MappingProxyType({p.name: p.kinds for p in registered}),
        actions=MappingProxyType(actions),
        events=MappingProxyType({p.name: p.facts() for p in registered}),
        example_action=examples[0] if examples else f"- {next(iter(actions), '<provider>.<action>')}: {{}}",
    )


def secrets(settings: Settings) -> list[Secret]:
    """Every secret the registered providers are configured with (for scrubbers and the access log)."""
    return [secret for provider in _REGISTRY.values() for secret in provider.secrets(settings)]


class Downstream:
    """Executes actions against the registered providers' APIs: one client per provider, built once.

    One instance per process (clients cache tokens and lookups). ``clock`` (unix seconds) drives token
    expiry and retry-after arithmetic, so tests can move time. ``redis`` carries each provider's own
    outbound limits across workers (none without it); ``throttles`` replaces a provider's limit by name.
    """

    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        *,
        redis: Redis | None = None,
        clock: Callable[[], float] = time.time,
        throttles: Mapping[str, Throttle] | None = None,
    ) -> None:
        providers = tuple(_REGISTRY.values())
        scrub = Scrubber(s.reveal() for s in secrets(settings))
        chosen = throttles or {}
        self.clients: Mapping[str, Client] = MappingProxyType(
            {
                p.name: p.client(settings, http, scrub=scrub, clock=clock, redis=redis, throttle=chosen.get(p.name))
                for p in providers
            }
        )
        self._actions = frozenset(spec.name for p in providers for spec in p.actions)

    @property
    def actions(self) -> frozenset[str]:
        """The action names this object can execute."""
        return self._actions

    async def execute(
        self,
        action: str,
        params: Mapping[str, Any],
        event: BuildEvent,
        *,
        before_effect: BeforeEffect | None = None,
    ) -> CallResult:
        """Run ``action`` with its rendered ``params`` for ``event``, on its provider's client.

        ``before_effect`` is awaited right before each request that can take effect (not before
        look-ups or authentication); if it raises, that request is not sent and the error propagates.
        Raises TransientDownstreamError (retry later), AmbiguousDownstreamError (may have taken
        effect) or PermanentDownstreamError (bad arguments, missing credentials, refused by the API,
        unknown action), each carrying ``provider`` and ``action``.
        """
        provider = action.partition(".")[0]
        client = self.clients.get(provider)
        if client is None or action not in self._actions:
            raise PermanentDownstreamError(
                f"unknown action {action!r}", provider=provider if client else None, action=action
            )
        return await client.execute(action, params, event, before_effect=before_effect)


register(codeship.PROVIDER)
register(circleci.PROVIDER)
register(github.PROVIDER)
register(buildkite.PROVIDER)
