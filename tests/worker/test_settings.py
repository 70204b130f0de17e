"""How the worker is put together: arq reads WorkerSettings the way its own create_worker does, and the
Services every job reads are built at startup from the settings (or what the caller hands in)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import httpx
import pytest
from arq.worker import create_worker as arq_create_worker
from arq.worker import get_kwargs
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.errors import ConfigError
from chainer.jobs import SERVICES, RetryPolicy, services
from chainer.providers import Downstream
from chainer.settings import Settings
from chainer.store import Store, keys
from chainer.store.connections import connect_arq
from chainer.worker import JOB_TIMEOUT_S, ChainerWorker, WorkerSettings, create_worker, shutdown
from tests import payloads
from tests.helpers import parse_rules

pytestmark = pytest.mark.integration

RULES = """
version: 1
rules:
  - name: api-after-lib
    when: {project: acme/lib, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api}
"""


def test_arq_reads_every_worker_setting() -> None:
    """Every attribute of WorkerSettings is an arq Worker option that arq's get_kwargs picks up: none is
    dropped silently (get_kwargs ignores names the Worker does not take)."""
    declared = {name for name in vars(WorkerSettings) if not name.startswith("_")}
    assert set(get_kwargs(WorkerSettings)) == declared


async def test_create_worker_uses_the_settings_class_and_keyword_overrides(redis_url: str) -> None:
    """A ChainerWorker with WorkerSettings' jobs and limits, a keyword overriding one of them, and startup
    building the Services from what was handed in; shutdown leaves the handed-in HTTP client to its owner."""
    settings = Settings(rules_poll_seconds=3600)
    policy = RetryPolicy(max_tries=2)
    async with httpx.AsyncClient() as http:
        downstream = Downstream(settings, http)
        worker = create_worker(
            settings,
            handle_signals=False,
            max_jobs=3,
            redis_pool=connect_arq(redis_url, retries=0),
            ruleset=parse_rules(RULES),
            downstream=downstream,
            retry_policy=policy,
        )
        assert isinstance(worker, ChainerWorker)
        assert set(worker.functions) == {"run_action", "fire_join", "sweep", "trim_audit"}
        assert (worker.max_jobs, worker.job_timeout_s, worker.keep_result_s) == (3, JOB_TIMEOUT_S, 3600)
        assert worker.on_startup is not None and worker.on_shutdown is shutdown
        worker.ctx["redis"] = worker.pool  # as arq's Worker.main does before on_startup
        await worker.on_startup(worker.ctx)
        shared = services(worker.ctx)
        assert worker.ctx[SERVICES] is shared
        assert (shared.settings, shared.downstream, shared.retry_policy) == (settings, downstream, policy)
        assert [r.name for r in shared.rules().rules] == ["api-after-lib"]
        assert shared.locks is not None and shared.http is None
        await worker.close()
        assert shared.rules_task is not None and shared.rules_task.done()
        assert not http.is_closed


async def test_arq_own_create_worker_builds_the_services_from_the_environment(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`arq chainer.worker.WorkerSettings` (arq's create_worker on the class): startup reads the settings and
    rules from the environment and makes its own HTTP client, which shutdown closes."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    monkeypatch.setenv("CHAINER_RULES", str(rules))
    monkeypatch.setenv("CHAINER_RULES_POLL_SECONDS", "3600")
    worker = arq_create_worker(WorkerSettings, redis_pool=connect_arq(redis_url, retries=0), handle_signals=False)
    worker.ctx["redis"] = worker.pool  # as arq's Worker.main does before on_startup
    assert worker.on_startup is not None and worker.on_shutdown is not None
    await worker.on_startup(worker.ctx)
    shared = services(worker.ctx)
    try:
        assert shared.settings.rules_path == rules
        assert [r.name for r in shared.rules().rules] == ["api-after-lib"]
        assert shared.http is not None and not shared.http.is_closed
    finally:
        await worker.on_shutdown(worker.ctx)
        await worker.pool.aclose()
    assert shared.http.is_closed
    assert shared.rules_task is not None and shared.rules_task.done()


async def test_job_timings_follow_the_settings(redis_url: str) -> None:
    """CHAINER_JOB_TIMEOUT_SECONDS, _JOB_LEASE_SECONDS, _TARGET_LEASE_*, _RETRY_*, _WORKER_POLL_SECONDS,
    _WORKER_WAKE_TIMEOUT_SECONDS, _WORKER_BUSY_RECHECK_SECONDS and _SWEEP_* reach the worker: every function's
    timeout, arq's in-progress lease, the in-flight lease on a target and its renewal, the poll, the wake-list
    wait, the sweeper's schedule and grace, and the retry policy the jobs use."""
    settings = Settings.from_env(
        {
            "CHAINER_JOB_TIMEOUT_SECONDS": "2",
            "CHAINER_JOB_LEASE_SECONDS": "3.5",
            "CHAINER_TARGET_LEASE_SECONDS": "1.5",
            "CHAINER_TARGET_LEASE_RENEW_SECONDS": "0.4",
            "CHAINER_WORKER_BUSY_RECHECK_SECONDS": "0.3",
            "CHAINER_WORKER_WAKE_TIMEOUT_SECONDS": "0.7",
            "CHAINER_RETRY_BASE_SECONDS": "0.2",
            "CHAINER_RETRY_CAP_SECONDS": "1",
            "CHAINER_RETRY_MAX_TRIES": "3",
            "CHAINER_WORKER_POLL_SECONDS": "0.05",
            "CHAINER_SWEEP_INTERVAL_SECONDS": "15",
            "CHAINER_SWEEP_GRACE_SECONDS": "1.5",
            "CHAINER_RULES_POLL_SECONDS": "3600",
        }
    )
    worker = create_worker(
        settings, handle_signals=False, redis_pool=connect_arq(redis_url, retries=0), ruleset=parse_rules(RULES)
    )
    timeouts = {name: f.timeout_s for name, f in worker.functions.items()}
    assert timeouts == {"run_action": 2, "fire_join": 2, "sweep": 2, "trim_audit": 2}
    assert (worker.job_timeout_s, worker.in_progress_timeout_s, worker.poll_delay_s) == (2, 3.5, 0.05)
    assert worker.wake_timeout_s == 0.7
    assert worker.cron_jobs[0].second == {0, 15, 30, 45}
    worker.ctx["redis"] = worker.pool
    assert worker.on_startup is not None
    await worker.on_startup(worker.ctx)
    shared = services(worker.ctx)
    assert shared.retry_policy == RetryPolicy(max_tries=3, base_s=0.2, cap_s=1.0, busy_s=0.3)
    # The lease on a target is short and renewed while the call runs (issue 11), no longer the job's lease.
    assert shared.sweep_grace_ms == 1500 and shared.locks is not None and shared.locks.lease_ms == 1500
    assert shared.locks.renew_s == 0.4
    await worker.close()
    default = Settings()
    assert (default.lease_seconds, default.sweep_interval_seconds) == (70.0, 60)
    assert (default.target_lease_seconds, default.target_lease_renew_seconds) == (10.0, 3.0)
    assert (default.worker_busy_recheck_seconds, default.worker_wake_timeout_seconds) == (1.0, 5.0)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CHAINER_JOB_TIMEOUT_SECONDS": "5", "CHAINER_JOB_LEASE_SECONDS": "5"}, "CHAINER_JOB_LEASE_SECONDS"),
        ({"CHAINER_SWEEP_INTERVAL_SECONDS": "61"}, "CHAINER_SWEEP_INTERVAL_SECONDS"),
        ({"CHAINER_SWEEP_INTERVAL_SECONDS": "0.5"}, "CHAINER_SWEEP_INTERVAL_SECONDS"),
        ({"CHAINER_SWEEP_INTERVAL_SECONDS": "45"}, "CHAINER_SWEEP_INTERVAL_SECONDS: 45 does not divide a minute"),
        ({"CHAINER_SWEEP_INTERVAL_SECONDS": "7"}, "CHAINER_SWEEP_INTERVAL_SECONDS: 7 does not divide a minute"),
        ({"CHAINER_RETRY_MAX_TRIES": "0"}, "CHAINER_RETRY_MAX_TRIES"),
        ({"CHAINER_RETRY_BASE_SECONDS": "nan"}, "CHAINER_RETRY_BASE_SECONDS"),
        ({"CHAINER_TARGET_LEASE_RENEW_SECONDS": "10"}, "CHAINER_TARGET_LEASE_RENEW_SECONDS"),
        ({"CHAINER_TARGET_LEASE_SECONDS": "0"}, "CHAINER_TARGET_LEASE_SECONDS"),
        ({"CHAINER_WORKER_BUSY_RECHECK_SECONDS": "soon"}, "CHAINER_WORKER_BUSY_RECHECK_SECONDS"),
        ({"CHAINER_WORKER_WAKE_TIMEOUT_SECONDS": "inf"}, "CHAINER_WORKER_WAKE_TIMEOUT_SECONDS"),
    ],
)
def test_bad_job_timings_are_refused_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


@pytest.mark.timeout(60)
async def test_the_sweep_runs_at_the_configured_interval_with_the_configured_grace(
    redis: Redis, redis_url: str
) -> None:
    """With CHAINER_SWEEP_INTERVAL_SECONDS=1 and CHAINER_SWEEP_GRACE_SECONDS=0, an action whose arq job vanished
    after the worker's start-up sweep is marked lost by a later sweep within seconds (the defaults would take
    at least a minute, and five for the grace)."""
    settings = Settings.from_env(
        {"CHAINER_HOOK_TOKEN": "hook", "CHAINER_SWEEP_INTERVAL_SECONDS": "1", "CHAINER_SWEEP_GRACE_SECONDS": "0"}
    )
    worker = create_worker(
        settings, handle_signals=False, redis_pool=connect_arq(redis_url, retries=0), ruleset=parse_rules(RULES)
    )
    running = asyncio.create_task(worker.async_run())
    try:
        for _ in range(500):
            if worker.jobs_complete >= 2:  # the start-up sweep and audit trim
                break
            await asyncio.sleep(0.02)
        app = create_app(settings, ruleset=parse_rules(RULES), store=Store(redis))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            body = json.dumps(payloads.codeship("success", build_id=9)).encode()
            answer = await client.post(
                "/hooks/codeship/hook", content=body, headers={"content-type": "application/json"}
            )
        assert answer.status_code == 202, answer.text
        action = f"{answer.json()['event_id']}:api-after-lib:0"
        job = (await redis.hget(keys.action(action), "job_id") or b"").decode()
        await redis.delete(keys.arq_job(job))  # arq dropped the job (expired, unreadable, out of tries)
        await redis.zrem(keys.ARQ_QUEUE, job)
        for _ in range(500):
            if await redis.hget(keys.action(action), "state") == b"dead":
                break
            await asyncio.sleep(0.02)
        assert await redis.hget(keys.action(action), "dead_reason") == b"lost"
    finally:
        await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await running
