"""GitHub deliveries (more-providers.md §1.1-§1.5, §4.1-§4.4): ``workflow_run``, ``workflow_job`` and ``ping``.

Pure and synchronous, with no I/O. ``X-Hub-Signature-256`` is checked on the raw bytes against every
configured secret before anything is parsed; then the body is read as JSON, or as a form whose
``payload`` field holds the JSON (hooks set to content type ``form``). Whatever bytes arrive, the functions
here raise only ``AuthenticationError`` (→ 401) or ``PayloadError`` (→ 400, naming the field).

The status comes from ``status`` + ``conclusion``, never from ``action`` alone: a ``requested`` delivery can
arrive already finished with ``conclusion: action_required`` (more-providers §1.4). The dedupe keys are the
delivery (its GUID and hook id, so the audit log records both) and the run attempt's state, keyed on the
repository id: a redelivery, or the same run reaching chainer through an organisation hook and a repository
hook, is one event; a re-run attempt (``run_attempt`` + 1) is a new one; ``requested`` and ``completed`` with
the same conclusion are one (the §4.3 key, with the state the run is in instead of the ``action`` name).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

from chainer.errors import AuthenticationError, PayloadError
from chainer.events import BuildEvent, make_event_id
from chainer.providers.base import HookAuth, Ignored, canonical_status
from chainer.providers.github.facts import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    FORM_TYPE,
    HOOK_ID_HEADER,
    LEGACY_SIGNATURE_HEADER,
    NAME,
    SIGNATURE_HEADER,
    WEBHOOK_SECRETS_VARIABLE,
)
from chainer.providers.payload import (
    clip,
    decode_json_object,
    first_str,
    header,
    lookup,
    need_int,
    need_object,
    need_str,
    opt_int,
    opt_str,
)

# Raw GitHub state (``status``, or ``completed/<conclusion>``) → canonical status (more-providers §4.2).
# Anything not listed is "other": action_required, neutral, skipped, stale and conclusions GitHub adds later.
STATUSES: Mapping[str, str] = {
    "completed/success": "success",
    "completed/failure": "failed",
    "completed/timed_out": "failed",
    "completed/startup_failure": "error",
    "completed/cancelled": "canceled",
    "requested": "running",
    "queued": "running",
    "pending": "running",
    "waiting": "running",
    "in_progress": "running",
}

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_MAX_FORM_FIELDS = 100
_EVENTS = ("workflow_run", "workflow_job")


def parse(headers: Mapping[str, str], body: bytes, auth: HookAuth) -> BuildEvent | Ignored:
    """``parse_github`` with the webhook secrets of ``auth``."""
    return parse_github(headers, body, secrets=[s.reveal() for s in auth.settings.github_webhook_secrets])


def parse_unverified(headers: Mapping[str, str], body: bytes) -> BuildEvent | Ignored:
    """Parse ``body`` as GitHub would deliver it, skipping the signature (explain); raises PayloadError."""
    return _read(headers, body)


def verify_signature(body: bytes, signature: str | None, secrets: Sequence[str], *, legacy: bool = False) -> None:
    """Raise AuthenticationError unless ``signature`` is ``sha256=<hex>``, the HMAC-SHA256 of ``body`` under a secret.

    ``signature`` is the ``X-Hub-Signature-256`` value; ``legacy`` says an ``X-Hub-Signature`` (SHA-1) came
    instead, which is refused (no downgrade). Every configured secret is tried, so secrets can be rotated.
    Messages never include a secret.
    """
    keys = [secret for secret in secrets if secret]
    if not keys:
        raise AuthenticationError(f"GitHub webhook secrets are not configured ({WEBHOOK_SECRETS_VARIABLE})")
    if signature is None:
        if legacy:
            raise AuthenticationError(
                "only the SHA-1 X-Hub-Signature header came; chainer checks X-Hub-Signature-256 (HMAC-SHA256) only"
            )
        raise AuthenticationError("missing X-Hub-Signature-256 header (give the GitHub webhook a secret)")
    scheme, sep, digest = signature.strip().partition("=")
    if scheme != "sha256" or not sep or not _HEX_DIGEST.fullmatch(digest):
        raise AuthenticationError("X-Hub-Signature-256 is malformed: expected sha256=<64 hex digits>")
    given = digest.lower().encode("ascii")
    matched = False
    for key in keys:
        expected = hmac.new(key.encode("utf-8", "surrogateescape"), body, hashlib.sha256).hexdigest().encode("ascii")
        matched |= hmac.compare_digest(expected, given)
    if not matched:
        raise AuthenticationError("X-Hub-Signature-256 does not match any configured GitHub webhook secret")


def parse_github(headers: Mapping[str, str], body: bytes, *, secrets: Sequence[str]) -> BuildEvent | Ignored:
    """Authenticate (on the raw bytes, before parsing) and parse a GitHub delivery.

    Header names match case-insensitively. Raises AuthenticationError (never naming a secret) or
    PayloadError naming the field.
    """
    legacy = header(headers, LEGACY_SIGNATURE_HEADER) is not None
    verify_signature(body, header(headers, SIGNATURE_HEADER), secrets, legacy=legacy)
    return _read(headers, body)


def decode_body(headers: Mapping[str, str], body: bytes) -> tuple[dict[str, Any], bool]:
    """The delivery's JSON object and whether it came form-encoded (``payload=<json>``)."""
    media = (header(headers, "content-type") or "").split(";", 1)[0].strip().lower()
    if media == FORM_TYPE or (not media and body.startswith(b"payload=")):
        return decode_json_object(_form_payload(body)), True
    return decode_json_object(body), False


def _form_payload(body: bytes) -> bytes:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise PayloadError(
            f"form-encoded body is not ASCII (byte 0x{body[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        fields = parse_qs(
            text, keep_blank_values=True, strict_parsing=bool(text), errors="strict", max_num_fields=_MAX_FORM_FIELDS
        )
    except ValueError as exc:  # a field without "=", too many fields, escapes that are not UTF-8
        raise PayloadError(f"form-encoded body is malformed: {clip(str(exc))}") from None
    payload = fields.get("payload", [])
    if len(payload) != 1:
        found = "no payload field" if not payload else f"{len(payload)} payload fields"
        raise PayloadError(f"form-encoded body has {found}; GitHub sends the JSON as one payload=<json> field")
    return payload[0].encode("utf-8")


def _event_name(headers: Mapping[str, str], data: dict[str, Any]) -> str:
    """``X-GitHub-Event``; without it (explain), what the body shows it is."""
    name = header(headers, EVENT_HEADER)
    if name is not None and name.strip():
        return name.strip()
    for event in _EVENTS:
        if isinstance(data.get(event), dict):
            return event
    if "zen" in data and "hook_id" in data:
        return "ping"
    raise PayloadError("missing X-GitHub-Event header (and the body is no workflow_run, workflow_job or ping)")


def _read(headers: Mapping[str, str], body: bytes) -> BuildEvent | Ignored:
    data, form = decode_body(headers, body)
    event = _event_name(headers, data)
    if event == "ping":
        return _ping(data, form)
    if event not in _EVENTS:
        shown = clip(event)
        return Ignored(f"GitHub event {shown!r} is not one chainer reads; subscribe the hook to Workflow runs", shown)
    delivery = header(headers, DELIVERY_HEADER)
    hook_id = header(headers, HOOK_ID_HEADER)
    first = f"github:delivery:{_key_part(delivery)}" if delivery and delivery.strip() else None
    if first and hook_id and hook_id.strip():
        first += f":hook:{_key_part(hook_id)}"
    if event == "workflow_run":
        return _workflow_run(data, first)
    return _workflow_job(data, first)


def _key_part(value: str) -> str:
    """A header value as part of a dedupe key: itself when short (GitHub sends a GUID and a number), else its
    SHA-256, so that two long values never collide the way a shortened display of them would."""
    value = value.strip()
    if len(value) <= 64 and value.isprintable():
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _ping(data: dict[str, Any], form: bool) -> Ignored:
    """A ping, with a warning for a hook chainer cannot work with: no ``workflow_run`` events, or not JSON."""
    hook_id = lookup(data, "hook_id")
    events = lookup(data, "hook.events")
    content_type = opt_str(data, "hook.config.content_type")
    warnings = []
    if isinstance(events, list) and not {"*", "workflow_run"} & {e for e in events if isinstance(e, str)}:
        warnings.append(
            "the hook is not subscribed to workflow_run events, so chainer hears of no workflow run; "
            "tick Workflow runs in its events"
        )
    if form or (content_type is not None and content_type != "json"):
        warnings.append(
            f"the hook sends {clip(content_type or 'form')} bodies; set its content type to application/json"
        )
    reason = "GitHub ping" + (
        f" from hook {hook_id}" if isinstance(hook_id, int) and not isinstance(hook_id, bool) else ""
    )
    return Ignored(reason + "".join(f"; WARNING: {w}" for w in warnings), "ping")


def _raw_status(data: dict[str, Any], prefix: str) -> str:
    status = need_str(data, f"{prefix}.status")
    conclusion = opt_str(data, f"{prefix}.conclusion")
    return f"{status}/{conclusion}" if conclusion else status


def _keys(first: str | None, semantic: str) -> tuple[str, ...]:
    return (first, semantic) if first else (semantic,)


def _workflow_run(data: dict[str, Any], first: str | None) -> BuildEvent:
    need_object(data, "workflow_run")
    run_id = need_int(data, "workflow_run.id")
    attempt = opt_int(data, "workflow_run.run_attempt") or 1
    raw_status = _raw_status(data, "workflow_run")
    repo, repo_id = need_str(data, "repository.full_name"), need_int(data, "repository.id")
    action = opt_str(data, "action")
    if raw_status.startswith("completed"):
        occurred = first_str(data, "workflow_run.updated_at", "workflow_run.created_at")
    elif action == "in_progress":
        occurred = first_str(data, "workflow_run.run_started_at", "workflow_run.updated_at")
    else:
        occurred = first_str(data, "workflow_run.created_at", "workflow_run.updated_at")
    workflow_id = opt_int(data, "workflow_run.workflow_id")
    keys = _keys(first, f"github:{repo_id}:run:{run_id}:{attempt}:{raw_status}")
    return BuildEvent(
        provider=NAME,
        kind="workflow",
        event_id=make_event_id(NAME, keys[0]),
        project=repo,
        status=canonical_status(STATUSES, raw_status),
        raw_status=raw_status,
        project_id=repo_id,
        branch=opt_str(data, "workflow_run.head_branch"),  # null for some runs; a tag name for tag pushes
        commit=opt_str(data, "workflow_run.head_sha"),
        build_id=run_id,
        build_url=opt_str(data, "workflow_run.html_url"),
        # workflow_run.name can be "" (more-providers §1.4): the workflow's own name first, then the path.
        workflow=first_str(data, "workflow.name", "workflow_run.name", "workflow_run.path"),
        workflow_id=str(workflow_id) if workflow_id is not None else None,
        pipeline_number=opt_int(data, "workflow_run.run_number"),
        occurred_at=occurred,
        dedupe_keys=keys,
        raw=data,
    )


def _workflow_job(data: dict[str, Any], first: str | None) -> BuildEvent:
    need_object(data, "workflow_job")
    job_id, run_id = need_int(data, "workflow_job.id"), need_int(data, "workflow_job.run_id")
    attempt = opt_int(data, "workflow_job.run_attempt") or 1
    raw_status = _raw_status(data, "workflow_job")
    repo, repo_id = need_str(data, "repository.full_name"), need_int(data, "repository.id")
    if raw_status.startswith("completed"):
        occurred = first_str(data, "workflow_job.completed_at", "workflow_job.started_at")
    else:
        occurred = first_str(data, "workflow_job.started_at", "workflow_job.created_at")
    keys = _keys(first, f"github:{repo_id}:job:{job_id}:{attempt}:{raw_status}")
    return BuildEvent(
        provider=NAME,
        kind="job",
        event_id=make_event_id(NAME, keys[0]),
        project=repo,
        status=canonical_status(STATUSES, raw_status),
        raw_status=raw_status,
        project_id=repo_id,
        branch=opt_str(data, "workflow_job.head_branch"),
        commit=opt_str(data, "workflow_job.head_sha"),
        build_id=run_id,  # the run the job belongs to: what github.rerun_workflow_run reruns
        build_url=opt_str(data, "workflow_job.html_url"),
        workflow=opt_str(data, "workflow_job.workflow_name"),
        job=need_str(data, "workflow_job.name"),
        occurred_at=occurred,
        dedupe_keys=keys,
        raw=data,
    )
