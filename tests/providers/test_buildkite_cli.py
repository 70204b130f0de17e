"""Buildkite in the settings and the command line: its variables validated at start and masked; `chainer lint`,
`chainer schema` and `chainer explain --provider buildkite` know its actions and events from the registry;
`chainer run --sandbox` sends a Buildkite build to the emulated API."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from chainer.cli import main
from chainer.errors import ConfigError
from chainer.settings import Settings
from tests.payloads import COMMIT, buildkite_build, buildkite_signed
from tests.processes import chainer_process
from tests.redis_server import free_port

RULES = """
version: 1
rules:
  - name: deploy-after-lib
    when: {provider: buildkite, project: acme/lib, branch: main, status: success}
    then:
      - buildkite.create_build:
          pipeline: acme/deploy
          env: {UPSTREAM: "{{ event.build_url }}"}
  - name: retry-lib
    when: {provider: buildkite, project: acme/lib, status: failed}
    then:
      - buildkite.rebuild: {}
"""


def test_the_buildkite_settings_have_the_designs_defaults() -> None:
    s = Settings.from_env({})
    assert (s.buildkite_webhook_token, s.buildkite_allow_plain_token, s.buildkite_token) == (None, False, None)
    assert s.buildkite_url == "https://api.buildkite.com"


@pytest.mark.parametrize(
    ("env", "starts"),
    [
        ({"CHAINER_BUILDKITE_URL": "api.buildkite.com"}, "CHAINER_BUILDKITE_URL"),
        ({"CHAINER_BUILDKITE_ALLOW_PLAIN_TOKEN": "sometimes"}, "CHAINER_BUILDKITE_ALLOW_PLAIN_TOKEN"),
        ({"CHAINER_BUILDKITE_ALLOW_PLAIN_TOKEN": "1"}, "CHAINER_BUILDKITE_ALLOW_PLAIN_TOKEN: needs"),
        ({"CHAINER_BUILDKITE_TOKEN_FILE": "/nonexistent/bk"}, "CHAINER_BUILDKITE_TOKEN_FILE"),
        (
            {"CHAINER_BUILDKITE_WEBHOOK_TOKEN": "a", "CHAINER_BUILDKITE_WEBHOOK_TOKEN_FILE": "/x"},
            "CHAINER_BUILDKITE_WEBHOOK_TOKEN",
        ),
    ],
    ids=["url", "switch", "switch-without-token", "unreadable-file", "value-and-file"],
)
def test_a_malformed_buildkite_setting_stops_the_process_naming_it(env: dict[str, str], starts: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(starts) and "\n" not in str(info.value)


def test_the_buildkite_secrets_come_from_files_and_never_show(tmp_path: Path) -> None:
    (tmp_path / "hook").write_text("bk-hook-from-file\n")
    (tmp_path / "api").write_text("bkua_from_file\n")
    s = Settings.from_env(
        {
            "CHAINER_BUILDKITE_WEBHOOK_TOKEN_FILE": str(tmp_path / "hook"),
            "CHAINER_BUILDKITE_TOKEN_FILE": str(tmp_path / "api"),
            "CHAINER_BUILDKITE_ALLOW_PLAIN_TOKEN": "1",
            "CHAINER_BUILDKITE_URL": "http://127.0.0.1:9/",
        }
    )
    assert s.buildkite_webhook_token is not None and s.buildkite_webhook_token.reveal() == "bk-hook-from-file"
    assert s.buildkite_token is not None and s.buildkite_token.reveal() == "bkua_from_file"
    assert s.buildkite_allow_plain_token and s.buildkite_url == "http://127.0.0.1:9"
    assert "from-file" not in repr(s) + str(s) and "from_file" not in repr(s) + str(s)


def test_lint_knows_the_buildkite_actions_and_draws_their_pipelines(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        RULES + "  - name: lib-after-deploy\n    when: {provider: buildkite, project: acme/deploy}\n"
        "    then: [{buildkite.create_build: {pipeline: acme/lib, branch: main}}]\n"
    )
    ok = CliRunner().invoke(main, ["lint", str(rules)])
    assert ok.exit_code == 0, ok.output
    assert "acme/deploy → acme/lib → acme/deploy (rules lib-after-deploy, deploy-after-lib)" in ok.output
    rules.write_text(
        "version: 1\nrules:\n  - name: r\n    when: {project: acme/lib}\n    then:\n"
        "      - buildkite.create_build: {pipeline: deploy, env: {N: 1.5}, meta_data: {chainer:cause: x}}\n"
        "      - buildkite.rebuild: {}\n"
    )
    bad = CliRunner().invoke(main, ["lint", str(rules)])
    assert bad.exit_code == 1
    for fragment in (
        "pipeline: 'deploy' is not <org>/<pipeline-slug>",
        "env.N: a decimal number (quote it) is not allowed: Buildkite takes text values",
        "meta_data: 'chainer:cause' is chainer's own key",
        "argument 'pipeline' has no default for codeship events",
        "argument 'build' has no default for circleci events",
    ):
        assert fragment in bad.output, bad.output


def test_the_schema_lists_the_buildkite_actions_and_provider() -> None:
    printed = CliRunner().invoke(main, ["schema"])
    assert printed.exit_code == 0
    schema = json.loads(printed.output)
    text = json.dumps(schema)
    assert '"buildkite.create_build"' in text and '"buildkite.rebuild"' in text and '"buildkite"' in text
    assert "token scope write_builds" in text


def test_explain_reads_a_buildkite_payload_and_renders_its_actions(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    payload = tmp_path / "build.json"
    payload.write_text(json.dumps(buildkite_build()))
    args = ["explain", "--provider", "buildkite", str(payload), "--rules", str(rules), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    explained = json.loads(result.output)
    assert (explained["event"]["provider"], explained["event"]["project"], explained["event"]["commit"]) == (
        "buildkite",
        "acme/lib",
        COMMIT,
    )
    assert explained["actions"] == [
        {
            "rule": "deploy-after-lib",
            "action": "buildkite.create_build",
            "params": {
                "pipeline": "acme/deploy",
                "env": {"UPSTREAM": "https://buildkite.com/acme/lib/builds/12"},
                "branch": "main",
                "commit": COMMIT,
            },
        }
    ]
    payload.write_text(json.dumps(buildkite_build(state="failed")))
    failed = json.loads(CliRunner().invoke(main, args).output)
    assert [(a["action"], a["params"]) for a in failed["actions"]] == [
        ("buildkite.rebuild", {"pipeline": "acme/lib", "build": 12})
    ]
    mismatch = CliRunner().invoke(main, [*args[:-1], "--header", "X-Buildkite-Event: build.running"])
    assert mismatch.exit_code == 1 and "does not match the body's event" in mismatch.output


@pytest.mark.integration
@pytest.mark.timeout(90)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_run_with_sandbox_creates_the_buildkite_build_in_the_emulation(tmp_path: Path) -> None:
    """`chainer run --sandbox`: a signed Buildkite delivery chains a build that the emulated Buildkite records."""
    (tmp_path / "rules.yaml").write_text(RULES)
    port, sandbox_port, redis_port = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHAINER_")},
        "CHAINER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "CHAINER_BUILDKITE_WEBHOOK_TOKEN": "bk-run-hook",
    }
    base, sandbox = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sandbox_port}"
    args = ["run", "--sandbox", "--port", str(port), "--sandbox-port", str(sandbox_port)]
    with chainer_process(args, tmp_path, env, [f"{base}/readyz", f"{sandbox}/_sandbox/requests"]) as running:
        raw, headers = buildkite_signed(buildkite_build(), "bk-run-hook", int(time.time()))
        response = httpx.post(f"{base}/hooks/buildkite", content=raw, headers=headers, timeout=10)
        assert response.status_code == 202 and response.json()["matched"] == ["deploy-after-lib"], response.text
        builds: list[dict[str, object]] = []
        deadline = time.monotonic() + 20
        while not builds and time.monotonic() < deadline:
            recorded = httpx.get(f"{sandbox}/_sandbox/requests", timeout=2).json()
            builds = [r for r in recorded if r["api"] == "buildkite" and r["method"] == "POST"]
            time.sleep(0.1)
        assert len(builds) == 1 and builds[0]["status"] == 201
        assert builds[0]["path"] == "/v2/organizations/acme/pipelines/deploy/builds"
        assert builds[0]["body"] == {
            "commit": COMMIT,
            "branch": "main",
            "env": {"UPSTREAM": "https://buildkite.com/acme/lib/builds/12"},
            "meta_data": {"chainer:cause": response.json()["event_id"]},
        }
        assert builds[0]["headers"]["authorization"] == "***"
    assert "sandbox mode" in running.stderr and "sandbox-buildkite-token" not in running.stderr
    assert running.returncode == 0, running.stderr[-3000:]
