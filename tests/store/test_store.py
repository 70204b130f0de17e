"""The Redis data layer against a real redis-server: atomic accept, dedupe, batching, audit paging."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from arq import Worker
from arq.worker import func
from redis.asyncio import Redis

from chainer.errors import StoreUnavailableError
from chainer.jobs import RUN_ACTION, job_bytes, job_id
from chainer.store import (
    AUDIT_KEY,
    QUEUE_KEY,
    AcceptPlan,
    QueuedAction,
    Store,
    Transition,
    action_key,
    codec,
    event_key,
    now_ms,
)
from chainer.store import keys as keys_module
from chainer.store.codec import job_deserializer, job_serializer
from tests.redis_server import free_port

pytestmark = pytest.mark.integration


def _plan(event_id: str, *, keys: tuple[str, ...] | None = None, actions: int = 1) -> AcceptPlan:
    at = now_ms()
    queued = []
    for i in range(actions):
        aid = f"{event_id}:rule-a:{i}"
        queued.append(
            QueuedAction(
                aid,
                {"action_id": aid, "event_id": event_id, "state": "pending", "params": "{}"},
                {"type": "action.queued", "action_id": aid},
                job_id(aid),
                job_bytes(aid, at),
                at,
            )
        )
    return AcceptPlan(
        event_id=event_id,
        dedupe_keys=keys or (f"key:{event_id}",),
        event_fields={"event": json.dumps({"event_id": event_id}), "received_ms": str(at)},
        audit=[{"type": "webhook.received", "event_id": event_id}, {"type": "rule.matched", "event_id": event_id}],
        duplicate_record={"type": "webhook.duplicate", "event_id": event_id},
        actions=queued,
    )


async def test_accept_writes_event_ledger_audit_and_job_together(redis: Redis) -> None:
    """An accepted plan leaves the event, its ledgers, its audit records and its arq jobs in Redis."""
    store = Store(redis)
    outcome = await store.accept(_plan("evt_1", actions=2))
    assert (outcome.duplicate, outcome.event_id) == (False, "evt_1")
    assert await redis.exists(event_key("evt_1")) == 1
    assert await redis.hget(action_key("evt_1:rule-a:1"), "state") == b"pending"
    assert await redis.zcard(QUEUE_KEY) == 2
    assert await redis.exists("arq:job:act:evt_1:rule-a:0:0") == 1
    types = [r["type"] for r in (await store.read_audit()).items]
    assert types == ["webhook.received", "rule.matched"]
    assert [r["type"] for r in await store.event_audit("evt_1")] == types


async def test_accept_twice_is_a_duplicate_and_queues_nothing_new(redis: Redis) -> None:
    """A second delivery of the same event is reported as a duplicate of the first and adds no job."""
    store = Store(redis)
    await store.accept(_plan("evt_1"))
    again = await store.accept(_plan("evt_1"))
    assert (again.duplicate, again.event_id) == (True, "evt_1")
    assert await redis.zcard(QUEUE_KEY) == 1
    types = [r["type"] for r in (await store.read_audit()).items]
    assert types == ["webhook.received", "rule.matched", "webhook.duplicate"]


async def test_secondary_dedupe_key_reports_the_first_event(redis: Redis) -> None:
    """A new delivery id sharing a semantic key with an accepted event is a duplicate of that event."""
    store = Store(redis)
    await store.accept(_plan("evt_1", keys=("delivery:1", "workflow:w:canceled")))
    other = await store.accept(_plan("evt_2", keys=("delivery:2", "workflow:w:canceled")))
    assert (other.duplicate, other.event_id) == (True, "evt_1")
    assert await redis.exists(event_key("evt_2")) == 0
    assert await redis.get("chainer:seen:delivery:2") == b"evt_1"


async def test_concurrent_accepts_share_round_trips_and_each_lands_once(redis: Redis) -> None:
    """200 concurrent accepts (half of them repeats) store 100 events once each, in far fewer pipelines."""
    store = Store(redis)
    batches: list[int] = []
    send = store._accept._send

    async def counting_send(calls: Any) -> Any:
        batches.append(len(calls))
        return await send(calls)

    store._accept._send = counting_send  # type: ignore[method-assign]
    outcomes = await asyncio.gather(*(store.accept(_plan(f"evt_{i % 100}")) for i in range(200)))
    assert sum(not o.duplicate for o in outcomes) == 100
    assert sorted(o.event_id for o in outcomes if o.duplicate) == sorted(f"evt_{i}" for i in range(100))
    assert await redis.zcard(QUEUE_KEY) == 100
    assert sum(batches) == 200
    assert len(batches) <= 10


async def test_script_cache_loss_is_recovered(redis: Redis) -> None:
    """After SCRIPT FLUSH (as after a Redis restart) the next accept reloads the script and succeeds."""
    store = Store(redis)
    await store.accept(_plan("evt_1"))
    await redis.script_flush()
    outcome = await store.accept(_plan("evt_2"))
    assert not outcome.duplicate
    assert await redis.exists(event_key("evt_2")) == 1


async def test_accept_with_redis_down_raises_store_unavailable() -> None:
    """With nothing listening, accept raises StoreUnavailableError instead of a raw connection error."""
    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    store = Store(client)
    with pytest.raises(StoreUnavailableError, match="Redis is unavailable"):
        await store.accept(_plan("evt_1"))
    await client.aclose()


async def test_transition_is_compare_and_set(redis: Redis) -> None:
    """A transition from a state the ledger is not in changes nothing and reports the actual state."""
    store = Store(redis)
    await store.accept(_plan("evt_1"))
    aid = "evt_1:rule-a:0"
    first = await store.transition(Transition(aid, "evt_1", ("pending",), {"state": "calling"}, {"attempts": 1}))
    second = await store.transition(Transition(aid, "evt_1", ("pending",), {"state": "calling"}, {"attempts": 1}))
    assert (first.ok, first.previous_state) == (True, "pending")
    assert (second.ok, second.previous_state) == (False, "calling")
    assert await redis.hget(action_key(aid), "attempts") == b"1"
    missing = await store.transition(Transition("nope", "evt_1", ("pending",)))
    assert (missing.ok, missing.previous_state) == (False, "")


async def test_audit_pages_see_every_record_once_while_writers_append(redis: Redis) -> None:
    """Walking /audit pages with the next cursor while another task appends yields each record once, in order."""
    store = Store(redis)
    await store.append_audit([{"type": "webhook.ignored", "n": i} for i in range(50)])

    async def writer() -> None:
        for i in range(50, 150):
            await store.append_audit([{"type": "webhook.ignored", "n": i}])

    task = asyncio.create_task(writer())
    seen: list[str] = []
    cursor = None
    for _ in range(500):
        finished = task.done()  # before the read: a write landing during it is still to be seen
        page = await store.read_audit(after=cursor, limit=7)
        seen += [item["id"] for item in page.items]
        cursor = page.items[-1]["id"] if page.items else cursor
        if finished and not page.items:
            break
        await asyncio.sleep(0)
    await task
    assert len(seen) == 150 == len(set(seen))
    assert seen == sorted(seen, key=lambda s: tuple(int(x) for x in s.split("-")))


async def test_audit_filters_and_reverse_paging(redis: Redis) -> None:
    """Type filters scan server-side; before= walks newest first; time bounds cut by stream id."""
    store = Store(redis)
    await store.append_audit([{"type": "a" if i % 3 else "b", "n": i} for i in range(30)])
    page = await store.read_audit(match={"type": {"b"}}, limit=100)
    assert [r["n"] for r in page.items] == list(range(0, 30, 3))
    newest = await store.read_audit(before="+", limit=5)
    assert [r["n"] for r in newest.items] == [29, 28, 27, 26, 25]
    older = await store.read_audit(before=newest.next, limit=5)
    assert [r["n"] for r in older.items] == [24, 23, 22, 21, 20]
    all_items = (await store.read_audit(limit=100)).items
    first_ms = int(all_items[0]["id"].split("-")[0])
    bounded = await store.read_audit(since_ms=first_ms, until_ms=first_ms, limit=100)
    assert bounded.items and all(int(r["id"].split("-")[0]) == first_ms for r in bounded.items)


async def test_a_filtered_read_inflates_each_record_once(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The filter tests a record and the page shows the same decoded record: no record is decompressed twice."""
    store = Store(redis)
    await store.append_audit([{"type": "a" if i % 3 else "b", "n": i} for i in range(30)])
    read: list[bytes] = []
    real = codec.inflate

    def counted(value: bytes) -> bytes:
        read.append(value)
        return real(value)

    monkeypatch.setattr(codec, "inflate", counted)
    page = await store.read_audit(match={"type": {"b"}}, limit=100)
    assert [r["n"] for r in page.items] == list(range(0, 30, 3))
    assert len(read) == page.scanned == 30


async def test_audit_retention_trims_by_time(redis: Redis) -> None:
    """Records older than the retention window are trimmed by ``trim_audit`` (the worker's cron job), not when new
    records arrive; records within the window stay."""
    await redis.xadd(AUDIT_KEY, {"r": json.dumps({"type": "old"})}, id="1000-0")
    for _ in range(150):
        await redis.xadd(AUDIT_KEY, {"r": json.dumps({"type": "old"})}, id="*")
    store = Store(redis, retention_ms=1)
    await asyncio.sleep(0.05)
    (new,) = await store.append_audit([{"type": "new"}])
    assert len((await store.read_audit(limit=500)).items) == 152  # appending trims nothing
    hour = Store(redis, retention_ms=3_600_000)
    assert await hour.trim_audit() == 1  # only the record of 1970 is older than an hour
    # A window that starts 25 ms before the new record: every old one (50 ms older at least) goes.
    window = Store(redis, retention_ms=now_ms() - int(new.split("-")[0]) + 25)
    assert await window.trim_audit() == 150
    remaining = [r["type"] for r in (await store.read_audit(limit=500)).items]
    assert remaining == ["new"]


async def test_script_written_job_runs_on_an_unmodified_arq_worker(redis_url: str, redis: Redis) -> None:
    """The job bytes the accept script writes are picked up and run by arq 0.28 with the JSON serializer."""
    store = Store(redis)
    await store.accept(_plan("evt_1"))
    calls: list[Any] = []

    async def run_action(ctx: dict[str, Any], action: str) -> str:
        calls.append((action, ctx["job_try"]))
        return "done"

    from chainer.store.connections import connect_arq

    pool = connect_arq(redis_url, retries=0)
    worker = Worker(
        functions=[func(run_action, name=RUN_ACTION)],
        redis_pool=pool,
        burst=True,
        poll_delay=0,
        handle_signals=False,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )
    await worker.main()
    await worker.close()
    assert calls == [("evt_1:rule-a:0", 1)]


async def test_following_an_idle_audit_log_outwaits_the_client_read_timeout(redis_url: str) -> None:
    """A follower asking to block longer than the client's read timeout (the web's is 5 s, a heartbeat 15 s) gets
    an empty answer, not a timeout that reads as Redis being gone."""
    client = Redis.from_url(redis_url, socket_timeout=0.5)
    try:
        store = Store(client)
        assert await store.follow_audit("$", block_ms=3000) == []
    finally:
        await client.aclose()


async def test_long_ledger_values_are_stored_in_pieces_and_read_back_whole(redis: Redis) -> None:
    """A value over keys.HASH_CHUNK bytes (a 300-character error with text beyond ASCII cut inside a character)
    keeps the ledger a listpack and reads back whole; a shorter value later leaves no stale piece behind."""
    store = Store(redis)
    await store.accept(_plan("evt_1", actions=1))
    aid = "evt_1:rule-a:0"
    long_error = "é" + "x" * 62 + "😀" * 60
    await store.transition(Transition(aid, "evt_1", ("pending",), {"state": "pending", "last_error": long_error}))
    assert await redis.object("encoding", action_key(aid)) == b"listpack"
    assert max(len(v) for v in (await redis.hgetall(action_key(aid))).values()) <= keys_module.HASH_CHUNK
    ledger = await store.get_action(aid)
    assert ledger["last_error"] == long_error and ledger["state"] == "pending"
    assert (ledger["action_id"], ledger["event_id"], ledger["rule"], ledger["index"]) == (aid, "evt_1", "rule-a", "0")
    await store.transition(Transition(aid, "evt_1", ("pending",), {"last_error": "short"}))
    assert (await store.get_action(aid))["last_error"] == "short"
    assert [f for f in await redis.hkeys(action_key(aid)) if f.startswith(b"last_error")] == [b"last_error"]


def test_batched_script_calls_are_packed_as_redis_py_packs_them() -> None:
    """The batcher writes EVALSHA in Redis's wire protocol itself (redis-py's encoder was a tenth of an accept's
    CPU): byte for byte what redis-py's own ``pack_command`` writes, for text (beyond ASCII too) and bytes."""
    from redis.asyncio.connection import Connection

    from chainer.store.lua import _pack_evalsha

    sha = "a" * 40
    keys = ["chainer:event:evt_1", "chainer:audit", "chainer:seen:é"]
    args: list[str | bytes] = ['{"plan": "ü"}', b"\x02\x00\xff binary", "", b""]
    expected = b"".join(Connection().pack_command("EVALSHA", sha, len(keys), *keys, *args))
    assert _pack_evalsha(sha, keys, args) == expected
    assert _pack_evalsha(sha, [], []) == b"".join(Connection().pack_command("EVALSHA", sha, 0))
