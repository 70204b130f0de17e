"""The typed ledger view: what a webhook, a failed call, a replay and a success leave in an action's ledger."""

from __future__ import annotations

import json

import httpx
import pytest
from redis.asyncio import Redis

from chainer import dlq
from chainer.intake import Intake
from chainer.jobs import RetryPolicy, run_action
from chainer.providers import Downstream
from chainer.settings import Secret, Settings
from chainer.store import Ledger, LedgerError, Store, current_error, keys
from tests import payloads
from tests.helpers import job_ctx, parse_rules

pytestmark = pytest.mark.integration

RULES = """
version: 1
rules:
  - name: api-after-lib
    when: {project: acme/lib, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api, parameters: {sha: "{{ event.commit }}"}}
"""
SETTINGS = Settings(
    hook_token=Secret("hook"), circleci_token=Secret("cci-token"), circleci_url="https://circleci.example"
)
PIPELINE = {"id": "5034460f-c7c4-4c43-9457-de07e2029e7b", "state": "created", "number": 7, "created_at": "x"}


async def test_the_ledger_view_follows_an_action_from_webhook_to_done(redis: Redis) -> None:
    """Accepted → dead on a 404 → replayed → done: each step reads back typed, and ``error`` tracks the state."""
    store = Store(redis)
    answers = [httpx.Response(404, json={"message": "Project not found"}), httpx.Response(201, json=PIPELINE)]
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: answers.pop(0)))
    policy = RetryPolicy(max_tries=3, base_s=10, cap_s=100)
    ctx = job_ctx(store, SETTINGS, Downstream(SETTINGS, http), retry_policy=policy)
    intake = Intake(SETTINGS, store, lambda: parse_rules(RULES))
    body = json.dumps(payloads.codeship("success")).encode()
    reply = await intake.receive("codeship", {"content-type": "application/json"}, body, "hook")
    event_id = reply.body()["event_id"]
    action = f"{event_id}:api-after-lib:0"

    raw = await store.get_action(action)
    queued = await store.get_ledger(action)
    assert queued == Ledger(
        action_id=action,
        event_id=event_id,
        rule="api-after-lib",
        action="circleci.trigger_pipeline",
        state="pending",
        index=0,
        params={"project": "gh/acme/api", "branch": "main", "parameters": {"sha": payloads.COMMIT}},
        attempts=0,
        replays=0,
        depth=1,
        created_ms=int(raw["created_ms"]),
        updated_ms=int(raw["updated_ms"]),
        project="acme/lib",
        branch="main",
        commit=payloads.COMMIT,
        rules_version=raw["rules_version"],
        job_id=f"act:{action}:0",
    )
    assert queued.fields == raw and queued.open and queued.error is None

    assert await run_action(ctx, action) == "dead"
    dead = await store.get_ledger(action)
    assert dead is not None
    assert (dead.state, dead.dead_reason, dead.last_status, dead.attempts) == ("dead", "permanent", 404, 1)
    assert dead.error is not None and dead.error == current_error(await store.get_action(action))
    assert not dead.open

    assert (await dlq.replay(store, action, "ops")).ok
    replayed = await store.get_ledger(action)
    assert replayed is not None
    assert (replayed.state, replayed.replays, replayed.job_id) == ("pending", 1, f"act:{action}:1")
    assert replayed.error == dead.error  # waiting for its retry because of that error

    assert await run_action(ctx, action) == "done"
    done = await store.get_ledger(action)
    assert done is not None
    assert (done.state, done.attempts, done.downstream_id, done.last_status) == ("done", 2, PIPELINE["id"], 201)
    assert done.result == json.loads(done.fields["result"]) and done.result["number"] == PIPELINE["number"]
    assert done.last_error == dead.error and done.error is None  # the 404 is history now
    assert current_error(done.fields) is None
    await http.aclose()


async def test_a_missing_ledger_reads_as_none(redis: Redis) -> None:
    assert await Store(redis).get_ledger("evt_0:nope:0") is None


async def test_a_hash_without_state_is_no_ledger(redis: Redis) -> None:
    """A hash with no state is what the transition script calls missing; the view names the field."""
    await redis.hset(keys.action("evt_1:r:0"), mapping={"action_id": "evt_1:r:0", "attempts": "x"})
    with pytest.raises(LedgerError, match="no state") as caught:
        await Store(redis).get_ledger("evt_1:r:0")
    assert (caught.value.action_id, caught.value.field) == ("evt_1:r:0", "state")


def test_numbers_that_are_not_whole_numbers_read_as_their_default() -> None:
    ledger = Ledger.from_hash({b"state": b"pending", b"attempts": b"-1", b"last_status": b"", b"index": b"2"})
    assert (ledger.attempts, ledger.last_status, ledger.index, ledger.params, ledger.result) == (0, None, 2, {}, None)
