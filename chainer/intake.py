"""From delivery to durable decision: authenticate, parse, match, plan, accept (DESIGN §3).

This is the webhook pipeline without HTTP: ``Intake.receive`` takes the provider name, headers, raw
body and token and returns an ``Outcome`` (accepted, duplicate, ignored, rejected or unavailable) with
the fields of the answer. The web (``chainer.web.hooks``) adds only transport concerns (size cap,
content type, routing) and maps each outcome to its HTTP status, once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from chainer import audit, fastjson, lineage, providers
from chainer.errors import StoreUnavailableError, WebhookError
from chainer.events import BuildEvent, ChainLink
from chainer.plan import ignored_reason, plan_accept
from chainer.providers.base import HookAuth, Ignored
from chainer.rules import RuleSet
from chainer.settings import Settings
from chainer.store import Store, now_ms

log = logging.getLogger(__name__)

OutcomeKind = Literal["accepted", "duplicate", "ignored", "rejected", "unavailable"]
UNAVAILABLE = "Redis cannot durably take the event; retry later"
# Plans made per delivery at most: one without a chain, one with the chain found; more only when the lineage
# keys change between the two (a build registered at that very moment).
_LINEAGE_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one delivery, with the fields of the answer.

    ``accepted``: stored; ``matched`` rules queued ``queued`` actions. ``duplicate``: an earlier
    delivery of the same event was stored. ``ignored``: nothing to do, ``reason`` says why.
    ``rejected``: the delivery cannot be taken, ``problem`` says why (its class is the kind of
    problem). ``unavailable``: Redis could not durably take it; the sender should retry.
    """

    kind: OutcomeKind
    event_id: str | None = None
    matched: tuple[str, ...] = ()
    queued: int = 0
    reason: str | None = None
    problem: WebhookError | None = None

    def __post_init__(self) -> None:
        if (self.kind == "rejected") != (self.problem is not None):
            raise ValueError(f"a {self.kind} outcome {'needs' if self.kind == 'rejected' else 'has no'} problem")

    def body(self) -> dict[str, Any]:
        """The JSON answer, its keys in the order chainer has always sent them."""
        if self.kind == "accepted":
            matched = list(self.matched)
            return {"event_id": self.event_id, "status": "accepted", "matched": matched, "queued": self.queued}
        if self.kind == "duplicate":
            return {"status": "duplicate", "event_id": self.event_id}
        if self.kind == "rejected":
            return {"status": "rejected", "error": str(self.problem)}
        body: dict[str, Any] = (
            {"status": "ignored", "reason": self.reason}
            if self.kind == "ignored"
            else {"status": "unavailable", "error": UNAVAILABLE}
        )
        if self.event_id:
            body["event_id"] = self.event_id
        return body


class _RejectionSampler:
    """Lets at most ``burst`` rejection records per ``window`` seconds into the log, counting the rest.

    A flood of bad deliveries must not grow the audit stream without bound; the next record that
    gets through says how many were suppressed.
    """

    def __init__(self, burst: int = 50, window: float = 10.0) -> None:
        self.burst, self.window = burst, window
        self.started, self.count, self.suppressed = 0.0, 0, 0

    def admit(self) -> int | None:
        now = time.monotonic()
        if now - self.started > self.window:
            self.started, self.count = now, 0
        if self.count >= self.burst:
            self.suppressed += 1
            return None
        self.count += 1
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed


class Intake:
    """The webhook pipeline. ``rules`` returns the active rule set (it changes on reload)."""

    def __init__(self, settings: Settings, store: Store, rules: Callable[[], RuleSet]) -> None:
        self.settings = settings
        self.store = store
        self.rules = rules
        self._sampler = _RejectionSampler()

    async def receive(
        self, provider: str, headers: Mapping[str, str], body: bytes, token: str | None, remote: str | None = None
    ) -> Outcome:
        """Authenticate, parse, match and durably accept one delivery; never raises for bad input."""
        try:
            parsed = self._parse(provider, headers, body, token)
        except WebhookError as exc:
            return await self.reject(provider, exc, remote)
        ruleset = self.rules()
        if isinstance(parsed, Ignored):
            return await self._ignore(provider, parsed.reason, ruleset.version, None)
        # Which rules match does not depend on the chain (no clause reads it), so an event no rule asks for is
        # ignored without a lineage look-up; what the matching rules do (rendering, the loop guard) does.
        decisions = ruleset.evaluate(parsed)
        reason = ignored_reason(parsed, decisions)
        if reason is not None:
            return await self._ignore(provider, reason, ruleset.version, parsed)
        # Group commit: the lineage check rides in the accept script (one round trip, shared with every accept
        # waiting meanwhile). The plan assumes no chain; when a lineage key exists, the script writes nothing
        # and answers with the chain, and the event is planned again with it (rules see the chain first).
        lineage_keys = lineage.event_keys(parsed)
        event, found = parsed, ""
        try:
            for _ in range(_LINEAGE_ROUNDS):
                at = now_ms()
                plan = plan_accept(
                    event, decisions, ruleset.version, at, ruleset.limits, lineage_keys=lineage_keys, lineage=found
                )
                accepted = await self.store.accept(plan)
                if accepted.lineage is None:
                    break
                found = accepted.lineage
                event = self._with_lineage(parsed, found)
                decisions = ruleset.evaluate(event)
            else:
                raise StoreUnavailableError(f"the lineage of the event changed {_LINEAGE_ROUNDS} times; retry")
        except StoreUnavailableError as exc:
            log.error("accept_failed", extra={"event_id": parsed.event_id, "error": str(exc)})
            return Outcome("unavailable", event_id=parsed.event_id)
        if accepted.duplicate:
            return Outcome("duplicate", event_id=accepted.event_id)
        matched = [d.rule for d in decisions if d.matched]
        return Outcome("accepted", event_id=parsed.event_id, matched=tuple(matched), queued=accepted.queued)

    def _with_lineage(self, event: BuildEvent, found: str) -> BuildEvent:
        """The event with the chain ``found`` under its lineage keys (the chain of the action that started its
        build); the event as it is when nothing was found or the chain cannot be read."""
        if not found:
            return event
        try:
            links = tuple(ChainLink(**link) for link in fastjson.loads(found))
        except (ValueError, TypeError):
            log.warning("lineage_unreadable", extra={"event_id": event.event_id})
            return event
        return event.with_chain(links)

    def _parse(self, provider: str, headers: Mapping[str, str], body: bytes, token: str | None) -> BuildEvent | Ignored:
        """The registered provider's parse; UnknownProviderError (404) for a name nobody registered."""
        return providers.get(provider).parse(headers, body, HookAuth(self.settings, token))

    async def reject(self, provider: str, exc: WebhookError, remote: str | None) -> Outcome:
        """Refuse a bad delivery, naming the cause, and log the rejection (without the body)."""
        suppressed = self._sampler.admit()
        if suppressed is not None:
            record = audit.webhook_rejected(provider, exc.status, str(exc), remote)
            if suppressed:
                record["suppressed_before"] = suppressed
            try:
                await self.store.append_audit([record])
            except StoreUnavailableError as store_exc:
                log.warning("rejection_not_logged", extra={"error": str(store_exc)})
        return Outcome("rejected", problem=exc)

    async def _ignore(self, provider: str, reason: str, version: str, event: BuildEvent | None) -> Outcome:
        record = audit.webhook_ignored(provider, reason, version, event)
        event_id = event.event_id if event else None
        try:
            await self.store.append_audit([record], event_id=event_id)
        except StoreUnavailableError:
            return Outcome("unavailable", event_id=event_id)
        return Outcome("ignored", event_id=event_id, reason=reason)
