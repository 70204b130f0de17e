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
from click.testing import CliRunner
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.cli import main
from chainer.errors import ConfigError
from chainer.rules import RuleSet
from chainer.settings import STORE_COMPRESSIONS, Secret, Settings
from chainer.store import AUDIT_KEY, codec, event_key
from chainer.store.codec import EVENT_MARK, EVENT_ZSTD_MARK, PACKERS, RECORD_MARK, RECORD_ZSTD_MARK
from tests import payloads
from tests.helpers import AUTH, CHAIN_RULE, HOOK, JSON, app_client, drain, parse_rules, settings

pytestmark = pytest.mark.integration

RULES = parse_rules(CHAIN_RULE)
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


async def _work(cfg: Settings, redis_url: str, rules: RuleSet, status: int) -> None:
    """A worker made from ``cfg`` runs every queued action against a CircleCI that answers ``status``."""
    answer = httpx.MockTransport(lambda _: httpx.Response(status, json={"number": 1, "message": "ok or not"}))
    await asyncio.wait_for(drain(cfg, redis_url, rules, transport=answer), timeout=60)


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
    await _work(cfg, redis_url, RULES, 201)
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
    await _work(_config(redis_url, "zlib"), redis_url, RULES, 201)
    marks = {fields[b"r"][:1] for _, fields in await redis.xrange(AUDIT_KEY)}
    assert marks == {RECORD_MARK, RECORD_ZSTD_MARK}
    for client in (old, new):
        for event_id in events:
            view = (await client.get(f"/events/{event_id}", headers=AUTH)).json()
            assert [r["type"] for r in view["audit"]] == TYPES, view
            assert view["event"]["event_id"] == event_id
        page = (await client.get("/audit", params={"type": "attempt.succeeded"}, headers=AUTH)).json()
        assert sorted(r["event_id"] for r in page["items"]) == sorted(events)


SCENARIO = parse_rules(
    CHAIN_RULE
    + """
  - name: release-after-both
    when:
      all:
        - {project: acme/api, status: success}
        - {project: acme/web, status: success}
      join_on: commit
      within: 1h
    then:
      - circleci.trigger_pipeline: {project: gh/acme/release, branch: "{{ event.branch }}"}
"""
)


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
async def test_every_writer_of_a_deployment_writes_its_format(
    compression: str, redis: Redis, redis_url: str, running: contextlib.AsyncExitStack
) -> None:
    """Every kind of write, by the process that makes it, in the format the settings name: the web's accepts,
    rejections and ignored deliveries; the worker's fan-in and its attempts that end in dead letters (CircleCI
    answers 404); `chainer dlq replay`. Records the Lua scripts write as JSON text (a duplicate's) are the only
    others."""
    cfg = _config(redis_url, compression)
    app = create_app(cfg, ruleset=SCENARIO)
    await running.enter_async_context(app.router.lifespan_context(app))
    client = await running.enter_async_context(app_client(app))
    commit = "c" * 40
    deliveries = [
        payloads.codeship("success", build_id=1, project="acme/lib"),
        payloads.codeship("success", build_id=1, project="acme/lib"),  # the same event again: a duplicate
        payloads.codeship("testing", build_id=2, project="acme/lib"),  # not final, no rule asks: ignored
        payloads.codeship("success", build_id=3, project="acme/api", commit=commit),
        payloads.codeship("success", build_id=4, project="acme/web", commit=commit),  # completes the fan-in
    ]
    for body in deliveries:
        answer = await client.post(f"/hooks/codeship/{HOOK}", content=json.dumps(body).encode(), headers=JSON)
        assert answer.status_code in (200, 202), answer.text
    rejected = await client.post("/hooks/codeship/wrong-token", content=b"{}", headers=JSON)
    assert rejected.status_code in (401, 403), rejected.text

    await _work(cfg, redis_url, SCENARIO, 404)
    dead = (await client.get("/dlq", headers=AUTH)).json()["items"]
    assert len(dead) == 2, dead  # the chained action and the fan-in's
    env = {"CHAINER_REDIS_URL": redis_url, "CHAINER_STORE_COMPRESSION": compression}
    replay = await asyncio.to_thread(CliRunner().invoke, main, ["dlq", "replay", dead[0]["action_id"]], env=env)
    assert replay.exit_code == 0, replay.output

    entries = [(fields[b"r"], codec.unpack_record(fields[b"r"])) for _, fields in await redis.xrange(AUDIT_KEY)]
    types = {record["type"] for _, record in entries}
    assert {"webhook.rejected", "webhook.ignored", "webhook.duplicate", "join.fired", "action.dead"} <= types
    assert "action.replayed" in types, types
    compressed = {record["type"] for raw, record in entries if raw[:1] != b"{"}
    assert {raw[:1] for raw, _ in entries if raw[:1] != b"{"} == {MARKS[compression][0]}, compressed
    assert {"webhook.rejected", "webhook.ignored", "join.fired", "action.dead", "action.replayed"} <= compressed


async def test_a_damaged_record_shows_as_unreadable_and_the_rest_of_the_log_reads(
    redis: Redis, redis_url: str, running: contextlib.AsyncExitStack
) -> None:
    """A record damaged in Redis (cut short here) does not fail GET /audit, a filtered read or GET /events: it is
    listed in its place as ``record.unreadable``, the records around it as they were written."""
    client = await _start(running, _config(redis_url, None))
    event_id = await _deliver(client, 7)
    entries = await redis.xrange(AUDIT_KEY)
    damaged_id = entries[1][0]
    await redis.delete(AUDIT_KEY)  # written again with the same ids, the second record cut short
    for sid, fields in entries:
        await redis.xadd(AUDIT_KEY, {"r": fields[b"r"][:-8] if sid == damaged_id else fields[b"r"]}, id=sid)
    page = await client.get("/audit", headers=AUTH)
    assert page.status_code == 200, page.text
    types = [r["type"] for r in page.json()["items"]]
    assert types == ["webhook.received", "record.unreadable", "action.queued"], types
    filtered = await client.get("/audit", params={"event_id": event_id, "type": "action.queued"}, headers=AUTH)
    assert filtered.status_code == 200 and [r["type"] for r in filtered.json()["items"]] == ["action.queued"]
    view = await client.get(f"/events/{event_id}", headers=AUTH)
    assert view.status_code == 200, view.text
    unreadable = view.json()["audit"][1]
    assert unreadable["type"] == "record.unreadable" and unreadable["id"] == damaged_id.decode()
    assert "decompress" in unreadable["error"]


async def test_an_action_whose_event_is_damaged_is_dead_lettered_as_unreadable_without_a_call(
    redis: Redis, redis_url: str, running: contextlib.AsyncExitStack
) -> None:
    """The worker cannot read the event an action belongs to (its stored fields cut short): the action goes to the
    dead letters at once as ``unreadable``, saying which event and why, and nothing is sent downstream."""
    cfg = _config(redis_url, None)
    client = await _start(running, cfg)
    event_id = await _deliver(client, 9)
    packed = await redis.hget(event_key(event_id), "z")
    assert packed is not None
    await redis.hset(event_key(event_id), "z", packed[:-10])
    sent: list[httpx.Request] = []

    def circleci(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(201, json={"number": 1})

    await asyncio.wait_for(drain(cfg, redis_url, RULES, transport=httpx.MockTransport(circleci)), timeout=60)
    assert sent == []
    (dead,) = (await client.get("/dlq", headers=AUTH)).json()["items"]
    assert dead["reason"] == "unreadable" and f"the stored event {event_id} cannot be read" in dead["last_error"], dead
    assert codec.unpack_record((await redis.xrevrange(AUDIT_KEY, count=1))[0][1][b"r"])["type"] == "action.dead"


@pytest.mark.parametrize("value", ["gzip", "zstd2", "1"])
def test_an_unknown_format_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match=r"CHAINER_STORE_COMPRESSION: .* is not one of zstd, zlib"):
        Settings.from_env({"CHAINER_STORE_COMPRESSION": value})
    with pytest.raises(ConfigError, match=r"store_compression: .* is not one of zstd, zlib"):
        Settings(store_compression=value)


def test_the_settings_offer_exactly_the_formats_the_store_writes() -> None:
    assert STORE_COMPRESSIONS == tuple(PACKERS) and Settings().store_compression == STORE_COMPRESSIONS[0]
