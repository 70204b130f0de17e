"""Rules reload: a good file is activated, a bad or missing one refused, both audited; SIGHUP works."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as syncredis
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.settings import Secret, Settings
from chainer.store import Store
from tests import payloads
from tests.processes import chainer_process
from tests.redis_server import free_port

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


HALF_BAD = """
version: 1
rules:
  - name: first
    when: {project: acme/api}
    then:
      - codeship.trigger_build: {project: acme/web}
  - name: second
    when: {project: acme/lib}
    then:
      - codeship.trigger_bild: {project: acme/web}
"""


async def test_a_file_with_one_bad_rule_of_two_is_refused_as_a_whole(tmp_path: Path, redis: Redis) -> None:
    """A new file whose first rule is valid and second is not changes nothing: the old rules stay active.

    GET /rules keeps the old version, `rules.refused` names the bad rule, and deliveries are still decided by
    the old rule (acme/lib matches `first`, acme/api, which the new valid rule would match, matches nothing).
    """
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    settings = Settings(rules_path=path, admin_token=Secret("adm"), hook_token=Secret("hook"), rules_poll_seconds=0.05)
    store = Store(redis)
    app = create_app(settings, store=store)
    auth = {"authorization": "Bearer adm"}

    async def post(project: str, build_id: int) -> dict[str, Any]:
        body = json.dumps(payloads.codeship("success", project=project, build_id=build_id)).encode()
        answer = await client.post("/hooks/codeship/hook", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 202, answer.text
        return dict(answer.json())

    async def refused() -> bool:
        return bool((await store.read_audit(match={"type": {"rules.refused"}})).items)

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        before = (await client.get("/rules", headers=auth)).json()
        path.write_text(HALF_BAD)
        await _wait_for(refused)
        after = (await client.get("/rules", headers=auth)).json()
        lib, api = await post("acme/lib", 1), await post("acme/api", 2)
    assert after == before
    assert [r["name"] for r in after["rules"]] == ["first"]
    assert lib["matched"] == ["first"] and api["matched"] == []
    audit = (await store.read_audit(match={"type": {"rules.refused", "rules.reloaded"}})).items
    assert [r["type"] for r in audit] == ["rules.refused"]
    assert audit[0]["rules_version"] == before["version"] and audit[0]["problem_count"] == 1
    assert "rule 'second'" in audit[0]["problems"][0] and "trigger_bild" in audit[0]["problems"][0]


def _stop_private_redis(port: int, directory: Path) -> None:
    """Stop a redis-server left on ``port`` by a `chainer run` that died, if it is the one under ``directory``."""
    client = syncredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=2)
    try:
        pid = int(client.info("server")["process_id"])
        if Path(client.config_get("dir")["dir"]).resolve() != directory.resolve():
            return
    except (syncredis.RedisError, OSError):
        return  # nothing answers there: nothing was left behind
    finally:
        client.close()
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("command", ["web", "run"])
def test_sighup_reloads_now(tmp_path: Path, redis_url: str, command: str) -> None:
    """SIGHUP to a real `chainer web` / `chainer run` reloads its rules at once, without waiting for the file poll.

    The signal goes to the subprocess, never to pytest: a process without the handler dies of it, and the test
    fails saying so. `chainer run` (web and worker in one process, both holding rules) gets its own private
    redis-server, stopped in any case.
    """
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    port = free_port()
    redis_port = free_port()
    url = redis_url if command == "web" else f"redis://127.0.0.1:{redis_port}/0"
    env = {
        **os.environ,
        "CHAINER_REDIS_URL": url,
        "CHAINER_RULES": str(path),
        "CHAINER_ADMIN_TOKEN": "adm",
        "CHAINER_RULES_POLL_SECONDS": "3600",
    }
    base, auth = f"http://127.0.0.1:{port}", {"authorization": "Bearer adm"}
    try:
        with chainer_process([command, "--port", str(port)], tmp_path, env, [f"{base}/readyz"]) as running:
            first = httpx.get(f"{base}/rules", headers=auth, timeout=5).json()
            assert [r["name"] for r in first["rules"]] == ["first"]
            path.write_text(BETTER)
            running.process.send_signal(signal.SIGHUP)
            expected = 2 if command == "run" else 1  # `run` holds the rules twice: the web's and the worker's
            deadline = time.monotonic() + 20
            names: list[str] = []
            reloads: list[dict[str, Any]] = []
            while names != ["first", "second"] or len(reloads) < expected:
                if running.process.poll() is not None:
                    pytest.fail(f"chainer {command} died of SIGHUP (exit {running.process.returncode})")
                if time.monotonic() > deadline:
                    pytest.fail(f"chainer {command} did not reload on SIGHUP within 20 s: {names}, {reloads}")
                time.sleep(0.05)
                with contextlib.suppress(httpx.TransportError):  # dying: the next turn says so
                    names = [r["name"] for r in httpx.get(f"{base}/rules", headers=auth, timeout=5).json()["rules"]]
                    query = {"type": "rules.reloaded"}
                    reloads = httpx.get(f"{base}/audit", params=query, headers=auth, timeout=5).json()["items"]
        assert running.returncode == 0, running.stderr[-3000:]
    finally:
        if command == "run":
            _stop_private_redis(redis_port, tmp_path / ".chainer")
    assert len(reloads) == expected
    assert all(r["cause"] == "SIGHUP" and r["rules"] == 2 for r in reloads)
    assert all(r["previous_version"] == first["version"] for r in reloads)


async def test_worker_holds_and_reloads_the_rules(tmp_path: Path, redis: Redis, redis_url: str) -> None:
    """The worker loads the rules at start (fan-in jobs render with them) and follows changes of the file."""
    from chainer.jobs import services
    from chainer.providers import Downstream
    from chainer.store.connections import connect_arq
    from chainer.worker import ServicesBuilder, shutdown

    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    pool = connect_arq(redis_url, retries=0)
    settings = Settings(rules_path=path, rules_poll_seconds=0.05)
    http = httpx.AsyncClient()
    ctx: dict[str, Any] = {"redis": pool}
    await ServicesBuilder(settings, downstream=Downstream(settings, http)).startup(ctx)
    try:
        assert [r.name for r in services(ctx).rules().rules] == ["first"]
        path.write_text(BETTER)

        async def reloaded() -> bool:
            return len(services(ctx).rules().rules) == 2

        await _wait_for(reloaded)
    finally:
        await shutdown(ctx)
        await pool.aclose()
        await http.aclose()
    rules_task = services(ctx).rules_task
    assert rules_task is not None and rules_task.done()


def _open_for_writing(fifo: Path, timeout: float) -> int | None:
    """A write end of ``fifo``, as soon as a reader (the rules loader) has it open; None when no reader came within
    ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: nobody has it open for reading yet
                raise
            time.sleep(0.01)
            continue
        os.set_blocking(fd, True)
        return fd
    return None


def _write_all(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


BULK = 2000  # rules in the reloaded file (about 0.2 MB)


def _bulk_rules() -> bytes:
    extra = "".join(
        f"  - name: bulk-{i}\n    when: {{project: acme/bulk-{i}, status: success}}\n"
        f"    then:\n      - codeship.trigger_build: {{project: acme/web-{i}}}\n"
        for i in range(BULK)
    )
    return (GOOD + extra).encode()


@pytest.mark.timeout(120)
def test_a_delivery_is_answered_while_a_reload_is_still_loading(tmp_path: Path, redis_url: str) -> None:
    """A reload reads and validates the file off the event loop. The rules path is a symlink, to a plain file at
    start and then to a FIFO: a SIGHUP reload is held inside its read of the file (the loader has the FIFO open,
    the test has not written the big new file yet), and a delivery through a real socket is answered 202 by the
    rules still active. The new rules come in only once their whole file has loaded: the audit log has the
    delivery's records before the reload's."""
    good, fifo, path = tmp_path / "good.yaml", tmp_path / "rules.fifo", tmp_path / "rules.yaml"
    good.write_text(GOOD)
    os.mkfifo(fifo)
    path.symlink_to(good)
    port = free_port()
    env = {
        **os.environ,
        "CHAINER_REDIS_URL": redis_url,
        "CHAINER_RULES": str(path),
        "CHAINER_HOOK_TOKEN": "hook",
        "CHAINER_ADMIN_TOKEN": "adm",
        "CHAINER_RULES_POLL_SECONDS": "3600",
    }
    base, auth = f"http://127.0.0.1:{port}", {"authorization": "Bearer adm"}
    with chainer_process(["web", "--port", str(port)], tmp_path, env, [f"{base}/readyz"]) as running:
        before = httpx.get(f"{base}/rules", headers=auth, timeout=5).json()
        (tmp_path / "next").symlink_to(fifo)
        (tmp_path / "next").replace(path)
        running.process.send_signal(signal.SIGHUP)
        fd = _open_for_writing(fifo, 20)
        assert fd is not None, "the SIGHUP reload did not open the rules file within 20 s"
        try:  # the reload is now inside its read of the file: nothing of the new rules has been written
            body = json.dumps(payloads.codeship("success", build_id=8128)).encode()
            answer = httpx.post(
                f"{base}/hooks/codeship/hook", content=body, headers={"content-type": "application/json"}, timeout=15
            )
            during = httpx.get(f"{base}/rules", headers=auth, timeout=15).json()
        finally:
            _write_all(fd, _bulk_rules())
        assert answer.status_code == 202 and answer.json()["matched"] == ["first"], answer.text
        assert during["version"] == before["version"]
        deadline = time.monotonic() + 60
        reloads: list[dict[str, Any]] = []
        while not reloads and time.monotonic() < deadline:
            time.sleep(0.05)
            query = {"type": "rules.reloaded"}
            reloads = httpx.get(f"{base}/audit", params=query, headers=auth, timeout=5).json()["items"]
        assert [(r["cause"], r["rules"]) for r in reloads] == [("SIGHUP", BULK + 1)], reloads
        after = httpx.get(f"{base}/rules", headers=auth, timeout=5).json()
        assert len(after["rules"]) == BULK + 1 and after["version"] == reloads[0]["rules_version"]
        records = httpx.get(f"{base}/audit", params={"limit": 500}, headers=auth, timeout=5).json()["items"]
        path.unlink()
        path.symlink_to(good)  # the FIFO would hold a shutdown that reads the file again
    assert running.returncode == 0, running.stderr[-3000:]
    order = [r["type"] for r in records if r["type"] in ("webhook.received", "rules.reloaded")]
    assert order == ["webhook.received", "rules.reloaded"]
    assert "rules_reloaded" in running.stderr
