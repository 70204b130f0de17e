"""GitHub App auth against a real HTTP server on 127.0.0.1 that verifies the App's JWT with its public key: the
installation is looked up per owner, the installation token minted once and shared by concurrent actions, kept until
shortly before expires_at, renewed on 401; the start-up check reads the App's permissions; tokens never leak."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from starlette.responses import JSONResponse, Response

from chainer.errors import DownstreamError, PermanentDownstreamError
from chainer.events import BuildEvent
from chainer.providers import Downstream
from chainer.providers.http import default_http_client
from chainer.settings import Secret, Settings
from tests.helpers import NOW, Clock
from tests.providers.github.support import ScriptedGitHub, Seen, key_pair, serve

APP_ID = "123456"
DISPATCH = "/repos/acme/api/actions/workflows/deploy.yml/dispatches"
PARAMS = {"repo": "acme/api", "workflow": "deploy.yml", "ref": "main"}
EVENT = BuildEvent(
    provider="codeship",
    kind="build",
    event_id="evt_1",
    project="acme/web",
    status="success",
    raw_status="success",
    branch="main",
)


class App:
    """GitHub's side of App auth: checks each JWT like GitHub does, hands out numbered installation tokens."""

    def __init__(self, clock: Clock, installation: int = 77) -> None:
        self.clock = clock
        self.installation = installation
        self.claims: list[dict[str, Any]] = []
        self.minted: list[str] = []
        self.valid: set[str] = set()

    def verify(self, seen: Seen) -> Response | None:
        scheme, _, token = seen.headers.get("authorization", "").partition(" ")
        _, public = key_pair()
        try:
            claims = jwt.decode(token, public, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
        except jwt.PyJWTError as exc:
            return JSONResponse({"message": f"A JSON web token could not be decoded ({type(exc).__name__})"}, 401)
        header = jwt.get_unverified_header(token)
        now = self.clock()
        if scheme != "Bearer" or header["alg"] != "RS256" or claims["iss"] != APP_ID:
            return JSONResponse({"message": "'Issuer' claim ('iss') must be an Integer"}, 401)
        if not claims["iat"] <= now < claims["exp"] <= claims["iat"] + 600 + 60:
            return JSONResponse({"message": "'Expiration time' claim ('exp') is too far in the future"}, 401)
        self.claims.append(claims)
        return None

    def installation_of(self, seen: Seen) -> Response:
        return self.verify(seen) or JSONResponse({"id": self.installation, "account": {"login": "acme"}}, 200)

    def access_token(self, seen: Seen) -> Response:
        refused = self.verify(seen)
        if refused is not None:
            return refused
        token = f"ghs_installation{len(self.minted) + 1:04d}secret"
        self.minted.append(token)
        self.valid.add(token)
        expires = datetime.fromtimestamp(self.clock() + 3600, UTC).isoformat().replace("+00:00", "Z")
        return JSONResponse({"token": token, "expires_at": expires, "permissions": {"actions": "write"}}, 201)

    def dispatch(self, seen: Seen) -> Response:
        token = seen.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.valid:
            return JSONResponse({"message": "Bad credentials"}, 401)
        return Response(status_code=204)


@pytest.fixture
async def github() -> AsyncIterator[tuple[ScriptedGitHub, App, Clock]]:
    clock = Clock(NOW)
    app = App(clock)
    api = ScriptedGitHub()
    api.on("GET", "/repos/acme/api/installation", app.installation_of)
    api.on("POST", "/app/installations/77/access_tokens", app.access_token)
    api.on("POST", DISPATCH, app.dispatch)
    async with serve(api):
        yield api, app, clock


def app_settings(api: ScriptedGitHub) -> Settings:
    private, _ = key_pair()
    return Settings(github_url=api.url, github_app_id=APP_ID, github_app_private_key=Secret(private))


async def test_the_jwt_installation_and_token_are_what_github_expects(
    github: tuple[ScriptedGitHub, App, Clock],
) -> None:
    api, app, clock = github
    async with default_http_client() as http:
        downstream = Downstream(app_settings(api), http, clock=clock)
        result = await downstream.execute("github.dispatch_workflow", PARAMS, EVENT)
    assert result.status == 204
    assert [(s.method, s.path) for s in api.seen] == [
        ("GET", "/repos/acme/api/installation"),
        ("POST", "/app/installations/77/access_tokens"),
        ("POST", DISPATCH),
    ]
    assert app.claims == [{"iat": int(NOW) - 60, "exp": int(NOW) + 540, "iss": APP_ID}] * 2
    lookup, mint, dispatch = api.seen
    for seen in (lookup, mint):
        assert seen.headers["accept"] == "application/vnd.github+json"
        assert seen.headers["x-github-api-version"] == "2022-11-28"
    assert dispatch.headers["authorization"] == f"Bearer {app.minted[0]}"


async def test_ten_concurrent_actions_share_one_lookup_and_one_mint(github: tuple[ScriptedGitHub, App, Clock]) -> None:
    api, app, clock = github
    api.delay = 0.05  # every answer takes a while, so the ten really overlap
    async with default_http_client() as http:
        downstream = Downstream(app_settings(api), http, clock=clock)
        results = await asyncio.gather(
            *(downstream.execute("github.dispatch_workflow", PARAMS, EVENT) for _ in range(10))
        )
    assert [r.status for r in results] == [204] * 10
    assert len(api.calls("GET", "/repos/acme/api/installation")) == 1
    assert len(api.calls("POST", "/app/installations/77/access_tokens")) == 1
    dispatches = api.calls("POST", DISPATCH)
    assert len(dispatches) == 10 and {d.headers["authorization"] for d in dispatches} == {f"Bearer {app.minted[0]}"}


async def test_the_token_is_kept_until_shortly_before_it_expires(github: tuple[ScriptedGitHub, App, Clock]) -> None:
    api, app, clock = github
    async with default_http_client() as http:
        downstream = Downstream(app_settings(api), http, clock=clock)
        await downstream.execute("github.dispatch_workflow", PARAMS, EVENT)
        clock.now = NOW + 3600 - 301  # five minutes and a second before expires_at: still used
        await downstream.execute("github.dispatch_workflow", PARAMS, EVENT)
        assert len(app.minted) == 1
        clock.now = NOW + 3600 - 299  # inside the margin: a new one, without a new look-up
        await downstream.execute("github.dispatch_workflow", PARAMS, EVENT)
    assert len(app.minted) == 2 and len(api.calls("GET", "/repos/acme/api/installation")) == 1
    assert api.calls("POST", DISPATCH)[-1].headers["authorization"] == f"Bearer {app.minted[1]}"


async def test_a_token_github_refuses_is_renewed_once_and_the_call_sent_again(
    github: tuple[ScriptedGitHub, App, Clock],
) -> None:
    api, app, clock = github
    effects: list[int] = []
    async with default_http_client() as http:
        downstream = Downstream(app_settings(api), http, clock=clock)

        async def before_effect() -> None:
            effects.append(len(api.seen))

        await downstream.execute("github.dispatch_workflow", PARAMS, EVENT, before_effect=before_effect)
        app.valid.clear()  # revoked (say, the App was reinstalled)
        effects.clear()
        result = await downstream.execute("github.dispatch_workflow", PARAMS, EVENT, before_effect=before_effect)
        assert result.status == 204
        assert [(s.method, s.path) for s in api.seen[3:]] == [
            ("POST", DISPATCH),  # 401 with the revoked token
            ("GET", "/repos/acme/api/installation"),
            ("POST", "/app/installations/77/access_tokens"),
            ("POST", DISPATCH),
        ]
        assert effects == [3, 6]  # before each dispatch only, never before the look-up or the mint
        app.valid.clear()
        app.access_token = lambda seen: JSONResponse({"token": "ghs_revokedagain", "expires_at": "soon"}, 201)
        api.on("POST", "/app/installations/77/access_tokens", app.access_token)
        with pytest.raises(PermanentDownstreamError, match="answered 401: Bad credentials") as info:
            await downstream.execute("github.dispatch_workflow", PARAMS, EVENT)
    assert len(api.calls("POST", DISPATCH)) == 5  # renewed once, not in a loop
    assert "ghs_revokedagain" not in str(info.value) + info.value.body


async def test_an_owner_without_the_app_and_a_refused_jwt_are_permanent(
    github: tuple[ScriptedGitHub, App, Clock],
) -> None:
    api, app, clock = github
    api.on("GET", "/repos/acme/api/installation", JSONResponse({"message": "Not Found"}, 404))
    async with default_http_client() as http:
        downstream = Downstream(app_settings(api), http, clock=clock)
        with pytest.raises(PermanentDownstreamError, match="GitHub App 123456 is not installed on acme/api"):
            await downstream.execute("github.dispatch_workflow", PARAMS, EVENT)
        private, _ = key_pair()
        # A JWT GitHub refuses (here: signed for another App id than the key belongs to).
        wrong_app = Settings(github_url=api.url, github_app_id="999", github_app_private_key=Secret(private))
        api.on("GET", "/repos/acme/api/installation", app.installation_of)
        with pytest.raises(PermanentDownstreamError) as info:
            await Downstream(wrong_app, http, clock=clock).execute("github.dispatch_workflow", PARAMS, EVENT)
    assert "answered 401" in info.value.message
    assert "check CHAINER_GITHUB_APP_ID / CHAINER_GITHUB_APP_PRIVATE_KEY" in info.value.message
    assert not api.calls("POST", DISPATCH)


async def test_concurrent_waiters_get_the_failure_instead_of_each_trying_again(
    github: tuple[ScriptedGitHub, App, Clock],
) -> None:
    api, _, clock = github
    api.delay = 0.05
    api.on("POST", "/app/installations/77/access_tokens", JSONResponse({"message": "Server Error"}, 500))
    async with default_http_client() as http:
        downstream = Downstream(app_settings(api), http, clock=clock)
        outcomes = await asyncio.gather(
            *(downstream.execute("github.dispatch_workflow", PARAMS, EVENT) for _ in range(5)), return_exceptions=True
        )
    assert all(isinstance(o, DownstreamError) and o.status == 500 for o in outcomes)
    assert len(api.calls("POST", "/app/installations/77/access_tokens")) == 1


async def test_the_start_up_check_names_missing_permissions(github: tuple[ScriptedGitHub, App, Clock]) -> None:
    api, app, clock = github
    api.on(
        "GET",
        "/app",
        lambda seen: (
            app.verify(seen)
            or JSONResponse(
                {"id": int(APP_ID), "slug": "chainer", "permissions": {"actions": "write", "contents": "read"}}
            )
        ),
    )
    async with default_http_client() as http:
        warnings = await Downstream(app_settings(api), http, clock=clock).clients["github"].check()
        assert warnings == [
            "the GitHub App 123456 lacks the contents: write permission, so github.repository_dispatch will be refused"
        ]
        api.on("GET", "/app", JSONResponse({"message": "A JSON web token could not be decoded"}, 401))
        with pytest.raises(PermanentDownstreamError) as info:
            await Downstream(app_settings(api), http, clock=clock).clients["github"].check()
    assert info.value.provider == "github" and info.value.status == 401
