"""What a CI provider is to chainer: the base every provider module builds on (DESIGN §3-§7).

The model is httpx's ``_transports/base.py``: each provider (``chainer.providers.codeship``,
``chainer.providers.circleci``) imports this module and subclasses ``Provider``; the registry in
``chainer.providers`` lists them; the rest of chainer asks the registry and never imports a
provider. ``chainer.rules`` receives a ``Catalogue`` as data; its plain types (``Param``,
``ActionSpec``, ``EventFacts``, ``Catalogue``) live in ``chainer.catalogue``. A provider supplies:

- ``name`` (the ``/hooks/<name>`` path, the action prefix, ``event.provider``), ``title``, its
  ``statuses`` (raw → canonical, DESIGN §4), the ``kinds`` of event it emits and what rules need to
  know about them (``event_fields``, ``no_project``);
- ``hook``: what its webhook endpoint accepts (may the hook token travel in the URL?);
- ``parse(headers, body, auth)``: pure and synchronous, authenticates the raw bytes and returns a
  ``BuildEvent`` (dedupe keys included) or ``Ignored``; ``parse_unverified`` does the same without
  authentication, for explain;
- ``actions``: its action catalogue (``ActionSpec``: arguments, defaults from the event, limits);
- ``client(settings, http, ...)``: what executes those actions, with its start-up ``check`` and
  its own outbound limits;
- ``secrets(settings)``: every secret value it is configured with, for the scrubbers;
- ``event_keys`` / ``target_keys``: the lineage keys by which its builds are recognised when they
  report back (``chainer.lineage`` turns them into Redis keys).
"""

from __future__ import annotations

import abc
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import httpx

from chainer.catalogue import ActionSpec, EventFacts
from chainer.errors import DownstreamError, PermanentDownstreamError
from chainer.events import STATUSES, BuildEvent
from chainer.limits import RateLimiter
from chainer.providers.http import BeforeEffect, CallResult, Scrubber, Throttle, before_effects
from chainer.settings import Secret, Settings
from chainer.store import keys

if TYPE_CHECKING:
    from redis.asyncio import Redis


# -- deliveries, lineage and clients ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ignored:
    """A delivery that is authentic and well-formed but carries nothing to act on (e.g. ping, unknown event type)."""

    reason: str
    event_type: str | None


@dataclass(frozen=True, slots=True)
class Hook:
    """What a provider's webhook endpoint accepts.

    ``token``: deliveries may carry chainer's hook token (``CHAINER_HOOK_TOKEN``) in the URL, as
    ``/hooks/<name>/<token>`` or ``?token=``, for providers that cannot sign (or legacy payloads).
    ``content_types``: media types the endpoint accepts besides JSON (``application/json`` and
    ``application/*+json`` always pass), for providers that can deliver other bodies, such as GitHub's
    form-encoded hooks (``application/x-www-form-urlencoded``); the provider's ``parse`` reads them.
    """

    token: bool = True
    content_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HookAuth:
    """What a delivery came with (the hook token from its URL) and the settings to check it against.

    Each provider reads its own verification material from ``settings`` (signing secrets, say).
    """

    settings: Settings
    token: str | None = field(default=None, repr=False)

    @property
    def token_configured(self) -> bool:
        return self.settings.hook_token is not None

    def token_valid(self) -> bool:
        """Whether the delivery carried the configured hook token (compared in constant time)."""
        expected = self.settings.hook_token
        if expected is None or not self.token:
            return False
        return hmac.compare_digest(self.token.encode(), expected.reveal().encode())


@dataclass(frozen=True, slots=True)
class LineageKey:
    """One way a build can be recognised when it reports back (DESIGN §7); build it with the class methods.

    By an id the provider returned (``pipeline``, ``workflow``, ``build`` number), or by the ``ref`` the
    build is of: an educated guess for providers whose webhooks carry no such id, so ``chainer.lineage``
    keeps those for an hour and ids for a week. ``repo`` None: the number names the build without it;
    ``commit`` None: any commit of the ref.
    """

    kind: str
    value: str
    provider: str = ""
    repo: str | None = None
    commit: str | None = None

    @classmethod
    def pipeline(cls, pipeline_id: str) -> LineageKey:
        return cls("pipeline", pipeline_id)

    @classmethod
    def workflow(cls, workflow_id: str) -> LineageKey:
        return cls("workflow", workflow_id)

    @classmethod
    def build(cls, provider: str, repo: str | None, number: object) -> LineageKey:
        return cls("build", str(number), provider, repo)

    @classmethod
    def ref(cls, provider: str, repo: str, ref: str, commit: str | None = None) -> LineageKey:
        return cls("ref", ref, provider, repo, commit)


def same_provider(provider: str, getter: Callable[[BuildEvent], Any]) -> Callable[[BuildEvent], Any]:
    """A default that only applies when the event came from ``provider`` (ids mean nothing elsewhere)."""

    def default(event: BuildEvent) -> Any:
        return getter(event) if event.provider == provider else None

    return default


def probe_event(provider: str, kind: str) -> BuildEvent:
    """A fully populated event of ``provider``, to learn whether an argument's default can apply to its events."""
    return BuildEvent(
        provider=provider,
        kind=kind,
        event_id="evt_probe",
        project="org/repo",
        status="success",
        raw_status="success",
        project_id=1,
        project_slug="github/org/repo",
        branch="main",
        commit="0" * 40,
        build_id=1,
        build_url="https://ci.example.org/1",
        workflow="w",
        workflow_id="wf",
        job="j",
        pipeline_number=1,
    )


def canonical_status(table: Mapping[str, str], raw_status: str) -> str:
    """The canonical status (``chainer.events.STATUSES``) ``table`` gives a raw one; unknown values are ``other``."""
    status = table.get(raw_status, "other")
    return status if status in STATUSES else "other"


def repo_of(project: Any) -> str:
    """``owner/repo`` from a slug (``gh/acme/api``, ``github/acme/api``) or a name (``acme/api``)."""
    parts = [p for p in str(project).split("/") if p]
    return "/".join(parts[-2:]).lower()


def build_and_ref_keys(event: BuildEvent) -> list[LineageKey]:
    """The keys any provider's event may be known by: its build number, then its ref (with, then without commit)."""
    keys = []
    repo = repo_of(event.project or event.project_slug or "")
    if event.build_id is not None:
        keys.append(LineageKey.build(event.provider, repo, event.build_id))
    ref = event.branch or event.tag
    if ref:
        if event.commit:
            keys.append(LineageKey.ref(event.provider, repo, ref, event.commit))
        keys.append(LineageKey.ref(event.provider, repo, ref))
    return keys


class Client(Protocol):
    """What executes one provider's actions; built once per process by ``Provider.client``."""

    async def execute(
        self,
        action: str,
        params: Mapping[str, Any],
        event: BuildEvent,
        *,
        before_effect: BeforeEffect | None = None,
    ) -> CallResult:
        """Run ``action`` with its rendered ``params`` for ``event``.

        ``before_effect`` is awaited right before each request that can take effect (not before
        look-ups or authentication); if it raises, that request is not sent and the error propagates.
        Raises a DownstreamError branch carrying ``provider`` and ``action``.
        """
        ...

    async def check(self) -> list[str]:
        """The start-up check: warnings to log. Raises DownstreamError when configured credentials are refused;
        a provider that is not configured passes quietly."""
        ...


ActionHandler = Callable[[Mapping[str, Any], BuildEvent], Awaitable[CallResult]]


async def dispatch(
    provider: str,
    handlers: Mapping[str, ActionHandler],
    action: str,
    params: Mapping[str, Any],
    event: BuildEvent,
    before_effect: BeforeEffect | None,
) -> CallResult:
    """``Client.execute`` for a client that keeps one handler per action: errors leave with their context."""
    handler = handlers.get(action)
    if handler is None:
        raise PermanentDownstreamError(f"unknown action {action!r}", provider=provider, action=action)
    try:
        with before_effects(before_effect):
            return await handler(params, event)
    except DownstreamError as exc:
        exc.about(provider, action)
        raise


class HandlerClient:
    """A ``Client`` that keeps one handler per action: subclasses set ``provider``, and in ``setup`` build their
    API objects over ``http`` and fill ``handlers``.

    The constructor is the ``ClientFactory`` ``Provider.client`` calls; it keeps ``settings``, ``clock`` and
    ``scrub`` as ``_settings``, ``_clock`` and ``_scrub`` before ``setup`` runs. ``execute`` dispatches by
    action name; ``check`` (the start-up check) finds nothing by default.
    """

    provider: ClassVar[str]

    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float],
        scrub: Scrubber,
        throttle: Throttle | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._scrub = scrub
        self.handlers: dict[str, ActionHandler] = {}
        self.setup(http, throttle)

    def setup(self, http: httpx.AsyncClient, throttle: Throttle | None) -> None:
        """Build the provider's API objects over ``http`` (``throttle``: its outbound limit) and fill ``handlers``."""

    async def execute(
        self,
        action: str,
        params: Mapping[str, Any],
        event: BuildEvent,
        *,
        before_effect: BeforeEffect | None = None,
    ) -> CallResult:
        """Run one of this provider's actions (``Client.execute``)."""
        return await dispatch(self.provider, self.handlers, action, params, event, before_effect)

    async def check(self) -> list[str]:
        """Nothing to check at start-up unless the provider says otherwise."""
        return []


class ClientFactory(Protocol):
    """How ``Provider.client`` builds a provider's client (the client class's constructor)."""

    def __call__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float],
        scrub: Scrubber,
        throttle: Throttle | None = None,
    ) -> Client: ...


class Provider(abc.ABC):
    """One CI provider (see the module docstring). Subclass it in ``chainer/providers/<name>``, register an instance.

    Class attributes: ``name``, ``title`` (how messages name it), ``statuses`` (raw → canonical),
    ``kinds`` (of event it emits, the first one its usual), ``actions``, ``hook``; for the rules,
    ``event_fields`` (event fields only this provider's events carry, each with a sentence for the
    schema), ``no_project`` (why its events may name no project) and ``example_action`` (a ``then``
    item for messages); for the API, ``client_class`` (built by ``client``) and ``requests_per_minute``
    (the account's outbound budget, shared by every worker through Redis; None when the provider's own
    rate-limit answers are the only waits).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    statuses: ClassVar[Mapping[str, str]]
    kinds: ClassVar[tuple[str, ...]]
    actions: ClassVar[tuple[ActionSpec, ...]]
    hook: ClassVar[Hook] = Hook()
    event_fields: ClassVar[Mapping[str, str]] = {}
    no_project: ClassVar[str] = ""
    example_action: ClassVar[str] = ""
    client_class: ClassVar[ClientFactory]
    requests_per_minute: ClassVar[int | None] = None

    def status(self, raw_status: str) -> str:
        """The canonical status (one of ``chainer.events.STATUSES``) of a raw one; unknown values are ``other``."""
        return canonical_status(self.statuses, raw_status)

    def facts(self) -> EventFacts:
        """What rules, lint and the schema know about this provider's events."""
        return EventFacts(self.title, probe_event(self.name, self.kinds[0]), self.event_fields, self.no_project)

    @abc.abstractmethod
    def parse(self, headers: Mapping[str, str], body: bytes, auth: HookAuth) -> BuildEvent | Ignored:
        """Authenticate and parse one delivery (pure, synchronous, no I/O).

        Raises AuthenticationError (never naming a secret or token) or PayloadError naming the field.
        """

    @abc.abstractmethod
    def parse_unverified(self, headers: Mapping[str, str], body: bytes) -> BuildEvent | Ignored:
        """Parse a delivery as ``parse`` would, without authenticating it (explain's what-if). Raises PayloadError."""

    def client(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        *,
        scrub: Scrubber,
        clock: Callable[[], float],
        redis: Redis | None = None,
        throttle: Throttle | None = None,
    ) -> Client:
        """The client of this provider's API over the shared ``http``: a ``client_class``.

        ``redis`` (when given) carries the provider's own outbound limit (``requests_per_minute``) across
        workers; ``throttle`` replaces it (tests). ``scrub`` removes every secret from messages and records.
        """
        if throttle is None and redis is not None and self.requests_per_minute:
            limit = self.requests_per_minute
            throttle = RateLimiter(redis, keys.rate(self.name), limit=limit, window_s=60, label=self.title)
        return self.client_class(settings, http, clock=clock, scrub=scrub, throttle=throttle)

    @abc.abstractmethod
    def secrets(self, settings: Settings) -> list[Secret]:
        """Every secret this provider is configured with (signing secrets, API tokens, passwords)."""

    @abc.abstractmethod
    def event_keys(self, event: BuildEvent) -> list[LineageKey]:
        """The keys an incoming event of this provider may have been registered under, most specific first."""

    @abc.abstractmethod
    def target_keys(
        self, action: str, params: Mapping[str, Any], downstream_id: str | None, event: BuildEvent
    ) -> list[LineageKey]:
        """The keys under which the build that ``action`` started will report back."""
