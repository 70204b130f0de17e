"""GitHub deliveries: X-Hub-Signature-256 on the raw bytes (GitHub's documented vector, rotation, refusals), the
canonical event of workflow_run and workflow_job (JSON and form-encoded), statuses from the conclusion, dedupe keys,
the quirks of more-providers §1.4, and pings with their warnings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chainer import providers
from chainer.errors import AuthenticationError, PayloadError
from chainer.events import BuildEvent
from chainer.providers.base import HookAuth, Ignored
from chainer.providers.github.parse import parse_github, parse_unverified, verify_signature
from chainer.settings import Secret, Settings
from tests.providers.github.support import OLD_SECRET, REPO_ID, RUN_ID, SECRET, SHA, delivery, ping, sign
from tests.providers.github.support import workflow_job as job_body
from tests.providers.github.support import workflow_run as run_body

GITHUB = providers.get("github")
SETTINGS = Settings(github_webhook_secrets=(Secret(OLD_SECRET), Secret(SECRET)))


def parsed(payload: dict[str, Any] | bytes, event: str = "workflow_run", **kw: Any) -> BuildEvent:
    body, headers = delivery(payload, event, **kw)
    result = GITHUB.parse(headers, body, HookAuth(SETTINGS))
    assert isinstance(result, BuildEvent), result
    return result


def refused(body: bytes, headers: dict[str, str], settings: Settings = SETTINGS) -> str:
    with pytest.raises(AuthenticationError) as info:
        GITHUB.parse(headers, body, HookAuth(settings))
    text = str(info.value)
    assert SECRET not in text and OLD_SECRET not in text
    return text


def test_githubs_documented_signature_example_verifies() -> None:
    """docs.github.com's example: secret "It's a Secret to Everybody", body "Hello, World!" (more-providers §1.1)."""
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    verify_signature(b"Hello, World!", expected, ["It's a Secret to Everybody"])
    verify_signature(b"Hello, World!", expected.upper().replace("SHA256=", "sha256="), ["It's a Secret to Everybody"])
    with pytest.raises(AuthenticationError, match="does not match"):
        verify_signature(b"Hello, World!", expected, ["It's a secret to everybody"])
    with pytest.raises(AuthenticationError, match="does not match"):
        verify_signature(b"Hello, World!\n", expected, ["It's a Secret to Everybody"])


def test_every_configured_secret_verifies_so_secrets_rotate() -> None:
    for secret in (OLD_SECRET, SECRET):
        assert parsed(run_body(), secret=secret).status == "success"
    body, headers = delivery(run_body(), secret="some-third-secret")
    assert refused(body, headers) == "X-Hub-Signature-256 does not match any configured GitHub webhook secret"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x-hub-signature-256": None}, "missing X-Hub-Signature-256 header (give the GitHub webhook a secret)"),
        ({"x-hub-signature-256": None, "x-hub-signature": "sha1=" + "0" * 40}, "only the SHA-1 X-Hub-Signature"),
        ({"x-hub-signature-256": "sha1=" + "0" * 40}, "malformed: expected sha256=<64 hex digits>"),
        ({"x-hub-signature-256": "0" * 64}, "malformed"),
        ({"x-hub-signature-256": "sha256=" + "g" * 64}, "malformed"),
        ({"x-hub-signature-256": "sha256=" + "0" * 64}, "does not match"),
    ],
    ids=["missing", "sha1-only", "sha1-in-256", "no-prefix", "not-hex", "wrong"],
)
def test_wrong_missing_and_sha1_only_signatures_are_refused(change: dict[str, str | None], message: str) -> None:
    body, headers = delivery(run_body())
    for name, value in change.items():
        headers.pop(name, None)
        if value is not None:
            headers[name] = value
    assert message in refused(body, headers)


def test_without_configured_secrets_every_delivery_is_refused_naming_the_variable() -> None:
    body, headers = delivery(run_body())
    for settings in (Settings(), Settings(github_webhook_secrets=(Secret(""),))):
        text = refused(body, headers, settings)
        assert text == "GitHub webhook secrets are not configured (CHAINER_GITHUB_WEBHOOK_SECRETS)"


def test_the_signature_is_checked_before_the_body_is_read() -> None:
    """A body that is not even JSON gets 401 when unsigned, 400 only once its signature is right."""
    junk = b"\xff{not json"
    _, headers = delivery(run_body())
    headers["x-hub-signature-256"] = sign(junk, "wrong")
    refused(junk, headers)
    headers["x-hub-signature-256"] = sign(junk)
    with pytest.raises(PayloadError, match="not valid UTF-8"):
        GITHUB.parse(headers, junk, HookAuth(SETTINGS))


def test_a_completed_run_becomes_the_canonical_event() -> None:
    event = parsed(run_body("failure"))
    assert event.as_dict() == {
        "provider": "github",
        "kind": "workflow",
        "event_id": event.event_id,
        "project": "acme/lib",
        "status": "failed",
        "raw_status": "completed/failure",
        "project_id": REPO_ID,
        "project_slug": None,
        "branch": "main",
        "tag": None,
        "commit": SHA,
        "build_id": RUN_ID,
        "build_url": f"https://github.com/acme/lib/actions/runs/{RUN_ID}",
        "workflow": "CI",
        "workflow_id": "161335",
        "job": None,
        "pipeline_number": 562,
        "occurred_at": "2026-11-20T10:05:00Z",
        "chain": [],
    }
    assert event.dedupe_keys == (
        "github:delivery:72d3162e-cc78-11e3-81ab-4c9367dc0958:hook:292430182",
        f"github:{REPO_ID}:run:{RUN_ID}:1:completed/failure",
    )


@pytest.mark.parametrize(
    ("conclusion", "status"),
    [
        ("success", "success"),
        ("failure", "failed"),
        ("timed_out", "failed"),
        ("startup_failure", "error"),
        ("cancelled", "canceled"),
        ("action_required", "other"),
        ("neutral", "other"),
        ("skipped", "other"),
        ("stale", "other"),
        ("a_conclusion_github_adds_later", "other"),
    ],
)
def test_the_status_comes_from_the_conclusion(conclusion: str, status: str) -> None:
    event = parsed(run_body(conclusion))
    assert (event.status, event.raw_status) == (status, f"completed/{conclusion}")


@pytest.mark.parametrize(
    ("action", "run_status", "occurred"),
    [("requested", "queued", "2026-11-20T10:00:00Z"), ("in_progress", "in_progress", "2026-11-20T10:00:05Z")],
)
def test_unfinished_runs_are_running(action: str, run_status: str, occurred: str) -> None:
    event = parsed(run_body(None, action=action, status=run_status))
    assert (event.status, event.raw_status, event.occurred_at, event.terminal) == (
        "running",
        run_status,
        occurred,
        False,
    )


def test_a_requested_run_that_already_needs_approval_is_decided_by_its_conclusion() -> None:
    """more-providers §1.4: `requested` can arrive with status completed and conclusion action_required."""
    requested = parsed(run_body("action_required", action="requested", status="completed"))
    assert (requested.status, requested.raw_status) == ("other", "completed/action_required")
    completed = parsed(run_body("action_required"), guid="another-delivery")
    assert requested.dedupe_keys[1] == completed.dedupe_keys[1]  # one state of one attempt: one event


def test_dedupe_keys_keep_re_run_attempts_apart_and_join_hooks() -> None:
    first = parsed(run_body("failure"))
    redelivered = parsed(run_body("failure"))
    org_hook = parsed(run_body("failure"), hook_id="11111", guid="8e1c1d5a-0000-11e3-81ab-4c9367dc0958")
    second_attempt = parsed(run_body("failure", attempt=2), guid="9f2d2e6b-0000-11e3-81ab-4c9367dc0958")
    assert (redelivered.event_id, redelivered.dedupe_keys) == (first.event_id, first.dedupe_keys)
    assert org_hook.dedupe_keys[0] != first.dedupe_keys[0] and org_hook.dedupe_keys[1] == first.dedupe_keys[1]
    assert second_attempt.dedupe_keys[1] == f"github:{REPO_ID}:run:{RUN_ID}:2:completed/failure"
    assert second_attempt.build_id == first.build_id == RUN_ID  # the same run: rerun_workflow_run's default
    in_progress = parsed(run_body(None, action="in_progress", status="in_progress"))
    assert in_progress.dedupe_keys[1] != first.dedupe_keys[1]  # a late in_progress cannot hide the result


def test_form_encoded_deliveries_are_read_from_their_payload_field_and_signed_over_the_form() -> None:
    as_json = parsed(run_body("success"))
    as_form = parsed(run_body("success"), form=True)
    assert as_form.as_dict() == as_json.as_dict()
    body, headers = delivery(run_body("success"), form=True)
    headers["x-hub-signature-256"] = sign(json.dumps(run_body("success")).encode())  # over the JSON, not the form
    refused(body, headers)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"payload=%7B%22a%22", "body is not valid JSON"),
        (b"other=1", "form-encoded body has no payload field"),
        (b"payload=%7B%7D&payload=%7B%7D", "form-encoded body has 2 payload fields"),
        (b"payload", "form-encoded body is malformed"),
        (b"payload=%FF", "form-encoded body is malformed"),
        (b"payload={}" + "é".encode(), "form-encoded body is not ASCII"),
    ],
    ids=["truncated-json", "no-payload", "two-payloads", "no-equals", "bad-escape", "not-ascii"],
)
def test_malformed_form_bodies_are_400_naming_the_problem(body: bytes, message: str) -> None:
    _, headers = delivery(b"{}", form=True)
    headers["x-hub-signature-256"] = sign(body)
    with pytest.raises(PayloadError) as info:
        GITHUB.parse(headers, body, HookAuth(SETTINGS))
    assert message in str(info.value)


def test_quirks_null_branch_and_empty_run_name() -> None:
    """more-providers §1.4: head_branch can be null; workflow_run.name can be "" (the workflow's name is used)."""
    no_branch = parsed(run_body(branch=None, name=""))
    assert (no_branch.branch, no_branch.workflow) == (None, "CI")
    no_workflow = parsed(run_body(name="", workflow={}))
    assert no_workflow.workflow == ".github/workflows/ci.yml"
    nameless = run_body(name="Nightly")
    nameless["workflow"] = None
    assert parsed(nameless).workflow == "Nightly"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("workflow_run", "id"), None, "missing field workflow_run.id"),
        (("workflow_run", "id"), "30433642", "workflow_run.id: expected an integer"),
        (("workflow_run", "status"), None, "missing field workflow_run.status"),
        (("repository", "full_name"), None, "missing field repository.full_name"),
        (("repository", "id"), None, "missing field repository.id"),
        (("workflow_run",), "run", "workflow_run: expected an object"),
        (("workflow_run",), None, "missing field workflow_run"),
        (("workflow_run", "head_branch"), 7, "workflow_run.head_branch: expected a string"),
    ],
)
def test_missing_or_mistyped_fields_are_400_naming_the_field(path: tuple[str, ...], value: Any, message: str) -> None:
    payload = run_body()
    node = payload
    for part in path[:-1]:
        node = node[part]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    body, headers = delivery(payload)
    with pytest.raises(PayloadError) as info:
        GITHUB.parse(headers, body, HookAuth(SETTINGS))
    assert message in str(info.value)


def test_a_workflow_job_is_a_job_event_of_its_run() -> None:
    event = parsed(job_body("failure"), "workflow_job")
    assert (event.kind, event.status, event.raw_status, event.job, event.workflow) == (
        "job",
        "failed",
        "completed/failure",
        "test",
        "CI",
    )
    assert (event.build_id, event.project, event.branch, event.commit) == (RUN_ID, "acme/lib", "main", SHA)
    assert event.dedupe_keys[1] == f"github:{REPO_ID}:job:399444496:1:completed/failure"
    assert parsed(job_body(None), "workflow_job").status == "running"


def test_pings_are_ignored_and_warn_about_hooks_chainer_cannot_use() -> None:
    def ping_of(payload: dict[str, Any], form: bool = False) -> Ignored:
        body, headers = delivery(payload, "ping", form=form)
        result = GITHUB.parse(headers, body, HookAuth(SETTINGS))
        assert isinstance(result, Ignored) and result.event_type == "ping"
        return result

    assert ping_of(ping()).reason == "GitHub ping from hook 109948940"
    assert ping_of(ping(["*"])).reason == "GitHub ping from hook 109948940"
    unsubscribed = ping_of(ping(["push", "pull_request"])).reason
    assert unsubscribed.startswith(
        "GitHub ping from hook 109948940; WARNING: the hook is not subscribed to workflow_run"
    )
    formed = ping_of(ping(content_type="form"), form=True).reason
    assert formed == (
        "GitHub ping from hook 109948940; WARNING: the hook sends form bodies; set its content type to application/json"
    )
    both = ping_of(ping(["push"], content_type="form"), form=True).reason
    assert both.count("WARNING:") == 2


def test_other_events_are_ignored_and_the_event_name_can_come_from_the_body() -> None:
    body, headers = delivery({"ref": "refs/heads/main"}, "push")
    other = GITHUB.parse(headers, body, HookAuth(SETTINGS))
    assert isinstance(other, Ignored) and other.event_type == "push" and "Workflow runs" in other.reason
    without = parse_unverified({}, json.dumps(run_body("success")).encode())
    assert isinstance(without, BuildEvent) and without.status == "success"
    assert without.dedupe_keys == (f"github:{REPO_ID}:run:{RUN_ID}:1:completed/success",)
    assert isinstance(parse_unverified({}, json.dumps(ping()).encode()), Ignored)
    with pytest.raises(PayloadError, match="missing X-GitHub-Event header"):
        parse_unverified({}, b'{"action": "completed"}')
    form = parse_unverified({}, delivery(job_body(), form=True)[0])
    assert isinstance(form, BuildEvent) and form.kind == "job"


def test_parse_github_takes_the_headers_in_any_case() -> None:
    body, headers = delivery(run_body("cancelled"))
    shouted = {k.upper(): v for k, v in headers.items()}
    event = parse_github(shouted, body, secrets=[SECRET])
    assert isinstance(event, BuildEvent) and event.status == "canceled"


def test_long_delivery_ids_that_share_a_prefix_are_told_apart() -> None:
    """The delivery key holds the whole header value (a digest when it is long), not a shortened display of it."""
    stem = "d" * 120
    first = parsed(run_body("failure"), guid=f"{stem}-1")
    second = parsed(run_body("failure"), guid=f"{stem}-2")
    assert first.dedupe_keys[0] != second.dedupe_keys[0]
    assert first.dedupe_keys[0].startswith("github:delivery:sha256:") and len(first.dedupe_keys[0]) < 120
