"""Fan-in joins end to end: both halves fire once, windows expire, failures reset, races fire once."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.providers import Downstream
from chainer.rules import RuleSet
from chainer.settings import Secret, Settings
from chainer.store import QUEUE_KEY, Store
from chainer.store.connections import connect_arq
from chainer.worker import create_worker
from tests import payloads
from tests.helpers import parse_rules
from tests.processes import chainer_process
from tests.redis_server import free_port

pytestmark = pytest.mark.integration

RULES = """
version: 1
rules:
  - name: release-after-both
    when:
      all:
        - {project: acme/api, status: success}
        - {project: acme/web, status: success}
      join_on: commit
      within: WITHIN
      reset_on: failed
    then:
      - codeship.trigger_build:
          project: acme/release
          ref: "heads/{{ event.branch }}"
          commit: "{{ events[0].commit }}"
"""
SETTINGS = Settings(
    hook_token=Secret("hook"),
    admin_token=Secret("adm"),
    codeship_user="ci@example.org",
    codeship_password=Secret("pw"),
    codeship_url="https://codeship.example",
)


def _rules(within: str = "2h") -> RuleSet:
    return parse_rules(RULES.replace("WITHIN", within))


class Codeship:
    def __init__(self) -> None:
        self.builds: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/auth":
            org = {"uuid": "org-1", "name": "acme", "scopes": ["build.write"]}
            return httpx.Response(200, json={"access_token": "t", "expires_at": 9999999999, "organizations": [org]})
        if request.url.path.endswith("/projects"):
            project = {"uuid": "11111111-2222-4333-8444-555555555555", "id": 9, "name": "acme/release"}
            return httpx.Response(200, json={"projects": [project], "page": 1, "per_page": 50, "total": 1})
        self.builds.append(json.loads(request.content))
        return httpx.Response(202)


async def _post(client: httpx.AsyncClient, project: str, status: str, build_id: int, commit: str) -> dict[str, Any]:
    body = json.dumps(payloads.codeship(status, project=project, build_id=build_id, commit=commit)).encode()
    answer = await client.post("/hooks/codeship/hook", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


async def _drain(redis_url: str, ruleset: RuleSet, codeship: Codeship) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(codeship.handle)) as http:
        worker = create_worker(
            SETTINGS,
            burst=True,
            handle_signals=False,
            poll_delay=0.01,
            redis_pool=connect_arq(redis_url, retries=0),
            ruleset=ruleset,
            downstream=Downstream(SETTINGS, http),
        )
        await worker.main()
        await worker.close()


def _client(ruleset: RuleSet, store: Store) -> httpx.AsyncClient:
    app = create_app(SETTINGS, ruleset=ruleset, store=store)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_both_halves_fire_once_with_every_event_in_templates(redis: Redis, redis_url: str) -> None:
    """api then web on one commit fires the release once; later events on that commit do not fire again."""
    ruleset, store, codeship = _rules(), Store(redis), Codeship()
    commit = "a" * 40
    async with _client(ruleset, store) as client:
        first = await _post(client, "acme/api", "success", 1, commit)
        second = await _post(client, "acme/web", "success", 2, commit)
        await _drain(redis_url, ruleset, codeship)
        again = await _post(client, "acme/api", "success", 3, commit)
        await _drain(redis_url, ruleset, codeship)
        view = (await client.get(f"/events/{second['event_id']}", headers={"authorization": "Bearer adm"})).json()
    assert first["matched"] == second["matched"] == ["release-after-both"]
    assert codeship.builds == [{"ref": "heads/main", "commit_sha": commit}]
    progress = [r for r in (await store.read_audit(match={"type": {"join.progress"}})).items]
    assert [(p["satisfied"], p["complete"]) for p in progress] == [([0], False), ([0, 1], True), ([0, 1], True)]
    assert progress[1]["fired"] is True and progress[2]["already_fired_by"] == second["event_id"]
    assert again["queued"] == 0
    types = [r["type"] for r in view["audit"]]
    assert "join.fired" in types and "attempt.succeeded" in types
    assert view["actions"][0]["state"] == "done"


async def test_a_window_that_expires_starts_over(redis: Redis, redis_url: str) -> None:
    """Halves further apart than `within` do not fire; the late half starts a new join."""
    ruleset, store = _rules("1s"), Store(redis)
    commit = "b" * 40
    async with _client(ruleset, store) as client:
        await _post(client, "acme/api", "success", 1, commit)
        await asyncio.sleep(1.2)
        await _post(client, "acme/web", "success", 2, commit)
    progress = (await store.read_audit(match={"type": {"join.progress"}})).items
    assert [(p["satisfied"], p["complete"]) for p in progress] == [([0], False), ([1], False)]
    assert await redis.zcard(QUEUE_KEY) == 0


async def test_a_failure_resets_its_clause_when_the_rule_says_so(redis: Redis) -> None:
    """api green, api red, web green: the reset clause is missing, so nothing fires."""
    ruleset, store = _rules(), Store(redis)
    commit = "c" * 40
    async with _client(ruleset, store) as client:
        await _post(client, "acme/api", "success", 1, commit)
        reset = await _post(client, "acme/api", "error", 2, commit)
        await _post(client, "acme/web", "success", 3, commit)
    progress = (await store.read_audit(match={"type": {"join.progress"}})).items
    assert [(p["satisfied"], p["complete"]) for p in progress] == [([0], False), ([], False), ([1], False)]
    assert progress[1]["reset"] == [0] and reset["matched"] == []
    assert await redis.zcard(QUEUE_KEY) == 0


async def test_concurrent_halves_on_two_web_apps_fire_exactly_once(redis_url: str) -> None:
    """Twenty commits whose halves arrive at the same moment at two apps with their own connections fire once each."""
    ruleset = _rules()
    one, two = Redis.from_url(redis_url), Redis.from_url(redis_url)
    async with _client(ruleset, Store(one)) as left, _client(ruleset, Store(two)) as right:
        for n in range(20):
            commit = f"{n:040x}"
            await asyncio.gather(
                _post(left, "acme/api", "success", 100 + n, commit),
                _post(right, "acme/web", "success", 200 + n, commit),
            )
    fire_jobs = [j for j in await one.zrange(QUEUE_KEY, 0, -1) if j.startswith(b"join:")]
    fired = (await Store(one).read_audit(match={"type": {"join.progress"}}, limit=100)).items
    await one.aclose()
    await two.aclose()
    assert len(fire_jobs) == 20
    assert sum(1 for p in fired if p.get("fired")) == 20


@pytest.mark.timeout(90)
async def test_halves_at_two_web_processes_fire_exactly_once(redis_url: str, tmp_path: Path) -> None:
    """Two `chainer web` processes on one Redis each get one half of ten commits at the same moment: ten fires."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("WITHIN", "2h"))
    env = {**os.environ, "CHAINER_REDIS_URL": redis_url, "CHAINER_RULES": str(rules), "CHAINER_HOOK_TOKEN": "hook"}
    ports = free_port(), free_port()
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    with (
        chainer_process(["web", "--port", str(ports[0])], tmp_path, env, [f"{bases[0]}/readyz"]),
        chainer_process(["web", "--port", str(ports[1])], tmp_path, env, [f"{bases[1]}/readyz"]),
    ):
        async with httpx.AsyncClient(base_url=bases[0]) as left, httpx.AsyncClient(base_url=bases[1]) as right:
            for n in range(10):
                commit = f"{n + 1000:040x}"
                answers = await asyncio.gather(
                    _post(left, "acme/api", "success", 300 + n, commit),
                    _post(right, "acme/web", "success", 400 + n, commit),
                )
                assert all(a["matched"] == ["release-after-both"] for a in answers)
    redis = Redis.from_url(redis_url)
    fire_jobs = [j for j in await redis.zrange(QUEUE_KEY, 0, -1) if j.startswith(b"join:")]
    progress = (await Store(redis).read_audit(match={"type": {"join.progress"}}, limit=100)).items
    await redis.aclose()
    assert len(fire_jobs) == 10
    assert sum(1 for p in progress if p.get("fired")) == 10 and len(progress) == 20


async def test_fire_join_delivered_twice_after_firing_sends_one_build(redis: Redis, redis_url: str) -> None:
    """arq delivers at least once: the fired join's job run again (same id, same bytes) sends no second build."""
    ruleset, store, codeship = _rules(), Store(redis), Codeship()
    commit = "d" * 40
    async with _client(ruleset, store) as client:
        await _post(client, "acme/api", "success", 1, commit)
        second = await _post(client, "acme/web", "success", 2, commit)
    [join_job] = [j.decode() for j in await redis.zrange(QUEUE_KEY, 0, -1) if j.startswith(b"join:")]
    job_bytes = await redis.get(f"arq:job:{join_job}")
    assert job_bytes is not None
    assert json.loads(job_bytes)["f"] == "fire_join"  # JSON, never pickle
    await _drain(redis_url, ruleset, codeship)
    assert codeship.builds == [{"ref": "heads/main", "commit_sha": commit}]
    for _ in range(2):  # the same job redelivered, as after a worker lost before arq recorded the result
        await redis.set(f"arq:job:{join_job}", job_bytes)
        await redis.zadd(QUEUE_KEY, {join_job: 1})
        await _drain(redis_url, ruleset, codeship)
        assert await redis.zscore(QUEUE_KEY, join_job) is None  # the redelivery did run
    assert codeship.builds == [{"ref": "heads/main", "commit_sha": commit}]
    store_view = await store.get_event(second["event_id"])
    assert len(json.loads(store_view["actions"])) == 1
    fired = (await store.read_audit(match={"type": {"join.fired"}})).items
    queued = (await store.read_audit(match={"type": {"action.queued"}})).items
    assert len(fired) == 1 and len(queued) == 1


async def test_a_branch_join_fires_again_for_the_next_round_on_that_branch(redis: Redis, redis_url: str) -> None:
    """join_on: branch fires each time both halves are green on the branch again, not once per retention window;
    each round's events render its own actions."""
    ruleset = parse_rules(RULES.replace("WITHIN", "2h").replace("join_on: commit", "join_on: branch"))
    store, codeship = Store(redis), Codeship()
    first, second = "d" * 40, "e" * 40
    async with _client(ruleset, store) as client:
        await _post(client, "acme/api", "success", 1, first)
        await _post(client, "acme/web", "success", 2, first)
        await _drain(redis_url, ruleset, codeship)
        await _post(client, "acme/api", "success", 3, second)
        await _post(client, "acme/web", "success", 4, second)
        await _drain(redis_url, ruleset, codeship)
    assert codeship.builds == [
        {"ref": "heads/main", "commit_sha": first},
        {"ref": "heads/main", "commit_sha": second},
    ]
    progress = (await store.read_audit(match={"type": {"join.progress"}})).items
    assert [(p["satisfied"], p["complete"], p.get("fired")) for p in progress] == [
        ([0], False, None),
        ([0, 1], True, True),
        ([0], False, None),
        ([0, 1], True, True),
    ]
