"""The ingest baselines: a bare Starlette route, and the naive durable design (one arq job per request).

``python -m bench.bare_app --mode bare --port P`` serves ``POST /hooks/codeship`` that reads the body, parses it
as JSON and answers 202: the ceiling of any route on this stack. ``--mode naive --redis URL`` does the same
and then one ``ArqRedis.enqueue_job`` per request, awaited before the 202: durable, but one job and several
Redis round trips per event, nothing shared between concurrent requests.

Both run under uvicorn with the settings of ``chainer web`` (``chainer/cli.py``), its loop (uvloop) and HTTP
parser (httptools) included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# The keyword arguments `chainer web` passes to uvicorn.run besides the app, host and port.
UVICORN_SETTINGS: dict[str, Any] = {
    "proxy_headers": True,
    "timeout_graceful_shutdown": 10,
    "log_config": None,
    "access_log": False,
    "loop": "uvloop",
    "http": "chainer.web.server:HeadDeadlineProtocol",  # httptools with chainer's request-head deadline
}


def _bad(message: str) -> Response:
    return JSONResponse({"error": message}, 400)


def _build_id(body: bytes) -> int | None:
    try:
        data = json.loads(body)
        build_id = data["build"]["build_id"]
    except (ValueError, KeyError, TypeError):
        return None
    return build_id if isinstance(build_id, int) else None


def create_bare_app() -> Starlette:
    async def hook(request: Request) -> Response:
        build_id = _build_id(await request.body())
        if build_id is None:
            return _bad("not a Codeship build")
        return JSONResponse({"status": "accepted", "build_id": build_id}, 202)

    return Starlette(routes=[Route("/hooks/codeship", hook, methods=["POST"])])


def create_naive_app(redis_url: str) -> Starlette:
    from arq import create_pool
    from arq.connections import ArqRedis, RedisSettings

    pools: list[ArqRedis] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pools.append(
            await create_pool(
                RedisSettings.from_dsn(redis_url),
                job_serializer=lambda v: json.dumps(v).encode(),
                job_deserializer=json.loads,
            )
        )
        try:
            yield
        finally:
            await pools[0].aclose()

    async def hook(request: Request) -> Response:
        build_id = _build_id(await request.body())
        if build_id is None:
            return _bad("not a Codeship build")
        job = await pools[0].enqueue_job("trigger", build_id, _job_id=f"codeship-{build_id}")
        if job is None:
            return JSONResponse({"status": "duplicate"}, 200)
        return JSONResponse({"status": "accepted", "job_id": job.job_id}, 202)

    return Starlette(routes=[Route("/hooks/codeship", hook, methods=["POST"])], lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["bare", "naive"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", help="Redis URL (naive mode)")
    args = parser.parse_args(argv)
    if args.mode == "naive" and not args.redis:
        parser.error("--mode naive needs --redis")
    app = create_bare_app() if args.mode == "bare" else create_naive_app(args.redis)
    uvicorn.run(app, host=args.host, port=args.port, **UVICORN_SETTINGS)


if __name__ == "__main__":
    main()
