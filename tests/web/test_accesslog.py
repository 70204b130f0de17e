"""chainer's access log: tokens redacted from paths and queries, levels by outcome, and a client that hangs up
mid-body logged as one INFO line, through the ASGI app and through a real uvicorn socket."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from redis.asyncio import Redis

from chainer.accesslog import redact_path, redact_query
from chainer.app import create_app
from chainer.cli import main
from chainer.logs import KeyValueFormatter
from chainer.settings import Secret, Settings
from chainer.store import Store
from tests import payloads
from tests.helpers import parse_rules
from tests.redis_server import free_port

HOOK = "hooktok-Vx81qLm2"
ADMIN = "admintok-Pz47wKd9"
WHSEC = "whsec-Tn36bRf0"
WRONG = "wrongtok-Hs52cYe8"
RULES = """
version: 1
rules:
  - name: smoke-after-web
    when: {provider: codeship, project: acme/web, status: success}
    then:
      - codeship.trigger_build: {project: acme/smoke, ref: "heads/main"}
"""
JSON = {"content-type": "application/json"}


def _app(redis: Redis) -> Any:
    settings = Settings(hook_token=Secret(HOOK), admin_token=Secret(ADMIN), circleci_webhook_secrets=(Secret(WHSEC),))
    return create_app(settings, ruleset=parse_rules(RULES), store=Store(redis))


@pytest.fixture
async def client(redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app(redis)), base_url="http://chainer.test") as c:
        yield c


def _access(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """The chainer.access records as (level, formatted line)."""
    formatter = KeyValueFormatter()
    return [(r.levelno, formatter.format(r)) for r in caplog.records if r.name == "chainer.access"]


@pytest.mark.integration
async def test_access_log_redacts_tokens_in_paths_and_queries(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Every request is logged once with its status; hook tokens in the path, credential query values and
    any configured secret left elsewhere in the target are ``***``; successes at DEBUG, 4xx at INFO."""
    caplog.set_level(logging.DEBUG)
    body = json.dumps(payloads.codeship("success", project="acme/web")).encode()
    answers = [
        await client.post(f"/hooks/codeship/{HOOK}", content=body, headers=JSON),
        await client.post("/hooks/codeship", params={"token": HOOK, "x": "1"}, content=body, headers=JSON),
        await client.post(f"/hooks/codeship/{WRONG}", content=body, headers=JSON),
        await client.post(f"/hooks/{HOOK}", content=body, headers=JSON),
        await client.get("/audit", params={"api_key": "k-" + WRONG, "circle-token": HOOK, "Token": ADMIN}),
        await client.get(f"/events/{ADMIN}", headers={"authorization": f"Bearer {ADMIN}"}),
    ]
    assert [a.status_code for a in answers] == [202, 200, 401, 404, 401, 404]
    lines = _access(caplog)
    assert len(lines) == len(answers)
    text = "\n".join(line for _, line in lines)
    for secret in (HOOK, ADMIN, WRONG):
        assert secret not in text
    expected = [
        (logging.DEBUG, "method=POST path=/hooks/codeship/*** status=202"),
        (logging.DEBUG, "method=POST path=/hooks/codeship?token=***&x=1 status=200"),
        (logging.INFO, "method=POST path=/hooks/codeship/*** status=401"),
        (logging.INFO, "method=POST path=/hooks/*** status=404"),
        (logging.INFO, "method=GET path=/audit?api_key=***&circle-token=***&Token=*** status=401"),
        (logging.INFO, "method=GET path=/events/*** status=404"),
    ]
    for (level, line), (want_level, want) in zip(lines, expected, strict=True):
        assert level == want_level and f"chainer.access request {want} ms=" in line, line


@pytest.mark.integration
async def test_success_is_not_logged_above_debug(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    """At INFO an accepted delivery writes no access line; a refused one writes exactly one."""
    caplog.set_level(logging.INFO)
    body = json.dumps(payloads.codeship("success", project="acme/web")).encode()
    assert (await client.post(f"/hooks/codeship/{HOOK}", content=body, headers=JSON)).status_code == 202
    assert (await client.get("/healthz")).status_code == 200
    assert _access(caplog) == []
    assert (await client.post(f"/hooks/codeship/{WRONG}", content=body, headers=JSON)).status_code == 401
    assert [level for level, _ in _access(caplog)] == [logging.INFO]


def test_redaction_rules() -> None:
    """The redaction helpers: the token segment, an unknown provider segment, encoded and repeated names."""
    assert redact_path("/hooks/codeship") == "/hooks/codeship"
    assert redact_path("/hooks/circleci/abc/def") == "/hooks/circleci/***"
    assert redact_path("/hooks/abc") == "/hooks/***"
    assert redact_path("/audit") == "/audit"
    query = "%74oken=a&api_key=b&API_KEY=c&circle-token=d&access_token=e&branch=main&token"
    assert (
        redact_query(query)
        == "%74oken=***&api_key=***&API_KEY=***&circle-token=***&access_token=***&branch=main&token=***"
    )


def test_bad_log_level_stops_with_one_line_naming_it() -> None:
    """CHAINER_LOG_LEVEL must name a level; anything else stops the process at start like any bad setting."""
    result = CliRunner().invoke(main, ["web"], env={"CHAINER_LOG_LEVEL": "chatty"})
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "CHAINER_LOG_LEVEL" in result.output


async def _hang_up_mid_body(port: int, path: str) -> None:
    """Send a request whose Content-Length promises more than is sent, then close the socket."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {ADMIN}\r\nContent-Length: 5000\r\n\r\n"
    )
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + b'{"build": {"status": "succ')
    await writer.drain()
    writer.close()
    await writer.wait_closed()


@pytest.mark.integration
@pytest.mark.parametrize("path", [f"/hooks/codeship/{HOOK}", "/explain"])
async def test_client_hanging_up_mid_body_logs_one_info_line(
    redis: Redis, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    """A client that closes its socket before the body is complete gets one INFO line, no error, no traceback."""
    caplog.set_level(logging.DEBUG)
    port = free_port()
    config = uvicorn.Config(_app(redis), host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            assert not serving.done(), "uvicorn stopped before it started"
            await asyncio.sleep(0.01)
        await _hang_up_mid_body(port, path)
        for _ in range(1000):  # bounded: the line is written as soon as uvicorn sees the hang-up
            if any(r.getMessage() == "client_disconnected" for r in caplog.records):
                break
            await asyncio.sleep(0.01)
    finally:
        server.should_exit = True
        await serving  # every request task has ended when the server has shut down
    disconnects = [r for r in caplog.records if r.getMessage() == "client_disconnected"]
    assert len(disconnects) == 1
    record = disconnects[0]
    assert record.name == "chainer.access" and record.levelno == logging.INFO
    line = KeyValueFormatter().format(record)
    assert "\n" not in line and HOOK not in line and "method=POST" in line
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
    assert [r for r in caplog.records if r.name == "chainer.access"] == [record]
