"""Downstream: Codeship API v2/v1 requests, the token cache, lookups, and the outcome classification."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from chainer.errors import (
    AmbiguousDownstreamError,
    DownstreamError,
    PermanentDownstreamError,
    TransientDownstreamError,
)
from chainer.providers import Downstream, catalogue
from chainer.providers.http import CallResult, default_http_client, retry_after_seconds
from tests.helpers import (
    ACCESS_TOKEN,
    API_KEY,
    BUILD,
    BUILDS_PATH,
    CIRCLE_TOKEN,
    CODESHIP,
    CODESHIP_PASSWORD,
    CODESHIP_USER,
    CODESHIP_V1,
    COMMIT,
    NOW,
    ORG,
    PROJECT,
    PROJECTS_PATH,
    Clock,
    Recorder,
    Reply,
    assert_error_secret_free,
    assert_secret_free,
    auth_ok,
    codeship_recorder,
    make_event,
    make_settings,
    project,
    projects_page,
)

# -- Codeship API v2: requests -----------------------------------------------------------------


async def test_codeship_trigger_build_sends_exact_requests() -> None:
    """trigger_build authenticates with Basic, resolves the project name, and posts {ref, commit_sha} → 202."""
    rec = codeship_recorder()
    async with rec.client() as http:
        result = await Downstream(make_settings(), http, clock=Clock()).execute(
            "codeship.trigger_build", {"project": "acme/web", "ref": "heads/main", "commit": COMMIT}, make_event()
        )
    auth, listing, build = rec.requests
    assert (auth.method, str(auth.url)) == ("POST", f"{CODESHIP}/v2/auth")
    expected = base64.b64encode(f"{CODESHIP_USER}:{CODESHIP_PASSWORD}".encode()).decode()
    assert auth.headers["authorization"] == f"Basic {expected}"
    assert json.loads(auth.content) == {}
    assert (listing.method, str(listing.url)) == ("GET", f"{CODESHIP}{PROJECTS_PATH}?page=1&per_page=50")
    assert (build.method, str(build.url)) == ("POST", f"{CODESHIP}{BUILDS_PATH}")
    for request in (listing, build):
        assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["accept"] == "application/json"
    assert json.loads(build.content) == {"ref": "heads/main", "commit_sha": COMMIT}
    assert result == CallResult(
        status=202,
        downstream_id=None,
        detail={"project_uuid": PROJECT, "ref": "heads/main", "commit_sha": COMMIT},
        request={
            "method": "POST",
            "url": f"{CODESHIP}{BUILDS_PATH}",
            "body": {"ref": "heads/main", "commit_sha": COMMIT},
        },
    )
    assert_secret_free(result)


async def test_codeship_trigger_build_by_uuid_without_commit() -> None:
    """A project uuid needs no listing, and a missing commit leaves commit_sha out of the body."""
    rec = codeship_recorder()
    async with rec.client() as http:
        result = await Downstream(make_settings(), http, clock=Clock()).execute(
            "codeship.trigger_build", {"project": PROJECT, "ref": "tags/v1.2.0"}, make_event()
        )
    assert rec.calls("GET", PROJECTS_PATH) == []
    assert json.loads(rec.calls("POST", BUILDS_PATH)[0].content) == {"ref": "tags/v1.2.0"}
    assert result.status == 202 and result.downstream_id is None


@pytest.mark.parametrize("ref", ["main", "refs/heads/main", "heads/", "branch/main"])
async def test_codeship_trigger_build_rejects_refs_codeship_would_ignore(ref: str) -> None:
    """A ref that is not heads/<x> or tags/<x> is refused before anything is sent."""
    rec = codeship_recorder()
    async with rec.client() as http:
        with pytest.raises(PermanentDownstreamError, match="heads/<branch>"):
            await Downstream(make_settings(), http).execute(
                "codeship.trigger_build", {"project": "acme/web", "ref": ref}, make_event()
            )
    assert rec.requests == []


async def test_codeship_missing_credentials_names_the_variables() -> None:
    """Without a Codeship user and password the error names the variables to set and nothing is sent."""
    rec = codeship_recorder()
    async with rec.client() as http:
        downstream = Downstream(make_settings(codeship_user=None, codeship_password=None), http)
        with pytest.raises(PermanentDownstreamError, match="CHAINER_CODESHIP_USER / CHAINER_CODESHIP_PASSWORD"):
            await downstream.execute("codeship.trigger_build", {"project": PROJECT, "ref": "heads/x"}, make_event())
        with pytest.raises(PermanentDownstreamError, match="CHAINER_CODESHIP_PASSWORD"):
            await downstream.clients["codeship"].check_auth()
        assert await downstream.clients["codeship"].check() == []  # the start-up check: nothing configured to try
    assert rec.requests == []


# -- Codeship API v2: token cache ----------------------------------------------------------------


async def test_codeship_concurrent_actions_share_one_auth_call() -> None:
    """Ten concurrent actions make one auth call and one project listing, then ten build requests."""
    rec = codeship_recorder()

    async def slow_auth(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)
        return auth_ok()

    rec.on("POST", "/v2/auth", slow_auth)
    async with rec.client() as http:
        downstream = Downstream(make_settings(), http, clock=Clock())
        params = {"project": "acme/web", "ref": "heads/main"}
        results = await asyncio.gather(
            *(downstream.execute("codeship.trigger_build", params, make_event()) for _ in range(10))
        )
    assert len(rec.calls("POST", "/v2/auth")) == 1
    assert len(rec.calls("GET", PROJECTS_PATH)) == 1
    assert len(rec.calls("POST", BUILDS_PATH)) == 10
    assert {r.status for r in results} == {202}


async def test_codeship_token_renewed_after_expiry() -> None:
    """The token is reused until a minute before expires_at, then renewed once."""
    rec = codeship_recorder()
    rec.on("POST", "/v2/auth", auth_ok("first-token", NOW + 3600), auth_ok("second-token", NOW + 7200))
    clock = Clock()
    params = {"project": PROJECT, "ref": "heads/main"}
    async with rec.client() as http:
        downstream = Downstream(make_settings(), http, clock=clock)
        await downstream.execute("codeship.trigger_build", params, make_event())
        clock.now = NOW + 3600 - 61
        await downstream.execute("codeship.trigger_build", params, make_event())
        assert len(rec.calls("POST", "/v2/auth")) == 1
        clock.now = NOW + 3600 - 59
        await downstream.execute("codeship.trigger_build", params, make_event())
    assert len(rec.calls("POST", "/v2/auth")) == 2
    tokens = [r.headers["authorization"] for r in rec.calls("POST", BUILDS_PATH)]
    assert tokens == ["Bearer first-token", "Bearer first-token", "Bearer second-token"]


async def test_codeship_renews_token_once_on_401_then_succeeds() -> None:
    """A 401 from an API call renews the token and sends the call once more."""
    rec = codeship_recorder()
    rec.on("POST", "/v2/auth", auth_ok("old-token"), auth_ok("new-token"))
    rec.on("POST", BUILDS_PATH, httpx.Response(401, json={"errors": ["Unauthorized"]}), httpx.Response(202))
    async with rec.client() as http:
        result = await Downstream(make_settings(), http, clock=Clock()).execute(
            "codeship.trigger_build", {"project": PROJECT, "ref": "heads/main"}, make_event()
        )
    assert result.status == 202
    assert [r.headers["authorization"] for r in rec.calls("POST", BUILDS_PATH)] == [
        "Bearer old-token",
        "Bearer new-token",
    ]
    assert len(rec.calls("POST", "/v2/auth")) == 2


async def test_codeship_second_401_is_permanent() -> None:
    """A 401 that survives a fresh token is a permanent credentials error, after exactly two auth calls."""
    rec = codeship_recorder()
    rec.on("POST", BUILDS_PATH, httpx.Response(401, json={"errors": ["Unauthorized"]}))
    async with rec.client() as http:
        with pytest.raises(PermanentDownstreamError, match="CHAINER_CODESHIP_USER") as caught:
            await Downstream(make_settings(), http, clock=Clock()).execute(
                "codeship.trigger_build", {"project": PROJECT, "ref": "heads/main"}, make_event()
            )
    assert caught.value.status == 401
    assert len(rec.calls("POST", "/v2/auth")) == 2 and len(rec.calls("POST", BUILDS_PATH)) == 2
    assert_error_secret_free(caught.value)


async def test_codeship_two_factor_auth_error_surfaces_its_message() -> None:
    """An auth answer of 200 with an error key (two-factor accounts) is a permanent failure with its text."""
    rec = codeship_recorder()
    message = "Your account has two-factor authentication enabled, which is not possible to support with the API."
    rec.on("POST", "/v2/auth", httpx.Response(200, json={"error": message}))
    async with rec.client() as http:
        with pytest.raises(PermanentDownstreamError) as caught:
            await Downstream(make_settings(), http).clients["codeship"].check()
    assert message in caught.value.message
    assert_error_secret_free(caught.value)


async def test_codeship_rejected_credentials() -> None:
    """An auth answer of 401 says Codeship rejected the credentials, without the password."""
    rec = codeship_recorder()
    rec.on("POST", "/v2/auth", httpx.Response(401, json={"error": "Unauthorized"}))
    async with rec.client() as http:
        with pytest.raises(PermanentDownstreamError, match="Codeship rejected the credentials") as caught:
            await Downstream(make_settings(), http).execute(
                "codeship.restart_build", {"project": PROJECT, "build": BUILD}, make_event()
            )
    assert caught.value.status == 401
    assert_error_secret_free(caught.value)


async def test_codeship_org_is_chosen_case_insensitively() -> None:
    """CHAINER_CODESHIP_ORG matches an organization name regardless of case, and its uuid is used."""
    other = "99999999-e33d-5533-b53f-111ef8d7b14f"
    orgs = [{"uuid": other, "name": "Other", "scopes": []}, {"uuid": ORG, "name": "Acme Corp", "scopes": []}]
    rec = codeship_recorder()
    rec.on("POST", "/v2/auth", auth_ok(orgs=orgs))
    async with rec.client() as http:
        await Downstream(make_settings(codeship_org="acme CORP"), http).execute(
            "codeship.trigger_build", {"project": PROJECT, "ref": "heads/main"}, make_event()
        )
    assert len(rec.calls("POST", BUILDS_PATH)) == 1


async def test_codeship_several_orgs_without_setting_names_them() -> None:
    """An account in several organizations without CHAINER_CODESHIP_ORG fails naming every organization."""
    orgs = [{"uuid": ORG, "name": "Acme", "scopes": []}, {"uuid": PROJECT, "name": "Globex", "scopes": []}]
    rec = codeship_recorder()
    rec.on("POST", "/v2/auth", auth_ok(orgs=orgs))
    async with rec.client() as http:
        with pytest.raises(PermanentDownstreamError, match=r"Acme, Globex.*CHAINER_CODESHIP_ORG"):
            await Downstream(make_settings(), http).clients["codeship"].check()


async def test_codeship_unknown_org_setting_lists_the_available_ones() -> None:
    """A CHAINER_CODESHIP_ORG the account does not belong to fails naming the organizations it has."""
    rec = codeship_recorder()
    async with rec.client() as http:
        with pytest.raises(PermanentDownstreamError, match=r"'Initech'.*available: Acme"):
            await Downstream(make_settings(codeship_org="Initech"), http).clients["codeship"].check()


async def test_check_codeship_auth_reports_missing_build_write_scope() -> None:
    """check_codeship_auth warns when the chosen organization lacks build.write, and is quiet otherwise."""
    rec = codeship_recorder()
    rec.on(
        "POST",
        "/v2/auth",
        auth_ok(orgs=[{"uuid": ORG, "name": "Acme", "scopes": ["project.read", "build.read"]}]),
        auth_ok(),
    )
    async with rec.client() as http:
        downstream = Downstream(make_settings(), http)
        warnings = await downstream.clients["codeship"].check()
        assert len(warnings) == 1 and "build.write" in warnings[0] and "'Acme'" in warnings[0]
        assert await downstream.clients["codeship"].check() == []
    assert len(rec.calls("POST", "/v2/auth")) == 2


# -- Codeship API v2: projects and builds ------------------------------------------------------


async def test_codeship_project_name_resolved_over_two_pages_and_cached() -> None:
    """A project name is found on the second page of the listing; the map is then cached."""
    first = [project(f"acme/p{i}", f"00000000-0000-0000-0000-{i:012d}", i) for i in range(50)]
    rec = codeship_recorder()
    rec.on("GET", PROJECTS_PATH, projects_page(first, 1, 51), projects_page([project("Acme/Web")], 2, 51))
    params = {"project": "acme/web", "ref": "heads/main"}
    async with rec.client() as http:
        downstream = Downstream(make_settings(), http, clock=Clock())
        await downstream.execute("codeship.trigger_build", params, make_event())
        await downstream.execute("codeship.trigger_build", params, make_event())
    pages = [r.url.params["page"] for r in rec.calls("GET", PROJECTS_PATH)]
    assert pages == ["1", "2"]
    assert len(rec.calls("POST", BUILDS_PATH)) == 2


async def test_codeship_numeric_project_id_resolved_through_listing() -> None:
    """A numeric project id (as webhooks send) maps to its uuid through the listing's id field."""
    rec = codeship_recorder()
    async with rec.client() as http:
        result = await Downstream(make_settings(), http).execute(
            "codeship.trigger_build", {"project": "1234", "ref": "heads/main"}, make_event()
        )
    assert result.detail["project_uuid"] == PROJECT


async def test_codeship_unknown_project_is_permanent() -> None:
    """A project name the organization does not have is a permanent error naming it."""
    rec = codeship_recorder()
    async with rec.client() as http:
        with pytest.raises(PermanentDownstreamError, match="'acme/nope' not found"):
            await Downstream(make_settings(), http).execute(
                "codeship.trigger_build", {"project": "acme/nope", "ref": "heads/main"}, make_event()
            )
    assert rec.calls("POST", BUILDS_PATH) == []


async def test_codeship_restart_build_with_uuid() -> None:
    """restart_build with a build uuid posts to …/builds/{uuid}/restart without a body (202)."""
    rec = codeship_recorder()
    rec.on("POST", f"{BUILDS_PATH}/{BUILD}/restart", httpx.Response(202))
    async with rec.client() as http:
        result = await Downstream(make_settings(), http).execute(
            "codeship.restart_build", {"project": PROJECT, "build": BUILD}, make_event()
        )
    [restart] = rec.calls("POST", f"{BUILDS_PATH}/{BUILD}/restart")
    assert restart.content == b"" and restart.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert result.status == 202 and result.downstream_id is None
    assert result.detail == {"project_uuid": PROJECT, "build": BUILD, "looked_up": False}
    assert result.request == {"method": "POST", "url": f"{CODESHIP}{BUILDS_PATH}/{BUILD}/restart", "body": None}


def _build(uuid: str, commit: str, branch: str, queued_at: str) -> dict[str, Any]:
    return {"uuid": uuid, "commit_sha": commit, "branch": branch, "queued_at": queued_at, "status": "failed"}


async def test_codeship_restart_build_looks_up_the_events_build() -> None:
    """Without a build uuid, the event's build is found by commit and branch (newest queued) on page two."""
    other = "ffffffff-0000-0000-0000-000000000000"
    older, newer = "11111111-0000-0000-0000-000000000000", "22222222-0000-0000-0000-000000000000"
    page1 = [
        _build(f"aaaaaaaa-0000-0000-0000-{i:012d}", "0" * 40, "main", "2024-01-02T00:00:00+00:00") for i in range(50)
    ]
    page2 = [
        _build(other, COMMIT, "release", "2024-01-01T12:00:00+00:00"),
        _build(older, COMMIT, "main", "2024-01-01T09:00:00+00:00"),
        _build(newer, COMMIT.upper(), "main", "2024-01-01T10:00:00Z"),
    ]
    rec = codeship_recorder()
    rec.on(
        "GET",
        BUILDS_PATH,
        httpx.Response(200, json={"builds": page1, "page": 1, "per_page": 50, "total": 53}),
        httpx.Response(200, json={"builds": page2, "page": 2, "per_page": 50, "total": 53}),
    )
    rec.on("POST", f"{BUILDS_PATH}/{newer}/restart", httpx.Response(202))
    async with rec.client() as http:
        result = await Downstream(make_settings(), http).execute(
            "codeship.restart_build", {"project": "acme/web"}, make_event()
        )
    listings = rec.calls("GET", BUILDS_PATH)
    assert [dict(r.url.params) for r in listings] == [{"page": "1", "per_page": "50"}, {"page": "2", "per_page": "50"}]
    assert result.detail == {"project_uuid": PROJECT, "build": newer, "looked_up": True}
    assert len(rec.calls("POST", f"{BUILDS_PATH}/{newer}/restart")) == 1


async def test_codeship_restart_build_not_found_fails_visibly() -> None:
    """When no build matches the event's commit and branch, nothing is restarted and the error says so."""
    rec = codeship_recorder()
    rec.on("GET", BUILDS_PATH, httpx.Response(200, json={"builds": [], "page": 1, "per_page": 50, "total": 0}))
    async with rec.client() as http:
        with pytest.raises(PermanentDownstreamError, match=f"no build of acme/web at {COMMIT} on main$"):
            await Downstream(make_settings(), http).execute(
                "codeship.restart_build", {"project": "acme/web"}, make_event()
            )
    assert [r for r in rec.requests if r.url.path.endswith("/restart")] == []


async def test_codeship_restart_build_needs_commit_and_branch_to_look_up() -> None:
    """An event without commit or branch cannot be looked up: the error asks for the build uuid."""
    rec = codeship_recorder()
    async with rec.client() as http:
        with pytest.raises(PermanentDownstreamError, match="give the build uuid"):
            await Downstream(make_settings(), http).execute(
                "codeship.restart_build", {"project": PROJECT}, make_event(commit=None)
            )


# -- Codeship API v1 ----------------------------------------------------------------------------


async def test_codeship_v1_restart_build_by_id_hides_the_api_key() -> None:
    """v1 restart posts to /api/v1/builds/{id}/restart.json?api_key=K; the key is redacted in the result."""
    rec = Recorder()
    rec.on("POST", "/api/v1/builds/987/restart.json", httpx.Response(200, json={"id": 988, "uuid": BUILD}))
    async with rec.client() as http:
        result = await Downstream(make_settings(), http).execute(
            "codeship.v1_restart_build", {"build": 987}, make_event()
        )
    [request] = rec.requests
    assert request.url.params["api_key"] == API_KEY and request.content == b""
    assert result.downstream_id == "988"
    assert result.detail == {"restarted": "987", "id": 988, "uuid": BUILD}
    assert result.request["url"] == f"{CODESHIP_V1}/api/v1/builds/987/restart.json?api_key=***"
    assert_secret_free(result)


async def test_codeship_v1_restart_newest_build_of_a_branch() -> None:
    """With project and branch, v1 restart takes builds[0] of the project's branch listing."""
    rec = Recorder()
    listing = {"id": 7, "builds": [{"id": 55, "branch": "main"}, {"id": 54, "branch": "main"}]}
    rec.on("GET", "/api/v1/projects/7.json", httpx.Response(200, json=listing))
    rec.on("POST", "/api/v1/builds/55/restart.json", httpx.Response(200, json={"id": 56, "uuid": BUILD}))
    async with rec.client() as http:
        result = await Downstream(make_settings(), http).execute(
            "codeship.v1_restart_build", {"project": "7", "branch": "main"}, make_event(provider="circleci")
        )
    lookup = rec.requests[0]
    assert dict(lookup.url.params) == {"api_key": API_KEY, "branch": "main"}
    assert result.downstream_id == "56"


async def test_codeship_v1_branch_without_builds_is_permanent() -> None:
    """A v1 project branch without builds is a permanent error and restarts nothing."""
    rec = Recorder()
    rec.on("GET", "/api/v1/projects/7.json", httpx.Response(200, json={"id": 7, "builds": []}))
    async with rec.client() as http:
        with pytest.raises(PermanentDownstreamError, match="no build of Codeship project 7 on branch main"):
            await Downstream(make_settings(), http).execute(
                "codeship.v1_restart_build", {"project": 7, "branch": "main"}, make_event()
            )
    assert len(rec.requests) == 1


async def test_codeship_v1_needs_api_key() -> None:
    """Without CHAINER_CODESHIP_API_KEY the v1 action fails naming it and sends nothing."""
    rec = Recorder()
    async with rec.client() as http:
        with pytest.raises(PermanentDownstreamError, match="CHAINER_CODESHIP_API_KEY"):
            await Downstream(make_settings(codeship_api_key=None), http).execute(
                "codeship.v1_restart_build", {"build": 1}, make_event()
            )
    assert rec.requests == []


async def test_codeship_v1_transport_error_does_not_leak_the_api_key() -> None:
    """An httpx error whose text contains the URL (and key) is scrubbed and not chained."""
    rec = Recorder()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    rec.on("POST", "/api/v1/builds/1/restart.json", refuse)
    async with rec.client() as http:
        with pytest.raises(TransientDownstreamError) as caught:
            await Downstream(make_settings(), http).execute("codeship.v1_restart_build", {"build": 1}, make_event())
    assert_error_secret_free(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# -- outcome classification -----------------------------------------------------------------------


def _raise(exc_type: type[httpx.TransportError], text: str = "boom") -> Callable[[httpx.Request], httpx.Response]:
    def reply(request: httpx.Request) -> httpx.Response:
        raise exc_type(text, request=request)

    return reply


async def _trigger_codeship(reply: Reply, clock: Clock | None = None) -> CallResult:
    rec = codeship_recorder()
    rec.on("POST", BUILDS_PATH, reply)
    async with rec.client() as http:
        return await Downstream(make_settings(), http, clock=clock or Clock()).execute(
            "codeship.trigger_build", {"project": PROJECT, "ref": "heads/main"}, make_event()
        )


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (_raise(httpx.ConnectError), TransientDownstreamError),
        (_raise(httpx.ConnectTimeout), TransientDownstreamError),
        (_raise(httpx.PoolTimeout), TransientDownstreamError),
        (_raise(httpx.ReadTimeout), AmbiguousDownstreamError),
        (_raise(httpx.WriteTimeout), AmbiguousDownstreamError),
        (_raise(httpx.RemoteProtocolError), AmbiguousDownstreamError),
        (_raise(httpx.ReadError), AmbiguousDownstreamError),
        (_raise(httpx.UnsupportedProtocol), PermanentDownstreamError),
        (httpx.Response(500, text="oops"), TransientDownstreamError),
        (httpx.Response(502), TransientDownstreamError),
        (httpx.Response(504), TransientDownstreamError),
        (httpx.Response(400, json={"errors": ["ref is required", "bad sha"]}), PermanentDownstreamError),
        (httpx.Response(404, json={"errors": ["project not found"]}), PermanentDownstreamError),
        (httpx.Response(302, headers={"location": "https://elsewhere.test/"}), PermanentDownstreamError),
    ],
    ids=[
        "connect-error",
        "connect-timeout",
        "pool-timeout",
        "read-timeout",
        "write-timeout",
        "remote-protocol",
        "read-error",
        "bad-scheme",
        "500",
        "502",
        "504",
        "400",
        "404",
        "redirect",
    ],
)
async def test_outcome_classification(reply: Reply, kind: type[DownstreamError]) -> None:
    """Each transport error and status maps to its row of the classification table."""
    with pytest.raises(DownstreamError) as caught:
        await _trigger_codeship(reply)
    assert type(caught.value) is kind
    assert caught.value.message.startswith(f"Codeship POST {BUILDS_PATH}")
    assert_error_secret_free(caught.value)


async def test_nothing_sent_errors_say_so() -> None:
    """A connect error is transient and the message says nothing was sent."""
    with pytest.raises(TransientDownstreamError, match=r"ConnectError: boom \(nothing was sent\)"):
        await _trigger_codeship(_raise(httpx.ConnectError))


async def test_read_timeout_after_sending_is_ambiguous() -> None:
    """A read timeout on an action's POST means it may have taken effect: ambiguous."""
    with pytest.raises(AmbiguousDownstreamError, match="may have taken effect"):
        await _trigger_codeship(_raise(httpx.ReadTimeout, "timed out"))


async def test_read_timeout_on_a_lookup_is_transient() -> None:
    """A read timeout on a GET lookup changes nothing, so it is transient."""
    rec = codeship_recorder()
    rec.on("GET", PROJECTS_PATH, _raise(httpx.ReadTimeout, "timed out"))
    async with rec.client() as http:
        with pytest.raises(TransientDownstreamError, match="safe to repeat"):
            await Downstream(make_settings(), http).execute(
                "codeship.trigger_build", {"project": "acme/web", "ref": "heads/main"}, make_event()
            )
    assert rec.calls("POST", BUILDS_PATH) == []


async def test_provider_error_texts_are_in_the_message() -> None:
    """Codeship's errors array is joined into the message, with the status."""
    with pytest.raises(PermanentDownstreamError) as caught:
        await _trigger_codeship(httpx.Response(400, json={"errors": ["ref is required", "bad sha"]}))
    assert caught.value.message == f"Codeship POST {BUILDS_PATH} answered 400: ref is required; bad sha"
    assert caught.value.status == 400 and "ref is required" in caught.value.body


async def test_non_json_error_body_gives_its_first_200_characters() -> None:
    """A non-JSON error body contributes its first 200 characters, whitespace collapsed."""
    page = "<html>\n  <body>" + "x" * 400 + "</body></html>"
    with pytest.raises(PermanentDownstreamError) as caught:
        await _trigger_codeship(httpx.Response(422, text=page))
    text = caught.value.message.split("answered 422: ", 1)[1]
    assert text == ("<html> <body>" + "x" * 400)[:200]


async def test_429_retry_after_seconds() -> None:
    """A 429 is transient with retry_after taken from Retry-After seconds."""
    with pytest.raises(TransientDownstreamError) as caught:
        await _trigger_codeship(httpx.Response(429, headers={"Retry-After": "30"}))
    assert (caught.value.status, caught.value.retry_after) == (429, 30.0)


async def test_429_retry_after_http_date() -> None:
    """A 429 whose Retry-After is an HTTP date gives the seconds from the injected clock to that date."""
    header = formatdate(NOW + 120, usegmt=True)
    with pytest.raises(TransientDownstreamError) as caught:
        await _trigger_codeship(httpx.Response(429, headers={"Retry-After": header}))
    assert caught.value.retry_after == 120.0


async def test_503_with_retry_after() -> None:
    """A 503 with Retry-After is transient with that delay."""
    with pytest.raises(TransientDownstreamError) as caught:
        await _trigger_codeship(httpx.Response(503, headers={"Retry-After": "7"}, text="maintenance"))
    assert (caught.value.status, caught.value.retry_after) == (503, 7.0)


async def test_500_without_retry_after_is_transient_without_delay() -> None:
    """A plain 500 is transient (DESIGN §6 retries 5xx) with no provider-given delay."""
    with pytest.raises(TransientDownstreamError) as caught:
        await _trigger_codeship(httpx.Response(500, json={"errors": ["internal"]}))
    assert (caught.value.status, caught.value.retry_after) == (500, None)


async def test_codeship_rate_limit_403_waits_for_the_next_minute() -> None:
    """Codeship's 403 "Rate Limit Exceeded" is transient, retrying at the next minute boundary."""
    with pytest.raises(TransientDownstreamError) as caught:
        await _trigger_codeship(httpx.Response(403, json={"errors": ["Rate Limit Exceeded"]}), Clock(NOW + 15))
    assert (caught.value.status, caught.value.retry_after) == (403, 25.0)


async def test_codeship_permission_403_is_permanent() -> None:
    """A 403 that is not about the rate limit is a permanent permissions error pointing at the credentials."""
    with pytest.raises(PermanentDownstreamError) as caught:
        await _trigger_codeship(httpx.Response(403, json={"errors": ["Forbidden: missing build.write"]}))
    assert "Forbidden: missing build.write" in caught.value.message
    assert "CHAINER_CODESHIP_USER" in caught.value.message


async def test_non_json_2xx_is_success_without_id() -> None:
    """A 2xx whose body is not the expected JSON took effect: success, no id, a note in detail."""
    rec = Recorder()
    rec.on("POST", "/api/v1/builds/3/restart.json", httpx.Response(200, text="<html>ok</html>"))
    async with rec.client() as http:
        result = await Downstream(make_settings(), http).execute(
            "codeship.v1_restart_build", {"build": 3}, make_event()
        )
    assert result.status == 200 and result.downstream_id is None and "note" in result.detail


async def test_secrets_echoed_by_the_provider_are_scrubbed() -> None:
    """A provider answer that echoes a secret has it replaced in the message and the body excerpt."""
    echo = f"bad token {ACCESS_TOKEN} for {CODESHIP_PASSWORD} and {API_KEY}/{CIRCLE_TOKEN}"
    with pytest.raises(PermanentDownstreamError) as caught:
        await _trigger_codeship(httpx.Response(400, json={"errors": [echo]}))
    assert "bad token *** for ***" in caught.value.message
    assert_error_secret_free(caught.value)


# -- the facade --------------------------------------------------------------------------------


async def test_every_catalogued_action_is_executable() -> None:
    """Downstream executes exactly the actions the registry's catalogue lists."""
    async with httpx.AsyncClient() as http:
        assert Downstream(make_settings(), http).actions == frozenset(catalogue().actions)


async def test_unknown_action_is_permanent() -> None:
    """An action name Downstream does not know is a permanent error."""
    async with httpx.AsyncClient() as http:
        with pytest.raises(PermanentDownstreamError, match=r"unknown action 'jenkins\.build'"):
            await Downstream(make_settings(), http).execute("jenkins.build", {}, make_event())


async def test_default_http_client_has_explicit_timeouts_and_user_agent() -> None:
    """The shared client has connect 5 / read 20 / write 10 / pool 5 s timeouts, chainer's UA, no redirects."""
    from chainer import __version__

    client = default_http_client()
    try:
        assert client.timeout == httpx.Timeout(connect=5, read=20, write=10, pool=5)
        assert client.headers["user-agent"] == f"chainer/{__version__}"
        assert client.follow_redirects is False
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("12", 12.0),
        (" 0.5 ", 0.5),
        ("-3", 0.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),
        (formatdate(NOW + 90, usegmt=True), 90.0),
        ("soon", None),
        ("inf", None),
        ("", None),
        (None, None),
    ],
    ids=["seconds", "fraction", "negative", "past-date", "future-date", "garbage", "infinite", "empty", "absent"],
)
def test_retry_after_parsing(header: str | None, expected: float | None) -> None:
    """Retry-After is read as seconds or an HTTP date relative to the clock; nonsense gives None."""
    assert retry_after_seconds(header, NOW) == expected


async def test_codeship_concurrent_callers_share_a_failed_auth() -> None:
    """Ten concurrent actions whose shared authentication fails make one auth call and all fail permanently."""
    rec = codeship_recorder()

    async def refused(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)
        return httpx.Response(401, json={"error": "Unauthorized"})

    rec.on("POST", "/v2/auth", refused)
    async with rec.client() as http:
        downstream = Downstream(make_settings(), http)
        params = {"project": PROJECT, "ref": "heads/main"}
        outcomes = await asyncio.gather(
            *(downstream.execute("codeship.trigger_build", params, make_event()) for _ in range(10)),
            return_exceptions=True,
        )
    assert len(rec.calls("POST", "/v2/auth")) == 1
    assert all(isinstance(o, PermanentDownstreamError) and o.status == 401 for o in outcomes)


async def test_codeship_auth_failure_is_retried_by_the_next_caller() -> None:
    """A failed authentication is not cached: the next action authenticates again and can succeed."""
    rec = codeship_recorder()
    rec.on("POST", "/v2/auth", httpx.Response(500, json={"errors": ["down"]}), auth_ok())
    params = {"project": PROJECT, "ref": "heads/main"}
    async with rec.client() as http:
        downstream = Downstream(make_settings(), http, clock=Clock())
        with pytest.raises(TransientDownstreamError, match="Codeship POST /v2/auth answered 500: down"):
            await downstream.execute("codeship.trigger_build", params, make_event())
        result = await downstream.execute("codeship.trigger_build", params, make_event())
    assert result.status == 202 and len(rec.calls("POST", "/v2/auth")) == 2


async def test_codeship_auth_answer_without_token_is_permanent() -> None:
    """A 200 auth answer without an access_token points at CHAINER_CODESHIP_URL."""
    rec = codeship_recorder()
    rec.on("POST", "/v2/auth", httpx.Response(200, text="<html>login</html>"))
    async with rec.client() as http:
        with pytest.raises(PermanentDownstreamError, match="CHAINER_CODESHIP_URL"):
            await Downstream(make_settings(), http).clients["codeship"].check()


async def test_secret_cut_at_the_excerpt_edge_leaves_no_prefix() -> None:
    """A secret straddling the 500-character body excerpt is scrubbed before the cut, so no prefix of it leaks."""
    with pytest.raises(PermanentDownstreamError) as caught:
        await _trigger_codeship(httpx.Response(400, text="x" * 490 + ACCESS_TOKEN + " tail"))
    assert ACCESS_TOKEN[:8] not in caught.value.body and "x***" in caught.value.body


async def test_the_http_clients_timeouts_stay_inside_the_job_timeout() -> None:
    """With a short job timeout every client timeout is at most a third of it, so a hanging provider ends the
    attempt as a classified (ambiguous) timeout, not as arq cancelling the job (found by tests/faults)."""
    client = default_http_client(6.0)
    try:
        assert client.timeout == httpx.Timeout(connect=2, read=2, write=2, pool=2)
    finally:
        await client.aclose()
