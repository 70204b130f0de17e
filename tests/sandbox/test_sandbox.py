"""The provider sandbox: Codeship v2/v1 and CircleCI v2/v1.1 emulation, recording, scripted faults, control API."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from chainer.errors import PermanentDownstreamError, TransientDownstreamError
from chainer.events import BuildEvent
from chainer.explain import parse_any
from chainer.providers import Downstream
from chainer.providers.codeship.parse import parse_codeship
from chainer.sandbox import SandboxState, create_sandbox_app, example_events, seed_sandbox, serve_sandbox
from chainer.sandbox.state import CODESHIP_SCOPES, org_uuid
from chainer.settings import Secret, Settings
from tests import payloads
from tests.helpers import parse_rules

FIXTURES = Path(__file__).resolve().parents[3] / "shared/reference/fixtures"
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z, 20 s into a clock minute
USER, PASSWORD = "sandbox@example.org", "sandbox"
CIRCLE = {"Circle-Token": "sandbox-token", "Accept": "application/json"}
SHA = "185ab4c7dc4eda2a027c284f7a669cac3f50a5ed"
ORG_UUID = org_uuid("acme")
UUID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class Clock:
    """A settable clock for token expiry and the rate-limit window."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    """The clock every sandbox state in a test reads."""
    return Clock()


@pytest.fixture
def state(clock: Clock) -> SandboxState:
    """A default sandbox state with one Basic and one Pro Codeship project and a finished build in each."""
    sandbox = SandboxState(clock=clock)
    sandbox.add_codeship_project("acme/web", id=11)
    sandbox.add_codeship_project("acme/pro", type="pro", id=12)
    sandbox.add_codeship_build("acme/web", branch="main", commit_sha=SHA)
    sandbox.add_codeship_build("acme/pro", branch="main", commit_sha=SHA, status="failed")
    return sandbox


@pytest.fixture
async def client(state: SandboxState) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the sandbox app in-process."""
    transport = httpx.ASGITransport(app=create_sandbox_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as http:
        yield http


async def login(client: httpx.AsyncClient) -> tuple[dict[str, str], str]:
    """Authenticate against Codeship v2; the bearer headers and the organization's API path."""
    answer = await client.post("/v2/auth", auth=(USER, PASSWORD), json={})
    assert answer.status_code == 200, answer.text
    headers = {"Authorization": f"Bearer {answer.json()['access_token']}", "Accept": "application/json"}
    return headers, f"/v2/organizations/{answer.json()['organizations'][0]['uuid']}"


async def project_path(client: httpx.AsyncClient, name: str) -> tuple[dict[str, str], str]:
    """Bearer headers and the API path of the Codeship project called ``name``."""
    headers, org = await login(client)
    projects = (await client.get(f"{org}/projects", headers=headers)).json()["projects"]
    uuid = next(p["uuid"] for p in projects if p["name"] == name)
    return headers, f"{org}/projects/{uuid}"


# -- Codeship v2 ---------------------------------------------------------------------------------


async def test_codeship_auth_returns_token_expiry_and_organizations(client: httpx.AsyncClient) -> None:
    """Correct Basic credentials get 200 with a token valid for an hour and the organizations with their scopes."""
    answer = await client.post("/v2/auth", auth=(USER, PASSWORD))
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "expires_at", "organizations"}
    assert body["expires_at"] == int(NOW) + 3600 and body["access_token"]
    assert body["organizations"] == [{"uuid": ORG_UUID, "name": "acme", "scopes": list(CODESHIP_SCOPES)}]


@pytest.mark.parametrize(
    "auth", [(USER, "wrong"), ("other@example.org", PASSWORD), None], ids=["bad-password", "bad-user", "none"]
)
async def test_codeship_auth_rejects_bad_credentials(client: httpx.AsyncClient, auth: Any) -> None:
    """Wrong or missing credentials get 401 with Codeship's singular ``error`` body."""
    answer = await client.post("/v2/auth", auth=auth)
    assert (answer.status_code, answer.json()) == (401, {"error": "Unauthorized"})


async def test_codeship_auth_two_factor_is_a_200_error(clock: Clock) -> None:
    """A 2FA account gets HTTP 200 whose body is only an ``error`` (pitfall 5), and no token."""
    app = create_sandbox_app(SandboxState(two_factor=True, clock=clock))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as http:
        answer = await http.post("/v2/auth", auth=(USER, PASSWORD))
    assert answer.status_code == 200
    assert answer.json() == {
        "error": "Your account has two-factor authentication enabled, which is not possible to support with the API."
    }


async def test_codeship_api_requires_a_live_access_token(client: httpx.AsyncClient, clock: Clock) -> None:
    """No token, an unknown one (bare or bearer), one under another scheme and an expired one get 401 ``errors``.

    The token is accepted as ``Bearer <token>`` (the prose, the Go client) and bare, as the API's code
    examples send it (``--header 'authorization: eyJ0…'``, providers.md §3.1).
    """
    headers, org = await login(client)
    token = headers["Authorization"].removeprefix("Bearer ")
    for sent in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "nope"}, {"Authorization": f"Basic {token}"}):
        answer = await client.get(f"{org}/projects", headers=sent)
        assert (answer.status_code, answer.json()) == (401, {"errors": ["Unauthorized"]})
    for scheme in ("Bearer ", "bearer ", ""):
        assert (await client.get(f"{org}/projects", headers={"Authorization": scheme + token})).status_code == 200
    clock.now += 3600
    assert (await client.get(f"{org}/projects", headers=headers)).status_code == 401
    assert (await client.get(f"{org}/projects", headers={"Authorization": token})).status_code == 401


async def test_codeship_bare_token_works_on_every_v2_call(client: httpx.AsyncClient, state: SandboxState) -> None:
    """With the bare ``Authorization: <token>`` of the API examples, reads and writes work as with ``Bearer``."""
    bearer, project = await project_path(client, "acme/web")
    bare = {"Authorization": bearer["Authorization"].removeprefix("Bearer "), "Accept": "application/json"}
    builds = (await client.get(f"{project}/builds", headers=bare)).json()["builds"]
    restart = await client.post(f"{project}/builds/{builds[0]['uuid']}/restart", headers=bare)
    created = await client.post(f"{project}/builds", headers=bare, json={"ref": "heads/main"})
    assert (restart.status_code, created.status_code) == (202, 202)
    assert [b.status for b in state.projects[0].builds] == ["initiated", "initiated"]


async def test_codeship_unknown_org_project_and_build_are_404(client: httpx.AsyncClient) -> None:
    """Unknown organization, project and build uuids get 404 with a one-element ``errors`` list."""
    headers, project = await project_path(client, "acme/web")
    other = "00000000-0000-4000-8000-000000000000"
    cases = {
        f"/v2/organizations/{other}/projects": "organization not found",
        f"/v2/organizations/{ORG_UUID}/projects/{other}": "project not found",
        f"{project}/builds/{other}": "build not found",
    }
    for path, message in cases.items():
        answer = await client.get(path, headers=headers)
        assert (answer.status_code, answer.json()) == (404, {"errors": [message]})


async def test_codeship_write_without_build_write_scope_is_403(clock: Clock) -> None:
    """An account holding only read scopes may list builds but gets 403 ``errors`` when creating one."""
    state = SandboxState(codeship_scopes=("project.read", "build.read"), clock=clock)
    state.add_codeship_project("acme/web")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_sandbox_app(state)), base_url="http://s"
    ) as c:
        headers, project = await project_path(c, "acme/web")
        assert (await c.get(f"{project}/builds", headers=headers)).status_code == 200
        answer = await c.post(f"{project}/builds", headers=headers, json={"ref": "heads/main"})
    assert answer.status_code == 403
    assert len(answer.json()["errors"]) == 1 and "build.write" in answer.json()["errors"][0]


def test_seeding_a_project_twice_is_harmless_but_clashes_raise() -> None:
    """Adding the same project again returns it unchanged; a clashing id, type or unknown project raises."""
    state = SandboxState()
    first = state.add_codeship_project("acme/web", id=11)
    assert state.add_codeship_project("acme/web") == first and len(state.projects) == 1
    for name, kwargs in (("acme/web", {"type": "pro"}), ("acme/other", {"id": 11}), ("acme/x", {"type": "cloud"})):
        with pytest.raises(ValueError, match="clashes"):
            state.add_codeship_project(name, **kwargs)
    with pytest.raises(KeyError):
        state.add_codeship_build("acme/missing", branch="main", commit_sha=SHA)
    build = state.add_codeship_build("acme/web", branch="main", commit_sha=SHA, status="testing")
    assert (build["id"], build["status"], build["finished_at"], build["organization_uuid"]) == (
        1001,
        "testing",
        None,
        ORG_UUID,
    )


async def test_codeship_projects_list_and_get(client: httpx.AsyncClient) -> None:
    """The project list carries page, per_page and total; one project comes wrapped in ``project``."""
    headers, org = await login(client)
    listing = (await client.get(f"{org}/projects", headers=headers)).json()
    assert (listing["page"], listing["per_page"], listing["total"]) == (1, 30, 2)
    web, pro = listing["projects"]
    assert (web["name"], web["id"], web["type"], pro["type"]) == ("acme/web", 11, "basic", "pro")
    assert web["organization_uuid"] == ORG_UUID
    answer = await client.get(f"{org}/projects/{pro['uuid']}", headers=headers)
    assert answer.status_code == 200 and answer.json() == {"project": pro}


async def test_codeship_projects_paginate_over_fifty(client: httpx.AsyncClient, state: SandboxState) -> None:
    """120 projects come 50 a page at most (per_page is capped), with Link rels and no next/last on the last page."""
    for n in range(118):
        state.add_codeship_project(f"acme/p{n:03}")
    headers, org = await login(client)
    seen: list[str] = []
    pages = []
    for page in (1, 2, 3):
        answer = await client.get(f"{org}/projects", headers=headers, params={"page": page, "per_page": 100})
        body = answer.json()
        assert (body["page"], body["per_page"], body["total"]) == (page, 50, 120)
        seen += [p["uuid"] for p in body["projects"]]
        pages.append((len(body["projects"]), {link.rel for link in _links(answer)}))
    assert pages == [(50, {"next", "last"}), (50, {"first", "prev", "next", "last"}), (20, {"first", "prev"})]
    assert len(set(seen)) == 120
    first = await client.get(f"{org}/projects", headers=headers)
    assert len(first.json()["projects"]) == 30
    nxt = next(link.url for link in _links(first) if link.rel == "next")
    assert httpx.URL(nxt).params["page"] == "2" and httpx.URL(nxt).params["per_page"] == "30"


class _Link:
    def __init__(self, url: str, rel: str) -> None:
        self.url, self.rel = url, rel


def _links(answer: httpx.Response) -> list[_Link]:
    header = answer.headers.get("link", "")
    parts = [p.strip() for p in header.split(",") if p.strip()]
    return [_Link(p.split(";")[0].strip("<> "), p.split('rel="')[1].rstrip('"')) for p in parts]


async def test_codeship_trigger_build_is_202_empty_and_queues_a_build(client: httpx.AsyncClient) -> None:
    """``POST …/builds`` answers 202 with no body and the new build heads the newest-first list."""
    headers, project = await project_path(client, "acme/web")
    answer = await client.post(
        f"{project}/builds", headers=headers, json={"ref": "heads/feature/x", "commit_sha": "f" * 40}
    )
    assert answer.status_code == 202 and answer.content == b""
    builds = (await client.get(f"{project}/builds", headers=headers)).json()
    assert builds["total"] == 2
    newest = builds["builds"][0]
    assert (newest["ref"], newest["branch"], newest["commit_sha"]) == ("heads/feature/x", "feature/x", "f" * 40)
    assert newest["status"] == "initiated" and newest["finished_at"] is None
    got = await client.get(f"{project}/builds/{newest['uuid']}", headers=headers)
    assert got.status_code == 200 and got.json() == {"build": newest}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "ref is required"),
        ({"commit_sha": SHA}, "ref is required"),
        ({"ref": 7}, "ref is required"),
        ({"ref": "master"}, "ref must look like heads/<branch> or tags/<tag>"),
        ({"ref": "heads/main", "commit_sha": 5}, "commit_sha must be a string"),
    ],
    ids=["empty", "no-ref", "ref-not-string", "bare-branch", "sha-not-string"],
)
async def test_codeship_trigger_build_validates_ref(client: httpx.AsyncClient, body: Any, message: str) -> None:
    """A missing or malformed ``ref`` is a 400 with an ``errors`` list, and no build is queued."""
    headers, project = await project_path(client, "acme/web")
    answer = await client.post(f"{project}/builds", headers=headers, json=body)
    assert (answer.status_code, answer.json()) == (400, {"errors": [message]})
    assert (await client.get(f"{project}/builds", headers=headers)).json()["total"] == 1


@pytest.mark.parametrize(("name", "same_uuid"), [("acme/web", True), ("acme/pro", False)], ids=["basic", "pro"])
async def test_codeship_restart_is_202_empty_basic_keeps_uuid_pro_adds_build(
    client: httpx.AsyncClient, name: str, same_uuid: bool
) -> None:
    """Restart answers 202 with no body; Basic reruns the same build uuid, Pro creates a new build."""
    headers, project = await project_path(client, name)
    [old] = (await client.get(f"{project}/builds", headers=headers)).json()["builds"]
    answer = await client.post(f"{project}/builds/{old['uuid']}/restart", headers=headers)
    assert answer.status_code == 202 and answer.content == b""
    builds = (await client.get(f"{project}/builds", headers=headers)).json()["builds"]
    assert len(builds) == (1 if same_uuid else 2)
    assert (builds[0]["uuid"] == old["uuid"]) is same_uuid
    assert builds[0]["status"] == "initiated" and builds[0]["commit_sha"] == SHA


async def test_codeship_restart_of_running_build_is_ignored_and_stop_ends_it(client: httpx.AsyncClient) -> None:
    """Restarting a running Pro build still answers 202 but adds nothing; stop answers 202 and marks it stopped."""
    headers, project = await project_path(client, "acme/pro")
    await client.post(f"{project}/builds", headers=headers, json={"ref": "heads/main"})
    running = (await client.get(f"{project}/builds", headers=headers)).json()["builds"][0]
    assert (await client.post(f"{project}/builds/{running['uuid']}/restart", headers=headers)).status_code == 202
    assert (await client.get(f"{project}/builds", headers=headers)).json()["total"] == 2
    stop = await client.post(f"{project}/builds/{running['uuid']}/stop", headers=headers)
    assert stop.status_code == 202 and stop.content == b""
    stopped = (await client.get(f"{project}/builds/{running['uuid']}", headers=headers)).json()["build"]
    assert stopped["status"] == "stopped" and stopped["finished_at"] is not None


async def test_codeship_rate_limit_is_403_within_the_minute(clock: Clock) -> None:
    """Beyond the limit in one clock minute (auth counted) Codeship answers 403 Rate Limit Exceeded, not 429."""
    state = SandboxState(codeship_rate_limit=3, clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_sandbox_app(state)), base_url="http://s"
    ) as c:
        headers, org = await login(c)
        assert [(await c.get(f"{org}/projects", headers=headers)).status_code for _ in range(2)] == [200, 200]
        limited = await c.get(f"{org}/projects", headers=headers)
        assert (limited.status_code, limited.json()) == (403, {"errors": ["Rate Limit Exceeded"]})
        assert (await c.post("/v2/auth", auth=(USER, PASSWORD))).status_code == 403
        clock.now += 40  # the next minute starts at NOW + 40
        assert (await c.get(f"{org}/projects", headers=headers)).status_code == 200


async def test_codeship_invalid_json_and_unknown_route_keep_the_errors_shape(client: httpx.AsyncClient) -> None:
    """A non-JSON body is 400, an unknown v2 path 404 and a wrong method 405, all as ``{"errors": [...]}``."""
    headers, project = await project_path(client, "acme/web")
    bad = await client.post(f"{project}/builds", headers=headers, content=b"{ref: heads/main")
    assert (bad.status_code, bad.json()) == (400, {"errors": ["the request body is not valid JSON"]})
    missing = await client.get("/v2/nothing/here", headers=headers)
    assert (missing.status_code, missing.json()) == (404, {"errors": ["Not Found"]})
    wrong = await client.delete(f"{project}/builds", headers=headers)
    assert (wrong.status_code, wrong.json()) == (405, {"errors": ["Method Not Allowed"]})


# -- Codeship v1 ---------------------------------------------------------------------------------


async def test_codeship_v1_lists_basic_projects_with_builds_newest_first(
    client: httpx.AsyncClient, state: SandboxState
) -> None:
    """v1 lists only Basic projects; one project's builds come newest first and ``branch`` filters them."""
    state.add_codeship_build("acme/web", branch="dev", commit_sha="d" * 40, status="failed")
    listing = await client.get("/api/v1/projects.json", params={"api_key": "sandbox-key"})
    assert listing.status_code == 200
    [project] = listing.json()["projects"]
    assert set(project) == {"id", "uuid", "repository_name", "builds"} and project["id"] == 11
    assert [b["branch"] for b in project["builds"]] == ["dev", "main"]
    assert project["builds"][0]["status"] == "error"  # v1 speaks the webhook's words
    one = await client.get("/api/v1/projects/11.json", params={"api_key": "sandbox-key", "branch": "main"})
    assert one.status_code == 200 and [b["commit_id"] for b in one.json()["builds"]] == [SHA]
    assert set(one.json()["builds"][0]) >= {"id", "uuid", "project_id", "status", "branch", "started_at", "finished_at"}
    pro = await client.get("/api/v1/projects/12.json", params={"api_key": "sandbox-key"})
    assert pro.status_code == 404


async def test_codeship_v1_restart_returns_new_id_and_uuid(client: httpx.AsyncClient, state: SandboxState) -> None:
    """v1 restart answers 200 with a new numeric id and uuid; the new build is the project's newest."""
    build_id = state.projects[0].builds[0].id
    answer = await client.post(f"/api/v1/builds/{build_id}/restart.json", params={"api_key": "sandbox-key"})
    assert answer.status_code == 200
    assert set(answer.json()) == {"id", "uuid"} and answer.json()["id"] > build_id
    builds = (await client.get("/api/v1/projects/11.json", params={"api_key": "sandbox-key"})).json()["builds"]
    assert builds[0]["id"] == answer.json()["id"] and builds[0]["uuid"] == answer.json()["uuid"]
    unknown = await client.post("/api/v1/builds/999999/restart.json", params={"api_key": "sandbox-key"})
    assert unknown.status_code == 404


@pytest.mark.parametrize("params", [{}, {"api_key": "wrong"}], ids=["missing", "wrong"])
async def test_codeship_v1_needs_the_api_key(client: httpx.AsyncClient, state: SandboxState, params: Any) -> None:
    """Every v1 call without the right ``api_key`` gets 401."""
    build_id = state.projects[0].builds[0].id
    for method, path in (
        ("GET", "/api/v1/projects.json"),
        ("GET", "/api/v1/projects/11.json"),
        ("POST", f"/api/v1/builds/{build_id}/restart.json"),
    ):
        assert (await client.request(method, path, params=params)).status_code == 401


# -- CircleCI v2 ---------------------------------------------------------------------------------


async def test_circleci_trigger_pipeline_is_201_with_increasing_numbers(client: httpx.AsyncClient) -> None:
    """Triggering answers 201 ``{id, state, number, created_at}``; numbers count per project across slug forms."""
    first = await client.post("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE, json={"branch": "main"})
    assert first.status_code == 201
    body = first.json()
    assert set(body) == {"id", "state", "number", "created_at"}
    assert (body["state"], body["number"], body["created_at"]) == ("created", 1, "2023-11-14T22:13:20.000Z")
    assert re.match(UUID_RE, body["id"])
    again = await client.post("/api/v2/project/github/acme/api/pipeline", headers=CIRCLE, json={"tag": "v1"})
    opaque = await client.post("/api/v2/project/circleci/8a1b/9c2d/pipeline", headers=CIRCLE)
    assert (again.json()["number"], opaque.status_code, opaque.json()["number"]) == (2, 201, 1)


@pytest.mark.parametrize(
    "headers",
    [
        {"Circle-Token": "sandbox-token"},
        {"Authorization": "Bearer sandbox-token"},
        {"Authorization": "Basic " + base64.b64encode(b"sandbox-token:").decode()},
    ],
    ids=["circle-token", "bearer", "basic"],
)
async def test_circleci_v2_accepts_each_auth_form(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """The personal token works as ``Circle-Token``, as a bearer token and as the Basic user name."""
    answer = await client.post("/api/v2/project/gh/acme/api/pipeline", headers=headers)
    assert answer.status_code == 201


@pytest.mark.parametrize(
    ("headers", "params"),
    [({}, {}), ({"Circle-Token": "wrong"}, {}), ({}, {"circle-token": "sandbox-token"})],
    ids=["none", "wrong", "query-not-on-v2"],
)
async def test_circleci_v2_rejects_missing_token(
    client: httpx.AsyncClient, headers: dict[str, str], params: dict[str, str]
) -> None:
    """Without a valid token v2 answers 401 ``{"message": "You must log in first."}``."""
    for method, path in (("POST", "/api/v2/project/gh/acme/api/pipeline"), ("POST", "/api/v2/workflow/x/rerun")):
        answer = await client.request(method, path, headers=headers, params=params)
        assert (answer.status_code, answer.json()) == (401, {"message": "You must log in first."})


@pytest.mark.parametrize(
    "body",
    [
        {"branch": "main", "tag": "v1"},
        {"branch": 5},
        {"parameters": [1]},
        {"parameters": {f"p{n}": n for n in range(101)}},
        {"parameters": {"k" * 129: "v"}},
        {"parameters": {"k": "v" * 513}},
        {"parameters": {"k": 1.5}},
        "a string",
    ],
    ids=["branch-and-tag", "branch-not-string", "params-list", "101-params", "long-key", "long-value", "float", "str"],
)
async def test_circleci_trigger_pipeline_rejects_bad_bodies(client: httpx.AsyncClient, body: Any) -> None:
    """Branch with tag, bad types and parameters over CircleCI's limits are 400 ``{"message"}`` and make nothing."""
    answer = await client.post("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE, json=body)
    assert answer.status_code == 400 and set(answer.json()) == {"message"}
    listing = await client.get("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE)
    assert listing.json() == {"items": [], "next_page_token": None}


async def test_circleci_parameters_at_the_limits_are_accepted(client: httpx.AsyncClient) -> None:
    """100 parameters, a 128-character key and a 512-character value are still within the limits."""
    params: dict[str, Any] = {f"p{n}": n for n in range(99)} | {"k" * 128: "v" * 512}
    answer = await client.post("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE, json={"parameters": params})
    assert answer.status_code == 201


async def test_circleci_invalid_json_is_400_message(client: httpx.AsyncClient) -> None:
    """A body that is not JSON gets 400 with CircleCI's ``message`` shape."""
    answer = await client.post("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE, content=b"{branch:")
    assert (answer.status_code, answer.json()) == (400, {"message": "the request body is not valid JSON"})


async def test_circleci_lists_and_gets_pipelines(client: httpx.AsyncClient) -> None:
    """Pipelines list newest first in pages of 20 with ``next_page_token``, filter by branch, and read by id."""
    for n in range(25):
        await client.post("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE, json={"branch": f"b{n % 2}"})
    first = (await client.get("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE)).json()
    assert [p["number"] for p in first["items"]] == list(range(25, 5, -1)) and first["next_page_token"]
    token = first["next_page_token"]
    rest = await client.get("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE, params={"page-token": token})
    assert [p["number"] for p in rest.json()["items"]] == [5, 4, 3, 2, 1] and rest.json()["next_page_token"] is None
    odd = await client.get("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE, params={"branch": "b1"})
    assert {p["vcs"]["branch"] for p in odd.json()["items"]} == {"b1"} and len(odd.json()["items"]) == 12
    newest = first["items"][0]
    one = await client.get(f"/api/v2/pipeline/{newest['id']}", headers=CIRCLE)
    assert one.status_code == 200 and one.json() == newest
    assert newest["project_slug"] == "gh/acme/api" and newest["trigger"]["type"] == "api"
    missing = await client.get("/api/v2/pipeline/00000000-0000-4000-8000-000000000000", headers=CIRCLE)
    assert (missing.status_code, missing.json()) == (404, {"message": "Pipeline not found"})


async def test_circleci_rerun_workflow_is_202_with_a_new_workflow_id(
    client: httpx.AsyncClient, state: SandboxState
) -> None:
    """Rerun answers 202 ``{"workflow_id"}`` with a new id; unknown ids are 404 and conflicting options 400."""
    workflow = state.trigger_pipeline("gh/acme/api").workflow_ids[0]
    answer = await client.post(f"/api/v2/workflow/{workflow}/rerun", headers=CIRCLE, json={"from_failed": True})
    assert answer.status_code == 202 and set(answer.json()) == {"workflow_id"}
    assert answer.json()["workflow_id"] != workflow
    empty = await client.post(f"/api/v2/workflow/{answer.json()['workflow_id']}/rerun", headers=CIRCLE)
    assert empty.status_code == 202
    both = await client.post(
        f"/api/v2/workflow/{workflow}/rerun", headers=CIRCLE, json={"from_failed": True, "jobs": ["j"]}
    )
    assert both.status_code == 400 and "message" in both.json()
    unknown = await client.post("/api/v2/workflow/00000000-0000-4000-8000-000000000000/rerun", headers=CIRCLE)
    assert (unknown.status_code, unknown.json()) == (404, {"message": "Workflow not found"})


# -- CircleCI v1.1 -------------------------------------------------------------------------------


async def test_circleci_v1_trigger_build_returns_a_not_running_summary(client: httpx.AsyncClient) -> None:
    """``tree/{branch}`` answers 200 with a summary: build number, URL, branch (escaped slash kept), revision."""
    body = {"revision": SHA, "build_parameters": {"RUN_EXTRA_TESTS": "true"}}
    answer = await client.post("/api/v1.1/project/github/acme/api/tree/feature%2Fx", headers=CIRCLE, json=body)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    job = answer.json()
    assert (job["build_num"], job["build_url"]) == (1, "https://circleci.com/gh/acme/api/1")
    assert (job["status"], job["branch"], job["vcs_revision"]) == ("not_running", "feature/x", SHA)
    assert job["build_parameters"] == {"RUN_EXTRA_TESTS": "true"} and job["why"] == "api"


async def test_circleci_v1_retry_returns_a_queued_summary(client: httpx.AsyncClient) -> None:
    """Retry answers 200 with the next build number, ``retry_of``, ``why: retry`` and ``status: queued``."""
    await client.post("/api/v1.1/project/github/acme/api/tree/main", headers=CIRCLE)
    answer = await client.post("/api/v1.1/project/github/acme/api/1/retry", headers=CIRCLE)
    assert answer.status_code == 200
    job = answer.json()
    assert (job["build_num"], job["retry_of"], job["why"], job["status"]) == (2, 1, "retry", "queued")
    assert job["previous"] == {"build_num": 1, "status": "not_running"}
    missing = await client.post("/api/v1.1/project/github/acme/api/99/retry", headers=CIRCLE)
    assert (missing.status_code, missing.json()) == (404, {"message": "Build not found"})


async def test_circleci_v1_without_accept_answers_edn(client: httpx.AsyncClient) -> None:
    """With no Accept header v1.1 answers EDN that ``json.loads`` cannot read (pitfall 7); ``*/*`` gets pretty JSON."""
    del client.headers["accept"]
    edn = await client.post("/api/v1.1/project/github/acme/api/tree/main", headers={"Circle-Token": "sandbox-token"})
    assert edn.status_code == 200 and edn.headers["content-type"] == "application/edn"
    assert edn.text.startswith("{:build_num 1, :build_url ") and ':status "not_running"' in edn.text
    assert ":retry_of nil" in edn.text
    with pytest.raises(json.JSONDecodeError):
        json.loads(edn.text)
    unauthorized = await client.post("/api/v1.1/project/github/acme/api/tree/main")
    assert (unauthorized.status_code, unauthorized.text) == (401, '{:message "You must log in first."}')
    pretty = await client.post(
        "/api/v1.1/project/github/acme/api/tree/main", headers={"Circle-Token": "sandbox-token", "Accept": "*/*"}
    )
    assert pretty.json()["build_num"] == 2 and "\n  " in pretty.text


@pytest.mark.parametrize(
    ("headers", "params", "status"),
    [
        ({"Accept": "application/json"}, {"circle-token": "sandbox-token"}, 200),
        ({"Accept": "application/json", "Authorization": "Basic c2FuZGJveC10b2tlbjo="}, {}, 200),
        ({"Accept": "application/json", "Authorization": "Bearer sandbox-token"}, {}, 200),
        ({"Accept": "application/json"}, {}, 401),
        ({"Accept": "application/json"}, {"circle-token": "wrong"}, 401),
    ],
    ids=["query", "basic", "bearer", "missing", "wrong"],
)
async def test_circleci_v1_auth_forms(
    client: httpx.AsyncClient, headers: dict[str, str], params: dict[str, str], status: int
) -> None:
    """v1.1 takes the token as ``?circle-token=``, Basic user or bearer, and answers 401 without it."""
    answer = await client.post("/api/v1.1/project/github/acme/api/tree/main", headers=headers, params=params)
    assert answer.status_code == status


V11_CREDENTIALS: dict[str, Callable[[str], dict[str, Any]]] = {
    "query": lambda token: {"params": {"circle-token": token}},
    "basic-token-as-user": lambda token: {"auth": (token, "")},  # curl -u <token>:
    "circle-token-header": lambda token: {"headers": {"Circle-Token": token}},
}


@pytest.mark.parametrize("form", V11_CREDENTIALS.values(), ids=V11_CREDENTIALS.keys())
async def test_circleci_v1_takes_each_documented_credential_on_trigger_and_retry(
    client: httpx.AsyncClient, form: Callable[[str], dict[str, Any]]
) -> None:
    """``?circle-token=``, Basic with the token as user name and no password and the ``Circle-Token`` header each
    work on trigger and retry (providers.md §4.2, the v1.1 docs); the same form with a wrong token is 401."""
    trigger = await client.post("/api/v1.1/project/github/acme/api/tree/main", **form("sandbox-token"))
    retry = await client.post("/api/v1.1/project/github/acme/api/1/retry", **form("sandbox-token"))
    assert (trigger.status_code, retry.status_code) == (200, 200)
    assert (trigger.json()["build_num"], retry.json()["retry_of"]) == (1, 1)
    refused = await client.post("/api/v1.1/project/github/acme/api/1/retry", **form("wrong-token"))
    assert (refused.status_code, refused.json()) == (401, {"message": "You must log in first."})


async def test_circleci_v1_branch_with_an_unencoded_slash_is_refused_over_http(state: SandboxState) -> None:
    """Over a real socket, ``tree/feature/x`` is a path no v1.1 route has: 404 ``{"message"}`` and no job, as
    on CircleCI, where ``:branch`` is one URL-encoded segment (providers.md §4.2). ``tree/feature%2Fx`` builds
    ``feature/x``; an empty branch is 404 too."""
    port = _free_port()
    task = asyncio.create_task(serve_sandbox("127.0.0.1", port, state, handle_signals=False))
    base = f"http://127.0.0.1:{port}/api/v1.1/project/github/acme/api/tree/"
    try:
        async with httpx.AsyncClient(headers={"Accept": "application/json"}, timeout=5) as http:
            await _until_serving(http, f"http://127.0.0.1:{port}/_sandbox/requests", task)
            token = {"circle-token": "sandbox-token"}
            unencoded = await http.post(base + "feature/x", params=token, json={})
            empty = await http.post(base, params=token, json={})
            encoded = await http.post(base + "feature%2Fx", params=token, json={})
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert (unencoded.status_code, unencoded.json()) == (404, {"message": "Not Found"})
    assert (empty.status_code, empty.json()) == (404, {"message": "Not Found"})
    assert (encoded.status_code, encoded.json()["branch"], encoded.json()["build_num"]) == (200, "feature/x", 1)
    assert [(j.branch, j.build_num) for j in state.jobs] == [("feature/x", 1)]
    assert [r.path.rpartition("/tree/")[2] for r in state.requests] == ["feature/x", "", "feature%2Fx"]


async def test_chainer_sends_a_rule_branch_with_a_slash_encoded_to_v1_trigger(clock: Clock) -> None:
    """A rule's ``circleci.v1_trigger_build`` rendered from a real Codeship event on ``release/1.2`` goes out as
    ``tree/release%2F1.2``, which the sandbox (refusing an unencoded ``/``) builds."""
    ruleset = parse_rules(
        "version: 1\nrules:\n  - name: package\n    when: {project: acme/lib}\n    then:\n"
        "      - circleci.v1_trigger_build: {project: github/acme/packaging, branch: '{{ event.branch }}'}\n"
    )
    event = parse_codeship(json.dumps(payloads.codeship("success", branch="release/1.2")).encode())
    assert isinstance(event, BuildEvent)
    [action] = [a for d in ruleset.evaluate(event) for a in d.actions]
    state = SandboxState(clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_sandbox_app(state))) as http:
        result = await Downstream(sandbox_settings(), http, clock=clock).execute(action.action, action.params, event)
    assert (result.status, result.downstream_id) == (200, "1")
    assert [r.path for r in state.requests] == ["/api/v1.1/project/github/acme/packaging/tree/release%2F1.2"]
    assert state.jobs[0].branch == "release/1.2"


async def test_chainer_builds_a_tag_through_the_v1_project_trigger(clock: Clock) -> None:
    """A tag event's ``circleci.v1_trigger_build`` (no branch, no tag in the rule) defaults to the tag, goes out as
    the v1.1 project trigger with ``{"tag": …}``, and the sandbox builds that tag."""
    ruleset = parse_rules(
        "version: 1\nrules:\n  - name: package\n    when: {project: acme/lib}\n    then:\n"
        "      - circleci.v1_trigger_build: {project: github/acme/packaging}\n"
    )
    legacy = {
        "payload": {
            "username": "acme",
            "reponame": "lib",
            "vcs_type": "github",
            "build_num": 7,
            "status": "success",
            "vcs_tag": "v1.2.0",
            "vcs_revision": "a" * 40,
        }
    }
    event = parse_any("circleci", {}, json.dumps(legacy).encode())
    assert isinstance(event, BuildEvent) and event.tag == "v1.2.0"
    [action] = [a for d in ruleset.evaluate(event) for a in d.actions]
    state = SandboxState(clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_sandbox_app(state))) as http:
        result = await Downstream(sandbox_settings(), http, clock=clock).execute(action.action, action.params, event)
    assert (result.status, result.downstream_id) == (200, "1")
    assert [(r.path, r.body) for r in state.requests] == [
        ("/api/v1.1/project/github/acme/packaging", {"tag": "v1.2.0"})
    ]
    assert (state.jobs[0].tag, state.jobs[0].branch) == ("v1.2.0", "")


async def test_sandbox_v1_project_trigger_refuses_what_the_api_refuses(clock: Clock) -> None:
    """The v1.1 project trigger wants a tag and refuses ``revision`` with it."""
    state = SandboxState(clock=clock)
    settings = sandbox_settings()
    token = settings.circleci_token.reveal() if settings.circleci_token else ""
    url = "http://sandbox/api/v1.1/project/github/acme/packaging"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_sandbox_app(state))) as http:
        headers = {"Circle-Token": token, "Accept": "application/json"}
        assert (await http.post(url, json={"tag": "v1", "revision": "abc"}, headers=headers)).status_code == 400
        assert (await http.post(url, json={"branch": "main"}, headers=headers)).status_code == 400
        assert (await http.post(url, json={"tag": "v1"}, headers=headers)).status_code == 200
    assert [j.tag for j in state.jobs] == ["v1"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _until_serving(http: httpx.AsyncClient, url: str, task: asyncio.Task[None]) -> None:
    for _ in range(500):
        assert not task.done(), "the sandbox stopped before it served"
        try:
            await http.get(url)
            return
        except httpx.ConnectError:
            await asyncio.sleep(0.01)
    pytest.fail("the sandbox never accepted a connection")


# -- seeding from rules and example payloads -----------------------------------------------------

SEED_RULES = """
version: 1
rules:
  - name: any-provider
    when: {project: [acme/api, "acme/web-*"]}
    then:
      - codeship.trigger_build: {project: acme/release, ref: heads/main}
      - codeship.trigger_build: {project: "{{ event.project }}-docs", ref: heads/main}
      - codeship.restart_build: {project: 0b5c2ad4-6a03-0135-d6ec-000000000000}
  - name: circleci-only
    when: {provider: circleci, project: acme/cli}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/packaging}
"""


def _event(provider: str, body: dict[str, Any]) -> BuildEvent:
    parsed = parse_any(provider, {}, json.dumps(body).encode())
    assert isinstance(parsed, BuildEvent)
    return parsed


async def test_seeding_keeps_the_payload_ids_and_makes_them_actionable(client: httpx.AsyncClient) -> None:
    """An example's project, build, job and workflow are seeded with the payload's ids, and the API can act on them:
    v1 restarts the build by its webhook id, v1.1 retries the job by its number, v2 reruns the workflow."""
    state = SandboxState(clock=Clock())
    codeship = _event("codeship", payloads.codeship("error", project="acme/lib", project_id=2345, build_id=4712))
    legacy = {
        "payload": {
            "build_num": 318,
            "username": "acme",
            "reponame": "e2e",
            "vcs_type": "github",
            "branch": "main",
            "vcs_revision": SHA,
            "status": "failed",
            "workflows": {"workflow_id": "0c9c8b2e-8f0a-4d2f-9e57-6b3a3f1f2d10"},
        }
    }
    outbound = payloads.circleci_workflow("failed", workflow_id="fda08377-fe7e-46b1-8992-3a7aaecac9c3")
    problems = seed_sandbox(
        state, parse_rules(SEED_RULES), [codeship, _event("circleci", legacy), _event("circleci", outbound)]
    )
    assert problems == []
    assert [(p.name, p.id) for p in state.projects] == [("acme/lib", 2345), ("acme/api", 2346), ("acme/release", 2347)]
    [build] = state.projects[0].builds
    assert (build.id, build.branch, build.commit_sha, build.status) == (4712, "main", payloads.COMMIT, "failed")
    assert [(j.vcs, j.org, j.repo, j.build_num, j.status) for j in state.jobs] == [
        ("github", "acme", "e2e", 318, "failed")
    ]
    legacy_pipeline = state.workflows["0c9c8b2e-8f0a-4d2f-9e57-6b3a3f1f2d10"]
    pipeline = state.workflows["fda08377-fe7e-46b1-8992-3a7aaecac9c3"]
    assert (legacy_pipeline.slug, legacy_pipeline.revision) == ("github/acme/e2e", SHA)
    assert (pipeline.id, pipeline.number, pipeline.slug) == (
        "1285fe1d-d3a6-44fc-8886-8979558254c4",
        42,
        "github/acme/lib",
    )
    app = create_sandbox_app(state)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s", headers=CIRCLE) as http:
        restarted = await http.post("/api/v1/builds/4712/restart.json", params={"api_key": "sandbox-key"})
        retried = await http.post("/api/v1.1/project/gh/acme/e2e/318/retry")
        rerun = await http.post("/api/v2/workflow/fda08377-fe7e-46b1-8992-3a7aaecac9c3/rerun", json={})
        pipelined = await http.post("/api/v2/project/github/acme/lib/pipeline", json={"branch": "main"})
    assert (restarted.status_code, restarted.json()["id"]) == (200, 4713)
    assert (retried.status_code, retried.json()["build_num"], retried.json()["retry_of"]) == (200, 319, 318)
    assert retried.json()["previous"] == {"build_num": 318, "status": "failed"}
    assert rerun.status_code == 202 and pipeline.workflow_ids[1] == rerun.json()["workflow_id"]
    assert pipelined.json()["number"] == 43  # after the seeded pipeline 42 of that project


def test_seeding_reports_a_clash_and_seeds_the_rest() -> None:
    """Two examples giving one numeric project id to two projects: the second is reported, not seeded, and the rest
    is; seeding the same example twice changes nothing."""
    state = SandboxState()
    web = _event("codeship", payloads.codeship("success", project="acme/web", project_id=1234, build_id=4711))
    lib = _event("codeship", payloads.codeship("error", project="acme/lib", project_id=1234, build_id=4712))
    job = _event("circleci", {"payload": {"build_num": 7, "username": "acme", "reponame": "e2e", "status": "failed"}})
    problems = seed_sandbox(state, parse_rules(SEED_RULES), [web, lib, job, web])
    assert len(problems) == 1 and "acme/lib" in problems[0] and "1234" in problems[0]
    assert [(p.name, p.id, [b.id for b in p.builds]) for p in state.projects] == [
        ("acme/web", 1234, [4711]),
        ("acme/api", 1235, []),
        ("acme/release", 1236, []),
    ]
    assert [(j.repo, j.build_num, j.branch) for j in state.jobs] == [("e2e", 7, "main")]


def test_example_events_reads_every_json_body_and_names_the_bad_ones(tmp_path: Path) -> None:
    """``example_events`` parses Codeship, CircleCI legacy and outbound bodies as deliveries, skips a ping, and names
    each file it cannot read as a delivery."""
    bodies: dict[str, Any] = {
        "a-codeship.json": payloads.codeship("success"),
        "b-legacy.json": {"payload": {"build_num": 7, "username": "acme", "reponame": "e2e", "status": "failed"}},
        "c-outbound.json": payloads.circleci_workflow("failed"),
        "d-ping.json": payloads.circleci_ping(),
        "e-broken.json": "[1, 2",
        "f-no-status.json": {"build": {"project_name": "acme/web", "build_id": 1, "project_id": 1}},
        "notes.txt": "not a payload",
    }
    for name, body in bodies.items():
        (tmp_path / name).write_text(body if isinstance(body, str) else json.dumps(body))
    events, problems = example_events(tmp_path)
    assert [(e.provider, e.kind, e.project) for e in events] == [
        ("codeship", "build", "acme/lib"),
        ("circleci", "job", "acme/e2e"),
        ("circleci", "workflow", "acme/lib"),
    ]
    assert [p.split(": ", 1)[0] for p in problems] == [
        str(tmp_path / "e-broken.json"),
        str(tmp_path / "f-no-status.json"),
    ]
    assert "build.status" in problems[1]


# -- scripted faults -----------------------------------------------------------------------------


async def test_scripted_500_answers_times_then_normal(client: httpx.AsyncClient, state: SandboxState) -> None:
    """A scripted 500 is returned exactly ``times`` times for its API, then normal handling resumes."""
    state.script("circleci.v2", status=500, body={"message": "boom"}, times=2)
    statuses = []
    for _ in range(3):
        statuses.append((await client.post("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE)).status_code)
    assert statuses == [500, 500, 201]
    assert [r.status for r in state.requests] == [500, 500, 201]
    assert {r.action for r in state.requests} == {"circleci.trigger_pipeline"}


async def test_scripted_429_with_retry_after_matches_path(client: httpx.AsyncClient, state: SandboxState) -> None:
    """A fault limited by ``path_contains`` hits only matching paths and carries its headers and body."""
    state.script("circleci.v2", status=429, headers={"Retry-After": "7"}, path_contains="/workflow/")
    workflow = state.trigger_pipeline("gh/acme/api").workflow_ids[0]
    assert (await client.post("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE)).status_code == 201
    limited = await client.post(f"/api/v2/workflow/{workflow}/rerun", headers=CIRCLE)
    assert (limited.status_code, limited.headers["retry-after"], limited.content) == (429, "7", b"")
    assert (await client.post(f"/api/v2/workflow/{workflow}/rerun", headers=CIRCLE)).status_code == 202


async def test_scripted_fault_over_http_and_validation(client: httpx.AsyncClient) -> None:
    """``POST /_sandbox/script`` takes the same arguments as ``script``; bad arguments are 400 and script nothing."""
    for bad in ({"api": "gitlab", "status": 500}, {"api": "codeship.v1", "status": 99}, {"status": 500}, [1]):
        answer = await client.post("/_sandbox/script", json=bad)
        assert answer.status_code == 400 and "error" in answer.json()
    extra = await client.post("/_sandbox/script", json={"api": "codeship.v1", "status": 500, "color": "red"})
    assert extra.status_code == 400
    ok = await client.post("/_sandbox/script", json={"api": "codeship.v1", "status": 503, "body": "down", "times": 1})
    assert ok.status_code == 201
    down = await client.get("/api/v1/projects.json", params={"api_key": "sandbox-key"})
    assert (down.status_code, down.text) == (503, "down")
    await client.post("/_sandbox/script", json={"api": "codeship.v1", "status": 500, "times": 5})
    assert (await client.delete("/_sandbox/script")).json() == {"faults": 0}
    assert (await client.get("/api/v1/projects.json", params={"api_key": "sandbox-key"})).status_code == 200


async def test_scripted_delay_holds_the_answer(client: httpx.AsyncClient, state: SandboxState) -> None:
    """A scripted delay keeps the client waiting (a hang for timeout tests) and the request is recorded at once."""
    state.script("codeship.v2", status=200, body={}, delay=60)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.post("/v2/auth", auth=(USER, PASSWORD)), timeout=0.2)
    assert [(r.action, r.status) for r in state.requests] == [("codeship.auth", 200)]
    state.script("codeship.v2", status=502, body={"errors": ["bad gateway"]}, delay=0.01)
    late = await client.post("/v2/auth", auth=(USER, PASSWORD))
    assert (late.status_code, late.json()) == (502, {"errors": ["bad gateway"]})


# -- recording and control -----------------------------------------------------------------------


async def test_recorded_requests_never_show_credentials(clock: Clock) -> None:
    """Passwords, tokens and keys, sent in any supported form, appear nowhere in ``/_sandbox/requests``."""
    secrets_ = {"password": "pw-Zq81x", "circle": "circle-Yt44k", "key": "key-Pp09w"}
    state = SandboxState(
        codeship_password=secrets_["password"],
        circleci_token=secrets_["circle"],
        codeship_api_key=secrets_["key"],
        clock=clock,
    )
    state.add_codeship_project("acme/web")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_sandbox_app(state)), base_url="http://s"
    ) as c:
        auth = await c.post("/v2/auth", auth=(USER, secrets_["password"]))
        access = auth.json()["access_token"]
        org = auth.json()["organizations"][0]["uuid"]
        await c.get(f"/v2/organizations/{org}/projects", headers={"Authorization": f"Bearer {access}"})
        await c.get("/api/v1/projects.json", params={"api_key": secrets_["key"]})
        token = secrets_["circle"]
        await c.post("/api/v2/project/gh/a/b/pipeline", headers={"Circle-Token": token})
        await c.post("/api/v2/project/gh/a/b/pipeline", headers={"Authorization": f"Bearer {token}"})
        await c.post("/api/v2/project/gh/a/b/pipeline", auth=(token, ""))
        await c.post("/api/v1.1/project/github/a/b/tree/main", params={"circle-token": token})
        log = await c.get("/_sandbox/requests")
    text = log.text
    encoded = [base64.b64encode(f"{u}:{p}".encode()).decode() for u, p in ((USER, secrets_["password"]), (token, ""))]
    for secret in [*secrets_.values(), access, *encoded]:
        assert secret not in text
    records = log.json()
    assert len(records) == 7 and [r["status"] for r in records] == [200, 200, 200, 201, 201, 201, 200]
    assert [r["headers"].get("authorization") for r in records] == ["***", "***", None, None, "***", "***", None]
    assert records[3]["headers"]["circle-token"] == "***"
    assert records[2]["query"] == {"api_key": "***"} and records[6]["query"] == {"circle-token": "***"}


async def test_recorded_request_fields_and_paging(client: httpx.AsyncClient, state: SandboxState) -> None:
    """Each record has id, time, api, method, path, query, headers, body, status and action; ``after`` pages."""
    await client.post("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE, json={"branch": "main"})
    await client.post("/api/v1.1/project/github/acme/api/tree/main", headers=CIRCLE, content=b"not json")
    await client.get("/elsewhere", params={"x": "1"})
    records = (await client.get("/_sandbox/requests")).json()
    first = records[0]
    assert first == {
        "id": 1,
        "time": NOW,
        "api": "circleci.v2",
        "method": "POST",
        "path": "/api/v2/project/gh/acme/api/pipeline",
        "query": {},
        "headers": first["headers"],
        "body": {"branch": "main"},
        "status": 201,
        "action": "circleci.trigger_pipeline",
    }
    assert first["headers"]["content-type"] == "application/json"
    assert (records[1]["body"], records[1]["status"]) == ("not json", 400)
    assert (records[2]["api"], records[2]["status"], records[2]["action"], records[2]["query"]) == (
        "unknown",
        404,
        None,
        {"x": "1"},
    )
    assert [r["id"] for r in (await client.get("/_sandbox/requests", params={"after": 1})).json()] == [2, 3]
    assert (await client.get("/_sandbox/requests", params={"after": "x"})).status_code == 400
    assert (await client.delete("/_sandbox/requests")).json() == {"cleared": 3}
    assert (await client.get("/_sandbox/requests")).json() == [] and state.requests == []


async def test_control_page_lists_requests_escaped(client: httpx.AsyncClient, state: SandboxState) -> None:
    """The HTML page lists recent requests, newest first, with every value escaped."""
    await client.post("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE)
    hostile: dict[str, Any] = {"query": {}, "headers": {}, "body": None, "status": 404, "action": "<b>x</b>"}
    state.record(api="unknown", method="GET", path="/<script>alert('x')</script>", **hostile)
    page = await client.get("/_sandbox/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script>" not in page.text and "<b>x" not in page.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)" in page.text and "&lt;b&gt;x&lt;/b&gt;" in page.text
    assert page.text.index("&lt;script") < page.text.index("/api/v2/project/gh/acme/api/pipeline")
    assert (await client.get("/_sandbox")).status_code == 200


async def test_unknown_paths_are_404_json(client: httpx.AsyncClient) -> None:
    """Paths outside every API answer 404 JSON, and control paths are not recorded."""
    for path in ("/", "/nothing", "/_sandbox/nothing"):
        answer = await client.get(path)
        assert (answer.status_code, answer.json()) == (404, {"error": "Not Found"})
    assert [r["path"] for r in (await client.get("/_sandbox/requests")).json()] == ["/", "/nothing"]


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("POST", "/v2/auth", b"[" * 100_000),
        ("POST", "/api/v2/project/gh/a/b/pipeline", b"\xff\xfe\x00"),
        ("POST", "/api/v2/workflow/x/rerun", b"[1, 2]"),
        ("POST", "/api/v1.1/project/github/a/b/tree/main", b'{"build_parameters": 3}'),
        ("POST", "/api/v1.1/project/github/a/b/" + "9" * 5000 + "/retry", b""),
        ("POST", "/api/v1.1/project/svn/a/b/1/retry", b""),
        ("GET", "/api/v1/projects/" + "9" * 5000 + ".json?api_key=sandbox-key", b""),
        ("GET", "/api/v1/projects/%C2%B2.json?api_key=sandbox-key", b""),
        ("GET", "/api/v2/project/gh/a/b/pipeline?page-token=%C2%B2", b""),
        ("GET", "/api/v2/project/gh/a/pipeline", b""),
        ("POST", "/_sandbox/script", b"\x00"),
        ("GET", "/_sandbox/requests?after=%C2%B2", b""),
    ],
    ids=[
        "deep-json",
        "not-utf8",
        "rerun-list",
        "params-not-object",
        "huge-build-num",
        "unknown-vcs",
        "huge-id",
        "unicode-digit",
        "bad-token",
        "short-slug",
        "script-garbage",
        "after-unicode-digit",
    ],
)
async def test_bad_input_never_gets_a_500(client: httpx.AsyncClient, method: str, path: str, content: bytes) -> None:
    """Malformed bodies, ids and tokens get a 4xx in the API's error shape, never a 500."""
    auth = {"Circle-Token": "sandbox-token", "Accept": "application/json"}
    answer = await client.request(method, path, content=content, headers=auth)
    assert 400 <= answer.status_code < 500, answer.text
    assert isinstance(answer.json(), dict)


# -- conformance with the providers' own shapes --------------------------------------------------


@pytest.mark.conformance
async def test_answers_match_provider_reference_shapes(client: httpx.AsyncClient, state: SandboxState) -> None:
    """CircleCI answers hold every property its OpenAPI spec requires; Codeship answers match codeship-go fixtures."""
    if not FIXTURES.is_dir():
        pytest.skip(f"provider fixtures not found at {FIXTURES} (they live outside the repo, in shared/reference)")
    spec = json.loads((FIXTURES / "circleci_openapi_v2.json").read_text())

    def schema(path: str, method: str, status: str) -> dict[str, Any]:
        found: dict[str, Any] = spec["paths"][path][method]["responses"][status]["content"]["application/json"][
            "schema"
        ]
        return found

    created = await client.post("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE, json={"branch": "main"})
    trigger = schema("/project/{project-slug}/pipeline", "post", "201")
    assert created.status_code == 201 and set(trigger["required"]) <= set(created.json())
    assert created.json()["state"] in trigger["properties"]["state"]["enum"]
    workflow = state.pipelines[0].workflow_ids[0]
    rerun = await client.post(f"/api/v2/workflow/{workflow}/rerun", headers=CIRCLE, json={"from_failed": True})
    assert rerun.status_code == 202
    assert set(schema("/workflow/{id}/rerun", "post", "202")["required"]) <= set(rerun.json())
    pipeline = (await client.get(f"/api/v2/pipeline/{created.json()['id']}", headers=CIRCLE)).json()
    one = schema("/pipeline/{pipeline-id}", "get", "200")
    assert set(one["required"]) <= set(pipeline)
    assert set(one["properties"]["vcs"]["required"]) <= set(pipeline["vcs"])
    assert set(one["properties"]["trigger"]["required"]) <= set(pipeline["trigger"])
    listing = (await client.get("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE)).json()
    assert set(schema("/project/{project-slug}/pipeline", "get", "200")["required"]) <= set(listing)

    def fixture(name: str) -> Any:
        return json.loads((FIXTURES / name).read_text())

    auth = (await client.post("/v2/auth", auth=(USER, PASSWORD))).json()
    expected_auth = fixture("codeshipgo_auth_success.json")
    assert set(auth) == set(expected_auth)
    assert set(auth["organizations"][0]) == set(expected_auth["organizations"][0])
    headers, project = await project_path(client, "acme/pro")
    build_uuid = (await client.get(f"{project}/builds", headers=headers)).json()["builds"][0]["uuid"]
    build = (await client.get(f"{project}/builds/{build_uuid}", headers=headers)).json()
    expected_build = fixture("codeshipgo_builds_get.json")
    assert set(build) == set(expected_build) and set(build["build"]) == set(expected_build["build"])
    assert set(build["build"]["links"]) == set(expected_build["build"]["links"])
    builds = (await client.get(f"{project}/builds", headers=headers)).json()
    assert set(builds) == set(fixture("codeshipgo_builds_list.json"))
    org = project.rsplit("/projects/", 1)[0]
    projects = (await client.get(f"{org}/projects", headers=headers)).json()
    expected_projects = fixture("codeshipgo_projects_list.json")
    assert set(projects) == set(expected_projects)
    common = set.intersection(*(set(p) for p in expected_projects["projects"]))
    for item in projects["projects"]:
        assert common <= set(item)
    basic = next(p for p in expected_projects["projects"] if p["type"] == "basic")
    assert set(basic) == set(next(p for p in projects["projects"] if p["type"] == "basic"))
    single = (await client.get(project, headers=headers)).json()
    assert set(single) == set(fixture("codeshipgo_projects_get.json"))
    assert set(fixture("codeshipgo_projects_get.json")["project"]) <= set(single["project"])


# -- chainer's real clients against the sandbox ---------------------------------------------------


SANDBOX_URL = "http://sandbox.test"


def sandbox_settings(**overrides: Any) -> Settings:
    """Settings pointing every provider URL at the sandbox, with the sandbox's default credentials."""
    values: dict[str, Any] = {
        "codeship_url": SANDBOX_URL,
        "codeship_v1_url": SANDBOX_URL,
        "circleci_url": SANDBOX_URL,
        "codeship_user": USER,
        "codeship_password": Secret(PASSWORD),
        "codeship_org": "ACME",  # chainer matches the organization name case-insensitively
        "codeship_api_key": Secret("sandbox-key"),
        "circleci_token": Secret("sandbox-token"),
        "buildkite_url": SANDBOX_URL,
        "buildkite_token": Secret("sandbox-buildkite-token"),
    }
    return Settings(**(values | overrides))


def failed_codeship_event() -> BuildEvent:
    """A Codeship webhook event for the failed build of acme/web at ``SHA`` on main."""
    return BuildEvent(
        provider="codeship",
        kind="build",
        event_id="evt_sandbox",
        project="acme/web",
        project_id=11,
        status="failed",
        raw_status="error",
        branch="main",
        commit=SHA,
        build_id=1001,
    )


async def test_chainer_downstream_runs_every_action_against_the_sandbox(clock: Clock) -> None:
    """chainer's real Downstream, pointed at the sandbox, executes every action successfully and the sandbox sees it."""
    secrets_ = {"codeship_password": "pw-Kd93q", "codeship_api_key": "key-Lm27v", "circleci_token": "cci-Rt55z"}
    secrets_["buildkite_token"] = "bk-Xy31p"
    state = SandboxState(
        clock=clock,
        codeship_password="pw-Kd93q",
        codeship_api_key="key-Lm27v",
        circleci_token="cci-Rt55z",
        buildkite_token="bk-Xy31p",
    )
    rebuilt = state.add_buildkite_build("acme/deploy", 7, branch="main", commit=SHA, state="failed")
    state.add_codeship_project("acme/web", id=11)
    state.add_codeship_project("acme/pro", type="pro", id=12)
    seeded = state.add_codeship_build("acme/web", branch="main", commit_sha=SHA, status="failed")
    workflow = state.trigger_pipeline("gh/acme/api", branch="main").workflow_ids[0]
    state.trigger_job("github", "acme", "api", "main", SHA, None)
    actions: list[tuple[str, dict[str, Any]]] = [
        ("codeship.trigger_build", {"project": "acme/web", "ref": "heads/release/1.2", "commit": "a" * 40}),
        ("codeship.restart_build", {"project": "11"}),
        ("codeship.v1_restart_build", {"project": 11, "branch": "main"}),
        ("circleci.trigger_pipeline", {"project": "gh/acme/api", "branch": "feature/x", "parameters": {"n": 3}}),
        ("circleci.rerun_workflow", {"workflow": workflow}),
        ("circleci.v1_trigger_build", {"project": "github/acme/api", "branch": "feature/x", "revision": SHA}),
        ("circleci.v1_retry_build", {"project": "github/acme/api", "build": 1}),
        ("buildkite.create_build", {"pipeline": "acme/deploy", "branch": "main", "commit": "HEAD", "env": {"N": 3}}),
        ("buildkite.rebuild", {"pipeline": "acme/deploy", "build": 7}),
    ]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_sandbox_app(state))) as http:
        settings = sandbox_settings(**{name: Secret(value) for name, value in secrets_.items()})
        downstream = Downstream(settings, http, clock=clock)
        assert await downstream.clients["codeship"].check() == []
        results = {name: await downstream.execute(name, params, failed_codeship_event()) for name, params in actions}
    # GitHub's three actions run against the sandbox in tests/providers/github/test_github_sandbox.py.
    assert set(results) == {a for a in downstream.actions if not a.startswith("github.")}
    assert {name: (r.status, r.downstream_id is not None) for name, r in results.items()} == {
        "codeship.trigger_build": (202, False),
        "codeship.restart_build": (202, False),
        "codeship.v1_restart_build": (200, True),
        "circleci.trigger_pipeline": (201, True),
        "circleci.rerun_workflow": (202, True),
        "circleci.v1_trigger_build": (200, True),
        "circleci.v1_retry_build": (200, True),
        "buildkite.create_build": (201, True),
        "buildkite.rebuild": (200, True),
    }
    web = state.projects[0]
    assert results["codeship.trigger_build"].detail["project_uuid"] == web.uuid
    assert results["codeship.restart_build"].detail == {
        "project_uuid": web.uuid,
        "build": seeded["uuid"],
        "looked_up": True,
    }
    assert [(b.branch, b.commit_sha, b.status) for b in web.builds] == [
        ("main", SHA, "initiated"),  # the Basic restart reran the seeded build under its own uuid
        ("release/1.2", "a" * 40, "initiated"),
        ("main", SHA, "initiated"),  # the v1 restart made a new build
    ]
    assert results["codeship.v1_restart_build"].downstream_id == str(web.builds[-1].id)
    pipeline = state.pipelines[-1]
    assert results["circleci.trigger_pipeline"].downstream_id == pipeline.id
    assert (pipeline.number, pipeline.branch, pipeline.parameters) == (2, "feature/x", {"n": 3})
    assert results["circleci.rerun_workflow"].downstream_id == state.pipelines[0].workflow_ids[1]
    assert results["circleci.v1_trigger_build"].detail == {
        "build_num": 2,
        "build_url": "https://circleci.com/gh/acme/api/2",
        "status": "not_running",
    }
    assert (results["circleci.v1_retry_build"].downstream_id, state.jobs[-1].retry_of) == ("3", 1)
    assert [(r.action, r.status) for r in state.requests] == [
        ("codeship.auth", 200),
        ("codeship.list_projects", 200),
        ("codeship.trigger_build", 202),
        ("codeship.list_builds", 200),
        ("codeship.restart_build", 202),
        ("codeship.v1_get_project", 200),
        ("codeship.v1_restart_build", 200),
        ("circleci.trigger_pipeline", 201),
        ("circleci.rerun_workflow", 202),
        ("circleci.v1_trigger_build", 200),
        ("circleci.v1_retry_build", 200),
        ("buildkite.create_build", 201),
        ("buildkite.rebuild", 200),
    ]
    assert state.requests[2].body == {"ref": "heads/release/1.2", "commit_sha": "a" * 40}
    assert state.requests[8].body == {"from_failed": True}
    assert state.requests[9].path == "/api/v1.1/project/github/acme/api/tree/feature%2Fx"
    deploy = state.buildkite_pipelines["acme/deploy"]
    created, again = deploy.builds[1:]
    assert state.requests[11].body == {
        "commit": "HEAD",
        "branch": "main",
        "env": {"N": "3"},
        "meta_data": {"chainer:cause": "evt_sandbox"},
    }
    assert (created.number, created.state, created.meta_data) == (8, "scheduled", {"chainer:cause": "evt_sandbox"})
    assert results["buildkite.create_build"].downstream_id == created.id
    assert results["buildkite.rebuild"].downstream_id == again.id and again.rebuilt_from is rebuilt
    assert results["buildkite.rebuild"].detail["number"] == 9 and results["buildkite.rebuild"].detail["rebuild_of"] == 7
    recorded = json.dumps([dataclasses.asdict(r) for r in state.requests])
    for secret in secrets_.values():
        assert secret not in recorded


async def test_chainer_downstream_sees_the_sandbox_faults_as_the_real_ones(clock: Clock) -> None:
    """Missing scopes, 2FA, Codeship's 403 rate limit and a scripted 429 reach chainer as on the real providers."""
    state = SandboxState(codeship_scopes=("project.read", "build.read"), codeship_rate_limit=3, clock=clock)
    state.add_codeship_project("acme/web", id=11)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_sandbox_app(state))) as http:
        downstream = Downstream(sandbox_settings(), http, clock=clock)
        warnings = await downstream.clients["codeship"].check()
        assert len(warnings) == 1 and "build.write" in warnings[0]
        with pytest.raises(PermanentDownstreamError) as refused:  # 403 without build.write: not a rate limit
            await downstream.execute(
                "codeship.trigger_build", {"project": "acme/web", "ref": "heads/main"}, failed_codeship_event()
            )
        assert refused.value.status == 403
        with pytest.raises(TransientDownstreamError) as limited:  # auth, list, create: the 4th call is one too many
            await downstream.execute(
                "codeship.trigger_build", {"project": "acme/web", "ref": "heads/main"}, failed_codeship_event()
            )
        assert (limited.value.status, limited.value.retry_after) == (403, 40.0)
        state.script("circleci.v2", status=429, headers={"Retry-After": "7"}, body={"message": "slow down"})
        with pytest.raises(TransientDownstreamError) as throttled:
            params = {"project": "gh/acme/api", "branch": "main"}
            await downstream.execute("circleci.trigger_pipeline", params, failed_codeship_event())
        assert (throttled.value.status, throttled.value.retry_after) == (429, 7.0)
        state.two_factor, clock.now = True, clock.now + 3600
        with pytest.raises(PermanentDownstreamError, match="two-factor"):
            await Downstream(sandbox_settings(), http, clock=clock).clients["codeship"].check()


# -- a real server -------------------------------------------------------------------------------


async def test_sandbox_over_real_http_on_loopback(state: SandboxState) -> None:
    """Under uvicorn on a free 127.0.0.1 port the sandbox answers real HTTP: 202 empty, 201, EDN, and records it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_sandbox_app(state), host="127.0.0.1", port=port, log_config=None, lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn stopped before it started"
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            headers, project = await project_path(http, "acme/web")
            created = await http.post(f"{project}/builds", headers=headers, json={"ref": "heads/main"})
            assert (created.status_code, created.content, created.headers["content-length"]) == (202, b"", "0")
            pipeline = await http.post("/api/v2/project/gh/acme/api/pipeline", headers=CIRCLE, json={"tag": "v2"})
            assert pipeline.status_code == 201 and pipeline.json()["number"] == 1
            del http.headers["accept"]
            edn = await http.post("/api/v1.1/project/gh/acme/api/tree/main", headers={"Circle-Token": "sandbox-token"})
            assert edn.headers["content-type"] == "application/edn" and edn.text.startswith("{:build_num 1")
            state.script("circleci.v2", status=500, delay=3600, path_contains="/rerun")
            with pytest.raises(httpx.ReadTimeout):  # the hang ends when the client gives up
                await http.post("/api/v2/workflow/x/rerun", headers=CIRCLE, timeout=0.2)
            log = (await http.get("/_sandbox/requests")).json()
        assert state.faults == []
    finally:
        server.should_exit = True
        await task
    assert [r["action"] for r in log] == [
        "codeship.auth",
        "codeship.list_projects",
        "codeship.trigger_build",
        "circleci.trigger_pipeline",
        "circleci.v1_trigger_build",
        "circleci.rerun_workflow",
    ]
    assert [r["status"] for r in log] == [200, 200, 202, 201, 200, 500]
    assert "accept" not in log[-2]["headers"] and log[-2]["headers"]["circle-token"] == "***"


async def test_serve_sandbox_runs_until_cancelled(state: SandboxState, capsys: pytest.CaptureFixture[str]) -> None:
    """``serve_sandbox`` serves the given state on the given port, prints nothing and closes cleanly on cancel."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    task = asyncio.create_task(serve_sandbox("127.0.0.1", port, state))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        for _ in range(500):
            assert not task.done(), "serve_sandbox stopped before it served"
            try:
                answer = await http.get("/api/v1/projects.json", params={"api_key": "sandbox-key"})
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.01)
        else:
            pytest.fail("serve_sandbox never accepted a connection")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert answer.status_code == 200 and [p["repository_name"] for p in answer.json()["projects"]] == ["acme/web"]
    assert [r.action for r in state.requests] == ["codeship.v1_list_projects"]
    assert capsys.readouterr().out == ""
