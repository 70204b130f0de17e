"""CircleCI deliveries (shared/reference/providers.md §4-§6): signed outbound webhooks and unsigned legacy payloads.

Pure and synchronous, with no I/O. Whatever bytes arrive, the functions here raise only
``AuthenticationError`` (→ 401) or ``PayloadError`` (→ 400, naming the field).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets as tokens
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from chainer.errors import AuthenticationError, PayloadError
from chainer.events import BuildEvent, make_event_id
from chainer.providers.base import HookAuth, Ignored, canonical_status
from chainer.providers.circleci.facts import EVENT_TYPE_HEADER, NAME, SIGNATURE_HEADER, WEBHOOK_SECRETS_VARIABLE
from chainer.providers.payload import (
    clip,
    decode_json_object,
    first_str,
    header,
    need_int,
    need_object,
    need_str,
    opt_id,
    opt_int,
    opt_str,
)

# Raw CircleCI status (workflow, job or legacy build) → canonical status (DESIGN §4). Anything not listed is "other".
STATUSES: Mapping[str, str] = {
    "success": "success",
    "fixed": "success",
    "failed": "failed",
    "infrastructure_fail": "error",
    "timedout": "error",
    "error": "error",
    "unauthorized": "error",
    "canceled": "canceled",
    "running": "running",
    "queued": "running",
}

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_LEGACY_REFUSED = (
    f"missing or wrong token for the unsigned CircleCI legacy webhook (pass it as ?token= or /hooks/{NAME}/<token>)"
)


def parse(headers: Mapping[str, str], body: bytes, auth: HookAuth) -> BuildEvent | Ignored:
    """``parse_circleci`` with the signing secrets and hook token of ``auth``."""
    keys = [s.reveal() for s in auth.settings.circleci_webhook_secrets]
    return parse_circleci(headers, body, secrets=keys, token_valid=auth.token_valid())


def parse_unverified(headers: Mapping[str, str], body: bytes) -> BuildEvent | Ignored:
    """Parse ``body`` as CircleCI would deliver it, skipping authentication; raises PayloadError.

    A body that looks like a legacy payload (``payload``, no ``type``) is read as one carrying a valid
    token; anything else is re-signed with a throw-away secret, so it takes the signed path exactly.
    """
    data = decode_json_object(body)
    plain = {k.lower(): v for k, v in headers.items() if k.lower() != SIGNATURE_HEADER}
    if "payload" in data and "type" not in data:
        return parse_circleci(plain, body, secrets=[], token_valid=True)
    secret = tokens.token_hex(16)
    plain[SIGNATURE_HEADER] = "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return parse_circleci(plain, body, secrets=[secret], token_valid=True)


def verify_circleci_signature(body: bytes, header: str | None, secrets: Sequence[str]) -> None:
    """Raise AuthenticationError unless header carries a v1=<hex> HMAC-SHA256 of the raw body under one of secrets.

    ``header`` is the ``circleci-signature`` value, a comma-separated list of ``vN=<hex>`` pairs; only
    ``v1`` entries count (a header without one fails, so nobody can downgrade to a weaker version).
    Every configured secret is tried, so secrets can be rotated. Messages never include a secret.
    """
    if header is None:
        raise AuthenticationError("missing circleci-signature header")
    keys = [secret for secret in secrets if secret]
    if not keys:
        raise AuthenticationError(f"CircleCI signing secrets are not configured ({WEBHOOK_SECRETS_VARIABLE})")
    candidates = []
    for pair in header.split(","):
        version, sep, value = pair.strip().partition("=")
        if sep and version.strip() == "v1":
            candidates.append(value.strip())
    if not candidates:
        raise AuthenticationError("circleci-signature header has no v1=<hex> entry")
    digests = [c.lower().encode("ascii") for c in candidates if _HEX_DIGEST.fullmatch(c)]
    if not digests:
        raise AuthenticationError("circleci-signature header is malformed: v1 must be 64 hex digits (HMAC-SHA256)")
    matched = False
    for key in keys:
        expected = hmac.new(key.encode("utf-8", "surrogateescape"), body, hashlib.sha256).hexdigest().encode("ascii")
        for digest in digests:
            matched |= hmac.compare_digest(expected, digest)
    if not matched:
        raise AuthenticationError("circleci-signature does not match any configured signing secret")


def parse_circleci(
    headers: Mapping[str, str], body: bytes, *, secrets: Sequence[str], token_valid: bool
) -> BuildEvent | Ignored:
    """Authenticate and parse a CircleCI delivery: a signed outbound webhook or an unsigned legacy build payload.

    A body with a ``circleci-signature`` header must verify under one of ``secrets`` before any JSON is
    parsed. Without one, only a legacy ``{"payload": build}`` body is accepted, and only when
    ``token_valid``; an unsigned outbound webhook is refused. Header names match case-insensitively.
    Raises AuthenticationError (never naming a secret or token) or PayloadError naming the field.
    """
    signature = header(headers, SIGNATURE_HEADER)
    if signature is not None:
        verify_circleci_signature(body, signature, secrets)
        return _parse_outbound(decode_json_object(body), header(headers, EVENT_TYPE_HEADER))
    try:
        data = decode_json_object(body)
    except PayloadError:
        if not token_valid:
            raise AuthenticationError(_LEGACY_REFUSED) from None
        raise
    if "type" in data or header(headers, EVENT_TYPE_HEADER) is not None:
        raise AuthenticationError("CircleCI outbound webhooks must be signed (circleci-signature header missing)")
    if not token_valid:
        raise AuthenticationError(_LEGACY_REFUSED)
    return _parse_legacy(data)


def _parse_outbound(data: dict[str, Any], header_type: str | None) -> BuildEvent | Ignored:
    event_type = opt_str(data, "type") or header_type or None
    if event_type is None:
        raise PayloadError("missing field type")
    if event_type == "ping":
        return Ignored("CircleCI ping event", "ping")
    if event_type not in ("workflow-completed", "job-completed"):
        shown = clip(event_type)
        return Ignored(f"unknown CircleCI event type {shown!r}", shown)
    delivery = need_str(data, "id")
    slug = need_str(data, "project.slug")
    org, name = opt_str(data, "organization.name"), opt_str(data, "project.name")
    # Never derived from the slug: GitHub App, GitLab and Bitbucket DC slugs are opaque ids
    # (circleci/<org-id>/<project-id>, providers.md pitfall 11). Rules match those with `slug:`.
    project = f"{org}/{name}" if org and name else None
    if event_type == "job-completed":
        kind, workflow_id = "job", opt_str(data, "workflow.id")
        # job-completed carries no workflow.status (providers.md §6, pitfall 10): the job's status is the truth.
        raw_status, job = need_str(data, "job.status"), need_str(data, "job.name")
        build_id, job_id = opt_int(data, "job.number"), opt_str(data, "job.id")
        semantic = f"circleci:job:{job_id}:{raw_status}" if job_id else None
    else:
        kind, workflow_id = "workflow", need_str(data, "workflow.id")
        raw_status, job, build_id = need_str(data, "workflow.status"), None, None
        # Cancelling a workflow with N jobs sends N+1 deliveries with distinct ids (providers.md §5.1).
        semantic = f"circleci:workflow:{workflow_id}:{raw_status}"
    keys = (f"circleci:id:{delivery}",) + ((semantic,) if semantic else ())
    return BuildEvent(
        provider=NAME,
        kind=kind,
        event_id=make_event_id(NAME, keys[0]),
        project=project,
        status=canonical_status(STATUSES, raw_status),
        raw_status=raw_status,
        project_id=opt_str(data, "project.id"),
        project_slug=slug,
        branch=first_str(data, "pipeline.vcs.branch", "pipeline.trigger_parameters.git.branch"),
        tag=first_str(data, "pipeline.vcs.tag", "pipeline.trigger_parameters.git.tag"),
        commit=first_str(data, "pipeline.vcs.revision", "pipeline.trigger_parameters.git.checkout_sha"),
        build_id=build_id,
        build_url=opt_str(data, "workflow.url"),
        workflow=opt_str(data, "workflow.name"),
        workflow_id=workflow_id,
        job=job,
        pipeline_number=opt_int(data, "pipeline.number"),
        occurred_at=opt_str(data, "happened_at"),
        dedupe_keys=keys,
        raw=data,
    )


def _parse_legacy(data: dict[str, Any]) -> BuildEvent:
    need_object(data, "payload")
    username, reponame = need_str(data, "payload.username"), need_str(data, "payload.reponame")
    raw_status = first_str(data, "payload.status", "payload.outcome")
    if raw_status is None:
        raise PayloadError("missing field payload.status (or payload.outcome)")
    build_num = need_int(data, "payload.build_num")
    vcs_type = opt_str(data, "payload.vcs_type") or _vcs_from_url(opt_str(data, "payload.vcs_url"))
    slug = f"{vcs_type}/{username}/{reponame}"
    build_url = opt_str(data, "payload.build_url")
    # The project, build number and status identify the delivery; build_url alone does not (two
    # builds can carry one URL), so it is no part of the key.
    key = f"circleci:legacy:{slug}/{build_num}:{raw_status}"
    return BuildEvent(
        provider=NAME,
        kind="job",
        event_id=make_event_id(NAME, key),
        project=f"{username}/{reponame}",
        status=canonical_status(STATUSES, raw_status),
        raw_status=raw_status,
        project_id=opt_id(data, "payload.project_id"),
        project_slug=slug,
        branch=opt_str(data, "payload.branch"),
        tag=opt_str(data, "payload.vcs_tag"),
        commit=opt_str(data, "payload.vcs_revision"),
        build_id=build_num,
        build_url=build_url,
        workflow=opt_str(data, "payload.workflows.workflow_name"),
        workflow_id=opt_str(data, "payload.workflows.workflow_id"),
        job=first_str(data, "payload.workflows.job_name", "payload.build_parameters.CIRCLE_JOB", "payload.job_name"),
        occurred_at=first_str(data, "payload.stop_time", "payload.start_time", "payload.queued_at"),
        dedupe_keys=(key,),
        raw=data,
    )


def _vcs_from_url(url: str | None) -> str:
    try:
        host = (urlsplit(url).hostname or "") if url else ""
    except ValueError:  # e.g. an unbalanced "[" in the netloc
        host = ""
    return "bitbucket" if host == "bitbucket.org" or host.endswith(".bitbucket.org") else "github"
