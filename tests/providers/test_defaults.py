"""Action defaults (DESIGN §5) end to end: a real-shaped payload of each provider goes through intake, a rules
file is evaluated and rendered, and the worker's ``run_action`` sends the action to ``httpx.MockTransport``; the
exact requests (or, when no branch or tag can be resolved, the skip in the audit log and in explain) are asserted."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from chainer.errors import RulesError
from chainer.explain import explain
from chainer.intake import Intake
from chainer.jobs import run_action
from chainer.providers import Downstream
from chainer.settings import Secret, Settings
from chainer.store import QUEUE_KEY, Store
from chainer.web.hooks import status_of
from tests import payloads
from tests.helpers import (
    API_KEY,
    BUILD,
    BUILDS_PATH,
    CIRCLE_TOKEN,
    CIRCLECI,
    CODESHIP_V1,
    ORG,
    PROJECT,
    PROJECTS_PATH,
    Recorder,
    auth_ok,
    job_ctx,
    make_settings,
    parse_rules,
    project,
    projects_page,
)

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "payloads"
HOOK = "hook-token-defaults"
WHSEC = "whsec-defaults"
SETTINGS = make_settings(hook_token=Secret(HOOK), circleci_webhook_secrets=(Secret(WHSEC),))
PIPELINE = "0f3e9b1c-2d4a-4c5b-8e6f-7a8b9c0d1e2f"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


@dataclass
class Outcome:
    """What one delivery did: intake's answer, each action's ledger and final state, the event's audit trail."""

    status_code: int
    body: dict[str, Any]
    ledgers: list[dict[str, str]]
    states: list[str]
    audit: list[dict[str, Any]]


@pytest.fixture
async def store(redis: Redis) -> AsyncIterator[Store]:
    yield Store(redis)


async def deliver(
    store: Store, rules: str, provider: str, body: dict[str, Any], rec: Recorder, settings: Settings = SETTINGS
) -> Outcome:
    """Post ``body`` as ``provider`` would (signed, or with the hook token) and run every action it queued."""
    ruleset = parse_rules(rules)
    raw, headers, token = _as_delivered(provider, body)
    reply = await Intake(settings, store, lambda: ruleset).receive(provider, headers, raw, token)
    assert status_of(reply) == 202, reply.body()
    event_id = reply.body()["event_id"]
    action_ids = json.loads(await store.get_event_field(event_id, "actions") or "[]")
    states = []
    async with rec.client() as http:
        ctx = job_ctx(store, settings, Downstream(settings, http))
        for action_id in action_ids:
            states.append(await run_action(ctx, action_id))
    ledgers = [await store.get_action(a) for a in action_ids]
    return Outcome(status_of(reply), reply.body(), ledgers, states, await store.event_audit(event_id))


def _as_delivered(provider: str, body: dict[str, Any]) -> tuple[bytes, dict[str, str], str | None]:
    if provider == "circleci" and "payload" not in body:
        raw, headers = payloads.signed(body, WHSEC)
        return raw, headers, None
    return json.dumps(body).encode(), {"content-type": "application/json"}, HOOK


def explained(rules: str, provider: str, body: dict[str, Any]) -> dict[str, Any]:
    raw, headers, _ = _as_delivered(provider, body)
    return explain(parse_rules(rules), provider, headers, raw)


def rules(*items: str) -> str:
    return "version: 1\nrules:\n" + "".join(items)


# -- Codeship: codeship.v1_restart_build ---------------------------------------------------------------------------

V1_RULES = rules(
    """
  - name: restart-newest-main-of-5555
    when: {provider: codeship, status: failed}
    then:
      - codeship.v1_restart_build: {project: 5555, branch: main}
  - name: restart-own-build
    when: {provider: codeship, status: failed}
    then:
      - codeship.v1_restart_build: {}
"""
)


async def test_codeship_v1_restart_with_project_and_branch_restarts_that_projects_newest_build(store: Store) -> None:
    """On a Codeship event, {project: 5555, branch: main} restarts 5555's newest build on main (looked up with
    API v1), not the event's build; the rule that names nothing restarts the event's own build."""
    event = load("codeship_error")
    rec = Recorder()
    newest = {"builds": [{"id": 9001, "branch": "main", "status": "error"}, {"id": 8990, "branch": "main"}]}
    rec.on("GET", "/api/v1/projects/5555.json", httpx.Response(200, json=newest))
    rec.on("POST", "/api/v1/builds/9001/restart.json", httpx.Response(200, json={"id": 9002, "uuid": "u-9002"}))
    own = event["build"]["build_id"]
    rec.on("POST", f"/api/v1/builds/{own}/restart.json", httpx.Response(200, json={"id": 9003, "uuid": "u-9003"}))

    outcome = await deliver(store, V1_RULES, "codeship", event, rec)

    assert outcome.states == ["done", "done"]
    assert [json.loads(ledger["params"]) for ledger in outcome.ledgers] == [
        {"project": 5555, "branch": "main"},
        {"build": own},
    ]
    sent = [(r.method, str(r.url)) for r in rec.requests]
    assert sent == [
        ("GET", f"{CODESHIP_V1}/api/v1/projects/5555.json?api_key={API_KEY}&branch=main"),
        ("POST", f"{CODESHIP_V1}/api/v1/builds/9001/restart.json?api_key={API_KEY}"),
        ("POST", f"{CODESHIP_V1}/api/v1/builds/{own}/restart.json?api_key={API_KEY}"),
    ]
    assert [ledger["downstream_id"] for ledger in outcome.ledgers] == ["9002", "9003"]


@pytest.mark.parametrize(
    ("then", "problem"),
    [
        ("{project: 5555}", "argument 'project' needs 'branch' too"),
        ("{branch: main}", "argument 'branch' needs 'project' too"),
        ("{build: 1, project: 5555, branch: main}", "arguments 'build' and 'project' cannot both be given"),
    ],
    ids=["project-without-branch", "branch-without-project", "build-and-project"],
)
def test_codeship_v1_restart_half_a_target_is_a_lint_error(then: str, problem: str) -> None:
    """A project without a branch (or the reverse) names no build, and a build with a project is ambiguous: lint
    says so at the action's line instead of restarting the event's build at run time."""
    text = rules(
        f"  - name: r\n    when: {{provider: codeship}}\n    then:\n      - codeship.v1_restart_build: {then}\n"
    )
    with pytest.raises(RulesError) as info:
        parse_rules(text)
    problems = info.value.problems
    assert any(
        p.startswith("rules.yaml:6: rule 'r' (rules[0]) then[0].codeship.v1_restart_build") and problem in p
        for p in problems
    ), problems


V2_RULES = rules(
    """
  - name: restart-and-chain
    when: {provider: codeship, status: failed}
    then:
      - codeship.restart_build: {}
      - codeship.trigger_build: {project: northwind/deploy}
"""
)


async def test_codeship_v2_defaults_restart_the_events_build_and_build_its_branch(store: Store) -> None:
    """On a Codeship event, restart_build {} restarts the event's own build (found by commit and branch in its
    project) and trigger_build builds the event's branch as heads/<branch>."""
    event = load("codeship_error")
    build = event["build"]
    rec = Recorder()
    rec.on("POST", "/v2/auth", auth_ok(expires_at=4_102_444_800))  # 2100: one token for both actions
    ledger_uuid, deploy_uuid = PROJECT, "7c0f9e1a-0000-4000-8000-00000000d3b1"
    listing = [
        project("northwind/ledger", ledger_uuid, build["project_id"]),
        project("northwind/deploy", deploy_uuid, 9),
    ]
    rec.on("GET", PROJECTS_PATH, projects_page(listing))
    own = {"uuid": BUILD, "commit_sha": build["commit_id"], "branch": build["branch"], "queued_at": "2026-11-19T08:00Z"}
    rec.on("GET", BUILDS_PATH, httpx.Response(200, json={"builds": [own], "page": 1, "per_page": 50, "total": 1}))
    rec.on("POST", f"{BUILDS_PATH}/{BUILD}/restart", httpx.Response(202))
    deploy_builds = f"/v2/organizations/{ORG}/projects/{deploy_uuid}/builds"
    rec.on("POST", deploy_builds, httpx.Response(202))

    outcome = await deliver(store, V2_RULES, "codeship", event, rec)

    assert outcome.states == ["done", "done"]
    assert [json.loads(ledger["params"]) for ledger in outcome.ledgers] == [
        {"project": "northwind/ledger"},
        {"project": "northwind/deploy", "ref": "heads/feature/ledger-v2"},
    ]
    posts = [(r.url.path, json.loads(r.content) if r.content else None) for r in rec.requests if r.method == "POST"]
    assert posts == [
        ("/v2/auth", {}),
        (f"{BUILDS_PATH}/{BUILD}/restart", None),
        (deploy_builds, {"ref": "heads/feature/ledger-v2"}),
    ]


# -- CircleCI outbound: a tag event ---------------------------------------------------------------------------------

TAG_RULES = rules(
    """
  - name: deploy-on-tag
    when: {provider: circleci, workflow: release, status: failed}
    then:
      - circleci.trigger_pipeline: {project: gh/northwind/deploy, parameters: {release: true, attempt: 2}}
      - circleci.v1_trigger_build: {project: github/northwind/packaging, build_parameters: {WHY: tag}}
      - circleci.trigger_pipeline: {project: gh/northwind/docs, branch: main}
"""
)


async def test_tag_event_triggers_default_to_the_events_tag(store: Store) -> None:
    """A GitHub App workflow event for tag v3.4.0: trigger_pipeline sends {"tag": ...} (not {} = default branch),
    v1_trigger_build posts the tag to the v1.1 project trigger, and a written branch wins over the event's tag."""
    event = load("circleci_workflow_completed_github_app")
    rec = Recorder()
    created = httpx.Response(201, json={"id": PIPELINE, "number": 5, "state": "created"})
    rec.on("POST", "/api/v2/project/gh/northwind/deploy/pipeline", created)
    rec.on("POST", "/api/v1.1/project/github/northwind/packaging", httpx.Response(201, json={"build_num": 61}))
    rec.on("POST", "/api/v2/project/gh/northwind/docs/pipeline", created)

    outcome = await deliver(store, TAG_RULES, "circleci", event, rec)

    assert outcome.body["matched"] == ["deploy-on-tag"] and outcome.states == ["done", "done", "done"]
    sent = [(r.method, str(r.url), json.loads(r.content)) for r in rec.requests]
    assert sent == [
        (
            "POST",
            f"{CIRCLECI}/api/v2/project/gh/northwind/deploy/pipeline",
            {"tag": "v3.4.0", "parameters": {"release": True, "attempt": 2}},
        ),
        (
            "POST",
            f"{CIRCLECI}/api/v1.1/project/github/northwind/packaging",
            {"tag": "v3.4.0", "build_parameters": {"WHY": "tag"}},
        ),
        ("POST", f"{CIRCLECI}/api/v2/project/gh/northwind/docs/pipeline", {"branch": "main"}),
    ]
    assert all(r.headers["circle-token"] == CIRCLE_TOKEN for r in rec.requests)


NO_REF_RULES = rules(
    """
  - name: chain-anything
    when: {provider: circleci, status: any}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api}
      - circleci.v1_trigger_build: {project: github/acme/pkg}
      - circleci.trigger_pipeline: {project: gh/acme/web, branch: ""}
"""
)
NO_REF = "no branch or tag to build: the rule names neither and the event has neither"


def _without_branch_or_tag() -> dict[str, Any]:
    event = copy.deepcopy(load("circleci_workflow_completed_github_app"))
    event["pipeline"]["trigger_parameters"]["git"].update({"tag": "", "branch": ""})
    return event


async def test_no_branch_and_no_tag_skips_the_trigger_with_the_reason(store: Store, redis: Redis) -> None:
    """An event with neither a branch nor a tag (a scheduled pipeline, say): the triggers are not queued but
    skipped, audited as action.skipped with the reason; no request is sent, so no default-branch build."""
    rec = Recorder()
    outcome = await deliver(store, NO_REF_RULES, "circleci", _without_branch_or_tag(), rec)

    assert outcome.body["queued"] == 0 and await redis.zcard(QUEUE_KEY) == 0
    assert outcome.states == ["skipped", "skipped", "skipped"] and rec.requests == []
    skipped = [r for r in outcome.audit if r["type"] == "action.skipped"]
    assert [r["action"] for r in skipped] == [
        "circleci.trigger_pipeline",
        "circleci.v1_trigger_build",
        "circleci.trigger_pipeline",
    ]
    assert all(NO_REF in r["reason"] and "default branch" in r["reason"] for r in skipped), skipped
    assert all(NO_REF in ledger["last_error"] for ledger in outcome.ledgers)


def test_explain_shows_the_skip_reason() -> None:
    """Explain renders the same actions with the reason they would not be sent."""
    result = explained(NO_REF_RULES, "circleci", _without_branch_or_tag())
    assert [a["action"] for a in result["actions"]] == [
        "circleci.trigger_pipeline",
        "circleci.v1_trigger_build",
        "circleci.trigger_pipeline",
    ]
    assert all(NO_REF in a["error"] for a in result["actions"]), result["actions"]
    assert result["actions"][0]["params"] == {"project": "gh/acme/api"}


# -- CircleCI legacy build payloads ---------------------------------------------------------------------------------

LEGACY_RULES = rules(
    """
  - name: downstream-of-billing
    when: {provider: circleci, project: northwind/billing}
    then:
      - circleci.trigger_pipeline: {project: gh/northwind/api}
      - circleci.v1_trigger_build: {project: github/northwind/packaging, revision: "{{ event.commit }}"}
      - circleci.v1_retry_build: {}
"""
)


async def test_legacy_branch_build_defaults_to_its_branch(store: Store) -> None:
    """A legacy build payload on main: both triggers build main, and the retry targets the payload's own build."""
    event = load("circleci_legacy_build")
    rec = Recorder()
    rec.on("POST", "/api/v2/project/gh/northwind/api/pipeline", httpx.Response(201, json={"id": PIPELINE}))
    rec.on("POST", "/api/v1.1/project/github/northwind/packaging/tree/main", httpx.Response(201, json={"build_num": 3}))
    rec.on("POST", "/api/v1.1/project/github/northwind/billing/5521/retry", httpx.Response(200, json={"build_num": 9}))

    outcome = await deliver(store, LEGACY_RULES, "circleci", event, rec)

    assert outcome.states == ["done", "done", "done"]
    commit = event["payload"]["vcs_revision"]
    sent = [(str(r.url), json.loads(r.content) if r.content else None) for r in rec.requests]
    assert sent == [
        (f"{CIRCLECI}/api/v2/project/gh/northwind/api/pipeline", {"branch": "main"}),
        (f"{CIRCLECI}/api/v1.1/project/github/northwind/packaging/tree/main", {"revision": commit}),
        (f"{CIRCLECI}/api/v1.1/project/github/northwind/billing/5521/retry", None),
    ]


async def test_legacy_tag_build_defaults_to_its_tag(store: Store) -> None:
    """A legacy build payload of a tag (vcs_tag set, no branch): the v2 trigger sends the tag; the v1.1 trigger
    cannot send a revision with a tag, so it is skipped with that reason instead of building a branch."""
    event = copy.deepcopy(load("circleci_legacy_build"))
    event["payload"].update({"branch": None, "vcs_tag": "v5.0.1"})
    rec = Recorder()
    rec.on("POST", "/api/v2/project/gh/northwind/api/pipeline", httpx.Response(201, json={"id": PIPELINE}))
    rec.on("POST", "/api/v1.1/project/github/northwind/billing/5521/retry", httpx.Response(200, json={"build_num": 9}))

    outcome = await deliver(store, LEGACY_RULES, "circleci", event, rec)

    assert outcome.states == ["done", "skipped", "done"]
    assert json.loads(rec.requests[0].content) == {"tag": "v5.0.1"}
    assert "arguments 'tag' and 'revision' cannot both be given" in outcome.ledgers[1]["last_error"]
    assert [str(r.url) for r in rec.requests] == [
        f"{CIRCLECI}/api/v2/project/gh/northwind/api/pipeline",
        f"{CIRCLECI}/api/v1.1/project/github/northwind/billing/5521/retry",
    ]


async def test_legacy_tag_build_v1_trigger_without_revision_builds_the_tag(store: Store) -> None:
    """The v1.1 trigger of a tag event, with no revision in the rule, posts {"tag": ...} to the project trigger."""
    event = copy.deepcopy(load("circleci_legacy_build"))
    event["payload"].update({"branch": None, "vcs_tag": "v5.0.1"})
    text = rules(
        "  - name: pkg\n    when: {provider: circleci}\n    then:\n"
        "      - circleci.v1_trigger_build: {project: github/northwind/packaging}\n"
    )
    rec = Recorder()
    rec.on("POST", "/api/v1.1/project/github/northwind/packaging", httpx.Response(201, json={"build_num": 4}))

    outcome = await deliver(store, text, "circleci", event, rec)

    assert outcome.states == ["done"]
    [request] = rec.requests
    assert request.url.raw_path == b"/api/v1.1/project/github/northwind/packaging"
    assert json.loads(request.content) == {"tag": "v5.0.1"}
