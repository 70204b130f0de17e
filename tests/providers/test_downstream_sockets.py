"""Downstream over real sockets: a small provider app under uvicorn on 127.0.0.1, plus broken servers."""

from __future__ import annotations

import asyncio
import contextlib
import time
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

from chainer.errors import AmbiguousDownstreamError, TransientDownstreamError
from chainer.providers import Downstream
from tests.helpers import (
    ACCESS_TOKEN,
    API_KEY,
    BUILD,
    CIRCLE_TOKEN,
    COMMIT,
    ORG,
    PROJECT,
    assert_error_secret_free,
    assert_secret_free,
    auth_ok,
    make_event,
    make_settings,
)
from tests.redis_server import free_port

PIPELINE = "5034460f-c7c4-4c43-9457-de07e2029e7b"


@dataclass
class Seen:
    """What the provider app received: (method, raw path with query, selected headers, body)."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def provider_app(seen: Seen) -> Starlette:
    async def record(request: Request) -> None:
        headers = {k: request.headers[k] for k in ("authorization", "circle-token", "accept") if k in request.headers}
        path = request.scope["raw_path"].decode() + (f"?{request.url.query}" if request.url.query else "")
        seen.requests.append((request.method, path, headers, await request.body()))

    async def auth(request: Request) -> Response:
        await record(request)
        return JSONResponse(auth_ok(expires_at=time.time() + 3600).json())

    async def projects(request: Request) -> Response:
        await record(request)
        return JSONResponse({"projects": [{"id": 1, "uuid": PROJECT, "name": "acme/web"}], "total": 1})

    async def builds(request: Request) -> Response:
        await record(request)
        return Response(status_code=202)

    async def pipeline(request: Request) -> Response:
        await record(request)
        if request.path_params["repo"] == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(seen.release.wait(), 5)
        return JSONResponse({"id": PIPELINE, "state": "created", "number": 7, "created_at": "now"}, status_code=201)

    async def v1_restart(request: Request) -> Response:
        await record(request)
        return JSONResponse({"id": 988, "uuid": BUILD})

    return Starlette(
        routes=[
            Route("/v2/auth", auth, methods=["POST"]),
            Route("/v2/organizations/{org}/projects", projects, methods=["GET"]),
            Route("/v2/organizations/{org}/projects/{project}/builds", builds, methods=["POST"]),
            Route("/api/v2/project/{vcs}/{org}/{repo}/pipeline", pipeline, methods=["POST"]),
            Route("/api/v1/builds/{build:int}/restart.json", v1_restart, methods=["POST"]),
        ]
    )


@pytest.fixture
async def provider() -> AsyncIterator[tuple[Seen, str]]:
    """The provider app served by uvicorn on a free loopback port."""
    seen = Seen()
    port = free_port()
    config = uvicorn.Config(provider_app(seen), host="127.0.0.1", port=port, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield seen, f"http://127.0.0.1:{port}"
    seen.release.set()
    server.should_exit = True
    await task


def real_settings(base: str) -> Any:
    return make_settings(codeship_url=base, codeship_v1_url=base, circleci_url=base)


async def test_codeship_over_real_http(provider: tuple[Seen, str]) -> None:
    """Codeship auth, project listing and a 202 empty-body build creation work over a real socket."""
    seen, base = provider
    async with httpx.AsyncClient(timeout=5) as http:
        result = await Downstream(real_settings(base), http).execute(
            "codeship.trigger_build", {"project": "acme/web", "ref": "heads/main", "commit": COMMIT}, make_event()
        )
    assert [(m, p) for m, p, _, _ in seen.requests] == [
        ("POST", "/v2/auth"),
        ("GET", f"/v2/organizations/{ORG}/projects?page=1&per_page=50"),
        ("POST", f"/v2/organizations/{ORG}/projects/{PROJECT}/builds"),
    ]
    assert seen.requests[2][2]["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert seen.requests[2][3] == b'{"ref":"heads/main","commit_sha":"%s"}' % COMMIT.encode()
    assert result.status == 202 and result.downstream_id is None


async def test_codeship_v1_over_real_http(provider: tuple[Seen, str]) -> None:
    """The v1 restart sends the API key in the query over the wire and keeps it out of the result."""
    seen, base = provider
    async with httpx.AsyncClient(timeout=5) as http:
        result = await Downstream(real_settings(base), http).execute(
            "codeship.v1_restart_build", {"build": 987}, make_event()
        )
    assert seen.requests[0][1] == f"/api/v1/builds/987/restart.json?api_key={API_KEY}"
    assert result.downstream_id == "988"
    assert_secret_free(result)


async def test_circleci_over_real_http(provider: tuple[Seen, str]) -> None:
    """A CircleCI pipeline trigger sends Circle-Token and JSON Accept and reads the 201 answer."""
    seen, base = provider
    async with httpx.AsyncClient(timeout=5) as http:
        result = await Downstream(real_settings(base), http).execute(
            "circleci.trigger_pipeline", {"project": "gh/acme/api", "branch": "main"}, make_event()
        )
    method, path, headers, body = seen.requests[0]
    assert (method, path, body) == ("POST", "/api/v2/project/gh/acme/api/pipeline", b'{"branch":"main"}')
    assert headers == {"circle-token": CIRCLE_TOKEN, "accept": "application/json"}
    assert (result.status, result.downstream_id, result.detail["number"]) == (201, PIPELINE, 7)


async def test_read_timeout_against_a_sleeping_server_is_ambiguous(provider: tuple[Seen, str]) -> None:
    """A server that takes the request and does not answer in time gives an ambiguous outcome."""
    seen, base = provider
    timeout = httpx.Timeout(5, read=0.2)
    async with httpx.AsyncClient(timeout=timeout) as http:
        with pytest.raises(AmbiguousDownstreamError, match="ReadTimeout") as caught:
            await Downstream(real_settings(base), http).execute(
                "circleci.trigger_pipeline", {"project": "gh/acme/slow", "branch": "main"}, make_event()
            )
    assert len(seen.requests) == 1
    assert_error_secret_free(caught.value)


async def test_connection_dropped_after_request_is_ambiguous() -> None:
    """A server that reads the request and closes without answering gives an ambiguous outcome."""
    received = asyncio.Event()

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        received.set()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            with pytest.raises(AmbiguousDownstreamError, match="RemoteProtocolError"):
                await Downstream(real_settings(f"http://127.0.0.1:{port}"), http).execute(
                    "circleci.rerun_workflow", {"workflow": PIPELINE}, make_event()
                )
        assert received.is_set()
    finally:
        server.close()
        await server.wait_closed()


async def test_connection_refused_is_transient() -> None:
    """Nothing listening on the port means nothing was sent: transient."""
    base = f"http://127.0.0.1:{free_port()}"
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(TransientDownstreamError, match="nothing was sent") as caught:
            await Downstream(real_settings(base), http).execute("codeship.v1_restart_build", {"build": 5}, make_event())
    assert_error_secret_free(caught.value)
