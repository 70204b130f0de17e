"""Codeship's notification webhook (shared/reference/providers.md §1): authenticate, then parse into a BuildEvent.

Codeship does not sign its webhooks, so a delivery must carry chainer's hook token in its URL. Pure and
synchronous; raises only AuthenticationError (→ 401) or PayloadError (→ 400, naming the field).
"""

from __future__ import annotations

from collections.abc import Mapping

from chainer.errors import AuthenticationError, PayloadError
from chainer.events import BuildEvent, make_event_id
from chainer.providers.base import HookAuth, canonical_status
from chainer.providers.payload import decode_json_object, need_int, need_object, need_str, opt_str

NAME = "codeship"

# Raw Codeship status → canonical status (DESIGN §4). Anything not listed is "other".
STATUSES: Mapping[str, str] = {
    "success": "success",
    "error": "failed",
    "infrastructure_failure": "error",
    "blocked": "error",
    "stopped": "canceled",
    "initiated": "running",
    "testing": "running",
    "waiting": "running",
}


def authenticate(auth: HookAuth) -> None:
    """Raise AuthenticationError unless the delivery carried the configured hook token."""
    if not auth.token_configured:
        raise AuthenticationError("unsigned webhooks are refused: CHAINER_HOOK_TOKEN is not configured")
    if not auth.token_valid():
        raise AuthenticationError(f"missing or wrong token (pass it as ?token= or /hooks/{NAME}/<token>)")


def parse_codeship(body: bytes) -> BuildEvent:
    """Parse a Codeship notification webhook body (``{"build": {...}}``, Basic and Pro) into a BuildEvent.

    The caller has already checked the token (Codeship does not sign). Raises PayloadError naming
    the field when the body is not JSON or a routed field is missing or of the wrong type.
    """
    data = decode_json_object(body)
    need_object(data, "build")
    name, full_name = opt_str(data, "build.project_name"), opt_str(data, "build.project_full_name")
    project = name or full_name
    if project is None:
        raise PayloadError("missing field build.project_name")
    raw_status = need_str(data, "build.status")
    build_id = need_int(data, "build.build_id")
    key = f"{NAME}:{build_id}:{raw_status}"
    return BuildEvent(
        provider=NAME,
        kind="build",
        event_id=make_event_id(NAME, key),
        project=project,
        status=canonical_status(STATUSES, raw_status),
        raw_status=raw_status,
        project_id=need_int(data, "build.project_id"),
        branch=opt_str(data, "build.branch"),
        commit=opt_str(data, "build.commit_id"),
        build_id=build_id,
        build_url=opt_str(data, "build.build_url"),
        dedupe_keys=(key,),
        raw=data,
    )
