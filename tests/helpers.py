"""Helpers shared by the test modules (test modules never import each other; they import this).

- tokens and ``settings()``: the hook token, CircleCI webhook secrets and admin token most web tests use;
- ``app_client`` / ``post_codeship``: the ASGI app under an httpx client, and a Codeship delivery to it;
- ``job_ctx``: the arq ``ctx`` a job gets from the worker (``ctx["services"]``), for tests that run one job by hand.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from starlette.types import ASGIApp

from chainer.downstream import Downstream
from chainer.jobs import SERVICES, SWEEP_GRACE_MS, RetryPolicy, Services
from chainer.limits import InflightLocks
from chainer.rules import RuleSet, parse_rules
from chainer.settings import Secret, Settings
from chainer.store import Store

HOOK = "hook-token-123"
WHSEC = "whsec-456"
ADMIN = "admin-789"
AUTH = {"authorization": f"Bearer {ADMIN}"}
JSON = {"content-type": "application/json"}
NO_RULES = "version: 1\nrules: []\n"


def settings(**overrides: Any) -> Settings:
    """Settings with the hook token ``HOOK``, the CircleCI webhook secrets ``older`` and ``WHSEC`` (a rotation)
    and the admin token ``ADMIN``; ``overrides`` replace or add fields."""
    base: dict[str, Any] = {
        "hook_token": Secret(HOOK),
        "circleci_webhook_secrets": (Secret("older"), Secret(WHSEC)),
        "admin_token": Secret(ADMIN),
    }
    return Settings(**(base | overrides))


def app_client(app: ASGIApp, base_url: str = "http://chainer.test") -> httpx.AsyncClient:
    """An httpx client that sends its requests to ``app`` through ASGI (no socket)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def post_codeship(client: httpx.AsyncClient, body: Any, token: str | None = HOOK, **kw: Any) -> httpx.Response:
    """POST ``body`` as a Codeship delivery, the token as a path segment (none when ``token`` is None)."""
    url = f"/hooks/codeship/{token}" if token else "/hooks/codeship"
    return await client.post(url, content=json.dumps(body).encode(), headers=JSON, **kw)


def job_ctx(
    store: Store,
    settings: Settings,
    downstream: Downstream,
    *,
    ruleset: RuleSet | None = None,
    locks: InflightLocks | None = None,
    retry_policy: RetryPolicy | None = None,
    sweep_grace_ms: int = SWEEP_GRACE_MS,
    job_try: int = 1,
) -> dict[str, Any]:
    """The ``ctx`` arq hands a job: the worker's Services (no rules unless given, no per-target leases
    unless ``locks``) and the try number."""
    rules = ruleset or parse_rules(NO_RULES)
    services = Services(
        settings=settings,
        store=store,
        rules=lambda: rules,
        downstream=downstream,
        locks=locks,
        retry_policy=retry_policy or RetryPolicy(),
        sweep_grace_ms=sweep_grace_ms,
    )
    return {SERVICES: services, "job_try": job_try}
