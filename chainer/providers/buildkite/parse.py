"""Buildkite deliveries (shared/reference/more-providers.md §2.1-§2.4, §4.1-§4.4): signed webhooks of builds and jobs.

Pure and synchronous, with no I/O; the clock is passed in. Whatever bytes arrive, the functions here raise
only ``AuthenticationError`` (→ 401) or ``PayloadError`` (→ 400, naming the field or header).

Authentication, in this order, on the raw bytes and before any JSON is read:

1. ``X-Buildkite-Signature: timestamp=<unix>,signature=<hex>`` present: it alone decides (a plain token
   sent beside it changes nothing). HMAC-SHA256 keyed with the webhook token over ``<timestamp>.`` + body;
   the timestamp must be within ``SIGNATURE_TOLERANCE_S`` of now, either way.
2. Else ``X-Buildkite-Token``: accepted only when ``CHAINER_BUILDKITE_ALLOW_PLAIN_TOKEN=1``, so a hook
   set up to sign cannot be downgraded by someone who learned the token; compared in constant time.
3. Neither: refused.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets as tokens
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from chainer.errors import AuthenticationError, PayloadError
from chainer.events import BuildEvent, make_event_id
from chainer.providers.base import HookAuth, Ignored, canonical_status
from chainer.providers.buildkite.facts import (
    ALLOW_PLAIN_TOKEN_VARIABLE,
    EVENT_HEADER,
    GIT_COMMIT_KEY,
    NAME,
    SIGNATURE_HEADER,
    SIGNATURE_TOLERANCE_S,
    TOKEN_HEADER,
    WEBHOOK_TOKEN_VARIABLE,
)
from chainer.providers.payload import clip, decode_json_object, header, lookup, need_int, need_str, opt_str

# Raw Buildkite state (build ``state``, or ``job.state`` for job events) → canonical status (DESIGN §4,
# more-providers §4.2). A build with ``blocked: true`` has the raw status ``<state>/blocked``, which is not
# listed and so is ``other``: a blocked build waits for a person, it has not passed. Unlisted → ``other``.
STATUSES: Mapping[str, str] = {
    "passed": "success",
    "failed": "failed",
    "waiting_failed": "failed",
    "timed_out": "failed",  # job state
    "expired": "error",  # job state: no agent took the job in time
    "canceled": "canceled",
    "creating": "running",
    "scheduled": "running",
    "running": "running",
    "failing": "running",
    "canceling": "running",
    "waiting": "running",
    "blocked": "other",
    "skipped": "other",
    "not_run": "other",
    "broken": "other",  # job state: it could not run (a dependency failed, say)
}

# The events chainer reads, with the timestamps that tell when each happened (first present wins).
BUILD_EVENTS: Mapping[str, tuple[str, ...]] = {
    "build.scheduled": ("scheduled_at", "created_at"),
    "build.running": ("started_at", "scheduled_at", "created_at"),
    "build.failing": ("failing_at", "started_at", "scheduled_at", "created_at"),
    "build.finished": ("finished_at", "started_at", "scheduled_at", "created_at"),
    "build.skipped": ("finished_at", "scheduled_at", "created_at"),
}
JOB_EVENTS: Mapping[str, tuple[str, ...]] = {"job.finished": ("finished_at", "started_at", "scheduled_at")}

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_WEBHOOK_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}) UTC")
_GIT_COMMIT_LINE = re.compile(r"commit ([0-9a-f]{40}|[0-9a-f]{64})\b")
# Where the organisation slug is in the URLs a payload carries (build events have no other field naming it),
# in the order they are read: the URL paths of the pipeline and the build, in the API and on the web.
_API_PATH = re.compile(r"/v2/organizations/([^/]+)/pipelines/([^/]+)(?:/builds/\d+)?/?")
_PROJECT_URLS = (
    ("pipeline.url", _API_PATH),
    ("build.url", _API_PATH),
    ("pipeline.web_url", re.compile(r"/([^/]+)/([^/]+)/?")),
    ("build.web_url", re.compile(r"/([^/]+)/([^/]+)/builds/\d+/?")),
)
_SLUG = re.compile(r"[^/\s]+")


def parse(headers: Mapping[str, str], body: bytes, auth: HookAuth, *, now: float) -> BuildEvent | Ignored:
    """``parse_buildkite`` with the webhook token and token-mode switch of ``auth.settings``."""
    settings = auth.settings
    token = settings.buildkite_webhook_token
    return parse_buildkite(
        headers,
        body,
        token=token.reveal() if token else None,
        allow_plain_token=settings.buildkite_allow_plain_token,
        now=now,
    )


def parse_unverified(headers: Mapping[str, str], body: bytes) -> BuildEvent | Ignored:
    """Parse ``body`` as Buildkite would deliver it, skipping authentication; raises PayloadError.

    The body is re-signed with a throw-away token at a fixed time, so it takes the signed path exactly.
    Without an ``X-Buildkite-Event`` header the body's ``event`` stands for it.
    """
    data = decode_json_object(body)
    plain = {k.lower(): v for k, v in headers.items() if k.lower() not in (SIGNATURE_HEADER, TOKEN_HEADER)}
    if EVENT_HEADER not in plain and isinstance(data.get("event"), str):
        plain[EVENT_HEADER] = data["event"]
    secret, stamp = tokens.token_hex(16), 1_700_000_000
    plain[SIGNATURE_HEADER] = f"timestamp={stamp},signature={sign(secret, stamp, body)}"
    return parse_buildkite(plain, body, token=secret, allow_plain_token=False, now=stamp)


def sign(token: str, timestamp: int | str, body: bytes) -> str:
    """The hex HMAC-SHA256 Buildkite sends: keyed with the webhook token, over ``<timestamp>.`` + the raw body."""
    message = f"{timestamp}.".encode("ascii") + body
    return hmac.new(token.encode("utf-8", "surrogateescape"), message, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, value: str, token: str | None, *, now: float) -> None:
    """Raise AuthenticationError unless ``value`` (the X-Buildkite-Signature header) signs ``body`` now.

    The header is ``timestamp=<unix seconds>,signature=<64 hex>``, each key exactly once (order free,
    blanks around parts ignored). Messages never include the token or the expected signature.
    """
    if not token:
        raise AuthenticationError(f"the Buildkite webhook token is not configured ({WEBHOOK_TOKEN_VARIABLE})")
    parts: dict[str, str] = {}
    for part in value.split(","):
        key, sep, item = part.strip().partition("=")
        key = key.strip().lower()
        if not sep or key in parts:
            raise AuthenticationError(_MALFORMED)
        parts[key] = item.strip()
    stamp, digest = parts.get("timestamp"), parts.get("signature")
    if stamp is None or digest is None or len(parts) != 2:
        raise AuthenticationError(_MALFORMED)
    if not _TIMESTAMP.fullmatch(stamp):
        raise AuthenticationError("X-Buildkite-Signature is malformed: timestamp must be unix seconds")
    if not _HEX_DIGEST.fullmatch(digest):
        raise AuthenticationError("X-Buildkite-Signature is malformed: signature must be 64 hex digits (HMAC-SHA256)")
    skew = now - int(stamp)
    if abs(skew) > SIGNATURE_TOLERANCE_S:
        when = "old" if skew > 0 else "in the future"
        raise AuthenticationError(
            f"X-Buildkite-Signature timestamp is {abs(skew):.0f} s {when} (more than {SIGNATURE_TOLERANCE_S} s): "
            "a replayed delivery or a wrong clock"
        )
    expected = sign(token, stamp, body).encode("ascii")
    if not hmac.compare_digest(expected, digest.lower().encode("ascii")):
        raise AuthenticationError("X-Buildkite-Signature does not match the configured webhook token")


_MALFORMED = "X-Buildkite-Signature is malformed: expected timestamp=<unix seconds>,signature=<hex>"


def authenticate(
    headers: Mapping[str, str], body: bytes, *, token: str | None, allow_plain_token: bool, now: float
) -> None:
    """The checks of the module docstring, in that order; AuthenticationError when the delivery is not authentic."""
    signature = header(headers, SIGNATURE_HEADER)
    if signature is not None:
        verify_signature(body, signature, token, now=now)
        return
    plain = header(headers, TOKEN_HEADER)
    if plain is None:
        raise AuthenticationError("missing X-Buildkite-Signature header (set the webhook to send a signature)")
    if not allow_plain_token:
        raise AuthenticationError(
            "X-Buildkite-Token (plain token mode) is refused: set the webhook to send X-Buildkite-Signature, "
            f"or allow plain tokens with {ALLOW_PLAIN_TOKEN_VARIABLE}=1"
        )
    if not token:
        raise AuthenticationError(f"the Buildkite webhook token is not configured ({WEBHOOK_TOKEN_VARIABLE})")
    if not hmac.compare_digest(plain.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")):
        raise AuthenticationError("X-Buildkite-Token does not match the configured webhook token")


def parse_buildkite(
    headers: Mapping[str, str], body: bytes, *, token: str | None, allow_plain_token: bool, now: float
) -> BuildEvent | Ignored:
    """Authenticate and parse one Buildkite delivery (``now``: unix seconds, for the signature's timestamp).

    Raises AuthenticationError (never naming the token) or PayloadError naming the field or header.
    """
    authenticate(headers, body, token=token, allow_plain_token=allow_plain_token, now=now)
    data = decode_json_object(body)
    named = header(headers, EVENT_HEADER)
    if named is None:
        raise PayloadError("missing header X-Buildkite-Event")
    sent = opt_str(data, "event")
    # Payloads from before Buildkite added ``event`` to the body have only the header; a body that names
    # another event than its header is refused, so neither can be swapped for the other.
    if sent is not None and sent != named:
        raise PayloadError(f"X-Buildkite-Event {clip(named)!r} does not match the body's event {clip(sent)!r}")
    if named == "ping":
        return Ignored("Buildkite ping event", "ping")
    if named in BUILD_EVENTS:
        return _parse_event(data, named, job=False)
    if named in JOB_EVENTS:
        return _parse_event(data, named, job=True)
    shown = clip(named)
    return Ignored(f"Buildkite event {shown!r} is not one chainer reads (build.*, job.finished)", shown)


def _parse_event(data: dict[str, Any], event: str, *, job: bool) -> BuildEvent:
    build_id = need_str(data, "build.id")
    number = need_int(data, "build.number")
    state = need_str(data, "build.state")
    blocked = lookup(data, "build.blocked")
    if blocked is not None and not isinstance(blocked, bool):
        raise PayloadError("build.blocked: expected true or false")
    org, slug = _organisation_and_pipeline(data)
    if job:
        job_id, raw_status = need_str(data, "job.id"), need_str(data, "job.state")
        key = f"buildkite:{job_id}:{event}:{raw_status}"
        times, stamps = "job", JOB_EVENTS[event]
    else:
        raw_status = f"{state}/blocked" if blocked and state != "blocked" else state
        key = f"buildkite:{build_id}:{event}:{state}:{'true' if blocked else 'false'}"
        times, stamps = "build", BUILD_EVENTS[event]
    return BuildEvent(
        provider=NAME,
        kind="job" if job else "build",
        event_id=make_event_id(NAME, key),
        project=f"{org}/{slug}",
        status=canonical_status(STATUSES, raw_status),
        raw_status=raw_status,
        project_id=opt_str(data, "pipeline.id"),
        branch=opt_str(data, "build.branch"),
        tag=opt_str(data, "build.tag"),
        commit=_commit(data),
        build_id=number,
        build_url=opt_str(data, "build.web_url"),
        workflow=opt_str(data, "pipeline.name"),
        workflow_id=opt_str(data, "pipeline.id"),
        job=(opt_str(data, "job.step_key") or opt_str(data, "job.name")) if job else None,
        occurred_at=_occurred_at(data, times, stamps),
        dedupe_keys=(key,),
        raw=_without_agent_token(data),
    )


def _organisation_and_pipeline(data: dict[str, Any]) -> tuple[str, str]:
    """``(org, pipeline slug)``: the organisation only appears inside URLs (more-providers §2.3)."""
    for path, pattern in _PROJECT_URLS:
        url = opt_str(data, path)
        if url is None:
            continue
        try:
            found = pattern.fullmatch(urlsplit(url).path)
        except ValueError:  # e.g. an unbalanced "[" in the netloc
            found = None
        if found is None:
            raise PayloadError(f"{path}: {clip(url)!r} does not name an organisation and pipeline")
        slug = opt_str(data, "pipeline.slug") or found.group(2)
        if not _SLUG.fullmatch(slug):
            raise PayloadError(f"pipeline.slug: {clip(slug)!r} is not a pipeline slug")
        return found.group(1), slug
    raise PayloadError("missing field pipeline.url (or build.url, build.web_url): no organisation to name the project")


def _commit(data: dict[str, Any]) -> str | None:
    """``build.commit`` when it is a SHA; else (``HEAD``, a branch name) the SHA the agent checked out, if known."""
    commit = opt_str(data, "build.commit")
    if commit is not None and _SHA.fullmatch(commit.lower()):
        return commit.lower()
    meta = lookup(data, "build.meta_data")
    if meta is not None and not isinstance(meta, dict):
        raise PayloadError("build.meta_data: expected an object")
    resolved = meta.get(GIT_COMMIT_KEY) if meta else None
    found = _GIT_COMMIT_LINE.match(resolved.strip().lower()) if isinstance(resolved, str) else None
    return found.group(1) if found else None


def _occurred_at(data: dict[str, Any], owner: str, fields: tuple[str, ...]) -> str | None:
    """The first of ``fields`` present, in ISO 8601 (webhooks write ``2016-03-20 09:46:52 UTC``, the API ISO)."""
    for name in fields:
        path = f"{owner}.{name}"
        value = opt_str(data, path)
        if value is not None:
            return iso_timestamp(value, path)
    return None


def iso_timestamp(value: str, path: str) -> str:
    """``value`` in ISO 8601 (UTC, ``Z``); PayloadError naming ``path`` when it is in neither Buildkite format."""
    webhook = _WEBHOOK_TIME.fullmatch(value.strip())
    if webhook is not None:
        return f"{webhook.group(1)}T{webhook.group(2)}Z"
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise PayloadError(
            f"{path}: {clip(value)!r} is not a timestamp (expected 'YYYY-MM-DD HH:MM:SS UTC' or ISO 8601 with a zone)"
        )
    try:
        utc = when.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is in year 10000 in UTC
        raise PayloadError(
            f"{path}: {clip(value)!r} is out of the range of timestamps (years 1 to 9999 in UTC)"
        ) from None
    return utc.isoformat(timespec="milliseconds" if when.microsecond else "seconds").replace("+00:00", "Z")


def _without_agent_token(data: dict[str, Any]) -> dict[str, Any]:
    """The payload as kept for the audit view, minus the agent access token old job payloads carry."""
    agent = lookup(data, "job.agent")
    if not isinstance(agent, dict) or "access_token" not in agent:
        return data
    job = {**data["job"], "agent": {k: v for k, v in agent.items() if k != "access_token"}}
    return {**data, "job": job}
