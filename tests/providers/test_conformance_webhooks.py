"""Conformance of the providers' parsers with the providers' own payloads, read from shared/reference/fixtures."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import pytest

from chainer.errors import PayloadError
from chainer.events import BuildEvent, make_event_id
from chainer.providers.circleci.parse import parse_circleci
from chainer.providers.codeship.parse import parse_codeship

pytestmark = pytest.mark.conformance

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "reference" / "fixtures"
SECRET = "whsec-conformance-3e7f"


@pytest.fixture
def fixtures() -> Path:
    """The reference fixtures folder beside the checkout, or a skip when it is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"reference fixtures not found at {FIXTURES}; they are provided beside the checkout in CI")
    return FIXTURES


def _signed(body: bytes) -> BuildEvent:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"content-type": "application/json", "circleci-signature": f"v1={digest}"}
    event = parse_circleci(headers, body, secrets=[SECRET], token_valid=False)
    assert isinstance(event, BuildEvent)
    return event


def _fields(event: BuildEvent) -> dict[str, Any]:
    return {**event.as_dict(), "dedupe_keys": event.dedupe_keys}


BUILDLIGHT = {
    "provider": "circleci",
    "kind": "workflow",
    "project": "collectiveidea/buildlight",
    "project_id": "b7548785-2c2f-44e2-9062-35b4f960875c",
    "project_slug": "github/collectiveidea/buildlight",
    "status": "success",
    "raw_status": "success",
    "tag": None,
    "workflow": "workflow",
    "job": None,
    "build_id": None,
    "chain": [],
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "buildlight_circle.json",
            {
                "delivery": "5a0111d5-3fa7-3180-926d-63a61a4b81a8",
                "workflow_id": "a2a8d81e-9de0-4e07-981c-cb14dbbe0a89",
                "branch": "main",
                "commit": "3287ff41025001a2aff89d6aaa57387851f9d588",
                "pipeline_number": 350,
                "occurred_at": "2024-01-09T21:10:40.799826Z",
            },
        ),
        (
            "buildlight_circle_pr.json",
            {
                "delivery": "49ebe776-6037-34dc-bf7f-4a15fe63b028",
                "workflow_id": "eff726c2-47ce-46ea-9b6d-f9481eca3123",
                "branch": "circle-webhook-upgrade",
                "commit": "2637f724b1e7a6f1a980f70a26c595e9014f273e",
                "pipeline_number": 354,
                "occurred_at": "2024-01-10T15:45:30.693234Z",
            },
        ),
    ],
    ids=["buildlight-main", "buildlight-branch"],
)
def test_real_workflow_completed_bodies(fixtures: Path, name: str, expected: dict[str, Any]) -> None:
    """Real captured workflow-completed bodies, signed over their exact bytes, give the canonical event."""
    body = (fixtures / name).read_bytes()
    delivery, workflow_id = expected.pop("delivery"), expected["workflow_id"]
    number = expected["pipeline_number"]
    url = f"https://app.circleci.com/pipelines/github/collectiveidea/buildlight/{number}/workflows/{workflow_id}"
    keys = (f"circleci:id:{delivery}", f"circleci:workflow:{workflow_id}:success")
    assert _fields(_signed(body)) == BUILDLIGHT | expected | {
        "event_id": make_event_id("circleci", keys[0]),
        "build_url": url,
        "dedupe_keys": keys,
    }


def test_real_legacy_payload(fixtures: Path) -> None:
    """The captured legacy notify body parses as a job event, alone or with the Rails params around it."""
    captured = json.loads((fixtures / "buildlightlegacy_circle_pr.json").read_text(encoding="utf-8"))
    key = "circleci:legacy:github/collectiveidea/buildlight/2:success"
    expected = {
        "provider": "circleci",
        "kind": "job",
        "event_id": make_event_id("circleci", key),
        "project": "collectiveidea/buildlight",
        "status": "success",
        "raw_status": "success",
        "project_id": None,
        "project_slug": "github/collectiveidea/buildlight",
        "branch": "circle-ci",
        "tag": None,
        "commit": "f3f6569ec57197a5382c38d6b8ba2e2fc74f0599",
        "build_id": 2,
        "build_url": "https://circleci.com/gh/collectiveidea/buildlight/2",
        "workflow": None,
        "workflow_id": None,
        "job": None,
        "pipeline_number": None,
        "occurred_at": "2016-10-12T19:09:15.768Z",
        "chain": [],
        "dedupe_keys": (key,),
    }
    for data in ({"payload": captured["payload"]}, captured):
        event = parse_circleci({}, json.dumps(data).encode(), secrets=[], token_valid=True)
        assert isinstance(event, BuildEvent)
        assert _fields(event) == expected


def _documented_samples(fixtures: Path) -> dict[str, dict[str, Any]]:
    text = (fixtures / "circlecidocs_outbound-webhooks-reference.adoc").read_text(encoding="utf-8")
    blocks = re.findall(r"^\[#([\w-]+)\]\n=== [^\n]*\n\n```json\n(.*?)\n```", text, re.MULTILINE | re.DOTALL)
    return {anchor: json.loads(block) for anchor, block in blocks}


@pytest.mark.parametrize(
    ("anchor", "expected"),
    [
        (
            "workflow-completed-for-github-and-bitbucket",
            {
                "kind": "workflow",
                "project": "circleci/webhook-service",
                "status": "success",
                "branch": "main",
                "commit": "1dc6aa69429bff4806ad6afe58d3d8f57e25973e",
                "workflow": "build-test-deploy",
                "job": None,
                "build_id": None,
                "pipeline_number": 130,
                "project_slug": "github/circleci/webhook-service",
            },
        ),
        (
            "job-completed-for-github-and-bitbucket",
            {
                "kind": "job",
                "project": "circleci/webhook-service",
                "status": "success",
                "branch": "main",
                "commit": "1dc6aa69429bff4806ad6afe58d3d8f57e25973e",
                "workflow": "welcome",
                "job": "test",
                "build_id": 136,
                "pipeline_number": 130,
                "project_slug": "github/circleci/webhook-service",
            },
        ),
        (
            "workflow-completed-gitlab",
            {
                "kind": "workflow",
                "project": "circleci/hello-world",
                "status": "failed",
                "branch": "main",
                "tag": None,
                "commit": "850a1519f25d14e968649cc420d1bd381715c05c",
                "workflow": "build",
                "job": None,
                "pipeline_number": 1,
                "project_slug": "circleci/DdaVtNusHqi24D4YT3X4eu/6EkDPZoN4ZdMKKZtBkRodt",
            },
        ),
        (
            "job-completed-gitlab",
            {
                "kind": "job",
                "project": "circleci/hello-world",
                "status": "success",
                "branch": "main",
                "tag": None,
                "commit": "850a1519f25d14e968649cc420d1bd381715c05c",
                "workflow": None,
                "workflow_id": None,
                "job": "say-hello",
                "build_id": 1,
                "build_url": None,
                "pipeline_number": 1,
            },
        ),
    ],
    ids=["workflow-github", "job-github", "workflow-gitlab", "job-gitlab"],
)
def test_documented_outbound_samples(fixtures: Path, anchor: str, expected: dict[str, Any]) -> None:
    """CircleCI's four documented sample payloads parse, job events without reading workflow.status."""
    sample = _documented_samples(fixtures)[anchor]
    event = _signed(json.dumps(sample).encode())
    assert {field: getattr(event, field) for field in expected} == expected
    assert event.dedupe_keys[0] == f"circleci:id:{sample['id']}"


def _repair(text: str) -> str:
    """The minimal repair of Codeship's documented payload: drop the ``#`` comment, rejoin the broken string."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    repaired: list[str] = []
    for line in lines:
        if repaired and repaired[-1].count('"') % 2 == 1:
            repaired[-1] += line.lstrip()
        else:
            repaired.append(line)
    return "\n".join(repaired)


@pytest.mark.parametrize(
    ("name", "raw_status", "status"),
    [
        ("codeshipdocs_notifications_webhook_payload.json", "initiated", "running"),
        ("codeshipdocs_webhooks_payload_2017.json", "testing", "running"),
    ],
    ids=["current-docs-initiated", "2017-docs-testing"],
)
def test_documented_codeship_payloads(fixtures: Path, name: str, raw_status: str, status: str) -> None:
    """Codeship's documented payload is invalid JSON as printed (400), and parses once minimally repaired."""
    text = (fixtures / name).read_text(encoding="utf-8")
    with pytest.raises(PayloadError, match="not valid JSON"):
        parse_codeship(text.encode())
    event = parse_codeship(_repair(text).encode())
    assert isinstance(event, BuildEvent)
    key = f"codeship:973711:{raw_status}"
    assert _fields(event) == {
        "provider": "codeship",
        "kind": "build",
        "event_id": make_event_id("codeship", key),
        "project": "codeship/docs",
        "status": status,
        "raw_status": raw_status,
        "project_id": 10213,
        "project_slug": None,
        "branch": "master",
        "tag": None,
        "commit": "96943dc5269634c211b6fbb18896ecdcbd40a047",
        "build_id": 973711,
        "build_url": "https://www.codeship.com/projects/10213/builds/973711",
        "workflow": None,
        "workflow_id": None,
        "job": None,
        "pipeline_number": None,
        "occurred_at": None,
        "chain": [],
        "dedupe_keys": (key,),
    }
    assert event.raw["build"]["commit_url"] == (
        "https://github.com/codeship/docs/commit/96943dc5269634c211b6fbb18896ecdcbd40a047"
    )
