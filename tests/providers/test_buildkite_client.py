"""The Buildkite client over a real socket: each action's exact request (more-providers §4.5), its CallResult, and
the classification of Buildkite's answers (429 waits for RateLimit-Reset, 5xx retried, 4xx permanent with
Buildkite's message), secrets kept out of errors and request records, and the start-up check."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chainer.errors import AmbiguousDownstreamError, PermanentDownstreamError, TransientDownstreamError
from chainer.events import BuildEvent
from chainer.providers import Downstream
from chainer.settings import Secret, Settings
from tests.helpers import Clock
from tests.redis_server import free_port

TOKEN = "bkua_0123456789abcdef0123456789abcdef01234567"
BUILD_ID = "01906c2e-6a7b-4c3d-9e8f-0a1b2c3d4e5f"


@dataclass
class Server:
    """A scripted Buildkite API on 127.0.0.1: records each request, answers with the next scripted reply."""

    base: str = ""
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    replies: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    hang: asyncio.Event | None = None

    def reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.replies.append((status, body, headers or {}))


def api_app(server: Server) -> Starlette:
    async def any_path(request: Request) -> Response:
        raw_path = request.scope["raw_path"].decode()
        server.seen.append((request.method, raw_path, dict(request.headers), await request.body()))
        if server.hang is not None:
            await server.hang.wait()
        status, body, headers = server.replies.pop(0) if server.replies else (418, {"message": "unscripted"}, {})
        return JSONResponse(body, status, headers=headers) if body is not None else Response(None, status, headers)

    return Starlette(routes=[Route("/{rest:path}", any_path, methods=["GET", "POST", "PUT"])])


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()
    port = free_port()
    config = uvicorn.Config(api_app(state), host="127.0.0.1", port=port, log_config=None, lifespan="off")
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve())
    while not uv.started:
        await asyncio.sleep(0.01)
    state.base = f"http://127.0.0.1:{port}"
    yield state
    if state.hang is not None:
        state.hang.set()
    uv.should_exit = True
    await task


def settings(server: Server, **changes: Any) -> Settings:
    return Settings(buildkite_token=Secret(TOKEN), buildkite_url=server.base, **changes)


def event(**changes: Any) -> BuildEvent:
    base: dict[str, Any] = dict(
        provider="buildkite",
        kind="build",
        event_id="evt_cause",
        project="acme/lib",
        status="failed",
        raw_status="failed",
        branch="main",
        commit="c" * 40,
        build_id=12,
    )
    return BuildEvent(**(base | changes))


def created(number: int = 8, **extra: Any) -> dict[str, Any]:
    return {
        "id": BUILD_ID,
        "number": number,
        "state": "scheduled",
        "web_url": f"https://buildkite.com/acme/deploy/builds/{number}",
        "branch": "main",
        "commit": "HEAD",
        **extra,
    }


async def run(server: Server, action: str, params: dict[str, Any], **kw: Any) -> Any:
    clock, hook = kw.pop("clock", Clock()), kw.pop("hook", None)
    async with httpx.AsyncClient(timeout=kw.pop("timeout", 5)) as http:
        downstream = Downstream(settings(server, **kw), http, clock=clock)
        return await downstream.execute(action, params, event(), before_effect=hook)


async def test_create_build_sends_the_exact_request_and_answers_with_the_build(server: Server) -> None:
    server.reply(201, created())
    params = {
        "pipeline": "acme/deploy",
        "branch": "main",
        "commit": "HEAD",
        "message": "chainer: deploy after lib",
        "env": {"UPSTREAM": "acme/lib", "N": 3},
        "meta_data": {"release": "1.2"},
    }
    result = await run(server, "buildkite.create_build", params)
    [(method, path, headers, body)] = server.seen
    assert (method, path) == ("POST", "/v2/organizations/acme/pipelines/deploy/builds")
    assert headers["authorization"] == f"Bearer {TOKEN}" and headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json" and headers["user-agent"].startswith("python-httpx")
    assert json.loads(body) == {
        "commit": "HEAD",
        "branch": "main",
        "message": "chainer: deploy after lib",
        "env": {"UPSTREAM": "acme/lib", "N": "3"},
        "meta_data": {"release": "1.2", "chainer:cause": "evt_cause"},
    }
    assert (result.status, result.downstream_id) == (201, BUILD_ID)
    assert result.detail == {
        "number": 8,
        "web_url": "https://buildkite.com/acme/deploy/builds/8",
        "state": "scheduled",
        "branch": "main",
        "commit": "HEAD",
    }
    assert (
        result.request["method"] == "POST"
        and result.request["url"] == f"{server.base}/v2/organizations/acme/pipelines/deploy/builds"
    )
    assert TOKEN not in json.dumps(result.request)


async def test_rebuild_sends_a_put_without_a_body_and_answers_with_the_new_build(server: Server) -> None:
    server.reply(200, created(13, rebuilt_from={"id": "old", "number": 12}))
    result = await run(server, "buildkite.rebuild", {"pipeline": "acme/lib", "build": "12"})
    [(method, path, headers, body)] = server.seen
    assert (method, path, body) == ("PUT", "/v2/organizations/acme/pipelines/lib/builds/12/rebuild", b"")
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert (result.status, result.downstream_id, result.detail["number"], result.detail["rebuild_of"]) == (
        200,
        BUILD_ID,
        13,
        12,
    )


async def test_pipeline_segments_are_percent_encoded(server: Server) -> None:
    server.reply(201, created())
    await run(server, "buildkite.create_build", {"pipeline": "acme/dé-ploy?x#y", "branch": "main", "commit": "HEAD"})
    assert server.seen[0][1] == "/v2/organizations/acme/pipelines/d%C3%A9-ploy%3Fx%23y/builds"


@pytest.mark.parametrize(
    ("headers", "body", "wait"),
    [
        (
            {
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": "42",
                "RateLimit-User-Remaining": "9",
                "RateLimit-User-Reset": "3",
            },
            {"message": "slow down"},
            42,
        ),
        (
            {
                "RateLimit-Remaining": "50",
                "RateLimit-Reset": "3",
                "RateLimit-User-Remaining": "0",
                "RateLimit-User-Reset": "17",
            },
            {"message": "slow down"},
            17,
        ),
        ({"RateLimit-Reset": "3", "RateLimit-User-Reset": "25"}, {"message": "x", "scope": "rest_user"}, 25),
        ({}, {"message": "Please wait 8 seconds", "scope": "rest", "reset": 8}, 8),
        ({"Retry-After": "11"}, {"message": "busy"}, 11),
        ({}, {"message": "busy"}, None),
    ],
    ids=["organisation", "user", "body-scope", "body-reset", "retry-after", "no-hint"],
)
async def test_429_waits_for_the_reset_of_the_exhausted_budget(
    server: Server, headers: dict[str, str], body: Any, wait: float | None
) -> None:
    """Buildkite's reset headers are seconds until the window resets (not dates); the exhausted budget's one counts."""
    server.reply(429, body, headers)
    with pytest.raises(TransientDownstreamError) as info:
        await run(server, "buildkite.create_build", {"pipeline": "acme/deploy", "branch": "main", "commit": "HEAD"})
    error = info.value
    assert (error.status, error.retry_after, error.provider, error.action) == (
        429,
        wait,
        "buildkite",
        "buildkite.create_build",
    )
    assert f"Buildkite POST /v2/organizations/acme/pipelines/deploy/builds answered 429: {body['message']}" == str(
        error
    )


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_transient(server: Server, status: int) -> None:
    server.reply(status, {"message": "Internal Server Error"})
    with pytest.raises(TransientDownstreamError) as info:
        await run(server, "buildkite.rebuild", {"pipeline": "acme/lib", "build": 12})
    assert info.value.status == status


@pytest.mark.parametrize(
    ("status", "body", "text"),
    [
        (
            422,
            {"message": "Validation Failed", "errors": [{"field": "branch", "code": "missing"}]},
            "Validation Failed: branch missing",
        ),
        (422, {"message": "Reason why the build could not be rebuilt"}, "Reason why the build could not be rebuilt"),
        (404, {"message": "No build found"}, "No build found"),
        (400, {"message": "Invalid states: x"}, "Invalid states: x"),
        (401, {"message": "Authentication required"}, "Authentication required (check CHAINER_BUILDKITE_TOKEN"),
        (403, {"message": "Forbidden"}, "Forbidden (check CHAINER_BUILDKITE_TOKEN"),
    ],
    ids=["validation", "422-message", "404", "400", "401", "403"],
)
async def test_4xx_is_permanent_with_buildkites_message(server: Server, status: int, body: Any, text: str) -> None:
    server.reply(status, body)
    with pytest.raises(PermanentDownstreamError) as info:
        await run(server, "buildkite.rebuild", {"pipeline": "acme/lib", "build": 12})
    assert info.value.status == status
    assert f"Buildkite PUT /v2/organizations/acme/pipelines/lib/builds/12/rebuild answered {status}: {text}" in str(
        info.value
    )


async def test_an_error_body_that_echoes_the_token_is_scrubbed(server: Server) -> None:
    server.reply(401, {"message": f"token {TOKEN} is revoked"})
    with pytest.raises(PermanentDownstreamError) as info:
        await run(server, "buildkite.create_build", {"pipeline": "acme/deploy", "branch": "main", "commit": "HEAD"})
    assert (
        TOKEN not in str(info.value)
        and TOKEN not in (info.value.body or "")
        and "token *** is revoked" in str(info.value)
    )


async def test_a_timeout_after_sending_a_create_is_ambiguous_and_the_hook_ran_first(server: Server) -> None:
    """A create build that got no answer may have created the build: ambiguous, not retried blindly. The one
    request after it is the look-up for the build (a GET, no hook before it), which got no answer either."""
    server.hang = asyncio.Event()
    calls: list[str] = []

    async def hook() -> None:
        calls.append(f"before request {len(server.seen)}")

    with pytest.raises(AmbiguousDownstreamError):
        await run(
            server,
            "buildkite.create_build",
            {"pipeline": "acme/deploy", "branch": "main", "commit": "HEAD"},
            timeout=0.3,
            hook=hook,
        )
    assert calls == ["before request 0"] and [seen[0] for seen in server.seen] == ["POST", "GET"]


@pytest.mark.parametrize(
    ("action", "params", "message"),
    [
        (
            "buildkite.create_build",
            {"pipeline": "deploy", "branch": "main", "commit": "HEAD"},
            "pipeline 'deploy' is not <org>/<pipeline-slug>",
        ),
        (
            "buildkite.create_build",
            {"pipeline": "acme/..", "branch": "main", "commit": "HEAD"},
            "is not <org>/<pipeline-slug>",
        ),
        ("buildkite.create_build", {"pipeline": "acme/deploy", "commit": "HEAD"}, "argument 'branch' is missing"),
        (
            "buildkite.create_build",
            {"pipeline": "acme/deploy", "branch": "main", "commit": "HEAD", "env": {"X": True}},
            "env.X: true/false",
        ),
        (
            "buildkite.create_build",
            {"pipeline": "acme/deploy", "branch": "main", "commit": "HEAD", "meta_data": {"chainer:cause": "x"}},
            "chainer's own key",
        ),
        ("buildkite.rebuild", {"pipeline": "acme/lib", "build": "twelve"}, "must be a numeric id"),
    ],
    ids=["no-org", "dot-dot", "no-branch", "bool-env", "own-key", "bad-build"],
)
async def test_bad_arguments_are_refused_before_anything_is_sent(
    server: Server, action: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(PermanentDownstreamError, match=message.replace("(", r"\(").replace(".", r"\.")):
        await run(server, action, params)
    assert server.seen == []


async def test_without_an_api_token_nothing_is_sent(server: Server) -> None:
    async with httpx.AsyncClient() as http:
        downstream = Downstream(Settings(buildkite_url=server.base), http)
        with pytest.raises(PermanentDownstreamError, match="set CHAINER_BUILDKITE_TOKEN"):
            await downstream.execute("buildkite.rebuild", {"pipeline": "acme/lib", "build": 1}, event())
        assert await downstream.clients["buildkite"].check() == []
    assert server.seen == []


@pytest.mark.parametrize(
    ("scopes", "warnings"),
    [
        (["read_builds", "write_builds"], []),
        (
            ["read_builds"],
            [
                "the Buildkite token (CHAINER_BUILDKITE_TOKEN) lacks the scope write_builds: "
                "create_build and rebuild fail"
            ],
        ),
    ],
    ids=["enough", "read-only"],
)
async def test_the_start_up_check_reads_the_tokens_scopes(
    server: Server, scopes: list[str], warnings: list[str]
) -> None:
    server.reply(200, {"uuid": "u", "scopes": scopes})
    async with httpx.AsyncClient() as http:
        assert await Downstream(settings(server), http).clients["buildkite"].check() == warnings
    assert [(m, p) for m, p, _, _ in server.seen] == [("GET", "/v2/access-token")]


async def test_the_start_up_check_raises_when_the_token_is_refused(server: Server) -> None:
    server.reply(401, {"message": "Authentication required"})
    async with httpx.AsyncClient() as http:
        with pytest.raises(PermanentDownstreamError) as info:
            await Downstream(settings(server), http).clients["buildkite"].check()
    assert info.value.provider == "buildkite" and "CHAINER_BUILDKITE_TOKEN" in str(info.value)
