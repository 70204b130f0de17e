"""GET /audit/stream against a real uvicorn server on 127.0.0.1, read with httpx streaming: it follows new
records with /audit's filters, resumes after Last-Event-ID without losing a record, sends heartbeats, refuses bad
input and missing tokens, and ends cleanly when `chainer web` gets SIGTERM (uvicorn's graceful wait does not
hang on them)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette

from chainer.app import create_app
from chainer.store import Store
from chainer.web.params import AUDIT_FILTERS
from chainer.web.stream import STREAM_PARAMS
from tests import payloads
from tests.helpers import ADMIN, AUTH, app_client, parse_rules, post_codeship, settings
from tests.processes import chainer_process
from tests.redis_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

RULES = """
version: 1
rules:
  - name: api-after-lib
    when: {project: acme/lib, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api}
"""


class QuietServer(uvicorn.Server):
    """uvicorn without process-wide signal handlers (the test stops it with should_exit)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class Served:
    app: Starlette
    base: str
    server: QuietServer
    task: asyncio.Task[None]
    client: httpx.AsyncClient  # ASGI, to post deliveries


@pytest.fixture
async def served(redis: Redis) -> AsyncIterator[Served]:
    app = create_app(settings(stream_heartbeat_seconds=0.2), ruleset=parse_rules(RULES), store=Store(redis))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=60)
    server = QuietServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), task
        await asyncio.sleep(0.01)
    async with app_client(app) as client:
        yield Served(app, f"http://127.0.0.1:{port}", server, task, client)
    if not task.done():
        server.should_exit = True
        await task


class Reader:
    """One stream's lines, read on demand: the events and comments seen so far."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.events: list[dict[str, Any]] = []
        self.comments: list[str] = []
        self.ended = False
        self._event: dict[str, Any] = {}


async def read_until(reader: Reader, done: Any, timeout: float = 20) -> None:
    """Read SSE lines into ``reader`` until ``done(reader)`` holds or the stream ends."""

    async def run() -> None:
        while not done(reader):
            try:
                line = await anext(reader.lines)
            except StopAsyncIteration:
                reader.ended = True
                return
            if line.startswith(":"):
                reader.comments.append(line[1:].strip())
            elif line.startswith("id: "):
                reader._event["id"] = line[4:]
            elif line.startswith("data: "):
                reader._event["data"] = json.loads(line[6:])
            elif line == "" and reader._event:
                reader.events.append(reader._event)
                reader._event = {}

    await asyncio.wait_for(run(), timeout)


def _records(reader: Reader, kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in reader.events if e["data"]["type"] == kind]


async def test_follows_new_records_with_filters(served: Served) -> None:
    """A follower filtered to acme/lib's webhook.received records sees the one for acme/lib, not acme/other's."""
    query = {"project": "acme/lib", "type": "webhook.received"}
    async with (
        httpx.AsyncClient(base_url=served.base, headers=AUTH) as http,
        http.stream("GET", "/audit/stream", params=query) as response,
    ):
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        reader = Reader(response)
        await read_until(reader, lambda r: any("following" in c for c in r.comments))
        other = payloads.codeship("success", project="acme/other", build_id=1)
        assert (await post_codeship(served.client, other)).status_code == 202
        assert (await post_codeship(served.client, payloads.codeship("success", build_id=2))).status_code == 202
        await read_until(reader, lambda r: bool(r.events))
    (only,) = reader.events
    assert only["data"]["type"] == "webhook.received" and only["data"]["project"] == "acme/lib"
    assert only["id"] == only["data"]["id"]
    assert not reader.ended


async def test_resumes_after_last_event_id_without_losing_a_record(served: Served) -> None:
    """Disconnect after the first record, let records be written meanwhile, reconnect with Last-Event-ID: the
    stream goes on from the very next record (the one /audit?after= names) and repeats none."""
    async with httpx.AsyncClient(base_url=served.base, headers=AUTH) as http:
        async with http.stream("GET", "/audit/stream") as response:
            reader = Reader(response)
            await read_until(reader, lambda r: any("following" in c for c in r.comments))
            assert (await post_codeship(served.client, payloads.codeship("success", build_id=1))).status_code == 202
            await read_until(reader, lambda r: bool(r.events))
        first = reader.events[0]["id"]
        assert (await post_codeship(served.client, payloads.codeship("success", build_id=2))).status_code == 202
        audit = (await served.client.get("/audit", params={"after": first}, headers=AUTH)).json()["items"]
        expected = [r["id"] for r in audit]
        assert len(expected) >= 3  # the rest of the first delivery's records and the second's
        async with http.stream("GET", "/audit/stream", headers={"last-event-id": first}) as response:
            again = Reader(response)
            await read_until(again, lambda r: len(r.events) >= len(expected))
        assert [e["id"] for e in again.events] == expected
        async with http.stream("GET", "/audit/stream", params={"after": first}) as response:
            by_query = Reader(response)
            await read_until(by_query, lambda r: len(r.events) >= len(expected))
        assert [e["id"] for e in by_query.events] == expected


async def test_sends_heartbeats_while_nothing_happens(served: Served) -> None:
    async with (
        httpx.AsyncClient(base_url=served.base, headers=AUTH) as http,
        http.stream("GET", "/audit/stream") as response,
    ):
        reader = Reader(response)
        await read_until(reader, lambda r: r.comments.count("heartbeat") >= 2)
    assert reader.events == [] and not reader.ended


async def test_a_stream_followed_with_the_page_session_ends_when_the_session_is_signed_out(served: Served) -> None:
    """The page follows the stream with its session cookie; after sign-out (from any copy of the cookie) the open
    stream ends within a heartbeat and a new one is refused, while a bearer follower goes on."""
    async with (
        httpx.AsyncClient(base_url=served.base) as browser,
        httpx.AsyncClient(base_url=served.base, headers=AUTH) as bearer,
    ):
        form = await browser.get("/ui/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        assert (await browser.post("/ui/signin", data={"csrf": csrf[1], "token": ADMIN})).status_code == 303
        async with (
            browser.stream("GET", "/audit/stream") as response,
            bearer.stream("GET", "/audit/stream") as other,
        ):
            assert response.status_code == other.status_code == 200
            reader, kept = Reader(response), Reader(other)
            await read_until(reader, lambda r: any("heartbeat" in c for c in r.comments))
            page = await browser.get("/ui")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert token is not None
            assert (await browser.post("/ui/signout", data={"csrf": token[1]})).status_code == 303
            await read_until(reader, lambda r: False, timeout=10)
            assert reader.ended and any("session has ended" in c for c in reader.comments)
            await read_until(kept, lambda r: sum("heartbeat" in c for c in r.comments) >= 3)
            assert not kept.ended
        refused = await browser.get("/audit/stream")
        assert refused.status_code == 401


async def test_refuses_bad_resume_points_and_missing_tokens(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.base) as http:
        assert (await http.get("/audit/stream")).status_code == 401
        bad = await http.get("/audit/stream", headers={**AUTH, "last-event-id": "yesterday"})
        assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["error"]
        bad = await http.get("/audit/stream", params={"after": "x"}, headers=AUTH)
        assert bad.status_code == 400 and "after" in bad.json()["error"]
        bad = await http.get("/audit/stream", params={"limit": "5"}, headers=AUTH)
        assert bad.status_code == 400 and "limit" in bad.json()["error"]


async def test_every_parameter_takes_a_valid_value(served: Served) -> None:
    """Each parameter /audit/stream declares, given a valid value, opens the stream (200, event-stream)."""
    valid = {"after": "0-0", "since": "2026-01-01T00:00:00Z", "until": "99999999999999", "event_id": "evt_x"}
    assert set(STREAM_PARAMS) == {*AUDIT_FILTERS, "after", "since", "until", "event_id"}
    async with httpx.AsyncClient(base_url=served.base, headers=AUTH) as http:
        for name in STREAM_PARAMS:
            async with http.stream("GET", "/audit/stream", params={name: valid.get(name, "a,b")}) as response:
                assert response.status_code == 200, (name, await response.aread())
                reader = Reader(response)
                await read_until(reader, lambda r: any("following" in c for c in r.comments))


@pytest.mark.timeout(90)
def test_sigterm_ends_open_streams_and_chainer_web_stops_without_waiting_for_them(
    tmp_path: Path, redis_url: str
) -> None:
    """`chainer web` as a real process with two open followers: SIGTERM makes both streams say the server is
    shutting down and end (not cut by uvicorn's graceful timeout), and the process exits 0."""
    (tmp_path / "rules.yaml").write_text(RULES)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "CHAINER_REDIS_URL": redis_url,
        "CHAINER_RULES": str(tmp_path / "rules.yaml"),
        "CHAINER_ADMIN_TOKEN": ADMIN,
        "CHAINER_STREAM_HEARTBEAT_SECONDS": "30",  # longer than the test: only the shutdown can end the streams
    }
    with chainer_process(
        ["web", "--host", "127.0.0.1", "--port", str(port)], tmp_path, env, [f"{base}/healthz"]
    ) as web:
        with (
            httpx.stream("GET", f"{base}/audit/stream", headers=AUTH, timeout=60) as one,
            httpx.stream("GET", f"{base}/audit/stream", headers=AUTH, timeout=60) as two,
        ):
            lines = [one.iter_lines(), two.iter_lines()]
            for stream in lines:
                assert "following" in next(line for line in stream if line.startswith(":"))
            web.process.send_signal(signal.SIGTERM)
            rest = [list(stream) for stream in lines]  # each ends: the iterator is exhausted
        web.process.wait(timeout=30)
    assert web.process.returncode == -signal.SIGTERM  # uvicorn re-raises the signal it handled, as before
    for tail in rest:
        assert any("shutting down" in line for line in tail), tail
