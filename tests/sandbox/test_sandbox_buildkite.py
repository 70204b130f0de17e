"""The sandbox's Buildkite REST API: bearer auth and scopes, create build 201 (number, id, web_url, meta-data kept),
rebuild 200, Buildkite's error shapes, scripted rate limits, its paths told apart from Codeship's /v2/, and
seeding from rules and example payloads so that rebuild works."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chainer.errors import TransientDownstreamError
from chainer.events import BuildEvent
from chainer.providers import Downstream
from chainer.sandbox import SandboxState, create_sandbox_app, example_events, seed_sandbox
from chainer.sandbox.buildkite import rate_limited
from chainer.settings import Secret, Settings
from tests.helpers import parse_rules
from tests.payloads import COMMIT, buildkite_build

TOKEN = "sandbox-buildkite-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BUILDS = "/v2/organizations/acme/pipelines/deploy/builds"
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture
def state() -> SandboxState:
    sandbox = SandboxState(clock=lambda: 1_700_000_000.0)
    sandbox.add_buildkite_pipeline("acme/deploy")
    sandbox.add_buildkite_build("acme/deploy", 5, branch="main", commit=COMMIT, state="failed")
    return sandbox


@pytest.fixture
async def client(state: SandboxState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_sandbox_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as http:
        yield http


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}],
    ids=["none", "wrong", "basic", "no-scheme"],
)
async def test_every_call_needs_the_bearer_token(client: httpx.AsyncClient, state: SandboxState, headers: Any) -> None:
    for method, path in (("GET", "/v2/access-token"), ("POST", BUILDS), ("PUT", f"{BUILDS}/5/rebuild")):
        answer = await client.request(method, path, headers=headers, json={})
        assert answer.status_code == 401 and answer.json()["message"].startswith("Authentication required")
    assert {r.api for r in state.requests} == {"buildkite"}
    assert all(r.headers.get("authorization", "***") == "***" for r in state.requests)


async def test_create_build_is_201_with_number_id_urls_and_the_meta_data_kept(client: httpx.AsyncClient) -> None:
    body = {
        "commit": "HEAD",
        "branch": "main",
        "message": "go",
        "env": {"A": "1"},
        "meta_data": {"chainer:cause": "e1"},
    }
    first = await client.post(BUILDS, headers=BEARER, json=body)
    second = await client.post(BUILDS, headers=BEARER, json={"commit": COMMIT, "branch": "dev"})
    assert (first.status_code, second.status_code) == (201, 201)
    build = first.json()
    assert (build["number"], second.json()["number"]) == (6, 7)
    assert build["url"] == "http://sandbox.test/v2/organizations/acme/pipelines/deploy/builds/6"
    assert build["web_url"] == "https://buildkite.com/acme/deploy/builds/6"
    assert (build["state"], build["source"], build["blocked"], build["commit"], build["branch"]) == (
        "scheduled",
        "api",
        False,
        "HEAD",
        "main",
    )
    assert (build["meta_data"], build["env"], build["message"]) == ({"chainer:cause": "e1"}, {"A": "1"}, "go")
    assert build["pipeline"]["slug"] == "deploy" and build["id"] != second.json()["id"]
    got = await client.get(f"{BUILDS}/6", headers=BEARER)
    assert got.status_code == 200 and got.json() == build


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"branch": "main"}, [{"field": "commit", "code": "missing"}]),
        ({"commit": "HEAD"}, [{"field": "branch", "code": "missing"}]),
        ({"commit": "HEAD", "branch": "main", "env": {"N": 1}}, [{"field": "env", "code": "invalid"}]),
        ({"commit": "HEAD", "branch": "main", "meta_data": ["x"]}, [{"field": "meta_data", "code": "invalid"}]),
        ({"commit": " ", "branch": "main"}, [{"field": "commit", "code": "blank"}]),
    ],
    ids=["no-commit", "no-branch", "env-number", "meta-list", "blank-commit"],
)
async def test_create_build_validates_like_buildkite(client: httpx.AsyncClient, body: Any, errors: Any) -> None:
    answer = await client.post(BUILDS, headers=BEARER, json=body)
    assert (answer.status_code, answer.json()) == (422, {"message": "Validation Failed", "errors": errors})


async def test_unknown_pipelines_and_builds_are_404_and_bad_json_400(client: httpx.AsyncClient) -> None:
    pipeline = await client.post("/v2/organizations/acme/pipelines/nope/builds", headers=BEARER, json={})
    build = await client.put(f"{BUILDS}/99/rebuild", headers=BEARER)
    junk = await client.post(BUILDS, headers=BEARER, content=b"{not json")
    assert (pipeline.status_code, pipeline.json()) == (404, {"message": "No pipeline found"})
    assert (build.status_code, build.json()) == (404, {"message": "No build found"})
    assert (junk.status_code, junk.json()) == (400, {"message": "the request body is not valid JSON"})


async def test_rebuild_is_200_with_a_new_build_of_the_same_commit(
    client: httpx.AsyncClient, state: SandboxState
) -> None:
    answer = await client.put(f"{BUILDS}/5/rebuild", headers=BEARER)
    assert answer.status_code == 200
    new = answer.json()
    assert (new["number"], new["commit"], new["branch"], new["state"]) == (6, COMMIT, "main", "scheduled")
    original = state.buildkite_pipelines["acme/deploy"].builds[0]
    assert new["rebuilt_from"] == {"id": original.id, "number": 5, "url": f"http://sandbox.test{BUILDS}/5"}


async def test_a_token_without_write_builds_is_403_and_reads_still_work(state: SandboxState) -> None:
    state.buildkite_scopes = ("read_builds",)
    transport = httpx.ASGITransport(app=create_sandbox_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as client:
        create = await client.post(BUILDS, headers=BEARER, json={"commit": "HEAD", "branch": "main"})
        rebuild = await client.put(f"{BUILDS}/5/rebuild", headers=BEARER)
        read = await client.get(f"{BUILDS}/5", headers=BEARER)
        token = await client.get("/v2/access-token", headers=BEARER)
    assert (create.status_code, rebuild.status_code, read.status_code) == (403, 403, 200)
    assert "write_builds" in create.json()["message"] and token.json()["scopes"] == ["read_builds"]


async def test_a_scripted_rate_limit_over_http_answers_429_with_buildkites_headers(client: httpx.AsyncClient) -> None:
    scripted = await client.post("/_sandbox/script", json={"api": "buildkite", **rate_limited(30), "times": 1})
    assert scripted.status_code == 201
    limited = await client.post(BUILDS, headers=BEARER, json={"commit": "HEAD", "branch": "main"})
    after = await client.post(BUILDS, headers=BEARER, json={"commit": "HEAD", "branch": "main"})
    assert (limited.status_code, after.status_code) == (429, 201)
    assert (limited.headers["ratelimit-remaining"], limited.headers["ratelimit-reset"]) == ("0", "30")
    assert limited.json()["scope"] == "rest" and "Please wait 30 seconds" in limited.json()["message"]


async def test_chainer_sees_the_sandboxs_429_as_a_wait_for_the_reset(state: SandboxState) -> None:
    state.script("buildkite", **rate_limited(12, scope="rest_user"))
    settings = Settings(buildkite_token=Secret(TOKEN), buildkite_url="http://sandbox.test")
    transport = httpx.ASGITransport(app=create_sandbox_app(state))
    async with httpx.AsyncClient(transport=transport) as http:
        downstream = Downstream(settings, http)
        event = BuildEvent(
            provider="buildkite",
            kind="build",
            event_id="e",
            project="acme/deploy",
            status="failed",
            raw_status="failed",
            build_id=5,
        )
        with pytest.raises(TransientDownstreamError) as info:
            await downstream.execute("buildkite.rebuild", {"pipeline": "acme/deploy", "build": 5}, event)
        assert (info.value.status, info.value.retry_after) == (429, 12)
        assert (
            await downstream.execute("buildkite.rebuild", {"pipeline": "acme/deploy", "build": 5}, event)
        ).status == 200


async def test_codeship_keeps_its_v2_paths_beside_buildkites(client: httpx.AsyncClient, state: SandboxState) -> None:
    await client.post("/v2/auth", auth=("sandbox@example.org", "sandbox"), json={})
    await client.get("/v2/organizations/x/projects", headers={"Authorization": "Bearer t"})
    await client.get("/v2/access-token", headers=BEARER)
    assert [(r.api, r.status) for r in state.requests] == [
        ("codeship.v2", 200),
        ("codeship.v2", 401),
        ("buildkite", 200),
    ]


def test_seeding_learns_pipelines_from_the_rules_and_builds_from_example_payloads(tmp_path: Path) -> None:
    """A Buildkite example payload (told from Codeship's by its `event` and `pipeline`) seeds its build, so the
    rule's rebuild finds it; the rules' literal pipelines exist, so create_build finds them."""
    body = buildkite_build(state="failed", org="acme", pipeline="flaky", number=41, blocked=True)
    (tmp_path / "buildkite_failed.json").write_text(json.dumps(body))
    events, problems = example_events(tmp_path)
    assert problems == [] and [(e.provider, e.project, e.build_id) for e in events] == [("buildkite", "acme/flaky", 41)]
    rules = parse_rules(
        "version: 1\nrules:\n"
        "  - name: r\n    when: {provider: buildkite, project: acme/web}\n"
        "    then: [{buildkite.create_build: {pipeline: acme/deploy-web, branch: main}}, {buildkite.rebuild: {}}]\n"
    )
    state = SandboxState()
    assert seed_sandbox(state, rules, events) == []
    assert sorted(state.buildkite_pipelines) == ["acme/deploy-web", "acme/flaky", "acme/web"]
    [seeded] = state.buildkite_pipelines["acme/flaky"].builds
    assert (seeded.number, seeded.state, seeded.commit) == (41, "failed", COMMIT)
