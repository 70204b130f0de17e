"""Group commit (issue 11): concurrent deliveries share Redis round trips, and each event stays all-or-nothing.

Through the ASGI app against the real redis-server: many deliveries at once, the accepts of all that are waiting go
out in one pipeline, the lineage check rides in each accept script (no look-up of its own), one event whose script
fails gets its 503 alone, and the others of its batch are accepted whole.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, ConnectionPool

from chainer import lineage, providers
from chainer.app import create_app
from chainer.providers.base import HookAuth
from chainer.store import QUEUE_KEY, Store, event_audit_key, event_key, keys
from chainer.store.lua import ScriptBatcher
from tests import payloads
from tests.helpers import AUTH, HOOK, JSON, app_client, parse_rules, settings

pytestmark = pytest.mark.integration

RULES = """
version: 1
rules:
  - name: api-after-lib
    when: {project: acme/lib, branch: main, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api, branch: main}
"""


class CountingConnection(Connection):
    """A real connection that counts what it sends: each send is one round trip (a pipeline is one send)."""

    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        await super().send_packed_command(command, check_health)


def _body(build_id: int) -> bytes:
    return json.dumps(payloads.codeship("success", build_id=build_id)).encode()


async def _post_all(client: httpx.AsyncClient, bodies: Sequence[bytes]) -> list[httpx.Response]:
    url = f"/hooks/codeship/{HOOK}"
    return list(await asyncio.gather(*(client.post(url, content=body, headers=JSON) for body in bodies)))


async def _calls(redis: Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.fixture
async def counted(redis_url: str) -> AsyncIterator[Redis]:
    pool = ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = Redis(connection_pool=pool)
    yield client
    await client.aclose(close_connection_pool=True)


async def test_200_concurrent_deliveries_share_round_trips_and_one_script_call_each(
    counted: Redis, redis: Redis
) -> None:
    """200 deliveries at once: every one accepted with its job, in far fewer than 200 round trips, and with one
    script call per event (the lineage look-up no longer costs a call of its own)."""
    store = Store(counted)
    async with app_client(create_app(settings(), ruleset=parse_rules(RULES), store=store)) as client:
        warm = await _post_all(client, [_body(1)])  # loads the scripts (NOSCRIPT, SCRIPT LOAD) before counting
        assert warm[0].status_code == 202, warm[0].text
        await redis.config_resetstat()
        CountingConnection.sends = 0
        answers = await _post_all(client, [_body(1000 + i) for i in range(200)])
    assert [a.status_code for a in answers] == [202] * 200, {a.status_code for a in answers}
    assert all(a.json()["queued"] == 1 for a in answers)
    assert await redis.zcard(QUEUE_KEY) == 201
    round_trips = CountingConnection.sends
    assert round_trips <= 20, f"{round_trips} round trips for 200 deliveries"
    assert await _calls(redis, "evalsha") == 200  # one accept script per event, lineage check included


def _dedupe_keys(body: bytes) -> tuple[str, ...]:
    event = providers.get("codeship").parse(JSON, body, HookAuth(settings(), HOOK))
    assert not isinstance(event, providers.base.Ignored)
    return tuple(event.dedupe_keys)


async def test_one_failing_event_in_a_batch_gets_503_alone_and_the_others_are_accepted_whole(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event whose accept script fails in Redis (here: its dedupe key holds a hash, so the script's first
    command errors) answers 503 and leaves nothing; the events that shared its pipeline are accepted, each
    with its event, trail, records and job."""
    batches: list[int] = []
    send = ScriptBatcher._send

    async def noting(self: ScriptBatcher, calls: list[tuple[Sequence[str], Sequence[str]]]) -> list[Any]:
        if self.name == "accept":
            batches.append(len(calls))
        return await send(self, calls)

    monkeypatch.setattr(ScriptBatcher, "_send", noting)
    bodies = [_body(2000 + i) for i in range(12)]
    bad = 6
    (bad_seen, *_) = _dedupe_keys(bodies[bad])
    await redis.hset(keys.seen(bad_seen), "not", "a string")
    store = Store(redis)
    async with app_client(create_app(settings(), ruleset=parse_rules(RULES), store=store)) as client:
        answers = await _post_all(client, bodies)
        statuses = [a.status_code for a in answers]
        assert statuses == [202] * bad + [503] + [202] * (len(bodies) - bad - 1), statuses
        assert answers[bad].headers["retry-after"] and answers[bad].json()["status"] == "unavailable"
        assert max(batches) > 1 and sum(batches) == len(bodies)  # the failing call shared a pipeline
        failed_id = answers[bad].json()["event_id"]
        assert not await redis.exists(event_key(failed_id), event_audit_key(failed_id))
        log = (await client.get("/audit", params={"limit": 500}, headers=AUTH)).json()["items"]
        assert failed_id not in {r.get("event_id") for r in log}
        for i, answer in enumerate(answers):
            if i == bad:
                continue
            event_id = answer.json()["event_id"]
            view = (await client.get(f"/events/{event_id}", headers=AUTH)).json()
            assert [r["type"] for r in view["audit"]] == ["webhook.received", "rule.matched", "action.queued"]
            assert [a["state"] for a in view["actions"]] == ["pending"]
    jobs = await redis.zrange(QUEUE_KEY, 0, -1)
    assert len(jobs) == len(bodies) - 1 and not any(failed_id.encode() in j for j in jobs)

    # Its redelivery, once the key is sound again, is accepted: nothing of the failed attempt was kept.
    await redis.delete(keys.seen(bad_seen))
    async with app_client(create_app(settings(), ruleset=parse_rules(RULES), store=Store(redis))) as client:
        again = await client.post(f"/hooks/codeship/{HOOK}", content=bodies[bad], headers=JSON)
    assert again.status_code == 202 and again.json()["event_id"] == failed_id, again.text


async def test_a_chained_event_is_planned_with_its_chain_found_by_the_accept_script(redis: Redis) -> None:
    """An event whose build chainer started (its lineage key is set) is accepted with the chain: the first
    script call finds the key and writes nothing, the second writes the plan made with the chain."""
    body = _body(3000)
    event = providers.get("codeship").parse(JSON, body, HookAuth(settings(), HOOK))
    assert not isinstance(event, providers.base.Ignored)
    link = {"event_id": "evt_parent", "rule": "lib-after-core", "project": "acme/core", "action_id": "evt_parent:x:0"}
    chain = [link]
    await redis.set(lineage.event_keys(event)[-1], json.dumps(chain))
    await redis.config_resetstat()
    async with app_client(create_app(settings(), ruleset=parse_rules(RULES), store=Store(redis))) as client:
        answer = await client.post(f"/hooks/codeship/{HOOK}", content=body, headers=JSON)
        assert answer.status_code == 202, answer.text
        assert await _calls(redis, "evalsha") == 2
        view = (await client.get(f"/events/{answer.json()['event_id']}", headers=AUTH)).json()
    assert view["event"]["chain"] == chain
    assert [a["depth"] for a in view["actions"]] == [2]
    assert await redis.smembers(keys.children("evt_parent")) == {answer.json()["event_id"].encode()}
