"""POST /hooks/github through the ASGI app into a real Redis: accepted, duplicate (redelivery, or the same run through
an organisation hook and a repository hook), a re-run attempt as a new event, form-encoded bodies, refusals, pings with
their warning in the audit log; explain (HTTP and CLI), lint and the schema know GitHub's actions and events."""

from __future__ import annotations

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
from chainer.store import Store
from tests.helpers import ADMIN, AUTH, parse_rules, rules_schema
from tests.providers.github.support import RUN_ID, SECRET, delivery, ping, workflow_job, workflow_run

pytestmark = pytest.mark.integration

SETTINGS = Settings(github_webhook_secrets=(Secret(SECRET),), admin_token=Secret(ADMIN), hook_token=Secret("hook"))
RULES = """
version: 1
rules:
  - name: rerun-failures
    when: {provider: github, kind: workflow, project: acme/lib, status: failed}
    then:
      - github.rerun_workflow_run: {}
  - name: deploy-on-green
    when: {provider: github, project: acme/lib, workflow: CI, status: success}
    then:
      - github.dispatch_workflow: {repo: acme/site, workflow: deploy.yml, inputs: {sha: "{{ event.commit }}"}}
"""


@pytest.fixture
async def client(redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(SETTINGS, ruleset=parse_rules(RULES), store=Store(redis))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://chainer.test") as http:
        yield http


async def post(
    client: httpx.AsyncClient, payload: dict[str, Any], event: str = "workflow_run", **kw: Any
) -> httpx.Response:
    body, headers = delivery(payload, event, **kw)
    return await client.post("/hooks/github", content=body, headers=headers)


async def audit(client: httpx.AsyncClient, **query: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await client.get("/audit", params=query, headers=AUTH)).json()["items"]
    return items


async def test_a_failed_run_is_accepted_once_however_many_hooks_deliver_it(client: httpx.AsyncClient) -> None:
    first = await post(client, workflow_run("failure"))
    assert first.status_code == 202, first.text
    assert (first.json()["matched"], first.json()["queued"]) == (["rerun-failures"], 1)
    event_id = first.json()["event_id"]
    again = await post(client, workflow_run("failure"))  # a redelivery: the same GUID
    org_hook = await post(client, workflow_run("failure"), hook_id="11111", guid="1c0e0f7a-aaaa-11e3-81ab-4c9367dc0958")
    for answer in (again, org_hook):
        assert (answer.status_code, answer.json()) == (200, {"status": "duplicate", "event_id": event_id})
    second_attempt = await post(client, workflow_run("failure", attempt=2), guid="2d1f1a8b-bbbb-11e3-81ab-4c9367dc0958")
    assert second_attempt.status_code == 202 and second_attempt.json()["event_id"] != event_id
    view = (await client.get(f"/events/{event_id}", headers=AUTH)).json()
    assert view["event"]["provider"] == "github" and view["event"]["build_id"] == RUN_ID
    [action] = view["actions"]
    assert action["params"] == {"repo": "acme/lib", "run": RUN_ID, "failed_only": True}  # defaults from the event
    [received] = [r for r in await audit(client, event_id=event_id) if r["type"] == "webhook.received"]
    assert received["delivery"] == "github:delivery:72d3162e-cc78-11e3-81ab-4c9367dc0958:hook:292430182"


async def test_form_encoded_deliveries_are_accepted(client: httpx.AsyncClient) -> None:
    answer = await post(client, workflow_run("success"), form=True)
    assert answer.status_code == 202, answer.text
    assert answer.json()["matched"] == ["deploy-on-green"]
    view = (await client.get(f"/events/{answer.json()['event_id']}", headers=AUTH)).json()
    [action] = view["actions"]
    assert action["params"] == {
        "repo": "acme/site",
        "workflow": "deploy.yml",
        "ref": "main",
        "inputs": {"sha": "3484a3fb816e0859fd6e1cea078d76385ff50625"},
    }


async def test_refusals_are_4xx_naming_the_problem_and_audited(client: httpx.AsyncClient) -> None:
    unsigned = await post(client, workflow_run("failure"), secret=None)
    wrong = await post(client, workflow_run("failure"), secret="not-the-secret")
    assert (unsigned.status_code, wrong.status_code) == (401, 401)
    assert unsigned.json()["error"] == "missing X-Hub-Signature-256 header (give the GitHub webhook a secret)"
    body, headers = delivery(b"[]")
    not_object = await client.post("/hooks/github", content=body, headers=headers)
    assert (not_object.status_code, not_object.json()["error"]) == (400, "body must be a JSON object, got an array")
    body, headers = delivery(workflow_run("failure"))
    plain = await client.post("/hooks/github", content=body, headers={**headers, "content-type": "text/plain"})
    assert plain.status_code == 415
    assert (await client.post("/hooks/github/hook", content=body, headers=headers)).status_code == 404
    rejected = await audit(client, type="webhook.rejected")
    assert [(r["provider"], r["http_status"]) for r in rejected][:2] == [("github", 401), ("github", 401)]
    assert SECRET not in json.dumps(rejected)


async def test_pings_are_ignored_with_a_warning_in_the_audit_log(client: httpx.AsyncClient) -> None:
    good = await post(client, ping(), "ping")
    assert (good.status_code, good.json()) == (202, {"status": "ignored", "reason": "GitHub ping from hook 109948940"})
    unsubscribed = await post(client, ping(["push"]), "ping")
    formed = await post(client, ping(content_type="form"), "ping", form=True)
    for answer in (unsubscribed, formed):
        assert answer.status_code == 202 and "WARNING" in answer.json()["reason"]
    reasons = [r["reason"] for r in await audit(client, type="webhook.ignored")]
    assert reasons[0] == "GitHub ping from hook 109948940"
    assert "WARNING: the hook is not subscribed to workflow_run events" in reasons[1]
    assert "WARNING: the hook sends form bodies; set its content type to application/json" in reasons[2]


async def test_unfinished_runs_and_other_events_are_ignored(client: httpx.AsyncClient) -> None:
    running = await post(client, workflow_run(None, action="in_progress", status="in_progress"))
    assert running.status_code == 202 and running.json()["status"] == "ignored"
    assert "is not final and no rule asks for it" in running.json()["reason"]
    push = await post(client, {"ref": "refs/heads/main"}, "push")
    assert push.json() == {
        "status": "ignored",
        "reason": "GitHub event 'push' is not one chainer reads; subscribe the hook to Workflow runs",
    }
    job = await post(client, workflow_job("failure"), "workflow_job")
    assert job.status_code == 202 and job.json()["matched"] == []  # a job event: no rule of kind job here


async def test_explain_over_http_shows_the_rendered_defaults(client: httpx.AsyncClient) -> None:
    body = json.dumps(workflow_run("failure"))
    answer = await client.post(
        "/explain",
        json={"provider": "github", "body": body, "headers": {"X-GitHub-Event": "workflow_run"}},
        headers=AUTH,
    )
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["event"]["status"] == "failed" and result["event"]["raw_status"] == "completed/failure"
    assert result["actions"] == [
        {
            "rule": "rerun-failures",
            "action": "github.rerun_workflow_run",
            "params": {"repo": "acme/lib", "run": RUN_ID, "failed_only": True},
        }
    ]


def test_the_cli_explains_lints_and_describes_github(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    payload = tmp_path / "run.json"
    payload.write_text(json.dumps(workflow_run("success")))
    runner = CliRunner()
    explained = runner.invoke(main, ["explain", "--provider", "github", str(payload), "--rules", str(rules), "--json"])
    assert explained.exit_code == 0, explained.output
    assert json.loads(explained.output)["actions"][0]["action"] == "github.dispatch_workflow"
    form = tmp_path / "form.txt"
    form.write_bytes(delivery(workflow_run("success"), form=True)[0])
    with_header = runner.invoke(
        main,
        [
            "explain",
            "--provider",
            "github",
            str(form),
            "--rules",
            str(rules),
            "--header",
            "Content-Type:application/x-www-form-urlencoded",
            "--json",
        ],
    )
    assert with_header.exit_code == 0 and json.loads(with_header.output)["event"]["status"] == "success"
    assert runner.invoke(main, ["lint", str(rules)]).exit_code == 0
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "version: 1\nrules:\n  - name: b\n    when: {provider: codeship}\n    then:\n"
        "      - github.dispatch_workflow: {ref: main}\n      - github.rerun_workflow_run: {repo: acme/lib}\n"
    )
    linted = runner.invoke(main, ["lint", str(broken)])
    assert linted.exit_code == 1
    assert "then[0].github.dispatch_workflow: missing required argument 'workflow'" in linted.output
    assert "then[0].github.dispatch_workflow: argument 'repo' has no default for codeship events" in linted.output
    assert "then[1].github.rerun_workflow_run: argument 'run' has no default for codeship events" in linted.output
    schema = rules_schema()
    dispatch = schema["$defs"]["github.dispatch_workflow"]
    assert list(dispatch["properties"]) == ["repo", "workflow", "ref", "inputs", "pass_chain"]
    assert dispatch["properties"]["inputs"]["maxProperties"] == 25
    assert "github" in schema["$defs"]["clause"]["properties"]["provider"]["anyOf"][0]["enum"]
