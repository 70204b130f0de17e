"""Canonical events through the webhook endpoints (ASGI app, real Redis): opaque CircleCI slugs give no ``project``
and rules say so, ``slug:`` clauses match them, and legacy build payloads are deduplicated per project, build
number and status, never by ``build_url`` alone."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.cli import main
from chainer.settings import Secret, Settings
from chainer.store import QUEUE_KEY, Store
from tests import payloads
from tests.helpers import parse_rules

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "payloads"
HOOK = "hook-token-canonical"
WHSEC = "whsec-canonical"
ADMIN = "admin-canonical"
CONSOLE_SLUG = "circleci/Q8mWv2rTn5bXk7LpZc3Hd9/R4tYu6IoP1aSd8FgHj2Kl0"

RULES = """
version: 1
rules:
  - name: by-project
    when: {provider: circleci, project: "re:^northwind/.*", status: failed}
    then:
      - circleci.rerun_workflow: {}
  - name: by-slug
    when: {slug: "circleci/Q8mWv2rTn5bXk7LpZc3Hd9/*", status: failed}
    then:
      - circleci.rerun_workflow: {}
  - name: by-slug-excluded
    when: {slug: {include: ["circleci/*"], exclude: ["*/R4tYu6IoP1aSd8FgHj2Kl0"]}, status: failed}
    then:
      - circleci.rerun_workflow: {}
  - name: legacy-billing
    when: {provider: circleci, project: "northwind/*", status: any}
    then:
      - circleci.v1_retry_build: {}
"""


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


@pytest.fixture
async def client(redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(hook_token=Secret(HOOK), circleci_webhook_secrets=(Secret(WHSEC),), admin_token=Secret(ADMIN))
    app = create_app(settings, ruleset=parse_rules(RULES), store=Store(redis))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://chainer.test") as c:
        yield c


async def audit_of(client: httpx.AsyncClient, event_id: str, kind: str) -> list[dict[str, Any]]:
    response = await client.get(
        "/audit", params={"event_id": event_id, "type": kind}, headers={"authorization": f"Bearer {ADMIN}"}
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# -- opaque slugs and the slug clause -------------------------------------------------------------------------------


async def test_opaque_slug_event_has_no_project_and_matches_by_slug(client: httpx.AsyncClient, redis: Redis) -> None:
    """A GitHub App workflow event (empty names, opaque slug): `project` is absent (not the slug's last two
    segments), the project rule's why-not in the audit log says so, and the slug rule matches and queues.
    (Rules are candidates by their project index; a regex project rule is checked for every event, so its
    decision is audited. Explain reports every rule, indexed or not.)"""
    body, headers = payloads.signed(load("circleci_workflow_completed_github_app"), WHSEC)
    response = await client.post("/hooks/circleci", content=body, headers=headers)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["matched"] == ["by-slug"] and answer["queued"] == 1
    assert await redis.zcard(QUEUE_KEY) == 1

    not_matched = {r["rule"]: r for r in await audit_of(client, answer["event_id"], "rule.not_matched")}
    by_project = not_matched["by-project"]
    # The record leaves out empty values: no `actual`, as there is no project.
    assert (by_project["field"], by_project["expected"], by_project.get("actual")) == (
        "project",
        "re:^northwind/.*",
        None,
    )
    assert by_project["reason"].startswith("project is absent for this event: CircleCI sent empty organization.name")
    assert f"its slug `{CONSOLE_SLUG}` is opaque" in by_project["reason"] and "`slug:`" in by_project["reason"]
    excluded = not_matched["by-slug-excluded"]
    assert excluded["field"] == "slug" and excluded["actual"] == CONSOLE_SLUG
    assert excluded["reason"] == f"slug `{CONSOLE_SLUG}` matched exclude `*/R4tYu6IoP1aSd8FgHj2Kl0`"

    [received] = await audit_of(client, answer["event_id"], "webhook.received")
    assert received.get("project") is None and received["event_id"] == answer["event_id"]


async def test_opaque_slug_event_is_explained_over_http(client: httpx.AsyncClient) -> None:
    """POST /explain reports the same reasons, the event with project null and its slug."""
    request = {"provider": "circleci", "payload": load("circleci_workflow_completed_github_app")}
    response = await client.post("/explain", json=request, headers={"authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["event"]["project"] is None and result["event"]["project_slug"] == CONSOLE_SLUG
    reasons = {r["name"]: r["reasons"][0] for r in result["rules"]}
    assert reasons["by-slug"] == "every clause matched"
    assert reasons["by-project"].startswith("project is absent for this event")


def test_cli_explain_text_shows_the_slug_and_the_missing_project(tmp_path: Path) -> None:
    """`chainer explain` (text) prints the slug and says the event has no project; the slug rule matches."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(load("circleci_workflow_completed_github_app")))
    result = CliRunner().invoke(main, ["explain", "--provider", "circleci", str(payload), "--rules", str(rules)])
    assert result.exit_code == 0, result.output
    assert f"(no project: CircleCI sent no organization/project name) slug {CONSOLE_SLUG}" in result.output
    assert "MATCH by-slug" in result.output and "no    by-project: project is absent" in result.output


def test_lint_checks_the_slug_clause(tmp_path: Path) -> None:
    """`chainer lint` accepts the slug clause and reports a bad slug regex with its rule, path and line."""
    good = tmp_path / "good.yaml"
    good.write_text(RULES)
    assert CliRunner().invoke(main, ["lint", str(good)]).exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(RULES.replace('slug: "circleci/Q8mWv2rTn5bXk7LpZc3Hd9/*"', 'slug: "re:circleci/(["'))
    result = CliRunner().invoke(main, ["lint", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:9: rule 'by-slug' (rules[1]) when.slug: bad regex 're:circleci/(['" in result.output


# -- legacy dedupe -----------------------------------------------------------------------------------------------


async def _post_legacy(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post(
        f"/hooks/circleci/{HOOK}", content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )


def _legacy(reponame: str, build_num: int, build_url: str) -> dict[str, Any]:
    body = copy.deepcopy(load("circleci_legacy_build"))
    body["payload"].update({"reponame": reponame, "build_num": build_num, "build_url": build_url})
    return body


async def test_legacy_builds_sharing_a_build_url_are_not_duplicates(client: httpx.AsyncClient, redis: Redis) -> None:
    """Two legacy payloads with one build_url but different projects or build numbers are two events, each
    accepted and queued; a redelivery of either is still a duplicate that queues nothing."""
    url = "https://circleci.com/gh/northwind/billing/5521"
    first = await _post_legacy(client, _legacy("billing", 5521, url))
    other_project = await _post_legacy(client, _legacy("payments", 5521, url))
    other_build = await _post_legacy(client, _legacy("billing", 5522, url))
    assert [r.status_code for r in (first, other_project, other_build)] == [202, 202, 202]
    ids = {r.json()["event_id"] for r in (first, other_project, other_build)}
    assert len(ids) == 3 and all(r.json()["queued"] == 1 for r in (first, other_project, other_build))
    assert await redis.zcard(QUEUE_KEY) == 3

    again = await _post_legacy(client, _legacy("billing", 5521, url))
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "event_id": first.json()["event_id"]}
    assert await redis.zcard(QUEUE_KEY) == 3


async def test_legacy_redelivery_without_a_build_url_is_a_duplicate(client: httpx.AsyncClient) -> None:
    """The key does not depend on build_url: the same build posted with and without one is one event."""
    with_url = await _post_legacy(client, _legacy("billing", 7000, "https://circleci.com/gh/northwind/billing/7000"))
    without = _legacy("billing", 7000, "")
    del without["payload"]["build_url"]
    again = await _post_legacy(client, without)
    assert with_url.status_code == 202 and again.status_code == 200
    assert again.json()["event_id"] == with_url.json()["event_id"]


async def test_legacy_new_status_of_the_same_build_is_a_new_event(client: httpx.AsyncClient) -> None:
    """The status is part of the key: the same build reported running then fixed is two events."""
    running = _legacy("billing", 7100, "https://circleci.com/gh/northwind/billing/7100")
    running["payload"].update({"status": "running", "outcome": None, "lifecycle": "running"})
    finished = _legacy("billing", 7100, "https://circleci.com/gh/northwind/billing/7100")
    first, second = await _post_legacy(client, running), await _post_legacy(client, finished)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["event_id"] != second.json()["event_id"]
