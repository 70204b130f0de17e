"""Audit record builders (DESIGN §8): one function per record type, so every writer says the same thing.

Records are JSON-safe dicts; the store adds the stream id and time. No secrets and no request
bodies: the raw payload is kept once, on the event, not in the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chainer.errors import DownstreamError
from chainer.events import BuildEvent

RECORD_TYPES = (
    "webhook.received",
    "webhook.rejected",
    "webhook.duplicate",
    "webhook.ignored",
    "rule.matched",
    "rule.not_matched",
    "join.progress",
    "join.fired",
    "action.queued",
    "attempt.started",
    "attempt.succeeded",
    "attempt.failed",
    "action.retry_scheduled",
    "action.dead",
    "action.replayed",
    "action.discarded",
    "action.skipped",
    "rules.reloaded",
    "rules.refused",
    "record.unreadable",  # not written: how a reader shows a stored record that cannot be read back (store.codec)
)


def event_context(event: BuildEvent, rules_version: str) -> dict[str, Any]:
    """The fields every record about ``event`` carries, so the log can be filtered by them."""
    return {
        "event_id": event.event_id,
        "provider": event.provider,
        "project": event.project,
        "branch": event.branch,
        "commit": event.commit,
        "rules_version": rules_version,
    }


def webhook_received(event: BuildEvent, rules_version: str, delivery: str) -> dict[str, Any]:
    return {
        "type": "webhook.received",
        **event_context(event, rules_version),
        "kind": event.kind,
        "tag": event.tag,
        "status": event.status,
        "raw_status": event.raw_status,
        "build_id": event.build_id,
        "workflow": event.workflow,
        "job": event.job,
        "delivery": delivery,
    }


def webhook_duplicate(event: BuildEvent, rules_version: str, delivery: str) -> dict[str, Any]:
    return {
        "type": "webhook.duplicate",
        **event_context(event, rules_version),
        "delivery": delivery,
        "delivery_event_id": event.event_id,
    }


def webhook_ignored(provider: str, reason: str, rules_version: str, event: BuildEvent | None) -> dict[str, Any]:
    base = event_context(event, rules_version) if event else {"provider": provider, "rules_version": rules_version}
    return {"type": "webhook.ignored", **base, "status": event.status if event else None, "reason": reason}


def webhook_rejected(provider: str, status: int, cause: str, remote: str | None) -> dict[str, Any]:
    return {"type": "webhook.rejected", "provider": provider, "http_status": status, "reason": cause, "remote": remote}


def rule_matched(event: BuildEvent, rules_version: str, rule: str, actions: int) -> dict[str, Any]:
    return {"type": "rule.matched", **event_context(event, rules_version), "rule": rule, "actions": actions}


def rule_not_matched(
    event: BuildEvent, rules_version: str, rule: str, field: str, expected: Any, actual: Any, text: str
) -> dict[str, Any]:
    return {
        "type": "rule.not_matched",
        **event_context(event, rules_version),
        "rule": rule,
        "field": field,
        "expected": expected,
        "actual": actual,
        "reason": text,
    }


def action_queued(context: Mapping[str, Any], job: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "action.queued", **context, "job_id": job, "params": dict(params)}


def action_skipped(context: Mapping[str, Any], reason: str, **extra: Any) -> dict[str, Any]:
    return {"type": "action.skipped", **context, "reason": reason, **extra}


def attempt_started(context: Mapping[str, Any], attempt: int) -> dict[str, Any]:
    return {"type": "attempt.started", **context, "attempt": attempt}


def attempt_succeeded(
    context: Mapping[str, Any], attempt: int, status: int, downstream_id: str | None, detail: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "type": "attempt.succeeded",
        **context,
        "attempt": attempt,
        "outcome": "success",
        "http_status": status,
        "downstream_id": downstream_id,
        "detail": dict(detail),
    }


def attempt_failed(context: Mapping[str, Any], attempt: int, exc: DownstreamError, outcome: str) -> dict[str, Any]:
    return {
        "type": "attempt.failed",
        **context,
        "attempt": attempt,
        "outcome": outcome,
        "http_status": exc.status,
        "error": exc.message[:512],
        "retry_after": exc.retry_after,
    }


def retry_scheduled(
    context: Mapping[str, Any], next_attempt: int, defer_s: float, reason: str | None = None
) -> dict[str, Any]:
    return {
        "type": "action.retry_scheduled",
        **context,
        "next_attempt": next_attempt,
        "defer_s": round(defer_s, 3),
        "reason": reason,
    }


def action_dead(context: Mapping[str, Any], reason: str, message: str, status: int | None) -> dict[str, Any]:
    return {
        "type": "action.dead",
        **context,
        "outcome": reason,
        "reason": reason,
        "error": message[:512],
        "http_status": status,
    }
