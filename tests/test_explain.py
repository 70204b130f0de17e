"""Explain: the stable JSON shape, every clause's reason, offline CLI and POST /explain storing nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.cli import main
from chainer.explain import explain
from chainer.settings import Secret, Settings
from chainer.store import Store
from tests import payloads
from tests.helpers import parse_rules

RULES = """
version: 1
rules:
  - name: by-provider
    when: {provider: codeship}
    then: [{circleci.trigger_pipeline: {project: gh/acme/api}}]
  - name: by-kind
    when: {kind: job}
    then: [{circleci.trigger_pipeline: {project: gh/acme/api}}]
  - name: by-project
    when: {project: "acme/other-*"}
    then: [{circleci.trigger_pipeline: {project: gh/acme/api}}]
  - name: by-status
    when: {status: not_success}
    then: [{circleci.trigger_pipeline: {project: gh/acme/api}}]
  - name: by-branch
    when: {branch: {include: ["*"], exclude: ["ma*"]}}
    then: [{circleci.trigger_pipeline: {project: gh/acme/api}}]
  - name: by-tag
    when: {tag: "v*"}
    then: [{circleci.trigger_pipeline: {project: gh/acme/api}}]
  - name: by-workflow
    when: {workflow: "re:^deploy-.*"}
    then: [{circleci.trigger_pipeline: {project: gh/acme/api}}]
  - name: by-job
    when: {job: [lint, test]}
    then: [{circleci.trigger_pipeline: {project: gh/acme/api}}]
  - name: fires
    when: {project: acme/lib, branch: main, workflow: build-and-test}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api, parameters: {sha: "{{ event.commit }}"}}
      - circleci.trigger_pipeline: {project: gh/acme/web, tag: "{{ event.tag }}"}
"""

EXPECTED_REASONS = {
    "by-provider": "provider `circleci` is not `codeship`",
    "by-kind": "kind `workflow` is not `job`",
    "by-project": "project `acme/lib` does not match `acme/other-*`",
    "by-status": "status `success` (raw `success`) is not one of canceled, error, failed",
    "by-branch": "branch `main` matched exclude `ma*`",
    "by-tag": "tag is empty for this event; the rule wants `v*`",
    "by-workflow": "workflow `build-and-test` does not match `re:^deploy-.*`",
    "by-job": "job is empty for this event; the rule wants `lint`, `test`",
    "fires": "every clause matched",
}


def _result() -> dict[str, Any]:
    body = json.dumps(payloads.circleci_workflow("success")).encode()
    return explain(parse_rules(RULES), "circleci", {"circleci-event-type": "workflow-completed"}, body)


def test_explain_reports_the_first_failing_clause_of_every_rule() -> None:
    """Each clause type gives its own sentence, and the matching rule says every clause matched."""
    result = _result()
    assert {r["name"]: r["reasons"][0] for r in result["rules"]} == EXPECTED_REASONS
    assert [r["name"] for r in result["rules"] if r["matched"]] == ["fires"]
    branch = next(r for r in result["rules"] if r["name"] == "by-branch")
    assert branch["mismatch"] == {
        "field": "branch",
        "expected": {"include": ["*"], "exclude": ["ma*"]},
        "actual": "main",
    }


def test_explain_json_shape_is_stable() -> None:
    """The top-level keys and the keys of rules and actions are the documented, stable ones."""
    result = _result()
    assert set(result) == {"rules_version", "event", "rules", "actions"}
    assert {"name", "matched", "reasons"} <= set(result["rules"][0])
    assert result["event"]["project"] == "acme/lib" and result["event"]["commit"] == payloads.COMMIT
    assert result["actions"][0] == {
        "rule": "fires",
        "action": "circleci.trigger_pipeline",
        "params": {"project": "gh/acme/api", "branch": "main", "parameters": {"sha": payloads.COMMIT}},
    }
    assert result["actions"][1]["error"] == "argument 'tag': event.tag is empty for this event"


def test_explain_of_a_ping_says_it_is_ignored() -> None:
    """A ping explains as ignored, with no event and no rules evaluated."""
    result = explain(parse_rules(RULES), "circleci", {}, json.dumps(payloads.circleci_ping()).encode())
    assert result["event"] is None and "ping" in result["ignored"].lower()


def test_cli_explain_json_and_text(tmp_path: Path) -> None:
    """`chainer explain --json` prints the same JSON as the library; without --json a readable summary."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(payloads.circleci_workflow("success")))
    args = [
        "explain",
        "--provider",
        "circleci",
        str(payload),
        "--rules",
        str(rules),
        "--header",
        "circleci-event-type: workflow-completed",
    ]
    as_json = CliRunner().invoke(main, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == _result()
    text = CliRunner().invoke(main, args)
    assert "MATCH fires" in text.output and "branch `main` matched exclude `ma*`" in text.output


def test_cli_explain_bad_payload_and_header(tmp_path: Path) -> None:
    """A payload that is not a known shape, or a malformed --header, exits non-zero naming the problem."""
    payload = tmp_path / "payload.json"
    payload.write_text('{"build": {}}')
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    bad = CliRunner().invoke(main, ["explain", "--provider", "codeship", str(payload), "--rules", str(rules)])
    assert bad.exit_code == 1 and "build." in bad.output
    header = CliRunner().invoke(main, ["explain", "--provider", "codeship", str(payload), "--header", "nocolon"])
    assert header.exit_code == 2 and "NAME:VALUE" in header.output


@pytest.mark.integration
async def test_post_explain_stores_and_sends_nothing(redis: Redis) -> None:
    """POST /explain answers the explanation behind the admin token and leaves Redis untouched."""
    app = create_app(Settings(admin_token=Secret("adm")), ruleset=parse_rules(RULES), store=Store(redis))
    request = {
        "provider": "circleci",
        "payload": payloads.circleci_workflow("success"),
        "headers": {"circleci-event-type": "workflow-completed"},
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        denied = await client.post("/explain", json=request)
        answer = await client.post("/explain", json=request, headers={"authorization": "Bearer adm"})
        bad = await client.post("/explain", json={"provider": "x"}, headers={"authorization": "Bearer adm"})
        broken = await client.post(
            "/explain",
            json={"provider": "codeship", "body": "{nope"},
            headers={"authorization": "Bearer adm"},
        )
    assert denied.status_code == 401
    assert answer.status_code == 200 and answer.json() == _result()
    assert bad.status_code == 400 and "provider" in bad.json()["error"]
    assert broken.status_code == 400
    assert await redis.dbsize() == 0


async def test_explain_says_why_a_delivery_is_ignored_as_the_intake_audits_it(redis: Redis) -> None:
    """A running build no rule asks for: POST /explain's ``ignored`` is the reason the delivery's
    ``webhook.ignored`` record gives when the same body is delivered."""
    rules = parse_rules(RULES.split("  - name: by-kind")[0])  # one rule: any Codeship build, green (the default)
    app = create_app(Settings(admin_token=Secret("adm"), hook_token=Secret("hook")), ruleset=rules, store=Store(redis))
    body = payloads.codeship("testing")
    admin = {"authorization": "Bearer adm"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        explained = await client.post("/explain", json={"provider": "codeship", "payload": body}, headers=admin)
        delivered = await client.post("/hooks/codeship/hook", json=body)
        audited = await client.get("/audit", params={"type": "webhook.ignored"}, headers=admin)
    assert delivered.status_code == 202 and delivered.json()["status"] == "ignored", delivered.text
    (record,) = audited.json()["items"]
    assert explained.json()["ignored"] == record["reason"] == delivered.json()["reason"]
    assert "raw `testing`" in record["reason"]
