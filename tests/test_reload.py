"""Rules reload: a good file is activated, a bad or missing one refused, both audited; SIGHUP works."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.settings import Secret, Settings
from chainer.store import Store

pytestmark = pytest.mark.integration

GOOD = """
version: 1
rules:
  - name: first
    when: {project: acme/lib}
    then:
      - codeship.trigger_build: {project: acme/web}
"""
BETTER = (
    GOOD
    + """
  - name: second
    when: {project: acme/api}
    then:
      - codeship.trigger_build: {project: acme/web}
"""
)
BAD = GOOD.replace("codeship.trigger_build", "codeship.trigger_bild")


async def _wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_file_changes_reload_or_refuse_and_are_audited(tmp_path: Path, redis: Redis) -> None:
    """Editing the file activates valid rules, refuses invalid or missing ones and audits each outcome."""
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    settings = Settings(rules_path=path, admin_token=Secret("adm"), rules_poll_seconds=0.05)
    store = Store(redis)
    app = create_app(settings, store=store)
    auth = {"authorization": "Bearer adm"}
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        first = (await client.get("/rules", headers=auth)).json()

        async def names() -> list[str]:
            return [r["name"] for r in (await client.get("/rules", headers=auth)).json()["rules"]]

        path.write_text(BETTER)
        await _wait_for(lambda: _eq(names, ["first", "second"]))
        second = (await client.get("/rules", headers=auth)).json()
        assert second["version"] != first["version"]

        path.write_text(BAD)

        async def refused() -> bool:
            page = await store.read_audit(match={"type": {"rules.refused"}})
            return len(page.items) >= 1

        await _wait_for(refused)
        assert await names() == ["first", "second"]
        path.unlink()

        async def refused_twice() -> bool:
            return len((await store.read_audit(match={"type": {"rules.refused"}})).items) >= 2

        await _wait_for(refused_twice)
        assert (await client.get("/rules", headers=auth)).json()["version"] == second["version"]
        await client.aclose()
    records = (await store.read_audit(match={"type": {"rules.reloaded", "rules.refused"}})).items
    assert [r["type"] for r in records] == ["rules.reloaded", "rules.refused", "rules.refused"]
    assert records[0]["rules_version"] == second["version"] and records[0]["previous_version"] == first["version"]
    assert "trigger_bild" in records[1]["problems"][0] and ":7:" in records[1]["problems"][0]
    assert "cannot read" in records[2]["problems"][0]


async def _eq(get: object, expected: list[str]) -> bool:
    return await get() == expected  # type: ignore[operator, no-any-return]


async def test_sighup_reloads_now(tmp_path: Path, redis: Redis) -> None:
    """SIGHUP reloads the rules at once, without waiting for the file poll."""
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    store = Store(redis)
    app = create_app(Settings(rules_path=path, rules_poll_seconds=3600), store=store)
    async with app.router.lifespan_context(app):
        await asyncio.sleep(0.05)
        path.write_text(BETTER)
        os.kill(os.getpid(), signal.SIGHUP)

        async def reloaded() -> bool:
            return len(app.state.chainer.ruleset.rules) == 2

        await _wait_for(reloaded)
    records = (await store.read_audit(match={"type": {"rules.reloaded"}})).items
    assert records[0]["cause"] == "SIGHUP"


async def test_worker_holds_and_reloads_the_rules(tmp_path: Path, redis: Redis, redis_url: str) -> None:
    """The worker loads the rules at start (fan-in jobs render with them) and follows changes of the file."""
    from chainer.connections import connect_arq
    from chainer.worker import shutdown, startup

    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    pool = connect_arq(redis_url, retries=0)
    ctx = {"redis": pool, "settings": Settings(rules_path=path, rules_poll_seconds=0.05), "downstream": object()}
    await startup(ctx)
    try:
        assert [r.name for r in ctx["rules"]().rules] == ["first"]
        path.write_text(BETTER)

        async def reloaded() -> bool:
            return len(ctx["rules"]().rules) == 2

        await _wait_for(reloaded)
    finally:
        await shutdown(ctx)
        await pool.aclose()
    assert ctx["rules_task"].done()
