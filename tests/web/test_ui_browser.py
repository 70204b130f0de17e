"""The operator page in a real browser: Debian's Chromium (/usr/bin/chromium) driven by Playwright for Python.

chainer's web app on a real uvicorn server on 127.0.0.1, a worker running in the same loop, the test's Redis
and the provider sandbox. In the browser: sign in, see a delivery arrive live (no reload), open it, read why a
rule did not fire, replay the dead letter and see the new attempt succeed, sign out and be refused. A
screenshot of each page goes to tests/artifacts/ (git-ignored). Skipped, with the reason, when Chromium or
Playwright is missing (scripts/install --browser, which scripts/test runs, installs both; Playwright's own
browsers are never downloaded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.jobs import RetryPolicy
from chainer.providers import Downstream
from chainer.sandbox import SandboxState, create_sandbox_app
from chainer.sandbox.state import CIRCLECI_V2
from chainer.settings import Secret
from chainer.store import Store
from chainer.store.connections import connect_arq
from chainer.worker import create_worker
from tests import payloads
from tests.helpers import ADMIN, HOOK, parse_rules, settings
from tests.redis_server import free_port

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed (dev extra)")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian's chromium is not installed (scripts/install --browser installs it)"
    ),
]

RULES = """
version: 1
rules:
  - name: api-after-lib
    when: {project: acme/lib, branch: main, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api, branch: main}
  - name: web-on-release
    when: {project: acme/lib, branch: "release/*", status: success}
    then:
      - codeship.trigger_build: {project: acme/web}
"""


class QuietServer(uvicorn.Server):
    """uvicorn without process-wide signal handlers (the test stops it with should_exit)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def _serve(app: Any) -> tuple[QuietServer, asyncio.Task[None], str]:
    port = free_port()
    server = QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{port}"


@dataclass
class Stack:
    base: str
    sandbox: SandboxState


@pytest.fixture
async def stack(redis: Redis, redis_url: str) -> AsyncIterator[Stack]:
    """Sandbox, chainer web (real socket) and a worker, all on this test's loop."""
    state = SandboxState()
    state.add_codeship_project("acme/web")
    sandbox_server, sandbox_task, sandbox_base = await _serve(create_sandbox_app(state))
    conf = settings(
        redis_url=redis_url,
        circleci_token=Secret("sandbox-token"),
        circleci_url=sandbox_base,
        codeship_user="sandbox@example.org",
        codeship_password=Secret("sandbox"),
        codeship_url=sandbox_base,
        stream_heartbeat_seconds=1.0,
    )
    app = create_app(conf, ruleset=parse_rules(RULES), store=Store(redis))
    web_server, web_task, base = await _serve(app)
    http = httpx.AsyncClient(timeout=10)
    worker = create_worker(
        conf,
        ruleset=parse_rules(RULES),
        handle_signals=False,
        poll_delay=0.05,
        downstream=Downstream(conf, http),
        retry_policy=RetryPolicy(max_tries=2, base_s=0.05, cap_s=0.1),
        redis_pool=connect_arq(redis_url, retries=0),
    )
    worker_task = asyncio.create_task(worker.async_run())
    try:
        yield Stack(base, state)
    finally:
        await worker.close()
        worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker_task
        await http.aclose()
        for server, task in ((web_server, web_task), (sandbox_server, sandbox_task)):
            server.should_exit = True
            await task


async def test_operator_page_in_chromium(stack: Stack) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    # The first call to the sandbox's pipeline endpoint fails for good (400): the action becomes a dead letter.
    stack.sandbox.script(CIRCLECI_V2, status=400, body={"message": "project not ready"}, path_contains="/pipeline")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = await browser.new_page(viewport={"width": 1366, "height": 800})

        async def shot(name: str) -> None:
            await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            width = await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert width <= 0, f"{name}: the page scrolls horizontally by {width}px"

        try:
            refused = await page.goto(f"{stack.base}/ui")
            assert refused is not None and refused.status == 401
            await page.fill("#token", ADMIN)
            await shot("signin")
            async with page.expect_navigation():
                await page.click("button:has-text('Sign in')")
            assert page.url == f"{stack.base}/ui"
            assert ADMIN not in page.url
            cookies = await page.context.cookies()
            session = next(c for c in cookies if c["name"] == "chainer_session")
            assert session["httpOnly"] and session["sameSite"] == "Strict" and ADMIN not in session["value"]
            await page.wait_for_selector("#live.on")  # following /audit/stream

            # A delivery arrives while the page is open: its row appears without a reload.
            body = json.dumps(payloads.codeship("success")).encode()
            async with httpx.AsyncClient() as client:
                accepted = await client.post(
                    f"{stack.base}/hooks/codeship/{HOOK}", content=body, headers={"content-type": "application/json"}
                )
            assert accepted.status_code == 202
            event_id = accepted.json()["event_id"]
            row = page.locator(f'a[href="/ui/events/{event_id}"]')
            await row.wait_for(timeout=20_000)
            await page.wait_for_selector("td .state-dead", timeout=20_000)  # the worker ran it: dead (the 400)
            await shot("events")

            # Open it: why web-on-release did not fire.
            await row.click()
            await page.wait_for_url(f"{stack.base}/ui/events/{event_id}")
            decision = page.locator("tr.not-matched", has_text="web-on-release")
            assert "did not fire" in await decision.inner_text()
            why = await decision.locator(".why").inner_text()
            assert "branch" in why and "release/*" in why, why
            assert await page.locator("svg.lineage .node.bad").count() >= 1
            await shot("event")

            # The dead letter: replay it; the new attempt succeeds (the sandbox answers normally now).
            await page.click("text=Dead letters")
            await page.wait_for_url(f"{stack.base}/ui/dlq")
            assert "project not ready" in await page.inner_text("table.dlq")
            await shot("dlq")
            await page.click("text=Replay")
            await page.wait_for_url(f"{stack.base}/ui/events/{event_id}*")
            for _ in range(100):
                if await page.locator("tr.attempt-success").count():
                    break
                await asyncio.sleep(0.2)
                await page.reload()
            assert await page.locator("tr.attempt-success").count() == 1
            assert await page.locator("tr.attempt-permanent").count() == 1
            await shot("event-replayed")

            await page.click("text=Rules")
            await page.fill("textarea[name=payload]", json.dumps(payloads.codeship("success", branch="release/1")))
            await page.click("button:has-text('Explain')")
            await page.wait_for_selector("section.result")
            assert "would fire" in await page.inner_text("section.result")
            await shot("rules")

            await page.click("text=Sign out")
            await page.wait_for_url(f"{stack.base}/ui/signin")
            again = await page.goto(f"{stack.base}/ui")
            assert again is not None and again.status == 401
            assert "Sign in" in await page.inner_text("h1")
            await shot("signed-out")
        finally:
            await browser.close()
