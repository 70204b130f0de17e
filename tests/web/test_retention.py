"""Retention by time (DESIGN §8, CHAINER_AUDIT_RETENTION_DAYS): no write path trims the audit log; the worker's
``trim_audit`` cron job drops what is older than the window, in bounded steps, on a real Redis and a real worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from chainer import audit
from chainer.providers import Downstream
from chainer.store import AUDIT_KEY, DLQ_KEY, Store, keys, now_ms
from chainer.store.codec import ZSTD
from chainer.store.connections import connect_arq
from chainer.store.lua import SCRIPTS, source
from chainer.worker import create_worker
from tests import payloads
from tests.helpers import WEB_RULES as RULES
from tests.helpers import app_client, parse_rules, post_codeship, settings

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


async def seed_old(redis: Redis, count: int, age_days: int = 40) -> list[str]:
    """``count`` audit records as chainer stores them (``ZSTD.pack_record``), written ``age_days`` ago."""
    start = now_ms() - age_days * DAY_MS
    ids = []
    for i in range(count):
        record = audit.webhook_rejected("codeship", 401, "missing or wrong token", "127.0.0.1")
        ids.append((await redis.xadd(AUDIT_KEY, {"r": ZSTD.pack_record(record)}, id=f"{start + i}-0")).decode())
    return ids


async def commands_while(redis: Redis, work: Callable[[], Any]) -> list[str]:
    """Every command Redis ran (also inside scripts) while ``work()`` was awaited, as MONITOR shows them."""
    seen: list[str] = []
    marker = f"end-of-work-{now_ms()}"
    async with redis.monitor() as monitor:

        async def listen() -> None:
            while True:
                command = (await monitor.next_command())["command"]
                if marker in command:
                    return
                seen.append(command)

        listening = asyncio.create_task(listen())
        await asyncio.sleep(0.05)
        try:
            await work()
            await redis.echo(marker)
            await asyncio.wait_for(listening, timeout=20)
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
    return seen


def test_no_write_script_trims_the_audit_log() -> None:
    """Neither the accept script nor any other write script trims: XADD without MINID or MAXLEN, no XTRIM."""
    for name in SCRIPTS:
        text = source(name).upper()
        assert "MINID" not in text and "MAXLEN" not in text and "XTRIM" not in text, name


async def test_accepting_a_webhook_never_trims_even_when_old_records_wait(
    web_app: Callable[..., Starlette], redis: Redis
) -> None:
    """1 000 records 40 days old (past the 30-day retention) stay while a webhook is accepted and a bad one
    rejected: the request path issues no XTRIM (MONITOR, INFO commandstats) and no XADD with a trim option."""
    old = await seed_old(redis, 1000)
    async with app_client(web_app(Store(redis))) as client:

        async def deliver() -> None:
            assert (await post_codeship(client, payloads.codeship("success"))).status_code == 202
            assert (await post_codeship(client, payloads.codeship("success"), token="wrong")).status_code == 401

        trims_before = (await redis.info("commandstats")).get("cmdstat_xtrim", {}).get("calls", 0)
        seen = await commands_while(redis, deliver)
        trims_after = (await redis.info("commandstats")).get("cmdstat_xtrim", {}).get("calls", 0)
    xadds = [c for c in seen if c.upper().startswith("XADD")]
    assert len(xadds) >= 4, seen  # received, decisions, queued, rejected: all written, none of them trimming
    assert not [c for c in seen if "XTRIM" in c.upper() or "MINID" in c.upper() or "MAXLEN" in c.upper()]
    assert trims_after == trims_before
    kept = await redis.xrange(AUDIT_KEY, "-", old[-1])
    assert [sid.decode() for sid, _ in kept] == old


async def test_worker_trims_old_records_in_bounded_steps_and_keeps_recent_ones(redis: Redis, redis_url: str) -> None:
    """A real worker's trim_audit cron job (run at start) drops the 2 500 records older than the retention and the
    dead letters as old, keeps the recent records, and no command of it touches more than TRIM_STEP records."""
    old = await seed_old(redis, 2500)
    store = Store(redis)
    recent = await store.append_audit([audit.webhook_rejected("codeship", 401, "recent", None) for _ in range(30)])
    await redis.zadd(DLQ_KEY, {"evt_old:r:0": now_ms() - 40 * DAY_MS, "evt_new:r:0": now_ms()})
    config = settings(redis_url=redis_url)
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(500)))
    worker = create_worker(
        config,
        handle_signals=False,
        poll_delay=0.01,
        redis_pool=connect_arq(redis_url, retries=0),
        downstream=Downstream(config, http),
        ruleset=parse_rules(RULES),
    )
    running = asyncio.create_task(worker.async_run())

    async def until_trimmed() -> None:
        async def gone() -> None:
            while await redis.xrange(AUDIT_KEY, "-", old[-1], count=1):
                await asyncio.sleep(0.02)

        await asyncio.wait_for(gone(), timeout=30)

    try:
        seen = await commands_while(redis, until_trimmed)
    finally:
        await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await http.aclose()
    remaining = [sid.decode() for sid, _ in await redis.xrange(AUDIT_KEY)]
    assert remaining == recent
    assert [m.decode() for m in await redis.zrange(DLQ_KEY, 0, -1)] == ["evt_new:r:0"]
    trims = [c.split() for c in seen if c.upper().startswith("XTRIM")]
    assert len(trims) >= 3  # 2 500 records at most 1 000 a step
    for words in trims:
        assert words[:4] == ["XTRIM", AUDIT_KEY, "MINID", "~"] and words[5:] == ["LIMIT", str(keys.TRIM_STEP)], words
    for words in (c.split() for c in seen):
        if words[0].upper() == "XDEL":
            assert len(words) - 2 <= keys.TRIM_STEP, len(words)
        elif words[0].upper() == "XRANGE" and words[3].startswith("("):  # the trim's read of the first node
            assert words[4:] == ["COUNT", str(keys.TRIM_STEP)], words


async def test_trim_is_bounded_per_run_and_resumes(redis: Redis) -> None:
    """One run takes at most step × max_steps records; the next run goes on from there, and recent records
    are never touched."""
    await seed_old(redis, 700)
    store = Store(redis)
    recent = await store.append_audit([audit.webhook_rejected("codeship", 401, "recent", None) for _ in range(5)])
    first = await store.trim_audit(step=100, max_steps=3)
    assert 0 < first <= 300
    assert await redis.xlen(AUDIT_KEY) == 705 - first
    runs = [first]
    while removed := await store.trim_audit(step=100, max_steps=3):
        assert removed <= 300  # every run stays within its bound
        runs.append(removed)
        assert len(runs) <= 10, runs  # and the runs make progress to the end
    assert sum(runs) == 700 and len(runs) >= 3
    assert [sid.decode() for sid, _ in await redis.xrange(AUDIT_KEY)] == recent
