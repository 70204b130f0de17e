"""Promises of DESIGN §3, §4, §6 held through the webhook endpoint against the real redis-server.

Redis refusing writes while reads work, key lifetimes, a rule on `running`, and JSON job bytes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from chainer.app import create_app
from chainer.settings import Settings
from chainer.store import JOB_PREFIX, QUEUE_KEY, Store, action_key, event_audit_key, event_key
from tests import payloads
from tests.helpers import HOOK, app_client, parse_rules, post_codeship, settings
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
SLACK_MS = 60_000  # seconds that may pass between the accept and the PTTL read

RULES = """
version: 1
rules:
  - name: api-after-lib
    when: {project: acme/lib, branch: main, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api, branch: main}
  - name: notify-on-start
    when: {provider: codeship, project: acme/lib, status: running}
    then:
      - codeship.trigger_build: {project: acme/web}
"""


def _client(store: Store) -> httpx.AsyncClient:
    return app_client(create_app(settings(), ruleset=parse_rules(RULES), store=store))


@pytest.fixture
async def client(redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(Store(redis)) as c:
        yield c


async def _everything(redis: Redis) -> dict[bytes, Any]:
    """Every key with a dump of its value: equal before and after means nothing was written."""
    return {key: await redis.dump(key) for key in sorted(await redis.keys("*"))}


# -- Redis refusing writes while reads work (DESIGN §3: 503, nothing kept) ---------------------------------


async def test_writes_refused_noreplicas_gets_503_and_stores_nothing(client: httpx.AsyncClient, redis: Redis) -> None:
    """With writes refused (NOREPLICAS) but reads working, a delivery gets 503 + Retry-After and writes no key.

    The lineage look-up (a read) succeeds, so the refusal comes from the accept script itself.
    """
    earlier = await post_codeship(client, payloads.codeship("success", build_id=1))
    assert earlier.status_code == 202, earlier.text
    before, queue_before = await _everything(redis), await redis.zcard(QUEUE_KEY)
    saved = (await redis.config_get("min-replicas-to-write"))["min-replicas-to-write"]
    await redis.config_set("min-replicas-to-write", 1)
    try:
        assert await redis.get("chainer:nothing") is None  # reads still work
        with pytest.raises(ResponseError, match="NOREPLICAS"):
            await redis.set("chainer:probe", "1")
        accepted = await post_codeship(client, payloads.codeship("success", build_id=2))
        duplicate = await post_codeship(client, payloads.codeship("success", build_id=1))
        ignored = await post_codeship(client, payloads.codeship("testing", project="acme/other", build_id=3))
    finally:
        await redis.config_set("min-replicas-to-write", saved)
    for answer in (accepted, duplicate, ignored):
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"]
        assert answer.json()["status"] == "unavailable"
    assert await _everything(redis) == before
    assert await redis.zcard(QUEUE_KEY) == queue_before == 1
    retried = await post_codeship(client, payloads.codeship("success", build_id=2))
    assert retried.status_code == 202 and retried.json()["queued"] == 1


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server turned into a replica of a primary that does not answer: READONLY for writes."""
    server = RedisServer(tmp_path / "replica", appendonly=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_read_only_replica_gets_503_and_stores_nothing(replica: RedisServer) -> None:
    """Behind a read-only replica (READONLY on writes, reads served) a delivery gets 503 and nothing is kept."""
    redis = Redis.from_url(replica.url)
    # The primary's port is bound here and never listened on: connections to it are refused, and no other
    # process can take the port meanwhile, so the replica never syncs and keeps its own data.
    primary = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    primary.bind(("127.0.0.1", 0))
    try:
        async with _client(Store(redis)) as client:
            earlier = await post_codeship(client, payloads.codeship("success", build_id=6))
            await redis.execute_command("REPLICAOF", "127.0.0.1", str(primary.getsockname()[1]))
            assert (await redis.info("replication"))["role"] == "slave"
            before = await _everything(redis)
            answer = await post_codeship(client, payloads.codeship("success", build_id=7))
            after = await _everything(redis)
            await redis.execute_command("REPLICAOF", "NO", "ONE")
            again = await post_codeship(client, payloads.codeship("success", build_id=7))
    finally:
        await redis.aclose()
        primary.close()
    assert earlier.status_code == 202, earlier.text
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] and answer.json()["status"] == "unavailable"
    assert after == before and len(before) > 1
    assert again.status_code == 202, again.text


# -- key lifetimes (DESIGN §3 dedupe 30 days, §8 retention) -------------------------------------------------


async def test_key_lifetimes_dedupe_30_days_ledgers_and_events_per_retention(
    redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    """With a 7-day retention, dedupe keys live 30 days and the event, its audit stream and ledgers 7 days."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = Settings.from_env(
        {
            "CHAINER_REDIS_URL": redis_url,
            "CHAINER_RULES": str(rules),
            "CHAINER_HOOK_TOKEN": HOOK,
            "CHAINER_AUDIT_RETENTION_DAYS": "7",
        }
    )
    app = create_app(settings, watch_rules=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        answer = await post_codeship(client, payloads.codeship("success", build_id=4711))
    assert answer.status_code == 202 and answer.json()["queued"] == 1, answer.text
    event_id = answer.json()["event_id"]
    seen = await redis.keys("chainer:seen:*")
    actions = await redis.keys("chainer:action:*")
    assert len(seen) >= 1 and len(actions) == 1

    def within(pttl: int, ttl_ms: int) -> bool:
        return ttl_ms - SLACK_MS <= pttl <= ttl_ms

    for key in seen:
        pttl = await redis.pttl(key)
        assert within(pttl, 30 * DAY_MS), (key, pttl)
    for key in (event_key(event_id), event_audit_key(event_id), *actions):
        pttl = await redis.pttl(key)
        assert within(pttl, 7 * DAY_MS), (key, pttl)
    assert actions[0].decode() == action_key(f"{event_id}:api-after-lib:0")


# -- a rule on `running` (DESIGN §3: ignored only when no rule asks for it) ----------------------------------


@pytest.mark.parametrize("raw_status", ["initiated", "testing", "waiting"])
async def test_a_rule_on_running_gets_its_running_event_accepted_and_queued(
    client: httpx.AsyncClient, redis: Redis, raw_status: str
) -> None:
    """A Codeship build that is still running matches a `status: running` rule: 202 accepted, one job queued."""
    answer = await post_codeship(client, payloads.codeship(raw_status))
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "accepted" and body["matched"] == ["notify-on-start"] and body["queued"] == 1
    assert await redis.zcard(QUEUE_KEY) == 1
    ledger = await redis.hgetall(action_key(f"{body['event_id']}:notify-on-start:0"))
    assert ledger[b"state"] == b"pending" and ledger[b"action"] == b"codeship.trigger_build"


# -- job bytes are JSON (DESIGN §6: the worker never unpickles anything) ------------------------------------


async def test_job_bytes_written_at_accept_are_json(client: httpx.AsyncClient, redis: Redis) -> None:
    """The arq job an accepted webhook queues is stored as JSON naming run_action and the action id."""
    answer = await post_codeship(client, payloads.codeship("success"))
    assert answer.status_code == 202 and answer.json()["queued"] == 1, answer.text
    action = f"{answer.json()['event_id']}:api-after-lib:0"
    job_ids = await redis.zrange(QUEUE_KEY, 0, -1)
    assert job_ids == [f"act:{action}:0".encode()]
    raw = await redis.get(JOB_PREFIX + job_ids[0].decode())
    assert raw is not None and raw.startswith(b"{")
    job = json.loads(raw)
    assert job["f"] == "run_action" and job["a"] == [action] and job["k"] == {}
    assert isinstance(job["et"], int)
