"""``GET /audit/stream`` (DESIGN §8): new audit records as server-sent events, with /audit's filters.

Each record is one event, ``id: <stream id>`` and ``data: <the record as JSON>``; a client that
reconnects sends the last id it saw as ``Last-Event-ID`` (browsers' EventSource do) or ``?after=``
and misses nothing, as long as the record is within retention. Without either the stream starts
at the newest record (``since`` starts it at a time instead). A comment line (``: heartbeat``) goes
out every ``CHAINER_STREAM_HEARTBEAT_SECONDS`` so proxies and clients see a live connection.

Each open stream waits on Redis with its own ``XREAD BLOCK`` (one pooled connection per stream, at
most one heartbeat period at a time). Streams end when the server shuts down: ``stop_streams``
(chained in front of uvicorn's signal handler by ``stop_on_exit_signals``, called by ``chainer run``
and by the app's lifespan) wakes every one, which says so in a last comment and closes, so a graceful shutdown
never waits for a follower to go away.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from chainer.errors import StoreUnavailableError
from chainer.store import Store
from chainer.web import session
from chainer.web.common import error, state
from chainer.web.openapi import produces
from chainer.web.params import AUDIT_FILTERS, AUDIT_PARAMS, Cursor, ParamError, Spec

log = logging.getLogger(__name__)

STREAM_PARAMS: Spec = {
    name: kind for name, kind in AUDIT_PARAMS.items() if name in (*AUDIT_FILTERS, "event_id", "after", "since", "until")
}
_LAST_EVENT_ID = Cursor("start")
BATCH = 100
SSE = "text/event-stream"


def stopping(app: Starlette) -> asyncio.Event:
    """The app's shutdown signal for its open streams (created on first use, in the serving loop)."""
    found: asyncio.Event | None = getattr(app.state, "streams_stopping", None)
    if found is None:
        found = asyncio.Event()
        app.state.streams_stopping = found
    return found


def stop_streams(app: Starlette) -> None:
    """End every open stream of ``app`` now (safe to call from a signal handler in the loop's thread)."""
    event = stopping(app)
    try:
        asyncio.get_running_loop().call_soon_threadsafe(event.set)
    except RuntimeError:  # no running loop here: a plain set is enough
        event.set()


def stop_on_exit_signals(app: Starlette) -> Callable[[], None]:
    """Chain ``stop_streams`` in front of uvicorn's own SIGINT/SIGTERM handler, when one is installed (``uvicorn.run``
    in the main thread installs it before the lifespan starts); returns what puts uvicorn's back.

    uvicorn waits for open responses before it runs the lifespan's shutdown, so without this an open stream
    would hold a graceful shutdown for ``timeout_graceful_shutdown``. Handlers that are not uvicorn's (an
    asyncio loop's, ``chainer run``'s) are left alone: ``chainer run`` calls ``stop_streams`` itself.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    replaced: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if not isinstance(getattr(handler, "__self__", None), uvicorn.Server):
            continue

        def chained(number: int, frame: FrameType | None, uvicorns: Any = handler) -> None:
            stop_streams(app)
            uvicorns(number, frame)

        signal.signal(signum, chained)
        replaced[signum] = handler

    def undo() -> None:
        for number, handler in replaced.items():
            signal.signal(number, handler)

    return undo


def _wanted(record: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    """Whether a record passes /audit's filters (any listed value of each given filter; rule also in ``rules``)."""
    if query["event_id"] is not None and record.get("event_id") != query["event_id"]:
        return False
    ms = int(str(record.get("id", "0-0")).split("-", 1)[0])
    if (query["since"] is not None and ms < query["since"]) or (query["until"] is not None and ms > query["until"]):
        return False
    for name in AUDIT_FILTERS:
        wanted = query[name]
        if wanted is None:
            continue
        value = record.get(name)
        if name == "rule" and value is None:
            value = record.get("rules")
        values = [str(v) for v in value] if isinstance(value, list) else [] if value is None else [str(value)]
        if not wanted.intersection(values):
            return False
    return True


def _event(record: Mapping[str, Any]) -> bytes:
    data = json.dumps(record, ensure_ascii=True, separators=(",", ":"))  # one line: no raw newlines in JSON
    return f"id: {record['id']}\ndata: {data}\n\n".encode()


async def _follow(
    store: Store,
    start: str,
    query: Mapping[str, Any],
    heartbeat_s: float,
    stop: asyncio.Event,
    signed_in: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[bytes]:
    """The stream's lines. ``signed_in`` (a follower signed in with the page's session cookie) is asked again before
    every read, at most once a heartbeat period: the stream ends once the session was closed (signed out)."""
    yield f"retry: 2000\n: following the audit log after {start}\n\n".encode()
    last = start
    stopped = asyncio.create_task(stop.wait())
    read: asyncio.Task[list[dict[str, Any]]] | None = None
    checked = time.monotonic()
    try:
        while not stop.is_set():
            if signed_in is not None and time.monotonic() - checked >= heartbeat_s:
                checked = time.monotonic()
                try:
                    still = await signed_in()
                except StoreUnavailableError:
                    still = False
                if not still:
                    yield b": the session has ended; sign in again\n\n"
                    return
            read = asyncio.create_task(store.follow_audit(last, block_ms=max(int(heartbeat_s * 1000), 1), count=BATCH))
            await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError, StoreUnavailableError):
                    await read
                break
            try:
                records = read.result()
            except StoreUnavailableError as exc:
                log.warning("audit_stream_redis_lost", extra={"error": str(exc)[:200]})
                yield b": redis is unavailable; reconnect with Last-Event-ID\n\n"
                return
            if not records:
                yield b": heartbeat\n\n"
                continue
            for record in records:
                last = str(record["id"])
                if query["until"] is not None and int(last.split("-", 1)[0]) > query["until"]:
                    yield b": reached until\n\n"
                    return
                if _wanted(record, query):
                    yield _event(record)
        yield b": the server is shutting down; reconnect with Last-Event-ID\n\n"
    finally:  # also when the client went away and the response cancelled this generator
        stopped.cancel()
        if read is not None and not read.done():
            read.cancel()


@produces(SSE)
async def get_audit_stream(request: Request, store: Store, query: dict[str, Any]) -> Response:
    """GET /audit/stream: new audit records as server-sent events, with /audit's filters; resumable.

    ``Last-Event-ID`` (or ``after``) resumes after that record; ``since`` starts at a time; otherwise the
    stream starts after the newest record. ``until`` ends it once records pass that time.
    """
    header = request.headers.get("last-event-id")
    try:
        resume = _LAST_EVENT_ID.parse("Last-Event-ID", header) if header else None
    except ParamError as exc:
        return error(400, str(exc))
    if resume is None:
        resume = query["after"]
    if resume is None and query["since"] is not None:
        resume = f"{query['since'] - 1}-{2**64 - 1}" if query["since"] > 0 else "0-0"
    if resume is None:
        resume = await store.last_audit_id()
    web = state(request)
    # A follower signed in with the page's session (not the bearer header) is followed only while it lasts.
    signed_in = None if session.bearer_valid(request) else functools.partial(session.session_valid, request)
    heartbeat = web.settings.stream_heartbeat_seconds
    body = _follow(store, resume, query, heartbeat, stopping(request.app), signed_in)
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type=SSE, headers=headers)
