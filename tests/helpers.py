"""Helpers shared by the test modules (a test module never imports another test module; they import this).

Rules: ``parse_rules``, ``load_rules`` and ``rules_schema`` as production calls them, with the
provider catalogue the composition roots pass; and the small builders the rules tests share.

Web and worker: the tokens and ``settings()`` most web tests use; ``app_client`` / ``post_codeship``
(the ASGI app under an httpx client, and a Codeship delivery to it); ``job_ctx``, the arq ``ctx`` a
job gets from the worker (``ctx["services"]``), for tests that run one job by hand.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from chainer import rules
from chainer.actions import catalogue
from chainer.downstream import Downstream
from chainer.errors import RulesError
from chainer.events import BuildEvent
from chainer.jobs import SERVICES, SWEEP_GRACE_MS, RetryPolicy, Services
from chainer.limits import InflightLocks
from chainer.settings import Secret, Settings
from chainer.store import Store

# ----------------------------------------------------------------------------- rules, with the catalogue


def parse_rules(text: str | bytes, source: str = "rules.yaml") -> rules.RuleSet:
    """``chainer.rules.parse_rules`` with the provider catalogue, as the app, worker and CLI call it."""
    return rules.parse_rules(text, source, catalogue=catalogue())


def load_rules(path: str | os.PathLike[str]) -> rules.RuleSet:
    """``chainer.rules.load_rules`` with the provider catalogue, as the app, worker and CLI call it."""
    return rules.load_rules(path, catalogue=catalogue())


def rules_schema() -> dict[str, Any]:
    """The JSON Schema of rules.yaml for the provider catalogue, as ``chainer schema`` prints it."""
    return rules.rules_schema(catalogue())


# ----------------------------------------------------------------------------- rules documents and events

RESTART = "[{codeship.restart_build: {}}]"
# How a problem in the one rule of ``document()`` names its rule.
R = "rule 'r' (rules[0]) "
BASE_EVENT = BuildEvent(
    provider="circleci",
    kind="workflow",
    event_id="evt_1",
    project="acme/lib",
    status="success",
    raw_status="success",
    project_id="p1",
    project_slug="gh/acme/lib",
    branch="main",
    commit="a" * 40,
    build_id=7,
    build_url="https://ci.example.org/7",
    workflow="build",
    workflow_id="wf-1",
    job="test",
    pipeline_number=3,
    occurred_at="2024-01-01T00:00:00Z",
)


def rule_event(**changes: Any) -> BuildEvent:
    """A green CircleCI workflow of acme/lib on main with every field set, with ``changes`` applied."""
    return dataclasses.replace(BASE_EVENT, **changes)


def document(when: str = "{}", then: str = RESTART, extra: str = "") -> str:
    """One rule `r`: `name` on line 3, `when` on line 4, `then` on line 5, then the ``extra`` lines."""
    return f"version: 1\nrules:\n  - name: r\n    when: {when}\n    then: {then}\n{extra}"


def problems_of(text: str | bytes) -> list[str]:
    """The problems parse_rules reports for ``text`` (the test fails if it accepts the document)."""
    with pytest.raises(RulesError) as info:
        parse_rules(text)
    return info.value.problems


def only_rule(text: str) -> rules.RuleSet:
    """parse_rules on a document that must hold exactly one rule."""
    ruleset = parse_rules(text)
    assert len(ruleset.rules) == 1
    return ruleset


# ----------------------------------------------------------------------------- web and worker

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
    ruleset: rules.RuleSet | None = None,
    locks: InflightLocks | None = None,
    retry_policy: RetryPolicy | None = None,
    sweep_grace_ms: int = SWEEP_GRACE_MS,
    job_try: int = 1,
) -> dict[str, Any]:
    """The ``ctx`` arq hands a job: the worker's Services (no rules unless given, no per-target leases
    unless ``locks``) and the try number."""
    active = ruleset or parse_rules(NO_RULES)
    services = Services(
        settings=settings,
        store=store,
        rules=lambda: active,
        downstream=downstream,
        locks=locks,
        retry_policy=retry_policy or RetryPolicy(),
        sweep_grace_ms=sweep_grace_ms,
    )
    return {SERVICES: services, "job_try": job_try}
