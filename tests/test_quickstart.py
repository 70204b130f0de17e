"""The README's quick start as written: `chainer run --sandbox`, then its curl commands post the shipped examples.

Every example in `examples/` is in the README, and each one's action ends in `attempt.succeeded`: the sandbox knows
the upstream projects, builds, jobs and workflows the examples and `rules.yaml` refer to.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from chainer.providers import Downstream
from chainer.sandbox import SandboxState, create_sandbox_app, example_events, seed_sandbox
from chainer.settings import Secret, Settings
from tests.helpers import load_rules
from tests.processes import chainer_process
from tests.redis_server import free_port

REPO = Path(__file__).resolve().parents[1]
HOOK, ADMIN = "hook-quickstart", "admin-quickstart"
EXAMPLE = re.compile(r"--data @(examples/[\w.-]+\.json)")


def quick_start() -> tuple[list[str], dict[str, str]]:
    """The README block that posts the examples: its commands (continuation lines joined, comments dropped) and,
    for each example file, the rule its comment names."""
    blocks = re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    [block] = [b for b in blocks if EXAMPLE.search(b)]
    lines = block.replace("\\\n", " ").splitlines()
    rules: dict[str, str] = {}
    for comment, command in itertools.pairwise(lines):
        named = re.search(r"→ rule ([a-z0-9-]+)", comment)
        posted = EXAMPLE.search(command)
        if comment.startswith("#") and named and posted:
            rules[posted.group(1)] = named.group(1)
    return [line.strip() for line in lines if line.strip().startswith("curl ")], rules


def test_the_quick_start_posts_every_shipped_example_and_names_its_rule() -> None:
    """Each file in examples/ is posted by one README command whose comment names the rule it demonstrates."""
    commands, rules = quick_start()
    posted = [m.group(1) for c in commands if (m := EXAMPLE.search(c))]
    shipped = sorted(f"examples/{p.name}" for p in (REPO / "examples").glob("*.json"))
    assert sorted(posted) == shipped and len(shipped) == 4
    assert sorted(rules) == shipped
    names = {rule.name for rule in load_rules(REPO / "rules.yaml").rules}
    assert set(rules.values()) <= names


async def test_every_action_the_rules_take_on_the_examples_succeeds_against_the_seeded_sandbox() -> None:
    """Seeded from rules.yaml and examples/, the sandbox lets chainer's own client carry out every action the rules
    render for each example (the Codeship restart looks its build up, the v1.1 retry needs build 318)."""
    events, problems = example_events(REPO / "examples")
    ruleset = load_rules(REPO / "rules.yaml")
    state = SandboxState()
    assert problems + seed_sandbox(state, ruleset, events) == []
    assert len(events) == 4
    codeship_ids = [e.project_id for e in events if e.provider == "codeship"]
    assert len(set(codeship_ids)) == len(codeship_ids) == 3  # distinct numeric project ids
    settings = Settings(
        codeship_url="http://sandbox",
        codeship_v1_url="http://sandbox",
        circleci_url="http://sandbox",
        codeship_user=state.codeship_user,
        codeship_password=Secret(state.codeship_password),
        codeship_api_key=Secret(state.codeship_api_key),
        circleci_token=Secret(state.circleci_token),
        github_url="http://sandbox",
        github_token=Secret(state.github.token),
    )
    done: dict[str, list[tuple[str, int]]] = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_sandbox_app(state))) as http:
        downstream = Downstream(settings, http)
        for event in events:
            actions = [a for d in ruleset.evaluate(event) if d.matched for a in d.actions]
            assert actions and all(a.error is None for a in actions), (event.project, actions)
            results = [await downstream.execute(a.action, a.params, event) for a in actions]
            done[event.project] = [(a.action, r.status) for a, r in zip(actions, results, strict=True)]
    assert done == {
        "acme/web": [("codeship.trigger_build", 202)],
        "acme/lib": [("codeship.restart_build", 202)],
        "acme/e2e": [("circleci.v1_retry_build", 200)],
        "acme/docs": [("github.dispatch_workflow", 200)],  # 200 with the run's id (return_run_details)
    }


def _audit(base: str, event_id: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{base}/audit", params={"event_id": event_id}, headers={"authorization": f"Bearer {ADMIN}"})
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def _settled(records: list[dict[str, Any]]) -> bool:
    types = [r["type"] for r in records]
    ends = sum(types.count(t) for t in ("attempt.succeeded", "action.dead", "action.skipped"))
    return types.count("action.queued") > 0 and ends >= types.count("action.queued")


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's commands are curl commands")
def test_the_quick_start_as_written_ends_every_example_in_attempt_succeeded(redis_url: str) -> None:
    """`chainer run --sandbox` in the checkout, then the README's curl commands, run by bash with only the ports
    changed: each example is accepted by the rule its comment names and its action ends in `attempt.succeeded`."""
    port, sandbox_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINER_")}
    env |= {"CHAINER_REDIS_URL": redis_url, "CHAINER_HOOK_TOKEN": HOOK, "CHAINER_ADMIN_TOKEN": ADMIN}
    base, sandbox = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sandbox_port}"
    args = ["run", "--sandbox", "--port", str(port), "--sandbox-port", str(sandbox_port)]
    commands, rules = quick_start()

    def sh(command: str) -> str:
        """Run a README command as a user would, in the checkout, with $H and $A set and this test's ports."""
        local = command.replace("127.0.0.1:8000", base[7:]).replace("127.0.0.1:8001", sandbox[7:])
        done = subprocess.run(
            ["bash", "-c", local], cwd=REPO, env={**env, "H": HOOK, "A": ADMIN}, capture_output=True, timeout=30
        )
        assert done.returncode == 0, (command, done.stderr)
        return done.stdout.decode()

    answers: dict[str, dict[str, Any]] = {}
    with chainer_process(args, REPO, env, [f"{base}/readyz", f"{sandbox}/_sandbox/requests"]) as running:
        for command in commands:
            output = sh(command)
            if posted := EXAMPLE.search(command):
                answers[posted.group(1)] = json.loads(output)
        assert {example: (a["status"], a["matched"]) for example, a in answers.items()} == {
            example: ("accepted", [rule]) for example, rule in rules.items()
        }
        deadline = time.monotonic() + 60
        audits = {example: _audit(base, a["event_id"]) for example, a in answers.items()}
        while not all(map(_settled, audits.values())) and time.monotonic() < deadline:
            time.sleep(0.2)
            audits = {example: _audit(base, a["event_id"]) for example, a in answers.items()}
        again = json.loads(sh(next(c for c in commands if EXAMPLE.search(c))))
        recorded = httpx.get(f"{sandbox}/_sandbox/requests", timeout=5).json()
        retry_event = answers["examples/circleci-legacy-failed.json"]["event_id"]
        view = httpx.get(f"{base}/events/{retry_event}", headers={"authorization": f"Bearer {ADMIN}"}).json()
    for example, records in audits.items():
        outcomes = [(r["type"], r.get("rule")) for r in records if r["type"].startswith(("attempt.", "action.dead"))]
        assert outcomes == [("attempt.started", rules[example]), ("attempt.succeeded", rules[example])], example
    assert again["status"] == "duplicate"
    assert all(200 <= r["status"] < 300 for r in recorded), recorded
    calls = [r["action"] for r in recorded]
    for action in (
        "codeship.trigger_build",
        "codeship.restart_build",
        "circleci.v1_retry_build",
        "github.dispatch_workflow",
    ):
        assert calls.count(action) == 1, calls
    [retry] = [r for r in recorded if r["action"] == "circleci.v1_retry_build"]
    assert retry["path"] == "/api/v1.1/project/github/acme/e2e/318/retry"
    assert [(a["state"], a["downstream_id"]) for a in view["actions"]] == [("done", "319")]
    [dispatch] = [r for r in recorded if r["action"] == "github.dispatch_workflow"]
    assert dispatch["path"] == "/repos/acme/docs-site/actions/workflows/deploy.yml/dispatches"
    assert dispatch["body"] == {
        "ref": "main",
        "inputs": {"upstream_sha": "4b8e2f0c1d9a7e6b5c3f2a1908d7e6c5b4a39281"},
        "return_run_details": True,
    }
    assert "not seeded" not in running.stderr and "4 example payload(s)" in running.stderr
    assert running.returncode == 0, running.stderr[-3000:]
