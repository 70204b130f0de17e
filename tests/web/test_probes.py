"""The probes /healthz and /readyz (and the active rules they report), through ASGI against a real Redis."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.store import Store
from tests.helpers import AUTH, NO_RULES, app_client, parse_rules, settings
from tests.redis_server import free_port

RULES = """
version: 1
rules:
  - name: only
    when: {project: acme/lib}
    then:
      - codeship.restart_build: {}
"""

pytestmark = pytest.mark.integration


async def test_health_ready_and_rules(client: httpx.AsyncClient) -> None:
    """/healthz is always 200; /readyz is 200 with Redis up; /rules shows the active version."""
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    rules = (await client.get("/rules", headers=AUTH)).json()
    assert rules["version"] == ready.json()["rules_version"]
    assert [r["name"] for r in rules["rules"]] == ["api-after-lib", "restart-infra", "web-after-lib"]


async def test_readyz_fails_without_rules_or_redis(redis: Redis) -> None:
    """/readyz is 503 naming the problem when the active rules file has no rule, and when Redis is unreachable;
    /healthz stays 200 in both cases (the process answers)."""
    empty = create_app(settings(), ruleset=parse_rules(NO_RULES), store=Store(redis))
    async with app_client(empty) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["rules"] == 0
        assert any("no rules are loaded" in p for p in ready.json()["problems"])
        assert (await client.get("/healthz")).status_code == 200
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    app = create_app(settings(), ruleset=parse_rules(RULES), store=Store(dead))
    try:
        async with app_client(app) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["problems"] == ["redis is not reachable"]
            assert ready.json()["rules"] == 1
            assert (await client.get("/healthz")).status_code == 200
    finally:
        await dead.aclose()
