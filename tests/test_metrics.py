"""GET /metrics (DESIGN §8): the counters move as deliveries flow through the ASGI app and a real worker runs
their actions; the worker's own endpoint (`chainer worker --metrics-port`) as a real process; no project,
payload or secret in the exposition. Parsed with prometheus-client's parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.jobs import RetryPolicy
from chainer.providers import Downstream
from chainer.settings import Secret
from chainer.store import QUEUE_KEY, Store
from chainer.store.connections import connect_arq
from chainer.worker import create_worker
from tests import payloads
from tests.helpers import ADMIN, HOOK, app_client, parse_rules, post_codeship, scrape, settings, wait_until
from tests.redis_server import free_port

pytestmark = pytest.mark.integration

RULES = """
version: 1
rules:
  - name: api-after-lib
    when: {project: acme/lib, branch: main, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api}
  - name: never
    when: {project: acme/other}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/never}
"""
CIRCLE_TOKEN = "cci-secret-token"
Labels = dict[str, str]


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return scrape(response.text)


async def _run_worker(store_settings: object, redis_url: str, answer: httpx.Response) -> None:
    """A real burst worker over Redis whose CircleCI answers ``answer``."""
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: answer))
    worker = create_worker(
        store_settings,  # type: ignore[arg-type]
        ruleset=parse_rules(RULES),
        burst=True,
        handle_signals=False,
        poll_delay=0.01,
        downstream=Downstream(store_settings, http),  # type: ignore[arg-type]
        retry_policy=RetryPolicy(max_tries=3, base_s=0.01, cap_s=0.05),
        redis_pool=connect_arq(redis_url, retries=0),
    )
    await worker.main()
    await worker.close()
    await http.aclose()


async def test_metrics_count_deliveries_matches_attempts_and_dead_letters(redis: Redis, redis_url: str) -> None:
    """Deliveries (accepted, duplicate, rejected), the rule they matched, the queue they filled, then a worker's
    successful and failed attempts, the dead letter and the emptied queue: each shows in /metrics, unauthenticated;
    no project, branch, commit or secret appears in it."""
    conf = settings(redis_url=redis_url, circleci_token=Secret(CIRCLE_TOKEN), circleci_url="https://cci.test")
    app = create_app(conf, ruleset=parse_rules(RULES), store=Store(redis))
    async with app_client(app) as client:
        before = await _scrape(client)
        assert (await post_codeship(client, payloads.codeship("success"))).status_code == 202
        assert (await post_codeship(client, payloads.codeship("success"))).status_code == 200
        assert (await post_codeship(client, payloads.codeship("success"), token="wrong")).status_code == 401
        after = await _scrape(client)

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert delta("chainer_webhooks_total", provider="codeship", outcome="accepted") == 1
        assert delta("chainer_webhooks_total", provider="codeship", outcome="duplicate") == 1
        assert delta("chainer_webhooks_total", provider="codeship", outcome="rejected") == 1
        assert delta("chainer_accept_duration_seconds_count", provider="codeship") == 3
        assert delta("chainer_rule_matches_total", rule="api-after-lib") == 1
        assert delta("chainer_rule_matches_total", rule="never") == 0
        assert value(after, "chainer_queue_depth") == 1 and value(after, "chainer_queue_due") == 1
        assert value(after, "chainer_scrape_redis_up") == 1

        await _run_worker(conf, redis_url, httpx.Response(201, json={"id": "p-1", "number": 9}))
        ran = await _scrape(client)
        assert value(ran, "chainer_queue_depth") == 0 and value(ran, "chainer_queue_oldest_age_seconds") == 0
        action = {"action": "circleci.trigger_pipeline"}
        for name, labels, moved in [
            ("chainer_attempts_total", {"provider": "circleci", "outcome": "succeeded"}, 1),
            ("chainer_attempt_duration_seconds_count", {"provider": "circleci"}, 1),
            ("chainer_actions_total", {**action, "outcome": "succeeded"}, 1),
            ("chainer_actions_total", {**action, "outcome": "dead"}, 0),
        ]:
            assert value(ran, name, **labels) - value(after, name, **labels) == moved, name

        other = payloads.codeship("success", build_id=4712, commit="b" * 40)
        assert (await post_codeship(client, other)).status_code == 202
        await _run_worker(conf, redis_url, httpx.Response(400, json={"message": "no such project"}))
        dead = await _scrape(client)
        for name, labels in [
            ("chainer_attempts_total", {"provider": "circleci", "outcome": "permanent"}),
            ("chainer_actions_total", {**action, "outcome": "dead"}),
            ("chainer_dead_letters_total", {"reason": "permanent"}),
        ]:
            assert value(dead, name, **labels) - value(ran, name, **labels) == 1, name
        assert value(dead, "chainer_dlq_size") == 1

        text = (await client.get("/metrics")).text
        # Samples without their values: a number such as a histogram's sum may hold any digits ("0.0934711…").
        samples = "\n".join(line.rsplit(" ", 1)[0] for line in text.splitlines())
        for private in ("acme", "main", "a" * 40, HOOK, ADMIN, CIRCLE_TOKEN, "4711", "gh/"):
            assert private not in samples, private


async def test_metrics_say_when_redis_cannot_be_read(redis: Redis) -> None:
    """With Redis unreachable /metrics still answers 200 (the process's own counters), with redis_up 0."""
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    app = create_app(settings(), ruleset=parse_rules(RULES), store=Store(dead))
    try:
        async with app_client(app) as client:
            samples = await _scrape(client)
            assert value(samples, "chainer_scrape_redis_up") == 0
    finally:
        await dead.aclose()


@pytest.mark.timeout(90)
async def test_worker_process_serves_its_own_metrics(tmp_path: Path, redis: Redis, redis_url: str) -> None:
    """`chainer worker --metrics-port`: its /metrics counts the attempt it made (a transient failure: nothing
    listens where CircleCI should be), the retry it scheduled and the deferred job in the queue; other paths 404."""
    (tmp_path / "rules.yaml").write_text(RULES)
    port = free_port()
    env = {
        **os.environ,
        "CHAINER_REDIS_URL": redis_url,
        "CHAINER_RULES": str(tmp_path / "rules.yaml"),
        "CHAINER_CIRCLECI_URL": f"http://127.0.0.1:{free_port()}",
        "CHAINER_CIRCLECI_TOKEN": CIRCLE_TOKEN,
    }
    for name in ("CHAINER_CODESHIP_USER", "CHAINER_CODESHIP_PASSWORD", "CHAINER_DRY_RUN"):
        env.pop(name, None)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "chainer.cli", "worker", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        async with httpx.AsyncClient(timeout=5) as http:

            async def metrics_answer() -> bool:
                assert process.poll() is None, log_path.read_text()[-2000:]
                try:
                    return (await http.get(url)).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(metrics_answer, "the worker's metrics endpoint")
            app = create_app(settings(redis_url=redis_url), ruleset=parse_rules(RULES), store=Store(redis))
            async with app_client(app) as client:
                assert (await post_codeship(client, payloads.codeship("success"))).status_code == 202

            async def retried() -> bool:
                samples = scrape((await http.get(url)).text)
                return value(samples, "chainer_retries_total", provider="circleci") >= 1

            await wait_until(retried, "the worker's retry in its metrics")
            samples = scrape((await http.get(url)).text)
            assert value(samples, "chainer_attempts_total", provider="circleci", outcome="transient") >= 1
            assert value(samples, "chainer_queue_depth") == 1  # the retry, deferred
            assert value(samples, "chainer_queue_due") == 0
            assert (await http.get(f"http://127.0.0.1:{port}/other")).status_code == 404
            assert (await http.post(url)).status_code == 405
            assert "acme" not in (await http.get(url)).text
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]
    assert json.dumps(CIRCLE_TOKEN)[1:-1] not in log_path.read_text()


async def test_queue_gauges_tell_the_oldest_due_jobs_wait_and_leave_deferred_ones_out(redis: Redis) -> None:
    """A job due 90 s ago and still queued (no worker) shows as waiting at least 90 s; a job deferred to later adds to
    the depth but not to the due count nor the age."""
    app = create_app(settings(), ruleset=parse_rules(RULES), store=Store(redis))
    async with app_client(app) as client:
        assert (await post_codeship(client, payloads.codeship("success"))).status_code == 202
        (job,) = [member.decode() for member in await redis.zrange(QUEUE_KEY, 0, -1)]
        now_ms = int(time.time() * 1000)
        await redis.zadd(QUEUE_KEY, {job: now_ms - 90_000, "deferred-job": now_ms + 600_000})
        samples = await _scrape(client)
    assert value(samples, "chainer_queue_depth") == 2 and value(samples, "chainer_queue_due") == 1
    assert value(samples, "chainer_queue_oldest_age_seconds") >= 90
