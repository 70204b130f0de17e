"""GitHub's own payloads (../shared/reference/fixtures/more-providers/gh_*.json, see its SOURCES.md), signed over their
exact bytes as GitHub would, through the parser: JSON and form-encoded, each to the canonical event it stands for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chainer import providers
from chainer.events import BuildEvent
from chainer.providers.base import HookAuth, Ignored
from chainer.settings import Secret, Settings
from tests.providers.github.support import SECRET, delivery

pytestmark = pytest.mark.conformance

FIXTURES = Path(__file__).resolve().parents[4] / "shared" / "reference" / "fixtures" / "more-providers"
SETTINGS = Settings(github_webhook_secrets=(Secret(SECRET),))
OCTO = "3484a3fb816e0859fd6e1cea078d76385ff50625"

# fixture → (X-GitHub-Event, the canonical fields it must give)
EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "gh_octokit_workflow_run_completed_success.json": (
        "workflow_run",
        # Quirk: workflow_run.name is "" while workflow.name is "test".
        {
            "kind": "workflow",
            "project": "octo-org/octo-repo",
            "project_id": 300029405,
            "status": "success",
            "raw_status": "completed/success",
            "branch": "master",
            "commit": OCTO,
            "build_id": 289782451,
            "workflow": "test",
            "workflow_id": "2823525",
            "pipeline_number": 163,
            "occurred_at": "2020-10-05T16:33:49Z",
            "build_url": "https://github.com/octo-org/octo-repo/actions/runs/289782451",
            "tag": None,
            "job": None,
        },
    ),
    "gh_octokit_workflow_run_requested_action_required.json": (
        "workflow_run",
        # `requested` that arrives finished: decided by the conclusion, not by the action.
        {
            "kind": "workflow",
            "project": "octo-org/octo-repo",
            "status": "other",
            "raw_status": "completed/action_required",
            "build_id": 289782451,
            "workflow": "test",
            "occurred_at": "2020-10-05T16:33:24Z",
        },
    ),
    "gh_hub4j_workflow_run_completed_workflow_dispatch.json": (
        "workflow_run",
        {
            "kind": "workflow",
            "project": "gsmet/quarkus-bot-java-playground",
            "project_id": 313384129,
            "status": "success",
            "raw_status": "completed/success",
            "branch": "main",
            "commit": "dbea8d8b6ed2cf764dfd84a215f3f9040b3d4423",
            "build_id": 680604745,
            "workflow": "CI",
            "workflow_id": "7087581",
            "pipeline_number": 6,
        },
    ),
    "gh_octokit_workflow_job_completed_failure.json": (
        "workflow_job",
        {
            "kind": "job",
            "project": "Codertocat/Hello-World",
            "status": "failed",
            "raw_status": "completed/failure",
            "build_id": 2202229078,
            "job": "linters",
            "workflow": "CodeQL",
            "branch": "main",
            "commit": OCTO,
        },
    ),
}


@pytest.fixture
def fixtures() -> Path:
    """The more-providers fixtures folder beside the checkout, or a skip when it is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"reference fixtures not found at {FIXTURES}; they are provided beside the checkout in CI")
    return FIXTURES


def _parse(body: bytes, event: str, form: bool = False) -> BuildEvent | Ignored:
    raw, headers = delivery(body, event, form=form)
    return providers.get("github").parse(headers, raw, HookAuth(SETTINGS))


def test_every_github_fixture_is_covered(fixtures: Path) -> None:
    assert sorted(p.name for p in fixtures.glob("gh_*.json")) == sorted([*EXPECTED, "gh_octokit_ping.json"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("form", [False, True], ids=["json", "form"])
def test_each_real_delivery_gives_its_canonical_event(fixtures: Path, name: str, form: bool) -> None:
    event_name, expected = EXPECTED[name]
    body = (fixtures / name).read_bytes()
    event = _parse(body, event_name, form)
    assert isinstance(event, BuildEvent) and event.provider == "github"
    assert {k: v for k, v in event.as_dict().items() if k in expected} == expected
    assert event.raw["repository"]["full_name"] == event.project


def test_the_real_ping_is_ignored_without_warnings(fixtures: Path) -> None:
    """The octokit ping is of a repository hook with events ["*"] and content type json: nothing to warn about."""
    ping = _parse((fixtures / "gh_octokit_ping.json").read_bytes(), "ping")
    assert ping == Ignored("GitHub ping from hook 109948940", "ping")
