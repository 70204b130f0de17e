"""The worker's run_action against real Redis and scripted provider answers: outcomes, retries, DLQ."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis as syncredis
from arq import Retry
from redis.asyncio import Redis

from chainer import dlq
from chainer.errors import StoreUnavailableError
from chainer.intake import Intake
from chainer.jobs import RetryPolicy, run_action
from chainer.providers import Downstream
from chainer.settings import Secret, Settings
from chainer.store import DLQ_KEY, QUEUE_KEY, Store, action_key
from chainer.store.connections import connect_arq
from chainer.web.hooks import status_of
from chainer.worker import create_worker
from tests import payloads
from tests.helpers import job_ctx, parse_rules
from tests.redis_server import free_port

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
CREATED = {"id": "5034460f-c7c4-4c43-9457-de07e2029e7b", "state": "created", "number": 7, "created_at": "x"}


@dataclass
class Provider:
    """A scripted CircleCI: answers from ``script`` in order (the last one repeats) and records requests."""

    script: list[Callable[[httpx.Request], httpx.Response]] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.script[min(len(self.requests), len(self.script)) - 1]
        return answer(request)


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Callable[..., httpx.Response]:
    return lambda request: httpx.Response(status, json=body, headers=headers)


def timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("read timed out", request=request)


@dataclass
class World:
    redis: Redis
    store: Store
    provider: Provider
    http: httpx.AsyncClient
    action: str = ""
    event_id: str = ""

    def ctx(self, job_try: int = 1, settings: Settings = SETTINGS, **extra: Any) -> dict[str, Any]:
        return job_ctx(
            self.store,
            settings,
            Downstream(settings, self.http),
            job_try=job_try,
            retry_policy=RetryPolicy(max_tries=3, base_s=10, cap_s=100),
            **extra,
        )

    async def ledger(self) -> dict[bytes, bytes]:
        result: dict[bytes, bytes] = await self.redis.hgetall(action_key(self.action))
        return result

    async def types(self) -> list[str]:
        return [r["type"] for r in await self.store.event_audit(self.event_id)]


@pytest.fixture
async def world(redis: Redis) -> AsyncIterator[World]:
    store = Store(redis)
    provider = Provider()
    http = httpx.AsyncClient(transport=httpx.MockTransport(provider.handle))
    intake = Intake(SETTINGS, store, lambda: parse_rules(RULES))
    body = json.dumps(payloads.codeship("success")).encode()
    reply_ = await intake.receive("codeship", {"content-type": "application/json"}, body, "hook")
    assert status_of(reply_) == 202
    event_id = reply_.body()["event_id"]
    yield World(redis, store, provider, http, f"{event_id}:api-after-lib:0", event_id)
    await http.aclose()


async def test_success_marks_done_and_records_the_attempt(world: World) -> None:
    """A 201 answer makes the action done with the pipeline id, audited as started then succeeded."""
    world.provider.script = [reply(201, CREATED)]
    assert await run_action(world.ctx(), world.action) == "done"
    ledger = await world.ledger()
    assert ledger[b"state"] == b"done" and ledger[b"downstream_id"] == CREATED["id"].encode()
    assert ledger[b"attempts"] == b"1"
    assert (await world.types())[-2:] == ["attempt.started", "attempt.succeeded"]
    request = world.provider.requests[0]
    assert request.url.path == "/api/v2/project/gh/acme/api/pipeline"
    assert json.loads(request.content) == {"branch": "main", "parameters": {"sha": payloads.COMMIT}}


async def test_transient_failure_with_tries_left_schedules_a_retry(world: World) -> None:
    """A 503 on the first try raises arq Retry with a jittered backoff and leaves the action pending."""
    world.provider.script = [reply(503, {"message": "busy"})]
    with pytest.raises(Retry) as info:
        await run_action(world.ctx(job_try=1), world.action)
    assert info.value.defer_score is not None and 5_000 <= info.value.defer_score <= 10_000
    assert (await world.ledger())[b"state"] == b"pending"
    assert (await world.types())[-3:] == ["attempt.started", "attempt.failed", "action.retry_scheduled"]


async def test_retry_after_is_honoured(world: World) -> None:
    """A 429 with Retry-After 60 defers the next try by at least 60 seconds."""
    world.provider.script = [reply(429, {"message": "slow down"}, {"Retry-After": "60"})]
    with pytest.raises(Retry) as info:
        await run_action(world.ctx(job_try=1), world.action)
    assert info.value.defer_score is not None and info.value.defer_score >= 60_000


async def test_last_try_transient_failure_is_dead_exhausted(world: World) -> None:
    """A transient failure on the last allowed try dead-letters the action as exhausted with the status."""
    world.provider.script = [reply(502, {"message": "bad gateway"})]
    await world.redis.hset(action_key(world.action), "attempts", 2)
    assert await run_action(world.ctx(job_try=3), world.action) == "dead"
    ledger = await world.ledger()
    assert (ledger[b"state"], ledger[b"dead_reason"], ledger[b"last_status"]) == (b"dead", b"exhausted", b"502")
    assert await world.redis.zscore(DLQ_KEY, world.action) is not None
    assert (await world.types())[-2:] == ["attempt.failed", "action.dead"]


async def test_a_429_with_retry_after_on_the_last_try_is_a_wait_not_a_failed_try(world: World) -> None:
    """The provider refused before doing anything and said when: the attempt is given back (the ledger's count
    stays 2 of 3), the action waits instead of dying exhausted; a 429 without Retry-After still counts."""
    world.provider.script = [reply(429, {"message": "slow down"}, {"Retry-After": "600"})]
    await world.redis.hset(action_key(world.action), "attempts", 2)
    with pytest.raises(Retry) as info:
        await run_action(world.ctx(job_try=3), world.action)
    assert info.value.defer_score is not None and info.value.defer_score >= 600_000
    ledger = await world.ledger()
    assert (ledger[b"state"], ledger[b"attempts"], ledger[b"last_status"]) == (b"pending", b"2", b"429")
    world.provider.script = [reply(429, {"message": "slow down"})]
    assert await run_action(world.ctx(job_try=4), world.action) == "dead"
    assert (await world.ledger())[b"dead_reason"] == b"exhausted"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (reply(404, {"message": "Project not found"}), "permanent"),
        (reply(401, {"message": "nope"}), "permanent"),
        (timeout, "ambiguous"),
    ],
    ids=["404", "401", "read-timeout"],
)
async def test_permanent_and_ambiguous_failures_die_after_one_call(world: World, answer: Any, reason: str) -> None:
    """4xx and a timeout after sending make exactly one call and dead-letter the action with the reason."""
    world.provider.script = [answer]
    assert await run_action(world.ctx(), world.action) == "dead"
    assert len(world.provider.requests) == 1
    ledger = await world.ledger()
    assert ledger[b"dead_reason"] == reason.encode()
    entries = await dlq.list_dead(world.store)
    assert [e["action_id"] for e in entries] == [world.action] and entries[0]["reason"] == reason


async def test_dry_run_sends_nothing_and_records_the_action(world: World) -> None:
    """With CHAINER_DRY_RUN the action is skipped, audited with its parameters, and no request is made."""
    dry = Settings(
        **{**{f: getattr(SETTINGS, f) for f in ("hook_token", "circleci_token", "circleci_url")}, "dry_run": True}
    )
    assert await run_action(world.ctx(settings=dry), world.action) == "skipped"
    assert world.provider.requests == []
    skipped = [r for r in await world.store.event_audit(world.event_id) if r["type"] == "action.skipped"]
    assert "dry run" in skipped[0]["reason"] and skipped[0]["params"]["project"] == "gh/acme/api"


async def test_replay_queues_once_and_a_second_replay_is_refused(world: World) -> None:
    """Replaying a dead action queues one new job; replaying again while pending is refused; discard works."""
    world.provider.script = [reply(400, {"message": "bad"})]
    await run_action(world.ctx(), world.action)
    queued_before = await world.redis.zcard(QUEUE_KEY)
    first = await dlq.replay(world.store, world.action, "test")
    second = await dlq.replay(world.store, world.action, "test")
    assert first.ok and not second.ok and second.state == "pending"
    assert await world.redis.zcard(QUEUE_KEY) == queued_before + 1
    assert await world.redis.zscore(DLQ_KEY, world.action) is None
    world.provider.script = [reply(201, CREATED)]
    assert await run_action(world.ctx(), world.action) == "done"
    assert len(world.provider.requests) == 2
    refused = await dlq.discard(world.store, world.action, "test")
    assert not refused.ok and refused.state == "done"
    types = await world.types()
    assert "action.replayed" in types and types[-1] == "attempt.succeeded"


async def test_discard_removes_from_the_dead_letter_list(world: World) -> None:
    """Discarding a dead action marks it discarded, removes it from /dlq and audits who did it."""
    world.provider.script = [reply(422, {"message": "no"})]
    await run_action(world.ctx(), world.action)
    change = await dlq.discard(world.store, world.action, "operator@test")
    assert change.ok and (await world.ledger())[b"state"] == b"discarded"
    assert await dlq.list_dead(world.store) == []
    discarded = [r for r in await world.store.event_audit(world.event_id) if r["type"] == "action.discarded"]
    assert discarded[0]["actor"] == "operator@test"
    missing = await dlq.replay(world.store, "evt_nope:x:0", "t")
    assert not missing.ok and missing.state == "missing"


async def test_worker_retries_transient_failures_until_success(world: World, redis_url: str) -> None:
    """Through a real arq worker, two 500s then a 201 make three calls spaced by the backoff and end done."""
    world.provider.script = [reply(500), reply(500), reply(201, CREATED)]
    policy = RetryPolicy(max_tries=5, base_s=0.05, cap_s=0.2)
    worker = create_worker(
        SETTINGS,
        burst=True,
        handle_signals=False,
        poll_delay=0.01,
        redis_pool=connect_arq(redis_url, retries=0),
        downstream=Downstream(SETTINGS, world.http),
        retry_policy=policy,
    )
    await worker.main()
    await worker.close()
    assert len(world.provider.requests) == 3
    assert (await world.ledger())[b"state"] == b"done"
    types = await world.types()
    assert types.count("attempt.failed") == 2 and types.count("action.retry_scheduled") == 2
    retries = [r for r in await world.store.event_audit(world.event_id) if r["type"] == "action.retry_scheduled"]
    assert retries[0]["defer_s"] >= 0.025 and retries[1]["defer_s"] >= 0.075


async def test_dlq_over_http(world: World) -> None:
    """GET /dlq lists the dead action; replay answers 200 then 409; unknown ids 404; all behind the token."""
    from chainer.app import create_app

    world.provider.script = [reply(400, {"message": "bad"})]
    await run_action(world.ctx(), world.action)
    settings = Settings(admin_token=Secret("adm"), hook_token=Secret("hook"))
    app = create_app(settings, ruleset=parse_rules(RULES), store=world.store)
    auth = {"authorization": "Bearer adm"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/dlq")).status_code == 401
        listed = (await client.get("/dlq", headers=auth)).json()["items"]
        assert [(i["action_id"], i["reason"], i["last_status"]) for i in listed] == [(world.action, "permanent", 400)]
        first = await client.post(f"/dlq/{world.action}/replay", headers=auth)
        second = await client.post(f"/dlq/{world.action}/replay", headers=auth)
        discard = await client.post(f"/dlq/{world.action}/discard", headers=auth)
        unknown = await client.post("/dlq/evt_x:r:0/replay", headers=auth)
        bad_verb = await client.post(f"/dlq/{world.action}/explode", headers=auth)
    assert (first.status_code, second.status_code, discard.status_code) == (200, 409, 409)
    assert "not dead" in second.json()["error"]
    assert (unknown.status_code, bad_verb.status_code) == (404, 404)


async def test_sweeper_dead_letters_actions_whose_job_vanished(world: World) -> None:
    """An action still pending after arq dropped its job is marked dead as lost; live jobs are left alone."""
    from chainer.housekeeping import sweep

    ctx = world.ctx(sweep_grace_ms=0)
    assert await sweep(ctx) == 0  # the job is still queued
    job = (await world.ledger())[b"job_id"].decode()
    await world.redis.delete(f"arq:job:{job}")
    await world.redis.zrem(QUEUE_KEY, job)
    assert await sweep(ctx) == 1
    ledger = await world.ledger()
    assert (ledger[b"state"], ledger[b"dead_reason"]) == (b"dead", b"lost")
    assert await world.redis.zscore("chainer:open", world.action) is None
    assert await sweep(ctx) == 0
    assert [e["reason"] for e in await dlq.list_dead(world.store)] == ["lost"]


async def test_sweeper_dead_letters_a_vanished_job_that_was_calling_as_ambiguous_not_lost(world: World) -> None:
    """A job that vanished after its action said ``calling`` may have built: it is never offered as a plain replay."""
    from chainer.housekeeping import sweep

    job = (await world.ledger())[b"job_id"].decode()
    await world.redis.hset(action_key(world.action), "state", "calling")
    await world.redis.delete(f"arq:job:{job}")
    await world.redis.zrem(QUEUE_KEY, job)
    assert await sweep(world.ctx(sweep_grace_ms=0)) == 1
    ledger = await world.store.get_action(world.action)
    assert (ledger["state"], ledger["dead_reason"]) == ("dead", "ambiguous")
    assert "may have taken effect" in ledger["last_error"]


def _refuse_writes_while_answering(redis_url: str, seconds: float) -> Callable[[httpx.Request], httpx.Response]:
    """A provider that creates the pipeline, and Redis turning read-only for ``seconds`` as it answers."""

    def answer(request: httpx.Request) -> httpx.Response:
        client = syncredis.Redis.from_url(redis_url)
        client.config_set("min-replicas-to-write", 1)
        client.close()

        def restore() -> None:
            with syncredis.Redis.from_url(redis_url) as again:
                again.config_set("min-replicas-to-write", 0)

        threading.Timer(seconds, restore).start()
        return httpx.Response(201, json=CREATED)

    return answer


async def test_a_success_is_recorded_through_a_short_redis_outage(world: World, redis_url: str) -> None:
    """The provider built; Redis refuses writes for a moment as the answer comes back: the worker keeps the
    outcome and records it once Redis takes writes again, instead of leaving the action ``calling``."""
    world.provider.script = [_refuse_writes_while_answering(redis_url, 0.4)]
    try:
        assert await run_action(world.ctx(), world.action) == "done"
    finally:
        await world.redis.config_set("min-replicas-to-write", 0)
    ledger = await world.ledger()
    assert (ledger[b"state"], ledger[b"downstream_id"]) == (b"done", CREATED["id"].encode())
    assert len(world.provider.requests) == 1


async def test_a_success_redis_cannot_record_in_time_ends_ambiguous_not_called_twice(
    world: World, redis_url: str
) -> None:
    """When Redis stays down past the job's patience the job fails; its next run finds ``calling`` and dead-letters
    the action as ambiguous without a second request."""
    settings = dataclasses.replace(SETTINGS, job_timeout_seconds=0.3)
    world.provider.script = [_refuse_writes_while_answering(redis_url, 1.0)]
    try:
        with pytest.raises(StoreUnavailableError):
            await run_action(world.ctx(settings=settings), world.action)
    finally:
        await asyncio.sleep(1.1)
        await world.redis.config_set("min-replicas-to-write", 0)
    assert await run_action(world.ctx(job_try=2, settings=settings), world.action) == "dead"
    ledger = await world.ledger()
    assert (ledger[b"state"], ledger[b"dead_reason"]) == (b"dead", b"ambiguous")
    assert len(world.provider.requests) == 1


async def test_finished_actions_leave_the_open_set(world: World) -> None:
    """The open set holds an action while it is pending and drops it once it is done."""
    assert await world.redis.zscore("chainer:open", world.action) is not None
    world.provider.script = [reply(201, CREATED)]
    await run_action(world.ctx(), world.action)
    assert await world.redis.zscore("chainer:open", world.action) is None


# -- when the ledger says "calling": only right before the request that can take effect ------------

CODESHIP_RULES = """
version: 1
rules:
  - name: retry-infra
    when: {provider: codeship, status: error}
    then:
      - codeship.restart_build: {}
"""
CODESHIP_URL = "https://codeship.example"
CODESHIP_SETTINGS = Settings(
    hook_token=Secret("hook"), codeship_user="ci@acme.test", codeship_password=Secret("pw"), codeship_url=CODESHIP_URL
)
ORG_UUID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
PROJECT_UUID = "11111111-2222-3333-4444-555555555555"
BUILD_UUID = "66666666-7777-8888-9999-000000000000"
STEPS = ("auth", "projects", "builds", "restart")


class CodeshipApi:
    """A scripted Codeship API v2 that records, for every request, the ledger state at the moment it arrived.

    ``hang`` names a step that never answers (the job is cancelled there); ``fail`` one that answers 503;
    ``steal`` one during which another run of the action claims its ledger.
    """

    def __init__(
        self, redis: Redis, action: str, *, hang: str | None = None, fail: str | None = None, steal: str | None = None
    ) -> None:
        self.redis, self.action, self.hang, self.fail, self.steal = redis, action, hang, fail, steal
        self.seen: list[tuple[str, str]] = []
        self.reached = asyncio.Event()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        step = (
            "auth"
            if path.endswith("/auth")
            else "restart"
            if path.endswith("/restart")
            else "builds"
            if path.endswith("/builds")
            else "projects"
        )
        state = await self.redis.hget(action_key(self.action), "state")
        self.seen.append((step, (state or b"").decode()))
        if step == self.hang:
            self.reached.set()
            await asyncio.Event().wait()  # never answers
        if step == self.steal:
            await self.redis.hset(action_key(self.action), "state", "calling")
        if step == self.fail:
            return httpx.Response(503, json={"errors": ["try later"]})
        if step == "auth":
            org = {"uuid": ORG_UUID, "name": "acme", "scopes": ["project.read", "build.read", "build.write"]}
            return httpx.Response(200, json={"access_token": "tok", "expires_at": 4102444800, "organizations": [org]})
        if step == "projects":
            return httpx.Response(
                200, json={"projects": [{"uuid": PROJECT_UUID, "name": "acme/lib", "id": 1234}], "total": 1}
            )
        if step == "builds":
            build = {
                "uuid": BUILD_UUID,
                "commit_sha": payloads.COMMIT,
                "branch": "main",
                "queued_at": "2026-11-20T10:00:00Z",
            }
            return httpx.Response(200, json={"builds": [build], "total": 1})
        return httpx.Response(202)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))


async def _accept_codeship_error(store: Store) -> str:
    """Accept a Codeship infrastructure failure whose rule restarts the build; return the action id."""
    intake = Intake(CODESHIP_SETTINGS, store, lambda: parse_rules(CODESHIP_RULES))
    body = json.dumps(payloads.codeship("infrastructure_failure")).encode()
    reply_ = await intake.receive("codeship", {"content-type": "application/json"}, body, "hook")
    assert status_of(reply_) == 202
    return f"{reply_.body()['event_id']}:retry-infra:0"


async def _run_worker_until_cancelled(redis_url: str, api: CodeshipApi) -> None:
    """Run a real worker until the job reaches ``api.hang``, then shut the worker down (cancelling the job)."""
    http = api.client()
    worker = create_worker(
        CODESHIP_SETTINGS,
        handle_signals=False,
        poll_delay=0.01,
        redis_pool=connect_arq(redis_url, retries=0),
        downstream=Downstream(CODESHIP_SETTINGS, http),
        ruleset=parse_rules(CODESHIP_RULES),
    )
    running = asyncio.create_task(worker.async_run())
    try:
        await asyncio.wait_for(api.reached.wait(), timeout=20)
    finally:
        await worker.close()  # cancels the running job: arq queues it again
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await http.aclose()


async def _drain_with(redis_url: str, api: CodeshipApi) -> None:
    http = api.client()
    worker = create_worker(
        CODESHIP_SETTINGS,
        burst=True,
        handle_signals=False,
        poll_delay=0.01,
        redis_pool=connect_arq(redis_url, retries=0),
        downstream=Downstream(CODESHIP_SETTINGS, http),
        ruleset=parse_rules(CODESHIP_RULES),
    )
    await asyncio.wait_for(worker.main(), timeout=30)
    await worker.close()
    await http.aclose()


async def test_lookups_run_while_pending_and_only_the_restart_while_calling(redis: Redis) -> None:
    """Auth, project and build look-ups see the ledger pending; only the restart request sees it calling."""
    store = Store(redis)
    action = await _accept_codeship_error(store)
    api = CodeshipApi(redis, action)
    async with api.client() as http:
        ctx = job_ctx(store, CODESHIP_SETTINGS, Downstream(CODESHIP_SETTINGS, http))
        assert await run_action(ctx, action) == "done"
    assert api.seen == [("auth", "pending"), ("projects", "pending"), ("builds", "pending"), ("restart", "calling")]


@pytest.mark.parametrize("step", ["auth", "projects", "builds"])
async def test_cancelled_lookup_leaves_the_action_pending_and_it_runs_again(
    redis: Redis, redis_url: str, step: str
) -> None:
    """A worker shut down during a look-up leaves the action pending; the next worker restarts the build once."""
    store = Store(redis)
    action = await _accept_codeship_error(store)
    first = CodeshipApi(redis, action, hang=step)
    await _run_worker_until_cancelled(redis_url, first)
    ledger = await redis.hgetall(action_key(action))
    assert ledger[b"state"] == b"pending" and ledger[b"attempts"] == b"1"
    assert "restart" not in [s for s, _ in first.seen]
    second = CodeshipApi(redis, action)
    await _drain_with(redis_url, second)
    ledger = await redis.hgetall(action_key(action))
    assert (ledger[b"state"], ledger[b"attempts"]) == (b"done", b"2")
    assert [s for s, _ in second.seen].count("restart") == 1
    assert await redis.zscore(DLQ_KEY, action) is None


async def test_cancelled_restart_request_is_dead_lettered_as_ambiguous(redis: Redis, redis_url: str) -> None:
    """A worker shut down while the restart request is out leaves it calling; the re-run dead-letters it."""
    store = Store(redis)
    action = await _accept_codeship_error(store)
    first = CodeshipApi(redis, action, hang="restart")
    await _run_worker_until_cancelled(redis_url, first)
    assert (await redis.hget(action_key(action), "state")) == b"calling"
    second = CodeshipApi(redis, action)
    await _drain_with(redis_url, second)
    ledger = await redis.hgetall(action_key(action))
    assert (ledger[b"state"], ledger[b"dead_reason"]) == (b"dead", b"ambiguous")
    assert second.seen == []  # nothing was sent again
    assert [e["reason"] for e in await dlq.list_dead(store)] == ["ambiguous"]


async def test_transient_lookup_failure_retries_from_pending(redis: Redis) -> None:
    """A 503 on the build look-up counts an attempt, schedules a retry and leaves the action pending."""
    store = Store(redis)
    action = await _accept_codeship_error(store)
    api = CodeshipApi(redis, action, fail="builds")
    async with api.client() as http:
        policy = RetryPolicy(max_tries=3, base_s=10, cap_s=100)
        ctx = job_ctx(store, CODESHIP_SETTINGS, Downstream(CODESHIP_SETTINGS, http), retry_policy=policy)
        with pytest.raises(Retry):
            await run_action(ctx, action)
        ledger = await redis.hgetall(action_key(action))
        assert (ledger[b"state"], ledger[b"attempts"], ledger[b"last_status"]) == (b"pending", b"1", b"503")
        assert "restart" not in [s for s, _ in api.seen]
        api.fail = None
        assert await run_action(ctx, action) == "done"
    assert (await redis.hget(action_key(action), "attempts")) == b"2"


async def test_action_claimed_by_another_run_during_lookups_is_not_sent(redis: Redis) -> None:
    """If another run claims the ledger while this one looks up the build, this one sends nothing."""
    store = Store(redis)
    action = await _accept_codeship_error(store)
    api = CodeshipApi(redis, action, steal="builds")
    async with api.client() as http:
        ctx = job_ctx(store, CODESHIP_SETTINGS, Downstream(CODESHIP_SETTINGS, http))
        assert await run_action(ctx, action) == "calling"
    assert [s for s, _ in api.seen] == ["auth", "projects", "builds"]
    assert (await redis.hget(action_key(action), "state")) == b"calling"


@pytest.mark.parametrize("job", ["sweep", "trim_audit"])
async def test_housekeeping_skips_a_run_while_redis_is_down_with_one_line_and_no_traceback(
    job: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A cron job that meets a Redis outage (the worker rides it out meanwhile) logs one warning and returns; arq
    would otherwise log the failure with a traceback on every run."""
    import chainer.housekeeping

    down = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    try:
        async with httpx.AsyncClient() as http:
            ctx = job_ctx(Store(down), SETTINGS, Downstream(SETTINGS, http), sweep_grace_ms=0)
            assert await getattr(chainer.housekeeping, job)(ctx) == 0
    finally:
        await down.aclose()
    skipped = [r for r in caplog.records if r.getMessage() == "housekeeping_skipped"]
    assert [(r.levelname, r.job, r.exc_info) for r in skipped] == [("WARNING", job, None)]  # type: ignore[attr-defined]
