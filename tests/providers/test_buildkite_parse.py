"""Buildkite deliveries: the signature scheme (official vector, ±300 s, malformed headers, no downgrade to the plain
token), the event header, the canonical event (statuses with ``blocked``, ``HEAD`` commits, both timestamp
formats, the project from URLs), dedupe keys, and the real payloads of shared/reference/fixtures/more-providers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chainer.errors import AuthenticationError, PayloadError
from chainer.events import BuildEvent, make_event_id
from chainer.providers import get
from chainer.providers.base import HookAuth, Ignored
from chainer.providers.buildkite.parse import STATUSES, parse_buildkite, parse_unverified, sign
from chainer.settings import Secret, Settings
from tests.payloads import COMMIT, buildkite_build, buildkite_signed

TOKEN = "bk-webhook-token-5f1e"
NOW = 1_800_000_000
MORE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "fixtures" / "more-providers"
# The official vector (buildkite/go-buildkite webhook_test.go, quoted in the fixtures' SOURCES.md).
VECTOR_TOKEN = "29b1ff5779c76bd48ba6705eb99ff970"
VECTOR_TIME = 1642080837
VECTOR_SIGNATURE = "582d496ac2d869dd97a3101c4cda346288c49a742592daf582ec64c86449f79c"


@pytest.fixture
def more() -> Path:
    """The more-providers fixtures beside the checkout, or a skip when they are absent."""
    if not MORE.is_dir():
        pytest.skip(f"reference fixtures not found at {MORE}; they are provided beside the checkout in CI")
    return MORE


def parse(
    headers: dict[str, str], body: bytes, *, token: str | None = TOKEN, plain: bool = False, now: float = NOW
) -> BuildEvent | Ignored:
    return parse_buildkite(headers, body, token=token, allow_plain_token=plain, now=now)


def event_of(body: dict[str, Any] | bytes, **kw: Any) -> BuildEvent:
    raw, headers = buildkite_signed(body, TOKEN, NOW)
    parsed = parse(headers, raw, **kw)
    assert isinstance(parsed, BuildEvent)
    return parsed


def refused(headers: dict[str, str], body: bytes, **kw: Any) -> str:
    with pytest.raises(AuthenticationError) as info:
        parse(headers, body, **kw)
    message = str(info.value)
    assert TOKEN not in message and VECTOR_TOKEN not in message
    return message


# -- the signature ---------------------------------------------------------------------------------------


@pytest.mark.conformance
def test_the_official_signature_vector_verifies_and_its_ping_is_ignored(more: Path) -> None:
    """go-buildkite's signed ping body, token and header: chainer's HMAC gives the same hex and accepts it."""
    body = (more / "bk_gobuildkite_ping.json").read_bytes()
    assert len(body) == 756 and sign(VECTOR_TOKEN, VECTOR_TIME, body) == VECTOR_SIGNATURE
    headers = {
        "X-Buildkite-Event": "ping",
        "X-Buildkite-Signature": f"timestamp={VECTOR_TIME},signature={VECTOR_SIGNATURE}",
    }
    assert parse(headers, body, token=VECTOR_TOKEN, now=VECTOR_TIME) == Ignored("Buildkite ping event", "ping")
    # One byte more, or another token, and the same header no longer verifies.
    assert "does not match" in refused(headers, body + b" ", token=VECTOR_TOKEN, now=VECTOR_TIME)
    assert "does not match" in refused(headers, body, token=VECTOR_TOKEN[:-1] + "1", now=VECTOR_TIME)


@pytest.mark.parametrize(("skew", "accepted"), [(0, True), (300, True), (-300, True), (301, False), (-301, False)])
def test_the_signature_timestamp_may_be_300_seconds_off_either_way(skew: int, accepted: bool) -> None:
    """The timestamp is the send time: 300 s old or ahead is fine, 301 s is a replay (or a wrong clock)."""
    raw, headers = buildkite_signed(buildkite_build(), TOKEN, NOW)
    if accepted:
        assert isinstance(parse(headers, raw, now=NOW + skew), BuildEvent)
    else:
        message = refused(headers, raw, now=NOW + skew)
        assert "301 s" in message and ("old" if skew > 0 else "in the future") in message


def test_a_replayed_signature_with_a_fresh_timestamp_does_not_verify() -> None:
    """The timestamp is signed: moving it forward to pass the window breaks the signature."""
    raw, headers = buildkite_signed(buildkite_build(), TOKEN, NOW - 3600)
    headers["x-buildkite-signature"] = headers["x-buildkite-signature"].replace(str(NOW - 3600), str(NOW))
    assert "does not match" in refused(headers, raw)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "malformed"),
        (f"timestamp={NOW}", "malformed"),
        ("signature=" + "a" * 64, "malformed"),
        (f"timestamp={NOW},signature=", "64 hex"),
        (f"timestamp={NOW},signature={'g' * 64}", "64 hex"),
        (f"timestamp={NOW},signature={'a' * 63}", "64 hex"),
        (f"timestamp=soon,signature={'a' * 64}", "unix seconds"),
        (f"timestamp={NOW},timestamp={NOW},signature={'a' * 64}", "malformed"),
        (f"timestamp={NOW},signature={'a' * 64},v2={'b' * 64}", "malformed"),
        (f"timestamp={NOW};signature={'a' * 64}", "malformed"),
        (f"timestamp={NOW},signature={'a' * 64}", "does not match"),
    ],
    ids=[
        "empty",
        "no-signature",
        "no-timestamp",
        "empty-signature",
        "not-hex",
        "short",
        "bad-time",
        "twice",
        "extra-part",
        "semicolon",
        "wrong",
    ],
)
def test_wrong_partial_and_malformed_signatures_are_401(value: str, fragment: str) -> None:
    raw, headers = buildkite_signed(buildkite_build(), TOKEN, NOW)
    headers["x-buildkite-signature"] = value
    assert fragment in refused(headers, raw)


def test_the_header_may_put_its_parts_in_any_order_with_blanks_and_upper_case_hex() -> None:
    raw, headers = buildkite_signed(buildkite_build(), TOKEN, NOW)
    digest = headers["x-buildkite-signature"].split("signature=")[1]
    headers["x-buildkite-signature"] = f" signature={digest.upper()} , timestamp={NOW} "
    assert isinstance(parse(headers, raw), BuildEvent)


def test_without_a_configured_token_every_delivery_is_refused() -> None:
    raw, headers = buildkite_signed(buildkite_build(), TOKEN, NOW)
    assert "CHAINER_BUILDKITE_WEBHOOK_TOKEN" in refused(headers, raw, token=None)
    plain = {"x-buildkite-event": "build.finished", "x-buildkite-token": TOKEN}
    assert "CHAINER_BUILDKITE_WEBHOOK_TOKEN" in refused(plain, raw, token=None, plain=True)


def test_a_delivery_with_neither_header_is_401() -> None:
    raw = json.dumps(buildkite_build()).encode()
    assert "missing X-Buildkite-Signature" in refused({"x-buildkite-event": "build.finished"}, raw)


# -- the plain token: only when allowed, and never instead of a signature -------------------------------


def test_a_plain_token_is_refused_unless_allowed_so_a_signing_hook_cannot_be_downgraded() -> None:
    raw = json.dumps(buildkite_build()).encode()
    headers = {"x-buildkite-event": "build.finished", "x-buildkite-token": TOKEN}
    assert "CHAINER_BUILDKITE_ALLOW_PLAIN_TOKEN=1" in refused(headers, raw)
    assert isinstance(parse(headers, raw, plain=True), BuildEvent)
    headers["x-buildkite-token"] = TOKEN + "x"
    assert "X-Buildkite-Token does not match" in refused(headers, raw, plain=True)


def test_when_both_headers_come_the_signature_decides() -> None:
    """A correct plain token beside a bad signature is refused; a good signature beside a wrong token is accepted."""
    raw, headers = buildkite_signed(buildkite_build(), TOKEN, NOW)
    good = headers["x-buildkite-signature"]
    headers |= {"x-buildkite-token": TOKEN, "x-buildkite-signature": f"timestamp={NOW},signature={'0' * 64}"}
    assert "does not match" in refused(headers, raw, plain=True)
    headers |= {"x-buildkite-token": "wrong", "x-buildkite-signature": good}
    assert isinstance(parse(headers, raw, plain=True), BuildEvent)


# -- the event header and the body ---------------------------------------------------------------------------


def test_the_event_header_must_name_the_bodys_event() -> None:
    raw, headers = buildkite_signed(buildkite_build("build.finished"), TOKEN, NOW, event="build.running")
    with pytest.raises(PayloadError, match=r"'build\.running' does not match the body's event 'build\.finished'"):
        parse(headers, raw)
    del headers["x-buildkite-event"]
    with pytest.raises(PayloadError, match="missing header X-Buildkite-Event"):
        parse(headers, raw)


def test_a_body_without_event_takes_the_headers_as_old_payloads_did() -> None:
    body = buildkite_build()
    del body["event"]
    raw, headers = buildkite_signed(body, TOKEN, NOW, event="build.finished")
    event = parse(headers, raw)
    assert isinstance(event, BuildEvent) and event.status == "success"


@pytest.mark.parametrize("name", ["job.started", "agent.connected", "build.unknown"])
def test_other_events_are_ignored_after_authentication(name: str) -> None:
    raw, headers = buildkite_signed(buildkite_build(name), TOKEN, NOW)
    assert parse(headers, raw) == Ignored(
        f"Buildkite event {name!r} is not one chainer reads (build.*, job.finished)", name
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b["build"].pop("id"), "missing field build.id"),
        (lambda b: b["build"].update(number="12"), "build.number: expected an integer"),
        (lambda b: b["build"].pop("state"), "missing field build.state"),
        (lambda b: b["build"].update(blocked="yes"), "build.blocked: expected true or false"),
        (lambda b: b["build"].update(finished_at="yesterday"), "build.finished_at: 'yesterday' is not a timestamp"),
        (lambda b: b["build"].update(finished_at="9999-12-31T23:59:59-14:00"), "build.finished_at: '9999-12-31"),
        (lambda b: b["build"].update(finished_at="0001-01-01T00:00:00+14:00"), "build.finished_at: '0001-01-01"),
        (lambda b: b["build"].update(meta_data=["x"]), "build.meta_data: expected an object"),
        (lambda b: b["pipeline"].update(url="https://api.buildkite.com/v1/x"), "pipeline.url: 'https://api.buildkite"),
        (
            lambda b: (
                [b["pipeline"].pop(k) for k in ("url", "web_url")] + [b["build"].pop(k) for k in ("url", "web_url")]
            ),
            "missing field pipeline.url (or build.url, build.web_url)",
        ),
    ],
    ids=[
        "no-id",
        "number-text",
        "no-state",
        "blocked-text",
        "bad-time",
        "after-9999",
        "before-1",
        "meta-list",
        "bad-url",
        "no-urls",
    ],
)
def test_missing_or_mistyped_fields_are_400_naming_them(change: Any, message: str) -> None:
    body = buildkite_build(commit="HEAD")
    change(body)
    raw, headers = buildkite_signed(body, TOKEN, NOW)
    with pytest.raises(PayloadError) as info:
        parse(headers, raw)
    assert message in str(info.value)


# -- the canonical event -----------------------------------------------------------------------------------


def test_a_finished_build_becomes_the_canonical_event() -> None:
    event = event_of(buildkite_build(meta_data={"chainer:cause": "evt_1"}))
    key = "buildkite:0190a9c4-5b7e-4d8a-9f3e-2c1b0a987654:build.finished:passed:false"
    assert event.as_dict() == {
        "provider": "buildkite",
        "kind": "build",
        "event_id": make_event_id("buildkite", key),
        "project": "acme/lib",
        "status": "success",
        "raw_status": "passed",
        "project_id": "4a1e7c2d-8b3f-4e6a-9d0c-5f2b1a3e7c90",
        "project_slug": None,
        "branch": "main",
        "tag": None,
        "commit": COMMIT,
        "build_id": 12,
        "build_url": "https://buildkite.com/acme/lib/builds/12",
        "workflow": "Lib",
        "workflow_id": "4a1e7c2d-8b3f-4e6a-9d0c-5f2b1a3e7c90",
        "job": None,
        "pipeline_number": None,
        "occurred_at": "2026-11-20T10:15:40Z",
        "chain": [],
    }
    assert event.dedupe_keys == (key,)


@pytest.mark.parametrize(("state", "status"), sorted(STATUSES.items()))
def test_each_buildkite_state_maps_to_its_canonical_status(state: str, status: str) -> None:
    assert event_of(buildkite_build(state=state)).status == status


@pytest.mark.parametrize(
    ("state", "raw"), [("passed", "passed/blocked"), ("blocked", "blocked"), ("failed", "failed/blocked")]
)
def test_a_blocked_build_is_other_never_success(state: str, raw: str) -> None:
    """build.finished with blocked: true waits for a person: `other`, whatever its state says (§4.2)."""
    event = event_of(buildkite_build(state=state, blocked=True))
    assert (event.status, event.raw_status, event.terminal) == ("other", raw, False)


def test_a_state_buildkite_adds_later_is_other_with_its_raw_status() -> None:
    event = event_of(buildkite_build(state="waiting_for_godot"))
    assert (event.status, event.raw_status) == ("other", "waiting_for_godot")


@pytest.mark.parametrize(
    ("commit", "meta", "expected"),
    [
        ("HEAD", {"buildkite:git:commit": f"commit {COMMIT}\nAuthor: A <a@example.org>\n\n    Fix"}, COMMIT),
        ("main", {"buildkite:git:commit": f"commit {COMMIT}"}, COMMIT),
        ("HEAD", {}, None),
        ("HEAD", {"buildkite:git:commit": "not a commit line"}, None),
        (COMMIT.upper(), {}, COMMIT),
    ],
    ids=["head-resolved", "branch-name", "head-unresolved", "garbled-meta", "upper-case-sha"],
)
def test_head_commits_take_the_sha_the_agent_checked_out(
    commit: str, meta: dict[str, str], expected: str | None
) -> None:
    """API builds of HEAD report `commit: HEAD` until the agent writes the SHA into buildkite:git:commit."""
    assert event_of(buildkite_build(commit=commit, meta_data=meta)).commit == expected


@pytest.mark.parametrize(
    ("written", "iso"),
    [
        ("2016-03-20 09:48:23 UTC", "2016-03-20T09:48:23Z"),
        ("2021-02-03T20:34:10.486Z", "2021-02-03T20:34:10.486Z"),
        ("2021-02-03T21:34:10+01:00", "2021-02-03T20:34:10Z"),
    ],
    ids=["webhook-format", "rest-iso", "offset"],
)
def test_both_timestamp_formats_become_iso_8601(written: str, iso: str) -> None:
    assert event_of(buildkite_build(finished_at=written)).occurred_at == iso


def test_a_timestamp_without_a_zone_is_refused() -> None:
    raw, headers = buildkite_signed(buildkite_build(finished_at="2021-02-03T20:34:10"), TOKEN, NOW)
    with pytest.raises(PayloadError, match=r"build\.finished_at"):
        parse(headers, raw)


def test_each_event_takes_its_own_time_and_kind() -> None:
    running = event_of(buildkite_build("build.running", "running", finished_at=None))
    assert (running.kind, running.status, running.occurred_at) == ("build", "running", "2026-11-20T10:12:05Z")
    scheduled = event_of(buildkite_build("build.scheduled", "scheduled", finished_at=None))
    assert scheduled.occurred_at == "2026-11-20T10:12:01Z"


def test_the_project_comes_from_the_web_url_when_the_api_urls_are_missing() -> None:
    body = buildkite_build(org="Acme-Inc", pipeline="web-app")
    del body["pipeline"]["url"], body["build"]["url"], body["pipeline"]["web_url"]
    assert event_of(body).project == "Acme-Inc/web-app"


def test_a_redelivery_is_a_duplicate_and_a_rebuild_or_an_unblock_is_new() -> None:
    """No delivery id exists: the build id, event, state and blocked flag make the key (§4.3)."""
    first = event_of(buildkite_build())
    again = event_of(json.dumps(buildkite_build(), indent=1).encode())
    rebuilt = event_of(buildkite_build(build_id="0190a9c4-0000-4d8a-9f3e-2c1b0a987654", number=13))
    blocked = event_of(buildkite_build(blocked=True))
    legacy = buildkite_build()
    del legacy["build"]["blocked"]  # payloads from before `blocked` existed read as not blocked
    assert again.event_id == first.event_id == event_of(legacy).event_id
    assert len({first.event_id, rebuilt.event_id, blocked.event_id}) == 3


def test_unverified_parsing_reads_the_body_for_explain_without_any_header() -> None:
    event = parse_unverified({}, json.dumps(buildkite_build(state="failed")).encode())
    assert isinstance(event, BuildEvent) and (event.project, event.status) == ("acme/lib", "failed")


def test_the_provider_reads_its_token_and_switch_from_the_settings_and_its_clock() -> None:
    raw, headers = buildkite_signed(buildkite_build(), TOKEN, NOW)
    settings = Settings(buildkite_webhook_token=Secret(TOKEN))
    provider = type(get("buildkite"))(clock=lambda: NOW + 301)
    with pytest.raises(AuthenticationError, match="301 s old"):
        provider.parse(headers, raw, HookAuth(settings))
    assert isinstance(type(provider)(clock=lambda: NOW).parse(headers, raw, HookAuth(settings)), BuildEvent)


# -- the real payloads ---------------------------------------------------------------------------------------


@pytest.mark.conformance
def test_the_real_build_finished_payload(more: Path) -> None:
    event = event_of((more / "bk_lita_build_finished_passed.json").read_bytes())
    assert (event.kind, event.project, event.status, event.raw_status) == (
        "build",
        "org-name/pipeline-name",
        "success",
        "passed",
    )
    assert (event.branch, event.tag, event.commit, event.build_id) == (
        "master",
        None,
        "328a9c8135c793b76ca7c29cc449b0733d18365a",
        2,
    )
    assert event.occurred_at == "2016-03-20T09:48:23Z" and event.workflow == "pipeline-name"
    assert event.dedupe_keys == ("buildkite:2ce9746f-cc8e-4bca-a878-4645848e040e:build.finished:passed:false",)


@pytest.mark.conformance
def test_the_real_job_finished_payload_keeps_no_agent_token(more: Path) -> None:
    raw = (more / "bk_lita_job_finished_passed.json").read_bytes()
    event = event_of(raw)
    assert (event.kind, event.job, event.status, event.occurred_at) == (
        "job",
        "Lint",
        "success",
        "2016-07-08T07:25:40Z",
    )
    assert event.dedupe_keys == ("buildkite:46e36da0-a40c-4d2f-a564-60f2961e90ce:job.finished:passed",)
    assert b"ABCD1234" in raw and "ABCD1234" not in json.dumps(dict(event.raw))
    assert event.raw["job"]["agent"]["name"] == "tank-1"


@pytest.mark.conformance
def test_every_buildkite_fixture_parses(more: Path) -> None:
    """Each bk_*.json there parses (signed here over its exact bytes) without an error."""
    names = sorted(p.name for p in more.glob("bk_*.json"))
    assert len(names) >= 3
    for name in names:
        raw = (more / name).read_bytes()
        parsed = parse(buildkite_signed(raw, TOKEN, NOW, event=json.loads(raw)["event"])[1], raw)
        assert isinstance(parsed, BuildEvent | Ignored), name
