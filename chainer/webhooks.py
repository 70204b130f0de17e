"""Inbound webhooks: authenticate raw deliveries and parse them into canonical build events (DESIGN §3, §4).

Pure and synchronous, with no I/O and no framework imports. Whatever bytes arrive, the functions
here raise only ``AuthenticationError`` (→ 401) or ``PayloadError`` (→ 400, naming the field).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from chainer.errors import AuthenticationError, PayloadError
from chainer.events import BuildEvent, make_event_id, normalize_status

SIGNATURE_HEADER = "circleci-signature"
EVENT_TYPE_HEADER = "circleci-event-type"
# Real payloads nest about 7 levels; the cap keeps json.loads far from the interpreter's recursion limit.
MAX_JSON_DEPTH = 64
_SHOWN_CHARS = 100

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
# A JSON string (closing quote optional, so an unterminated one never makes the scan quadratic) or a bracket.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_LEGACY_REFUSED = (
    "missing or wrong token for the unsigned CircleCI legacy webhook (pass it as ?token= or /hooks/circleci/<token>)"
)


@dataclass(frozen=True, slots=True)
class Ignored:
    """A delivery that is authentic and well-formed but carries nothing to act on (e.g. ping, unknown event type)."""

    reason: str
    event_type: str | None


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
        raise AuthenticationError("CircleCI signing secrets are not configured (CHAINER_CIRCLECI_WEBHOOK_SECRETS)")
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


def decode_json_object(body: bytes) -> dict[str, Any]:
    """Bytes → JSON object.

    Raises PayloadError naming the problem for invalid UTF-8, invalid JSON (including NaN/Infinity),
    nesting deeper than MAX_JSON_DEPTH, or a top level that is not an object.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not valid UTF-8 (byte 0x{body[exc.start]:02x} at offset {exc.start})") from None
    if not text.strip(" \t\r\n"):
        raise PayloadError("body is empty; expected a JSON object")
    if _too_deep(text):
        raise PayloadError(f"body is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # integers over the digit limit; recursion is a second guard
        raise PayloadError(f"body is not valid JSON: {_clip(str(exc))}") from None
    if not isinstance(data, dict):
        raise PayloadError(f"body must be a JSON object, got {_describe(data)}")
    return data


def parse_codeship(body: bytes) -> BuildEvent | Ignored:
    """Parse a Codeship notification webhook body (``{"build": {...}}``, Basic and Pro) into a BuildEvent.

    The caller has already checked the token (Codeship does not sign). Raises PayloadError naming
    the field when the body is not JSON or a routed field is missing or of the wrong type.
    """
    data = decode_json_object(body)
    _need_object(data, "build")
    name, full_name = _opt_str(data, "build.project_name"), _opt_str(data, "build.project_full_name")
    project = name or full_name
    if project is None:
        raise PayloadError("missing field build.project_name")
    raw_status = _need_str(data, "build.status")
    build_id = _need_int(data, "build.build_id")
    key = f"codeship:{build_id}:{raw_status}"
    return BuildEvent(
        provider="codeship",
        kind="build",
        event_id=make_event_id("codeship", key),
        project=project,
        status=normalize_status("codeship", raw_status),
        raw_status=raw_status,
        project_id=_need_int(data, "build.project_id"),
        branch=_opt_str(data, "build.branch"),
        commit=_opt_str(data, "build.commit_id"),
        build_id=build_id,
        build_url=_opt_str(data, "build.build_url"),
        dedupe_keys=(key,),
        raw=data,
    )


def parse_circleci(
    headers: Mapping[str, str], body: bytes, *, secrets: Sequence[str], token_valid: bool
) -> BuildEvent | Ignored:
    """Authenticate and parse a CircleCI delivery: a signed outbound webhook or an unsigned legacy build payload.

    A body with a ``circleci-signature`` header must verify under one of ``secrets`` before any JSON is
    parsed. Without one, only a legacy ``{"payload": build}`` body is accepted, and only when
    ``token_valid``; an unsigned outbound webhook is refused. Header names match case-insensitively.
    Raises AuthenticationError (never naming a secret or token) or PayloadError naming the field.
    """
    signature = _header(headers, SIGNATURE_HEADER)
    if signature is not None:
        verify_circleci_signature(body, signature, secrets)
        return _parse_outbound(decode_json_object(body), _header(headers, EVENT_TYPE_HEADER))
    try:
        data = decode_json_object(body)
    except PayloadError:
        if not token_valid:
            raise AuthenticationError(_LEGACY_REFUSED) from None
        raise
    if "type" in data or _header(headers, EVENT_TYPE_HEADER) is not None:
        raise AuthenticationError("CircleCI outbound webhooks must be signed (circleci-signature header missing)")
    if not token_valid:
        raise AuthenticationError(_LEGACY_REFUSED)
    return _parse_legacy(data)


def _parse_outbound(data: dict[str, Any], header_type: str | None) -> BuildEvent | Ignored:
    event_type = _opt_str(data, "type") or header_type or None
    if event_type is None:
        raise PayloadError("missing field type")
    if event_type == "ping":
        return Ignored("CircleCI ping event", "ping")
    if event_type not in ("workflow-completed", "job-completed"):
        shown = _clip(event_type)
        return Ignored(f"unknown CircleCI event type {shown!r}", shown)
    delivery = _need_str(data, "id")
    slug = _need_str(data, "project.slug")
    org, name = _opt_str(data, "organization.name"), _opt_str(data, "project.name")
    # Never derived from the slug: GitHub App, GitLab and Bitbucket DC slugs are opaque ids
    # (circleci/<org-id>/<project-id>, providers.md pitfall 11). Rules match those with `slug:`.
    project = f"{org}/{name}" if org and name else None
    if event_type == "job-completed":
        kind, workflow_id = "job", _opt_str(data, "workflow.id")
        # job-completed carries no workflow.status (providers.md §6, pitfall 10): the job's status is the truth.
        raw_status, job = _need_str(data, "job.status"), _need_str(data, "job.name")
        build_id, job_id = _opt_int(data, "job.number"), _opt_str(data, "job.id")
        semantic = f"circleci:job:{job_id}:{raw_status}" if job_id else None
    else:
        kind, workflow_id = "workflow", _need_str(data, "workflow.id")
        raw_status, job, build_id = _need_str(data, "workflow.status"), None, None
        # Cancelling a workflow with N jobs sends N+1 deliveries with distinct ids (providers.md §5.1).
        semantic = f"circleci:workflow:{workflow_id}:{raw_status}"
    keys = (f"circleci:id:{delivery}",) + ((semantic,) if semantic else ())
    return BuildEvent(
        provider="circleci",
        kind=kind,
        event_id=make_event_id("circleci", keys[0]),
        project=project,
        status=normalize_status("circleci", raw_status),
        raw_status=raw_status,
        project_id=_opt_str(data, "project.id"),
        project_slug=slug,
        branch=_first_str(data, "pipeline.vcs.branch", "pipeline.trigger_parameters.git.branch"),
        tag=_first_str(data, "pipeline.vcs.tag", "pipeline.trigger_parameters.git.tag"),
        commit=_first_str(data, "pipeline.vcs.revision", "pipeline.trigger_parameters.git.checkout_sha"),
        build_id=build_id,
        build_url=_opt_str(data, "workflow.url"),
        workflow=_opt_str(data, "workflow.name"),
        workflow_id=workflow_id,
        job=job,
        pipeline_number=_opt_int(data, "pipeline.number"),
        occurred_at=_opt_str(data, "happened_at"),
        dedupe_keys=keys,
        raw=data,
    )


def _parse_legacy(data: dict[str, Any]) -> BuildEvent:
    _need_object(data, "payload")
    username, reponame = _need_str(data, "payload.username"), _need_str(data, "payload.reponame")
    raw_status = _first_str(data, "payload.status", "payload.outcome")
    if raw_status is None:
        raise PayloadError("missing field payload.status (or payload.outcome)")
    build_num = _need_int(data, "payload.build_num")
    vcs_type = _opt_str(data, "payload.vcs_type") or _vcs_from_url(_opt_str(data, "payload.vcs_url"))
    slug = f"{vcs_type}/{username}/{reponame}"
    build_url = _opt_str(data, "payload.build_url")
    # The project, build number and status identify the delivery; build_url alone does not (two
    # builds can carry one URL), so it is no part of the key.
    key = f"circleci:legacy:{slug}/{build_num}:{raw_status}"
    return BuildEvent(
        provider="circleci",
        kind="job",
        event_id=make_event_id("circleci", key),
        project=f"{username}/{reponame}",
        status=normalize_status("circleci", raw_status),
        raw_status=raw_status,
        project_id=_opt_id(data, "payload.project_id"),
        project_slug=slug,
        branch=_opt_str(data, "payload.branch"),
        tag=_opt_str(data, "payload.vcs_tag"),
        commit=_opt_str(data, "payload.vcs_revision"),
        build_id=build_num,
        build_url=build_url,
        workflow=_opt_str(data, "payload.workflows.workflow_name"),
        workflow_id=_opt_str(data, "payload.workflows.workflow_id"),
        job=_first_str(data, "payload.workflows.job_name", "payload.build_parameters.CIRCLE_JOB", "payload.job_name"),
        occurred_at=_first_str(data, "payload.stop_time", "payload.start_time", "payload.queued_at"),
        dedupe_keys=(key,),
        raw=data,
    )


def _vcs_from_url(url: str | None) -> str:
    try:
        host = (urlsplit(url).hostname or "") if url else ""
    except ValueError:  # e.g. an unbalanced "[" in the netloc
        host = ""
    return "bitbucket" if host == "bitbucket.org" or host.endswith(".bitbucket.org") else "github"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, item in headers.items():
        if key.lower() == name:
            return item
    return None


def _too_deep(text: str) -> bool:
    if text.count("{") + text.count("[") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def _reject_constant(name: str) -> Any:
    raise PayloadError(f"body is not valid JSON: {name} is not a JSON value")


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return _clip(json.dumps(value))


def _first_str(data: dict[str, Any], *paths: str) -> str | None:
    """The first of several string fields that is present (every one is type-checked)."""
    values = [_opt_str(data, path) for path in paths]
    return next((value for value in values if value is not None), None)


def _lookup(data: dict[str, Any], path: str) -> Any:
    """The value at a dotted path; None when it or a parent is absent or null."""
    node: Any = data
    walked: list[str] = []
    for part in path.split("."):
        if node is None:
            return None
        if not isinstance(node, dict):
            raise PayloadError(f"{'.'.join(walked)}: expected an object, got {_describe(node)}")
        node = node.get(part)
        walked.append(part)
    return node


def _need_object(data: dict[str, Any], path: str) -> None:
    value = _lookup(data, path)
    if value is None:
        raise PayloadError(f"missing field {path}")
    if not isinstance(value, dict):
        raise PayloadError(f"{path}: expected an object, got {_describe(value)}")


def _opt_str(data: dict[str, Any], path: str) -> str | None:
    """A string field, or None when absent, null or empty."""
    value = _lookup(data, path)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{path}: expected a string, got {_describe(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(f"{path}: contains an unpaired UTF-16 surrogate escape") from None
    return value or None


def _need_str(data: dict[str, Any], path: str) -> str:
    value = _opt_str(data, path)
    if value is None:
        detail = "must not be empty" if _lookup(data, path) == "" else None
        raise PayloadError(f"{path}: {detail}" if detail else f"missing field {path}")
    return value


def _opt_id(data: dict[str, Any], path: str) -> str | int | None:
    value = _lookup(data, path)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return _opt_str(data, path)


def _opt_int(data: dict[str, Any], path: str) -> int | None:
    value = _lookup(data, path)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise PayloadError(f"{path}: expected an integer, got {_describe(value)}")
    return value


def _need_int(data: dict[str, Any], path: str) -> int:
    value = _opt_int(data, path)
    if value is None:
        raise PayloadError(f"missing field {path}")
    return value
