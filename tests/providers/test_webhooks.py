"""Authentication and parsing of inbound webhooks (each provider's parse, the payload helpers): pure and synchronous."""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers

from chainer.errors import AuthenticationError, PayloadError
from chainer.events import BuildEvent, make_event_id
from chainer.providers.base import HookAuth, Ignored
from chainer.providers.circleci.parse import parse_circleci, verify_circleci_signature
from chainer.providers.codeship.parse import parse_codeship
from chainer.providers.payload import MAX_JSON_DEPTH, decode_json_object
from chainer.settings import Secret, Settings

DATA = Path(__file__).resolve().parents[1] / "data" / "payloads"
SECRET = "whsec-test-5c1d9e"
OLD_SECRET = "whsec-retired-0a7b"
DELETE = object()

# Where each fixture keeps the status that chainer reads.
STATUS_PATH = {
    "codeship": "build.status",
    "circleci_workflow_completed_github": "workflow.status",
    "circleci_workflow_completed_github_app": "workflow.status",
    "circleci_job_completed": "job.status",
    "circleci_legacy_build": "payload.status",
}
CODESHIP_FIXTURES = ["success", "error", "testing", "initiated", "infrastructure_failure", "stopped"]
FIXTURES = [f"codeship_{s}" for s in CODESHIP_FIXTURES] + [name for name in STATUS_PATH if name != "codeship"]


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
    return data


def mutate(data: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``data`` with each dotted path set to its value, or removed for DELETE."""
    result = copy.deepcopy(data)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = result
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return result


def sign(body: bytes, secret: str = SECRET, **extra: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"content-type": "application/json", "circleci-signature": f"v1={digest}", **extra}


def deliver(name: str, data: dict[str, Any]) -> BuildEvent | Ignored:
    """Feed ``data`` to the parser its fixture belongs to, authenticated the way that provider is."""
    body = json.dumps(data).encode()
    if name.startswith("codeship"):
        return parse_codeship(body)
    if name == "circleci_legacy_build":
        return parse_circleci({"content-type": "application/json"}, body, secrets=[SECRET], token_valid=True)
    return parse_circleci(sign(body), body, secrets=[SECRET], token_valid=False)


def event_of(name: str, changes: dict[str, Any] | None = None) -> BuildEvent:
    result = deliver(name, mutate(load(name), changes or {}))
    assert isinstance(result, BuildEvent)
    return result


def _codeship(build_id: int, status: str, normalized: str, branch: str, commit: str) -> dict[str, Any]:
    return {
        "provider": "codeship",
        "kind": "build",
        "event_id": make_event_id("codeship", f"codeship:{build_id}:{status}"),
        "project": "northwind/ledger",
        "status": normalized,
        "raw_status": status,
        "project_id": 402117,
        "project_slug": None,
        "branch": branch,
        "tag": None,
        "commit": commit,
        "build_id": build_id,
        "build_url": f"https://app.codeship.com/projects/402117/builds/{build_id}",
        "workflow": None,
        "workflow_id": None,
        "job": None,
        "pipeline_number": None,
        "occurred_at": None,
        "chain": [],
        "dedupe_keys": (f"codeship:{build_id}:{status}",),
    }


LEDGER_WF = "6c1f5a0e-93b2-4d7e-8a41-2f0c9e7b5d34"
LEDGER_WF_URL = f"https://app.circleci.com/pipelines/github/northwind/ledger-api/1874/workflows/{LEDGER_WF}"
CONSOLE_SLUG = "circleci/Q8mWv2rTn5bXk7LpZc3Hd9/R4tYu6IoP1aSd8FgHj2Kl0"
CONSOLE_WF = "9a7c5e3f-1b2d-4c6e-8f0a-3b5d7f9e1c24"
CIRCLECI_COMMON = {"provider": "circleci", "tag": None, "build_id": None, "job": None, "chain": []}

EXPECTED = {
    "codeship_success": _codeship(118204551, "success", "success", "main", "e0c5a3f2b9d8417c6a2b0f93d1e4c7a8b5f60213"),
    "codeship_error": _codeship(
        118204602, "error", "failed", "feature/ledger-v2", "4b7e19d0c3a2f8e6d5b1a09c7e3f2d1c0b9a8e76"
    ),
    "codeship_testing": _codeship(118204613, "testing", "running", "main", "a91f0e2d3c4b5a6978e1d2c3b4a5f6e7d8c9b0a1"),
    "codeship_initiated": _codeship(
        118204640, "initiated", "running", "release/2026.11", "7c2d9e8f1a0b3c4d5e6f7a8b9c0d1e2f3a4b5c6d"
    ),
    "codeship_infrastructure_failure": _codeship(
        118204677, "infrastructure_failure", "error", "main", "d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2"
    ),
    "codeship_stopped": _codeship(
        118204701, "stopped", "canceled", "spike/grpc", "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"
    ),
    "circleci_workflow_completed_github": CIRCLECI_COMMON
    | {
        "kind": "workflow",
        "event_id": make_event_id("circleci", "circleci:id:b2f4c9d1-7e3a-3c58-9f12-0a6d8e4b7c21"),
        "project": "northwind/ledger-api",
        "status": "success",
        "raw_status": "success",
        "project_id": "3e8b1c7d-5a2f-4c90-b6e4-7d1a9f0c2e58",
        "project_slug": "github/northwind/ledger-api",
        "branch": "main",
        "commit": "5e9a1c3b7d2f4e6a8c0b1d3f5a7c9e2b4d6f8a01",
        "build_url": LEDGER_WF_URL,
        "workflow": "build-and-test",
        "workflow_id": LEDGER_WF,
        "pipeline_number": 1874,
        "occurred_at": "2026-11-18T14:02:51.337912Z",
        "dedupe_keys": (
            "circleci:id:b2f4c9d1-7e3a-3c58-9f12-0a6d8e4b7c21",
            f"circleci:workflow:{LEDGER_WF}:success",
        ),
    },
    "circleci_workflow_completed_github_app": CIRCLECI_COMMON
    | {
        "kind": "workflow",
        "event_id": make_event_id("circleci", "circleci:id:e7d1b3f5-2a4c-4e6f-9b8d-0c2e4a6f8b13"),
        "project": None,
        "status": "failed",
        "raw_status": "failed",
        "project_id": "8d0f2b4c-6e8a-4c1e-9f3b-5d7a9c1e3f60",
        "project_slug": CONSOLE_SLUG,
        "branch": None,
        "tag": "v3.4.0",
        "commit": "c0ffee1234567890abcdef1234567890abcdef12",
        "build_url": f"https://app.circleci.com/pipelines/{CONSOLE_SLUG}/212/workflows/{CONSOLE_WF}",
        "workflow": "release",
        "workflow_id": CONSOLE_WF,
        "pipeline_number": 212,
        "occurred_at": "2026-11-19T08:41:17.004516Z",
        "dedupe_keys": (
            "circleci:id:e7d1b3f5-2a4c-4e6f-9b8d-0c2e4a6f8b13",
            f"circleci:workflow:{CONSOLE_WF}:failed",
        ),
    },
    "circleci_job_completed": CIRCLECI_COMMON
    | {
        "kind": "job",
        "event_id": make_event_id("circleci", "circleci:id:41c8e2a6-9d3b-3f75-8a1c-6e0b4d2f9a87"),
        "project": "northwind/ledger-api",
        "status": "failed",
        "raw_status": "failed",
        "project_id": "3e8b1c7d-5a2f-4c90-b6e4-7d1a9f0c2e58",
        "project_slug": "github/northwind/ledger-api",
        "branch": "main",
        "commit": "5e9a1c3b7d2f4e6a8c0b1d3f5a7c9e2b4d6f8a01",
        "build_id": 90231,
        "build_url": LEDGER_WF_URL,
        "workflow": "build-and-test",
        "workflow_id": LEDGER_WF,
        "job": "integration-tests",
        "pipeline_number": 1874,
        "occurred_at": "2026-11-18T14:01:33.918204Z",
        "dedupe_keys": (
            "circleci:id:41c8e2a6-9d3b-3f75-8a1c-6e0b4d2f9a87",
            "circleci:job:d8b6f4a2-0e9c-4a7b-b5d3-1f9e7c5a3b10:failed",
        ),
    },
    "circleci_legacy_build": CIRCLECI_COMMON
    | {
        "kind": "job",
        "event_id": make_event_id("circleci", "circleci:legacy:github/northwind/billing/5521:fixed"),
        "project": "northwind/billing",
        "status": "success",
        "raw_status": "fixed",
        "project_id": None,
        "project_slug": "github/northwind/billing",
        "branch": "main",
        "commit": "8b0d2f4a6c8e0a2c4e6a8c0e2a4c6e8a0c2e4a6c",
        "build_id": 5521,
        "build_url": "https://circleci.com/gh/northwind/billing/5521",
        "workflow": "test-and-deploy",
        "workflow_id": "3b5d7f9a-1c3e-4a5b-8d7f-9a1c3e5b7d9f",
        "job": "unit-tests",
        "pipeline_number": None,
        "occurred_at": "2023-06-02T10:18:41.006Z",
        "dedupe_keys": ("circleci:legacy:github/northwind/billing/5521:fixed",),
    },
}


# --- canonical fields ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES, ids=FIXTURES)
def test_fixture_parses_to_the_canonical_event(name: str) -> None:
    """Each stored payload becomes exactly the canonical event DESIGN §4 describes, with the payload as ``raw``."""
    event = event_of(name)
    assert {**event.as_dict(), "dedupe_keys": event.dedupe_keys} == EXPECTED[name]
    assert event.raw == load(name)


STATUS_TABLE = [
    # (fixture, raw status, normalized status): every row of DESIGN §4's normalization table, plus "other".
    ("codeship_success", "success", "success"),
    ("codeship_success", "error", "failed"),
    ("codeship_success", "infrastructure_failure", "error"),
    ("codeship_success", "blocked", "error"),
    ("codeship_success", "stopped", "canceled"),
    ("codeship_success", "initiated", "running"),
    ("codeship_success", "testing", "running"),
    ("codeship_success", "waiting", "running"),
    ("codeship_success", "ignored", "other"),
    ("circleci_workflow_completed_github", "success", "success"),
    ("circleci_workflow_completed_github", "failed", "failed"),
    ("circleci_workflow_completed_github", "error", "error"),
    ("circleci_workflow_completed_github", "unauthorized", "error"),
    ("circleci_workflow_completed_github", "canceled", "canceled"),
    ("circleci_workflow_completed_github", "not_run", "other"),
    ("circleci_job_completed", "success", "success"),
    ("circleci_job_completed", "failed", "failed"),
    ("circleci_job_completed", "canceled", "canceled"),
    ("circleci_job_completed", "unauthorized", "error"),
    ("circleci_legacy_build", "success", "success"),
    ("circleci_legacy_build", "fixed", "success"),
    ("circleci_legacy_build", "failed", "failed"),
    ("circleci_legacy_build", "infrastructure_fail", "error"),
    ("circleci_legacy_build", "timedout", "error"),
    ("circleci_legacy_build", "canceled", "canceled"),
    ("circleci_legacy_build", "running", "running"),
    ("circleci_legacy_build", "queued", "running"),
    ("circleci_legacy_build", "no_tests", "other"),
    ("circleci_legacy_build", "retried", "other"),
]


@pytest.mark.parametrize(
    ("name", "raw_status", "status"),
    STATUS_TABLE,
    ids=[f"{name.split('_')[0]}-{name.split('_')[1]}-{raw}" for name, raw, _ in STATUS_TABLE],
)
def test_status_is_normalized_per_design_table(name: str, raw_status: str, status: str) -> None:
    """Every provider status maps to its canonical status, and the raw value, dedupe key and event id follow it."""
    path = STATUS_PATH["codeship" if name.startswith("codeship") else name]
    event = event_of(name, {path: raw_status})
    assert (event.status, event.raw_status) == (status, raw_status)
    assert event.dedupe_keys[-1].endswith(f":{raw_status}")
    assert event.event_id == make_event_id(event.provider, event.dedupe_keys[0])


# --- signatures ------------------------------------------------------------------------------------------------

HELLO = "734cc62f32841568f45715aeb9f4d7891324e6d948e4c6c60c0621cdac48623a"
FOO = "773ba44693c7553d6ee20f61ea5d2757a9a4f4a44d2841ae4e95b52e4cd62db4"


@pytest.mark.parametrize(
    ("body", "header"),
    [
        (b"hello world", f"v1={HELLO}"),
        (b"foo", f"v1={FOO}"),
        (b"foo", f"v1={FOO.upper()}"),
        (b"foo", f" v2=deadbeef , v1={FOO} "),
        (b"foo", f"v1={HELLO},v1={FOO}"),
    ],
    ids=["vector-hello-world", "vector-foo", "uppercase-hex", "v2-listed-first", "second-v1-matches"],
)
def test_signature_vectors_verify(body: bytes, header: str) -> None:
    """CircleCI's documented HMAC-SHA256 vectors verify under the secret ``secret``, in every header layout."""
    verify_circleci_signature(body, header, ["secret"])


@pytest.mark.parametrize(
    ("header", "secrets", "fragment"),
    [
        (f"v1={HELLO}", ["not-the-secret"], "does not match"),
        (None, ["secret"], "missing circleci-signature header"),
        (f"v2={HELLO}", ["secret"], "no v1=<hex> entry"),
        ("sha256=" + HELLO, ["secret"], "no v1=<hex> entry"),
        ("garbage", ["secret"], "no v1=<hex> entry"),
        ("", ["secret"], "no v1=<hex> entry"),
        ("v1=", ["secret"], "malformed"),
        ("v1=xyz", ["secret"], "malformed"),
        (f"v1={HELLO[:-1]}", ["secret"], "malformed"),
        (f"v1={HELLO}00", ["secret"], "malformed"),
        (f"v1={HELLO}", [], "not configured (CHAINER_CIRCLECI_WEBHOOK_SECRETS)"),
        (f"v1={HELLO}", [""], "not configured (CHAINER_CIRCLECI_WEBHOOK_SECRETS)"),
    ],
    ids=[
        "wrong-secret",
        "missing-header",
        "only-v2",
        "other-scheme",
        "no-equals",
        "empty-header",
        "empty-v1",
        "non-hex",
        "short-hex",
        "long-hex",
        "no-secrets",
        "blank-secret",
    ],
)
def test_signature_rejections_name_the_problem(header: str | None, secrets: list[str], fragment: str) -> None:
    """Wrong, missing, downgraded and malformed signatures fail with a message that never shows a secret."""
    with pytest.raises(AuthenticationError) as caught:
        verify_circleci_signature(b"hello world", header, secrets)
    assert fragment in str(caught.value)
    assert all(s not in str(caught.value) for s in [*secrets, "secret-"] if s)


@pytest.mark.parametrize(
    ("signer", "ok"),
    [(SECRET, True), (OLD_SECRET, True), ("whsec-unknown", False)],
    ids=["new-secret", "retired-secret-still-listed", "unknown-secret"],
)
def test_rotated_secrets_are_all_tried(signer: str, ok: bool) -> None:
    """During rotation a body signed with any configured secret passes; one signed with another secret fails."""
    body = json.dumps(load("circleci_workflow_completed_github")).encode()
    headers = sign(body, signer)
    if ok:
        verify_circleci_signature(body, headers["circleci-signature"], [OLD_SECRET, SECRET])
    else:
        with pytest.raises(AuthenticationError, match="does not match"):
            verify_circleci_signature(body, headers["circleci-signature"], [OLD_SECRET, SECRET])


def test_signature_covers_the_raw_bytes_not_the_reserialized_json() -> None:
    """A signature over the compact re-serialization of a pretty-printed body does not verify the body itself."""
    data = load("circleci_workflow_completed_github")
    pretty = json.dumps(data, indent=2).encode()
    compact = json.dumps(data, separators=(",", ":")).encode()
    verify_circleci_signature(pretty, sign(pretty)["circleci-signature"], [SECRET])
    with pytest.raises(AuthenticationError):
        verify_circleci_signature(pretty, sign(compact)["circleci-signature"], [SECRET])


# --- parse_circleci authentication order -----------------------------------------------------------------------

OUTBOUND = json.dumps(load("circleci_workflow_completed_github")).encode()
LEGACY = json.dumps(load("circleci_legacy_build")).encode()


@pytest.mark.parametrize(
    ("headers", "body", "secrets", "token_valid", "outcome"),
    [
        ({"CircleCI-Signature": sign(OUTBOUND)["circleci-signature"]}, OUTBOUND, [SECRET], False, "workflow"),
        (Headers(headers=sign(OUTBOUND)), OUTBOUND, [SECRET], False, "workflow"),
        (sign(OUTBOUND, "whsec-other"), OUTBOUND, [SECRET], True, "does not match"),
        (sign(OUTBOUND), OUTBOUND, [], True, "not configured (CHAINER_CIRCLECI_WEBHOOK_SECRETS)"),
        (sign(b"{not json", "whsec-other"), b"{not json", [SECRET], True, "does not match"),
        (sign(b"{not json"), b"{not json", [SECRET], False, "PayloadError"),
        ({"content-type": "application/json"}, OUTBOUND, [SECRET], False, "must be signed"),
        ({"content-type": "application/json"}, OUTBOUND, [SECRET], True, "must be signed"),
        ({"circleci-event-type": "job-completed"}, LEGACY, [SECRET], True, "must be signed"),
        ({}, LEGACY, [SECRET], False, "wrong token"),
        ({}, LEGACY, [], True, "job"),
        ({}, b"{not json", [SECRET], False, "wrong token"),
        ({}, b"{not json", [SECRET], True, "PayloadError"),
        ({}, b"{}", [SECRET], False, "wrong token"),
        ({}, b"{}", [SECRET], True, "PayloadError"),
    ],
    ids=[
        "signed-mixed-case-header",
        "signed-starlette-headers",
        "signed-wrong-secret",
        "signed-no-secrets",
        "bad-signature-checked-before-json",
        "signed-invalid-json",
        "unsigned-outbound",
        "unsigned-outbound-with-token",
        "unsigned-event-type-header",
        "legacy-wrong-token",
        "legacy-with-token",
        "unsigned-junk-no-token",
        "unsigned-junk-with-token",
        "unsigned-empty-object-no-token",
        "unsigned-empty-object-with-token",
    ],
)
def test_parse_circleci_authenticates_before_parsing(
    headers: Any, body: bytes, secrets: list[str], token_valid: bool, outcome: str
) -> None:
    """Signed bodies are verified before any parse, unsigned ones must be legacy and carry the token."""
    try:
        result = parse_circleci(headers, body, secrets=secrets, token_valid=token_valid)
    except AuthenticationError as exc:
        assert outcome in str(exc)
        assert SECRET not in str(exc)
    except PayloadError:
        assert outcome == "PayloadError"
    else:
        assert isinstance(result, BuildEvent) and result.kind == outcome


def test_ping_and_unknown_event_types_are_ignored() -> None:
    """A signed ping and a signed unknown event type are Ignored with a reason, not errors."""
    ping = json.dumps(load("circleci_ping")).encode()
    assert parse_circleci(sign(ping), ping, secrets=[SECRET], token_valid=False) == Ignored(
        "CircleCI ping event", "ping"
    )
    other = json.dumps({"id": "x", "type": "pipeline-exploded"}).encode()
    assert parse_circleci(sign(other), other, secrets=[SECRET], token_valid=False) == Ignored(
        "unknown CircleCI event type 'pipeline-exploded'", "pipeline-exploded"
    )


def test_unknown_event_type_is_clipped_in_the_reason() -> None:
    """A huge unknown event type does not end up whole in the audit log."""
    body = json.dumps({"type": "x" * 10_000}).encode()
    result = parse_circleci(sign(body), body, secrets=[SECRET], token_valid=False)
    assert isinstance(result, Ignored) and result.event_type is not None
    assert len(result.event_type) == 100 and len(result.reason) < 150


@pytest.mark.parametrize(
    ("header_type", "outcome"),
    [("workflow-completed", "workflow"), ("ping", "ignored"), (None, "missing field type")],
    ids=["header-workflow-completed", "header-ping", "no-type-anywhere"],
)
def test_event_type_header_stands_in_for_a_missing_body_type(header_type: str | None, outcome: str) -> None:
    """When the body has no ``type``, the ``circleci-event-type`` header decides; with neither, the field is named."""
    body = json.dumps(mutate(load("circleci_workflow_completed_github"), {"type": DELETE})).encode()
    headers = sign(body, **({"circleci-event-type": header_type} if header_type else {}))
    try:
        result = parse_circleci(headers, body, secrets=[SECRET], token_valid=False)
    except PayloadError as exc:
        assert outcome in str(exc)
    else:
        assert (result.kind if isinstance(result, BuildEvent) else "ignored") == outcome


# --- field rules -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "project"),
    [
        ({}, "northwind/ledger-api"),
        ({"organization.name": ""}, None),
        ({"project.name": ""}, None),
        ({"organization": DELETE}, None),
        ({"organization.name": "", "project.slug": "circleci/ORGID/PROJID"}, None),
        ({"organization.name": "", "project.name": "", "project.slug": "circleci/ORGID/PROJID"}, None),
        ({"organization.name": "", "project.slug": "opaque"}, None),
    ],
    ids=[
        "org-and-name",
        "empty-org-name",
        "empty-project-name",
        "no-organization",
        "opaque-slug",
        "opaque-slug-no-names",
        "one-segment-slug",
    ],
)
def test_outbound_project_is_never_built_from_the_slug(changes: dict[str, Any], project: str | None) -> None:
    """``project`` is ``org/name``; when CircleCI sends empty names (GitHub App, GitLab) it is absent, never the
    slug's last two segments (opaque ids, providers.md pitfall 11), while ``project_slug`` keeps the slug."""
    event = event_of("circleci_workflow_completed_github", changes)
    assert event.project == project
    assert event.project_slug == changes.get("project.slug", "github/northwind/ledger-api")


def test_job_completed_never_reads_workflow_status() -> None:
    """A job-completed event takes its status from the job, even if a workflow.status shows up."""
    event = event_of("circleci_job_completed", {"workflow.status": "success", "job.status": "failed"})
    assert (event.status, event.raw_status) == ("failed", "failed")


def test_job_completed_without_job_id_keeps_only_the_delivery_key() -> None:
    """A job event whose job has no id still parses, deduplicated by its delivery id alone."""
    event = event_of("circleci_job_completed", {"job.id": DELETE})
    assert event.dedupe_keys == ("circleci:id:41c8e2a6-9d3b-3f75-8a1c-6e0b4d2f9a87",)


def test_cancel_redeliveries_share_the_semantic_key() -> None:
    """The N+1 workflow-completed deliveries of one cancel have distinct ids but one workflow+status key."""
    first = event_of("circleci_workflow_completed_github", {"workflow.status": "canceled"})
    second = event_of("circleci_workflow_completed_github", {"workflow.status": "canceled", "id": "another-delivery"})
    assert first.event_id != second.event_id
    assert first.dedupe_keys[1] == second.dedupe_keys[1] == f"circleci:workflow:{LEDGER_WF}:canceled"


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"pipeline.vcs.branch": DELETE, "pipeline.vcs.tag": "v2.0.1"}, "tag", "v2.0.1"),
        ({"pipeline.vcs": DELETE}, "commit", None),
        ({"pipeline.vcs": DELETE, "pipeline.trigger_parameters": {"git": {"branch": "dev"}}}, "branch", "dev"),
        ({"pipeline.vcs.branch": ""}, "branch", None),
        ({"workflow.url": DELETE}, "build_url", None),
    ],
    ids=["vcs-tag", "no-vcs-no-commit", "trigger-parameters-branch", "empty-branch-is-none", "no-url"],
)
def test_outbound_optional_fields(changes: dict[str, Any], field: str, value: Any) -> None:
    """Optional outbound fields fall back from ``vcs`` to ``trigger_parameters.git`` and read empty as absent."""
    assert getattr(event_of("circleci_workflow_completed_github", changes), field) == value


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        (
            {"payload.vcs_type": DELETE, "payload.vcs_url": "https://bitbucket.org/northwind/billing"},
            "project_slug",
            "bitbucket/northwind/billing",
        ),
        (
            {"payload.vcs_type": DELETE, "payload.vcs_url": "https://[broken"},
            "project_slug",
            "github/northwind/billing",
        ),
        ({"payload.vcs_type": DELETE, "payload.vcs_url": DELETE}, "project_slug", "github/northwind/billing"),
        ({"payload.build_url": DELETE}, "dedupe_keys", ("circleci:legacy:github/northwind/billing/5521:fixed",)),
        ({"payload.status": DELETE}, "raw_status", "success"),
        ({"payload.status": None, "payload.outcome": "failed"}, "status", "failed"),
        ({"payload.workflows": DELETE}, "job", "unit-tests"),
        ({"payload.workflows": DELETE, "payload.build_parameters": None, "payload.job_name": "lint"}, "job", "lint"),
        ({"payload.workflows": DELETE, "payload.build_parameters": None}, "job", None),
        ({"payload.stop_time": DELETE}, "occurred_at", "2023-06-02T10:14:07.930Z"),
        ({"payload.stop_time": DELETE, "payload.start_time": DELETE}, "occurred_at", "2023-06-02T10:14:05.118Z"),
        ({"payload.vcs_tag": "v9.1.0"}, "tag", "v9.1.0"),
        ({"payload.project_id": 77}, "project_id", 77),
        ({"payload.project_id": "p-77"}, "project_id", "p-77"),
    ],
    ids=[
        "vcs-from-bitbucket-url",
        "unparsable-vcs-url",
        "vcs-default-github",
        "key-without-build-url",
        "status-falls-back-to-outcome",
        "null-status",
        "job-from-build-parameters",
        "job-from-job-name",
        "no-job",
        "occurred-at-start-time",
        "occurred-at-queued-at",
        "tag",
        "numeric-project-id",
        "string-project-id",
    ],
)
def test_legacy_fallbacks(changes: dict[str, Any], field: str, value: Any) -> None:
    """Legacy build payloads fill each canonical field from the documented fallbacks."""
    assert getattr(event_of("circleci_legacy_build", changes), field) == value


@pytest.mark.parametrize(
    ("changes", "project"),
    [
        ({"build.project_name": DELETE}, "northwind/ledger"),
        ({"build.project_name": "", "build.project_full_name": "old/name"}, "old/name"),
        ({"build.project_full_name": DELETE}, "northwind/ledger"),
    ],
    ids=["only-full-name", "empty-name", "only-name"],
)
def test_codeship_project_falls_back_to_full_name(changes: dict[str, Any], project: str) -> None:
    """Codeship's ``project_name`` wins; the deprecated ``project_full_name`` fills in for old senders."""
    assert event_of("codeship_success", changes).project == project


# --- payload errors --------------------------------------------------------------------------------------------

PAYLOAD_ERRORS = [
    ("codeship_success", {"build": DELETE}, "missing field build"),
    ("codeship_success", {"build": []}, "build: expected an object, got an array"),
    ("codeship_success", {"build.status": DELETE}, "missing field build.status"),
    ("codeship_success", {"build.status": 123}, "build.status: expected a string, got 123"),
    ("codeship_success", {"build.status": ""}, "build.status: must not be empty"),
    (
        "codeship_success",
        {"build.project_name": DELETE, "build.project_full_name": DELETE},
        "missing field build.project_name",
    ),
    ("codeship_success", {"build.project_name": 7}, "build.project_name: expected a string, got 7"),
    ("codeship_success", {"build.build_id": "118204551"}, 'build.build_id: expected an integer, got "118204551"'),
    ("codeship_success", {"build.build_id": True}, "build.build_id: expected an integer, got true"),
    ("codeship_success", {"build.build_id": 1.5}, "build.build_id: expected an integer, got 1.5"),
    ("codeship_success", {"build.project_id": DELETE}, "missing field build.project_id"),
    ("codeship_success", {"build.branch": 5}, "build.branch: expected a string, got 5"),
    ("codeship_success", {"build.commit_id": {}}, "build.commit_id: expected a string, got an object"),
    ("codeship_success", {"build.branch": "\ud800"}, "build.branch: contains an unpaired UTF-16 surrogate"),
    ("circleci_workflow_completed_github", {"id": DELETE}, "missing field id"),
    ("circleci_workflow_completed_github", {"type": 5}, "type: expected a string, got 5"),
    ("circleci_workflow_completed_github", {"project.slug": DELETE}, "missing field project.slug"),
    ("circleci_workflow_completed_github", {"project": "x"}, 'project: expected an object, got "x"'),
    ("circleci_workflow_completed_github", {"workflow.id": DELETE}, "missing field workflow.id"),
    ("circleci_workflow_completed_github", {"workflow.status": DELETE}, "missing field workflow.status"),
    (
        "circleci_workflow_completed_github",
        {"pipeline.number": "1874"},
        'pipeline.number: expected an integer, got "1874"',
    ),
    ("circleci_workflow_completed_github", {"pipeline.vcs.branch": 5}, "pipeline.vcs.branch: expected a string, got 5"),
    ("circleci_workflow_completed_github", {"pipeline.vcs": []}, "pipeline.vcs: expected an object, got an array"),
    ("circleci_workflow_completed_github", {"happened_at": 0}, "happened_at: expected a string, got 0"),
    (
        "circleci_workflow_completed_github_app",
        {"pipeline.trigger_parameters.git.tag": False},
        "pipeline.trigger_parameters.git.tag: expected a string, got false",
    ),
    ("circleci_job_completed", {"job.status": DELETE}, "missing field job.status"),
    ("circleci_job_completed", {"job.name": DELETE}, "missing field job.name"),
    ("circleci_job_completed", {"job": None}, "missing field job.status"),
    ("circleci_job_completed", {"job.number": "90231"}, 'job.number: expected an integer, got "90231"'),
    ("circleci_legacy_build", {"payload": "x"}, 'payload: expected an object, got "x"'),
    ("circleci_legacy_build", {"payload.username": DELETE}, "missing field payload.username"),
    (
        "circleci_legacy_build",
        {"payload.status": DELETE, "payload.outcome": DELETE},
        "missing field payload.status (or payload.outcome)",
    ),
    ("circleci_legacy_build", {"payload.build_num": "5521"}, 'payload.build_num: expected an integer, got "5521"'),
    ("circleci_legacy_build", {"payload.vcs_tag": 1}, "payload.vcs_tag: expected a string, got 1"),
    (
        "circleci_legacy_build",
        {"payload.build_parameters.CIRCLE_JOB": 3},
        "payload.build_parameters.CIRCLE_JOB: expected a string, got 3",
    ),
    ("circleci_legacy_build", {"payload.workflows": []}, "payload.workflows: expected an object, got an array"),
]


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    PAYLOAD_ERRORS,
    ids=[
        f"{name.split('_')[1]}-{'+'.join(changes)}-{type(next(iter(changes.values()))).__name__}"
        for name, changes, _ in PAYLOAD_ERRORS
    ],
)
def test_payload_errors_name_the_field(name: str, changes: dict[str, Any], message: str) -> None:
    """A missing routed field, or any read field of the wrong JSON type, is a PayloadError naming its path."""
    with pytest.raises(PayloadError) as caught:
        deliver(name, mutate(load(name), changes))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff\xfe\x00", "body is not valid UTF-8 (byte 0xff at offset 0)"),
        (b'{"a": "\xc3"}', "body is not valid UTF-8 (byte 0xc3 at offset 7)"),
        (b"{not json", "body is not valid JSON: Expecting property name enclosed in double quotes (line 1, column 2)"),
        (b'{"a": 1,}', "body is not valid JSON"),
        (b'{"a": 1} {"b": 2}', "body is not valid JSON: Extra data"),
        (b'\xef\xbb\xbf{"a": 1}', "body is not valid JSON"),
        (b"", "body is empty"),
        (b" \r\n\t", "body is empty"),
        (b"[1, 2]", "body must be a JSON object, got an array"),
        (b'"just a string"', 'body must be a JSON object, got "just a string"'),
        (b"42", "body must be a JSON object, got 42"),
        (b"null", "body must be a JSON object, got null"),
        (b'{"a": NaN}', "NaN is not a JSON value"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON value"),
        (b'{"n": 1' + b"0" * 5000 + b"}", "body is not valid JSON"),
        (b"[" * 100_000, f"nested deeper than {MAX_JSON_DEPTH} levels"),
        (b'{"a":' * 100_000, f"nested deeper than {MAX_JSON_DEPTH} levels"),
        (b'{"a": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}", "nested deeper"),
    ],
    ids=[
        "bad-utf8-start",
        "bad-utf8-inside",
        "invalid-json",
        "trailing-comma",
        "two-documents",
        "bom",
        "empty",
        "whitespace",
        "array",
        "string",
        "number",
        "null",
        "nan",
        "infinity",
        "huge-integer",
        "deep-arrays",
        "deep-objects",
        "one-level-too-deep",
    ],
)
def test_decode_json_object_names_the_problem(body: bytes, message: str) -> None:
    """Bodies that are not one JSON object give a PayloadError saying what is wrong, never another exception."""
    with pytest.raises(PayloadError) as caught:
        decode_json_object(body)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": ' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}",
        json.dumps({"s": "[{" * 5000, "t": '\\"[[[['}).encode(),
        json.dumps({f"k{i}": [{}] for i in range(200)}).encode(),
    ],
    ids=["exactly-max-depth", "brackets-inside-strings", "many-shallow-containers"],
)
def test_decode_json_object_accepts_bodies_within_the_depth_cap(body: bytes) -> None:
    """Nesting up to the cap, and brackets inside strings, do not count as too deep."""
    assert decode_json_object(body) == json.loads(body)


# --- nothing but PayloadError / AuthenticationError, whatever the input ----------------------------------------


def _entry_points(body: bytes) -> list[Callable[[], object]]:
    return [
        lambda: decode_json_object(body),
        lambda: parse_codeship(body),
        lambda: parse_circleci(sign(body), body, secrets=[SECRET], token_valid=False),
        lambda: parse_circleci({}, body, secrets=[SECRET], token_valid=True),
        lambda: parse_circleci({}, body, secrets=[], token_valid=False),
    ]


def _outcome(call: Callable[[], object]) -> str:
    try:
        result = call()
    except (PayloadError, AuthenticationError) as exc:
        assert str(exc)
        return type(exc).__name__
    assert isinstance(result, BuildEvent | Ignored | dict)
    return type(result).__name__


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"a":' * 100_000, b"[" * 100_000 + b"]" * 100_000, b'{"build":' * 50_000 + b"1" + b"}" * 50_000],
    ids=["open-arrays", "open-objects", "closed-arrays", "closed-builds"],
)
def test_deep_nesting_is_a_payload_error_at_every_entry_point(body: bytes) -> None:
    """Pathologically nested JSON gives PayloadError (or 401 when unauthenticated), never RecursionError."""
    outcomes = [_outcome(call) for call in _entry_points(body)]
    assert outcomes == ["PayloadError", "PayloadError", "PayloadError", "PayloadError", "AuthenticationError"]


def test_random_bytes_never_raise_anything_else() -> None:
    """Five hundred random byte strings give only PayloadError or AuthenticationError at every entry point."""
    rng = random.Random(20261118)
    alphabet = b'{}[]":,0123456789.-+eEtrufalsn \\u\xff\xc3'
    for _ in range(500):
        size = rng.randrange(0, 120)
        body = bytes(rng.choice(alphabet) if rng.random() < 0.8 else rng.randrange(256) for _ in range(size))
        for call in _entry_points(body):
            _outcome(call)


FIELD_NAMES = [
    "build",
    "payload",
    "type",
    "status",
    "project_name",
    "project_full_name",
    "build_id",
    "project_id",
    "id",
    "project",
    "slug",
    "name",
    "workflow",
    "job",
    "pipeline",
    "vcs",
    "branch",
    "tag",
    "revision",
    "trigger_parameters",
    "git",
    "number",
    "username",
    "reponame",
    "build_num",
    "outcome",
    "workflows",
    "build_parameters",
    "CIRCLE_JOB",
    "vcs_url",
    "organization",
    "happened_at",
]
EVENT_TYPES = ["workflow-completed", "job-completed", "ping", "other"]


def _random_json(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(8 if depth > 0 else 6)
    scalars: list[Any] = [
        rng.randrange(-3, 3),
        rng.choice(["success", "", "a/b", "\ud800", "x" * 3]),
        None,
        rng.random() > 0.5,
        1.5,
        rng.choice(EVENT_TYPES),
    ]
    if kind < 6:
        return scalars[kind]
    if kind == 6:
        return [_random_json(rng, depth - 1) for _ in range(rng.randrange(3))]
    return {rng.choice(FIELD_NAMES): _random_json(rng, depth - 1) for _ in range(rng.randrange(6))}


def test_random_json_shapes_never_raise_anything_else() -> None:
    """Random JSON objects built from chainer's own field names give an event, Ignored or a PayloadError."""
    rng = random.Random(4711)
    for _ in range(1500):
        shape = rng.randrange(3)
        inner = _random_json(rng, 4)
        data = (
            {"build": inner}
            if shape == 0
            else {"payload": inner}
            if shape == 1
            else {"type": rng.choice(EVENT_TYPES), **(inner if isinstance(inner, dict) else {"id": inner})}
        )
        for call in _entry_points(json.dumps(data).encode()):
            _outcome(call)


def _paths(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    found = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        found += [path, *_paths(value, f"{path}.")]
    return found


@pytest.mark.parametrize("name", FIXTURES, ids=FIXTURES)
def test_every_field_of_every_fixture_survives_mutation(name: str) -> None:
    """Replacing or deleting any field of a real payload gives an event, Ignored or a PayloadError naming a field."""
    data = load(name)
    replacements: list[Any] = [DELETE, None, 0, -1, True, 1.5, "", "x", "\ud800", [], {}, {"x": [1]}]
    outcomes = set()
    for path in _paths(data):
        for value in replacements:
            outcomes.add(_outcome(functools.partial(deliver, name, mutate(data, {path: value}))))
    assert outcomes <= {"BuildEvent", "Ignored", "PayloadError"} and "PayloadError" in outcomes


def test_hook_auth_checks_the_token_in_constant_time_and_never_shows_it() -> None:
    """What a provider's parse is given: whether the delivery's token is the configured one, without exposing either."""
    settings = Settings(hook_token=Secret("the-hook-token"))
    auth = HookAuth(settings, "the-hook-token")
    assert auth.token_configured and auth.token_valid()
    assert not HookAuth(settings, "the-hook-tokeX").token_valid() and not HookAuth(settings).token_valid()
    assert not HookAuth(Settings(), "the-hook-token").token_configured
    assert not HookAuth(Settings(), "the-hook-token").token_valid()
    assert "the-hook-token" not in repr(auth) and "the-hook-token" not in str(auth)
