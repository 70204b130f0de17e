"""What machines poll (DESIGN §8): ``/healthz`` (the process is up), ``/readyz`` (it can take events) and
``/metrics`` (this process's Prometheus metrics, ``chainer.metrics``). All unauthenticated, and none
reveals a secret, a payload or a project."""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chainer import heartbeat, metrics
from chainer.web.common import answer, error, state
from chainer.web.openapi import produces
from chainer.web.params import Count, ParamError, Spec

MAX_READY_WORKERS = 10_000
READY_PARAMS: Spec = {"workers": Count(0, MAX_READY_WORKERS, default=0)}
# What /readyz answers, ready (200) or not (503): the probe's verdict, never the error object.
READINESS: dict[str, Any] = {
    "type": "object",
    "required": ["status", "rules_version", "rules", "workers"],
    "properties": {
        "status": {"enum": ["ready", "not ready"]},
        "rules_version": {"type": "string"},
        "rules": {"type": "integer", "minimum": 0},
        "workers": {"type": ["integer", "null"], "minimum": 0, "description": "live workers; null without Redis"},
        "problems": {"type": "array", "items": {"type": "string"}, "description": "why it is not ready"},
    },
}


async def healthz(request: Request) -> Response:
    """GET /healthz: the process is up."""
    return answer(200, {"status": "ok"})


@produces("application/json", public=READY_PARAMS, bodies={"200": READINESS, "503": READINESS})
async def readyz(request: Request) -> Response:
    """GET /readyz: Redis answers and rules are loaded (at least one); ``workers`` counts the live workers.

    ``?workers=N`` also requires at least N live workers (a probe for "jobs will run": ``?workers=1``);
    without it the answer does not depend on workers (DESIGN §8). ``workers`` is null when Redis is
    not reachable.
    """
    web = state(request)
    wanted_raw = request.query_params.get("workers")
    wanted = 0
    if wanted_raw is not None:
        try:
            wanted = READY_PARAMS["workers"].parse("workers", wanted_raw)  # type: ignore[assignment]
        except ParamError as exc:
            return error(400, str(exc))
    problems = []
    workers: int | None = None
    if web.store is None or not await web.store.ping():
        problems.append("redis is not reachable")
    else:
        try:
            workers = await heartbeat.live_workers(web.store.redis)
        except (RedisError, OSError):
            problems.append("redis is not reachable")
    if not web.ruleset.rules:
        problems.append("no rules are loaded: the active rules file has none, so no delivery can start anything")
    if workers is not None and workers < wanted:
        problems.append(f"{workers} live worker(s), {wanted} required")
    body: dict[str, Any] = {
        "status": "ready" if not problems else "not ready",
        "rules_version": web.ruleset.version,
        "rules": len(web.ruleset.rules),
        "workers": workers,
    }
    if problems:
        body["problems"] = problems
    return answer(200 if not problems else 503, body)


@produces("text/plain")
async def get_metrics(request: Request) -> Response:
    """GET /metrics: this process's metrics in the Prometheus text format (queue gauges read from Redis now)."""
    store = state(request).store
    body = await metrics.exposition(None if store is None else store.redis)
    return Response(body, media_type=metrics.CONTENT_TYPE)


def routes() -> list[Route]:
    """The probes' routes."""
    return [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", get_metrics)]
