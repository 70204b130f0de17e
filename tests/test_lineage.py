"""Lineage and the loop guard on an A → B → A chain across Codeship and CircleCI, and GET /chains."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chainer.app import create_app
from chainer.jobs import run_action
from chainer.providers import Downstream
from chainer.settings import Secret, Settings
from chainer.store import Store
from tests import payloads
from tests.helpers import job_ctx, parse_rules

pytestmark = pytest.mark.integration

RULES = """
version: 1
max_depth: 3
rules:
  - name: a-to-b
    when: {provider: codeship, project: acme/a, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/b, branch: "{{ event.branch }}"}
  - name: b-to-a
    when: {provider: circleci, project: acme/b, status: success}
    then:
      - codeship.trigger_build: {project: acme/a, ref: "heads/{{ event.branch }}"}
"""
SETTINGS = Settings(
    hook_token=Secret("hook"),
    circleci_webhook_secrets=(Secret("whsec"),),
    admin_token=Secret("adm"),
    circleci_token=Secret("cci"),
    circleci_url="https://circleci.example",
    codeship_user="ci@example.org",
    codeship_password=Secret("pw"),
    codeship_url="https://codeship.example",
)


class Providers:
    """Both providers' APIs as chainer calls them, recording each request and numbering pipelines."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.pipelines = (f"pipeline-{n}" for n in itertools.count(1))

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/v2/auth":
            org = {"uuid": "org-1", "name": "acme", "scopes": ["build.write", "project.read"]}
            return httpx.Response(200, json={"access_token": "t", "expires_at": 9999999999, "organizations": [org]})
        if path.endswith("/projects"):
            project = {"uuid": "11111111-2222-4333-8444-555555555555", "id": 5, "name": "acme/a"}
            return httpx.Response(200, json={"projects": [project], "page": 1, "per_page": 50, "total": 1})
        if path.endswith("/builds"):
            return httpx.Response(202)
        if path.endswith("/pipeline"):
            body = {"id": next(self.pipelines), "state": "created", "number": 1, "created_at": "2026-11-20T10:00:00Z"}
            return httpx.Response(201, json=body)
        return httpx.Response(404, json={"message": "not here"})


async def test_loop_guard_stops_an_a_b_a_chain_and_chains_shows_the_tree(redis: Redis) -> None:
    """Each chained build inherits its cause's lineage; the action past max_depth is skipped with the path."""
    store = Store(redis)
    app = create_app(SETTINGS, ruleset=parse_rules(RULES), store=store)
    providers = Providers()
    http = httpx.AsyncClient(transport=httpx.MockTransport(providers.handle))
    ctx = job_ctx(store, SETTINGS, Downstream(SETTINGS, http))
    events: list[str] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:

        async def codeship_a(build_id: int) -> dict[str, Any]:
            body = json.dumps(payloads.codeship("success", project="acme/a", build_id=build_id)).encode()
            answer = await client.post(
                "/hooks/codeship/hook", content=body, headers={"content-type": "application/json"}
            )
            assert answer.status_code == 202, answer.text
            events.append(answer.json()["event_id"])
            return dict(answer.json())

        async def circleci_b(pipeline: str, delivery: str) -> dict[str, Any]:
            payload = payloads.circleci_workflow("success", repo="b", delivery=delivery, workflow_id=delivery + "-wf")
            payload["pipeline"]["id"] = pipeline
            body, headers = payloads.signed(payload, "whsec")
            answer = await client.post("/hooks/circleci", content=body, headers=headers)
            assert answer.status_code == 202, answer.text
            events.append(answer.json()["event_id"])
            return dict(answer.json())

        first = await codeship_a(1)
        assert await run_action(ctx, f"{first['event_id']}:a-to-b:0") == "done"
        second = await circleci_b("pipeline-1", "d-1")
        assert await run_action(ctx, f"{second['event_id']}:b-to-a:0") == "done"
        third = await codeship_a(2)
        assert third["queued"] == 1
        assert await run_action(ctx, f"{third['event_id']}:a-to-b:0") == "done"
        fourth = await circleci_b("pipeline-2", "d-2")
        assert fourth["matched"] == ["b-to-a"] and fourth["queued"] == 0
        stranger = await circleci_b("pipeline-unknown", "d-3")
        assert stranger["queued"] == 1

        auth = {"authorization": "Bearer adm"}
        view = (await client.get(f"/events/{fourth['event_id']}", headers=auth)).json()
        assert view["event"]["chain"][0]["event_id"] == first["event_id"] and len(view["event"]["chain"]) == 3
        skipped = [r for r in view["audit"] if r["type"] == "action.skipped"]
        assert skipped[0]["reason"] == "loop guard: acme/a → acme/b → acme/a → acme/b → acme/a, depth 4 > 3"
        tree = (await client.get(f"/chains/{fourth['event_id']}", headers=auth)).json()
        chains = (await client.get(f"/chains/{stranger['event_id']}", headers=auth)).json()
    await http.aclose()
    assert tree["root"] == first["event_id"] and [link["rule"] for link in tree["path"]] == [
        "a-to-b",
        "b-to-a",
        "a-to-b",
    ]
    node = tree["tree"]
    walked = []
    while node:
        walked.append((node["project"], node["depth"]))
        builds = [b for a in node["actions"] for b in a["builds"]]
        node = builds[0] if builds else None
    assert walked == [("acme/a", 0), ("acme/b", 1), ("acme/a", 2), ("acme/b", 3)]
    assert chains["root"] == stranger["event_id"] and chains["path"] == []
    pipelines = [r for r in providers.requests if r.url.path.endswith("/pipeline")]
    assert len(pipelines) == 2


def test_lint_reports_each_cycle_with_the_depth_that_stops_it() -> None:
    """The project graph's cycles are listed with their rules and the max_depth that cuts them."""
    ruleset = parse_rules(RULES)
    [cycle] = ruleset.cycles()
    assert cycle.projects == ("acme/a", "acme/b", "acme/a") and cycle.rules == ("a-to-b", "b-to-a")
    assert cycle.max_depth == 3
    assert "acme/a → acme/b → acme/a (rules a-to-b, b-to-a), stopped at depth 3" in ruleset.summary()
    own = parse_rules(
        "version: 1\nrules:\n"
        "  - {name: again, when: {provider: codeship, status: error}, then: [{codeship.restart_build: {}}],"
        " max_depth: 2}\n"
        "  - {name: self, when: {project: acme/x}, then: [{codeship.trigger_build: {project: acme/x}}]}\n"
    )
    assert [c.text() for c in own.cycles()] == [
        "(any project) → (any project) (rules again), stopped at depth 2",
        "acme/x → acme/x (rules self), stopped at depth 5",
    ]


def test_pass_chain_adds_the_lineage_as_a_pipeline_parameter() -> None:
    """With pass_chain: true the pipeline gets `chainer_chain`: the cause's chain and this rule, deepest last."""
    from chainer.events import BuildEvent, ChainLink

    ruleset = parse_rules(
        "version: 1\nrules:\n  - name: chained\n    when: {project: acme/a}\n    then:\n"
        "      - circleci.trigger_pipeline: {project: gh/acme/b, branch: main, pass_chain: true,"
        " parameters: {x: '1'}}\n"
    )
    cause = (ChainLink("evt_1", "first", "acme/z", "evt_1:first:0"),)
    event = BuildEvent(
        provider="codeship",
        kind="build",
        event_id="evt_2",
        project="acme/a",
        status="success",
        raw_status="success",
        chain=cause,
    )
    [decision] = ruleset.evaluate(event)
    [action] = decision.actions
    assert action.error is None and "pass_chain" not in action.params
    assert action.params["parameters"] == {"x": "1", "chainer_chain": "evt_1:first evt_2:chained"}
