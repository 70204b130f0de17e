"""Prometheus metrics (DESIGN §8): what each process counts, and the exposition ``GET /metrics`` serves.

Every process (each web process, each worker) has its own registry, ``REGISTRY``, and serves it
itself: the web app at ``/metrics``, ``chainer worker --metrics-port N`` on its own port
(``serve``); Prometheus scrapes each process and sums. No shared files, so nothing to clean up when
a process dies (prometheus-client's multiprocess mode is not used).

Labels only take values an operator configured or chainer fixed: provider names (the registry),
outcomes, action types (the catalogue), rule names (rules.yaml). Never a project, branch, commit,
payload or secret. The queue gauges are read from Redis when scraped (``refresh_queue``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from redis.exceptions import RedisError

from chainer.store import keys
from chainer.store.codec import now_ms

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the classic text format generate_latest writes
REGISTRY = CollectorRegistry()
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

WEBHOOKS = Counter(
    "chainer_webhooks",
    "Deliveries received, by provider and outcome (accepted, duplicate, ignored, rejected, unavailable).",
    ["provider", "outcome"],
    registry=REGISTRY,
)
ACCEPT_SECONDS = Histogram(
    "chainer_accept_duration_seconds",
    "Time from reading a delivery to answering it (verify, parse, match, durable accept), by provider.",
    ["provider"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
RULE_MATCHES = Counter(
    "chainer_rule_matches", "Accepted deliveries each rule matched, by rule.", ["rule"], registry=REGISTRY
)
ACTIONS = Counter(
    "chainer_actions",
    "Actions finished, by action type and outcome (succeeded, dead, skipped).",
    ["action", "outcome"],
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "chainer_attempts",
    "Downstream attempts, by provider and outcome (succeeded, transient, throttled, permanent, ambiguous).",
    ["provider", "outcome"],
    registry=REGISTRY,
)
ATTEMPT_SECONDS = Histogram(
    "chainer_attempt_duration_seconds",
    "Duration of a downstream attempt (every request of it), by provider.",
    ["provider"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
RETRIES = Counter("chainer_retries", "Retries scheduled, by provider.", ["provider"], registry=REGISTRY)
DEAD_LETTERS = Counter(
    "chainer_dead_letters",
    "Actions sent to the dead-letter list, by reason (permanent, exhausted, ambiguous, lost).",
    ["reason"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("chainer_queue_depth", "Jobs in arq's queue (due or deferred), read at scrape.", registry=REGISTRY)
QUEUE_DUE = Gauge("chainer_queue_due", "Jobs in arq's queue whose time has come, read at scrape.", registry=REGISTRY)
QUEUE_OLDEST_AGE = Gauge(
    "chainer_queue_oldest_age_seconds",
    "How long the oldest due job has waited since its time came (0 when none is due), read at scrape.",
    registry=REGISTRY,
)
DLQ_SIZE = Gauge("chainer_dlq_size", "Actions in the dead-letter list, read at scrape.", registry=REGISTRY)
SCRAPE_REDIS_UP = Gauge(
    "chainer_scrape_redis_up", "1 when the queue gauges could be read from Redis at this scrape.", registry=REGISTRY
)


def provider_of(action: str) -> str:
    """The provider of an action type (``<provider>.<action>`` → ``<provider>``)."""
    return action.split(".", 1)[0]


async def refresh_queue(redis: Any) -> None:
    """Read the queue gauges from Redis (one pipeline); when Redis does not answer they keep their last
    values and ``chainer_scrape_redis_up`` says 0."""
    now = now_ms()
    try:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.ARQ_QUEUE)
            pipe.zcount(keys.ARQ_QUEUE, "-inf", now)
            pipe.zrange(keys.ARQ_QUEUE, 0, 0, withscores=True)
            pipe.zcard(keys.DLQ)
            depth, due, first, dead = await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("metrics_queue_unreadable", extra={"error": str(exc)[:200]})
        SCRAPE_REDIS_UP.set(0)
        return
    QUEUE_DEPTH.set(depth)
    QUEUE_DUE.set(due)
    oldest = float(first[0][1]) if first else None
    QUEUE_OLDEST_AGE.set(max(now - oldest, 0) / 1000 if oldest is not None and oldest <= now else 0)
    DLQ_SIZE.set(dead)
    SCRAPE_REDIS_UP.set(1)


async def exposition(redis: Any | None) -> bytes:
    """This process's metrics in the Prometheus text format, the queue gauges fresh from ``redis``."""
    if redis is not None:
        await refresh_queue(redis)
    else:
        SCRAPE_REDIS_UP.set(0)
    return generate_latest(REGISTRY)


_MAX_REQUEST_BYTES = 8192
_READ_TIMEOUT_S = 5.0


async def serve(redis: Any, host: str, port: int) -> asyncio.Server:
    """A minimal HTTP server answering ``GET /metrics`` (the worker's; the web app has its own route).

    Bounded: a request head over 8 KiB or slower than 5 s is dropped; anything but GET/HEAD
    ``/metrics`` gets 404 or 405. One connection, one answer (``Connection: close``).
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if path != "/metrics":
                status, body, kind = "404 Not Found", b"not found; metrics are at /metrics\n", "text/plain"
            elif method not in ("GET", "HEAD"):
                status, body, kind = "405 Method Not Allowed", b"use GET\n", "text/plain"
            else:
                status, body, kind = "200 OK", await exposition(redis), CONTENT_TYPE
            head_out = f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
            writer.write((head_out + "Connection: close\r\n\r\n").encode())
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=_MAX_REQUEST_BYTES)


def attempt_done(action: str, outcome: str, started: float, *, finished: bool = False) -> None:
    """One downstream attempt of ``action`` ended with ``outcome``; ``started`` is its ``time.perf_counter()``.
    ``finished``: the action succeeded with it."""
    provider = provider_of(action)
    ATTEMPTS.labels(provider, outcome).inc()
    ATTEMPT_SECONDS.labels(provider).observe(max(time.perf_counter() - started, 0.0))
    if finished:
        ACTIONS.labels(action, "succeeded").inc()


def action_dead(action: str, reason: str) -> None:
    """``action`` went to the dead-letter list for ``reason``."""
    ACTIONS.labels(action, "dead").inc()
    DEAD_LETTERS.labels(reason).inc()
