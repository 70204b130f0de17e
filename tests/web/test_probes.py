"""The probes /healthz and /readyz (and the active rules they report), through ASGI against a real Redis."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import AUTH

pytestmark = pytest.mark.integration


async def test_health_ready_and_rules(client: httpx.AsyncClient) -> None:
    """/healthz is always 200; /readyz is 200 with Redis up; /rules shows the active version."""
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    rules = (await client.get("/rules", headers=AUTH)).json()
    assert rules["version"] == ready.json()["rules_version"]
    assert [r["name"] for r in rules["rules"]] == ["api-after-lib", "restart-infra", "web-after-lib"]
