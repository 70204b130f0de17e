"""The stored formats through the processes that write them: CHAINER_STORE_COMPRESSION picks the one a web and a
worker write (zstd by default, zlib during a rolling upgrade), and every process reads both, so a deployment
with processes writing either loses nothing and shows every record."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.providers import Downstream
from chainer.settings import Secret, Settings
from chainer.store import AUDIT_KEY, event_key
from chainer.store.codec import EVENT_MARK, EVENT_ZSTD_MARK, RECORD_MARK, RECORD_ZSTD_MARK
from chainer.store.connections import connect_arq
from chainer.worker import create_worker
from tests import payloads
from tests.helpers import AUTH, HOOK, JSON, app_client, parse_rules, settings

pytestmark = pytest.mark.integration

RULES = parse_rules(
    """
version: 1
rules:
  - name: api-after-lib
    when: {project: acme/lib, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api, branch: "{{ event.branch }}"}
"""
)
MARKS = {"zstd": (RECORD_ZSTD_MARK, EVENT_ZSTD_MARK), "zlib": (RECORD_MARK, EVENT_MARK)}
TYPES = ["webhook.received", "rule.matched", "action.queued", "attempt.started", "attempt.succeeded"]


def _config(redis_url: str, compression: str | None) -> Settings:
    environ = {"CHAINER_STORE_COMPRESSION": compression} if compression else {}
    chosen = Settings.from_env(environ).store_compression  # as `chainer web` and `chainer worker` read it
    return settings(
        redis_url=redis_url,
        store_compression=chosen,
        circleci_token=Secret("cci-token"),
        circleci_url="https://circleci.example",
    )


@pytest.fixture
async def running() -> AsyncIterator[contextlib.AsyncExitStack]:
    """Where the apps a test starts are stopped (their lifespan ended, their clients closed) at its end."""
    async with contextlib.AsyncExitStack() as stack:
        yield stack


async def _start(running: contextlib.AsyncExitStack, cfg: Settings) -> httpx.AsyncClient:
    """An app started with its own lifespan, so its store is made from its settings as `chainer web` makes it."""
    app = create_app(cfg, ruleset=RULES)
    await running.enter_async_context(app.router.lifespan_context(app))
    return await running.enter_async_context(app_client(app))


async def _deliver(client: httpx.AsyncClient, build: int) -> str:
    body = payloads.codeship("success", build_id=build, branch=f"b-{build}", commit=f"{build:040x}")
    answer = await client.post(f"/hooks/codeship/{HOOK}", content=json.dumps(body).encode(), headers=JSON)
    assert answer.status_code == 202 and answer.json()["queued"] == 1, answer.text
    return str(answer.json()["event_id"])


async def _work(cfg: Settings, redis_url: str) -> None:
    """A worker made from ``cfg`` runs every queued action against a CircleCI that answers 201."""
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(201, json={"number": 1})))
    worker = create_worker(
        cfg,
        burst=True,
        handle_signals=False,
        poll_delay=0.01,
        downstream=Downstream(cfg, http),
        ruleset=RULES,
        redis_pool=connect_arq(redis_url, retries=0),
    )
    try:
        await asyncio.wait_for(worker.main(), timeout=60)
    finally:
        await worker.close()
        await http.aclose()


@pytest.mark.parametrize("compression", [None, "zstd", "ZLIB"])
async def test_web_and_worker_write_the_format_their_settings_name(
    compression: str | None, redis: Redis, redis_url: str, running: contextlib.AsyncExitStack
) -> None:
    """Unset means zstd. The accept's records and the event's fields (the web), and the attempts' records (the
    worker) all carry that format's marks, and read back through the operator API."""
    cfg = _config(redis_url, compression)
    record_mark, event_mark = MARKS[(compression or "zstd").lower()]
    client = await _start(running, cfg)
    event_id = await _deliver(client, 4711)
    await _work(cfg, redis_url)
    entries = await redis.xrange(AUDIT_KEY)
    assert len(entries) == len(TYPES)
    assert [fields[b"r"][:1] for _, fields in entries] == [record_mark] * len(TYPES)
    assert (await redis.hget(event_key(event_id), "z") or b"")[:1] == event_mark
    view = (await client.get(f"/events/{event_id}", headers=AUTH)).json()
    assert [r["type"] for r in view["audit"]] == TYPES
    assert view["event"]["build_id"] == 4711 and view["actions"][0]["state"] == "done"


async def test_processes_writing_either_format_read_each_others_records(
    redis: Redis, redis_url: str, running: contextlib.AsyncExitStack
) -> None:
    """A rolling upgrade: a web writing zlib and one writing zstd take deliveries on one Redis, a zlib worker runs
    the actions; each web shows both events whole, and the audit log filters across both formats."""
    old = await _start(running, _config(redis_url, "zlib"))
    new = await _start(running, _config(redis_url, None))
    events = [await _deliver(old, 1), await _deliver(new, 2)]
    await _work(_config(redis_url, "zlib"), redis_url)
    marks = {fields[b"r"][:1] for _, fields in await redis.xrange(AUDIT_KEY)}
    assert marks == {RECORD_MARK, RECORD_ZSTD_MARK}
    for client in (old, new):
        for event_id in events:
            view = (await client.get(f"/events/{event_id}", headers=AUTH)).json()
            assert [r["type"] for r in view["audit"]] == TYPES, view
            assert view["event"]["event_id"] == event_id
        page = (await client.get("/audit", params={"type": "attempt.succeeded"}, headers=AUTH)).json()
        assert sorted(r["event_id"] for r in page["items"]) == sorted(events)


@pytest.mark.parametrize("value", ["gzip", "zstd2", "1"])
def test_an_unknown_format_is_refused_by_name(value: str) -> None:
    with pytest.raises(Exception, match=r"CHAINER_STORE_COMPRESSION: .* is not one of zstd, zlib"):
        Settings.from_env({"CHAINER_STORE_COMPRESSION": value})
