"""The chainer command: lint exit codes, one-line configuration errors, and `chainer run` end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest
import redis as syncredis
from click.testing import CliRunner

from chainer.cli import main
from tests import payloads
from tests.processes import chainer_process
from tests.redis_server import free_port

REPO = Path(__file__).resolve().parents[1]


def test_lint_accepts_the_example_rules() -> None:
    """`chainer lint rules.yaml` exits 0 and prints a summary naming every rule."""
    result = CliRunner().invoke(main, ["lint", str(REPO / "rules.yaml")])
    assert result.exit_code == 0, result.output
    assert "10 rule(s)" in result.output and "fan-in of 2 clauses" in result.output
    assert "retry-flaky-e2e" in result.output
    assert "deploy-docs-on-github: status success → github.dispatch_workflow" in result.output
    assert "rerun-github-e2e: status failed → github.rerun_workflow_run" in result.output


def test_lint_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    """A broken file makes `chainer lint` print each problem with its line and exit 1."""
    bad = tmp_path / "rules.yaml"
    bad.write_text(
        "version: 1\nrules:\n  - name: Bad_Name\n    when: {status: sucess}\n    then:\n      - circleci.trigger: {}\n"
    )
    result = CliRunner().invoke(main, ["lint", str(bad)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(str(bad))]
    assert len(lines) == 3
    assert ":3:" in lines[0] and "name" in lines[0]
    assert ":4:" in lines[1] and "sucess" in lines[1]
    assert ":6:" in lines[2] and "unknown action (did you mean" in lines[2]


def test_lint_missing_file_exits_1(tmp_path: Path) -> None:
    """Linting a file that does not exist names the path and exits 1."""
    result = CliRunner().invoke(main, ["lint", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "nope.yaml" in result.output


@pytest.mark.parametrize("command", ["web", "worker", "run"])
def test_bad_setting_stops_with_one_line_naming_it(command: str) -> None:
    """A malformed variable stops every process at start with exit 2 and one line naming the variable."""
    env = {"CHAINER_REDIS_URL": "nonsense", "CHAINER_RULES": str(REPO / "rules.yaml")}
    result = CliRunner().invoke(main, [command], env=env)
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "CHAINER_REDIS_URL" in result.output


def test_bad_rules_stop_the_web_process(tmp_path: Path) -> None:
    """`chainer web` with an invalid rules file exits 2 listing the problems instead of serving."""
    bad = tmp_path / "rules.yaml"
    bad.write_text("version: 2\nrules: []\n")
    result = CliRunner().invoke(main, ["web"], env={"CHAINER_RULES": str(bad)})
    assert result.exit_code == 2 and "version" in result.output


@pytest.mark.parametrize("url", ["redis://127.0.0.2:{port}/0", "rediss://127.0.0.1:{port}/0"])
def test_run_without_redis_it_cannot_start_stops_with_one_line(url: str) -> None:
    """No Redis answers at a URL that is not plain redis:// on localhost: `chainer run` starts none, says why on
    one line, exits 2 and leaves the signal handlers as they were."""
    url = url.format(port=free_port())
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    env = {"CHAINER_REDIS_URL": url, "CHAINER_RULES": str(REPO / "rules.yaml")}
    result = CliRunner().invoke(main, ["run"], env=env)
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"chainer: no Redis answers at CHAINER_REDIS_URL={url} and it is not a local address to start one on\n"
    )
    assert {signum: signal.getsignal(signum) for signum in before} == before


def _post_codeship(base: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        f"{base}/hooks/codeship/tok", content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )


@pytest.mark.integration
@pytest.mark.timeout(90)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_run_starts_a_private_redis_and_chains_a_build(tmp_path: Path) -> None:
    """`chainer run` with no Redis answering starts one under ./.chainer/, accepts a webhook and shuts down."""
    (tmp_path / "rules.yaml").write_text((REPO / "rules.yaml").read_text())
    port, redis_port = free_port(), free_port()
    env = {
        **os.environ,
        "CHAINER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "CHAINER_HOOK_TOKEN": "tok",
        "CHAINER_ADMIN_TOKEN": "adm",
    }
    base = f"http://127.0.0.1:{port}"
    with chainer_process(["run", "--port", str(port)], tmp_path, env, [f"{base}/readyz"]) as running:
        response = _post_codeship(base, payloads.codeship("infrastructure_failure"))
        assert response.status_code == 202 and response.json()["matched"] == ["retry-codeship-infra"]
        audit = httpx.get(f"{base}/audit", headers={"authorization": "Bearer adm"}, timeout=5).json()
        assert audit["items"][0]["type"] == "webhook.received"
        assert (tmp_path / ".chainer" / "appendonlydir").is_dir()
    assert "started a private redis-server" in running.stderr
    assert running.returncode == 0, running.stderr[-3000:]


@pytest.mark.integration
@pytest.mark.timeout(90)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_run_with_sandbox_chains_to_the_emulated_provider(tmp_path: Path) -> None:
    """`chainer run --sandbox` sends the chained build to the local emulation, which records the request."""
    (tmp_path / "rules.yaml").write_text((REPO / "rules.yaml").read_text())
    port, sandbox_port, redis_port = free_port(), free_port(), free_port()
    env = {**os.environ, "CHAINER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "CHAINER_HOOK_TOKEN": "tok"}
    for name in ("CHAINER_ADMIN_TOKEN", "CHAINER_CIRCLECI_TOKEN", "CHAINER_CODESHIP_USER"):
        env.pop(name, None)
    base, sandbox = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sandbox_port}"
    args = ["run", "--sandbox", "--port", str(port), "--sandbox-port", str(sandbox_port)]
    with chainer_process(args, tmp_path, env, [f"{base}/readyz", f"{sandbox}/_sandbox/requests"]) as running:
        response = _post_codeship(base, payloads.codeship("success", project="acme/web", branch="main"))
        assert response.status_code == 202 and response.json()["matched"] == ["smoke-after-web"]
        builds: list[dict[str, object]] = []
        deadline = time.monotonic() + 20
        while not builds and time.monotonic() < deadline:
            recorded = httpx.get(f"{sandbox}/_sandbox/requests", timeout=2).json()
            builds = [r for r in recorded if str(r["path"]).endswith("/builds") and r["method"] == "POST"]
            time.sleep(0.1)
        assert len(builds) == 1 and builds[0]["status"] == 202
        assert builds[0]["body"] == {"ref": "heads/main", "commit_sha": payloads.COMMIT}
    assert "sandbox mode" in running.stderr
    assert running.returncode == 0, running.stderr[-3000:]


CREDENTIAL_VARIABLES = (
    "CHAINER_CIRCLECI_TOKEN",
    "CHAINER_CODESHIP_USER",
    "CHAINER_CODESHIP_PASSWORD",
    "CHAINER_CODESHIP_API_KEY",
    "CHAINER_GITHUB_TOKEN",
    "CHAINER_GITHUB_APP_ID",
    "CHAINER_GITHUB_APP_PRIVATE_KEY",
    "CHAINER_BUILDKITE_TOKEN",
)


@pytest.mark.integration
@pytest.mark.timeout(90)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
@pytest.mark.parametrize("credential", [None, "CHAINER_GITHUB_TOKEN_FILE", "CHAINER_BUILDKITE_TOKEN"])
def test_run_uses_the_sandbox_only_without_api_credentials(tmp_path: Path, credential: str | None) -> None:
    """What ./scripts/start runs: a credential given in a file counts like one in a variable, so a real install
    configured with NAME_FILE secrets is never sent to the sandbox."""
    (tmp_path / "rules.yaml").write_text((REPO / "rules.yaml").read_text())
    port, sandbox_port, redis_port = free_port(), free_port(), free_port()
    env = {**os.environ, "CHAINER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "CHAINER_HOOK_TOKEN": "tok"}
    for name in CREDENTIAL_VARIABLES:
        env.pop(name, None)
        env.pop(f"{name}_FILE", None)
    if credential is not None:
        secret = tmp_path / "token"
        secret.write_text("a-real-looking-token\n")
        env[credential] = str(secret) if credential.endswith("_FILE") else "a-real-looking-token"
    args = ["run", "--sandbox-unless-configured", "--port", str(port), "--sandbox-port", str(sandbox_port)]
    with chainer_process(args, tmp_path, env, [f"http://127.0.0.1:{port}/readyz"]) as running:
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        try:  # the emulated providers answer only in sandbox mode
            sandbox_up = httpx.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/requests", timeout=5).status_code == 200
        except httpx.ConnectError:
            sandbox_up = False
        assert sandbox_up is (credential is None)
    assert running.returncode == 0, running.stderr[-3000:]
    assert ("sandbox mode" in running.stderr) is (credential is None)


def _redis_pid(url: str) -> int:
    client = syncredis.Redis.from_url(url, socket_timeout=5)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.integration
@pytest.mark.timeout(90)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_to_run_also_stops_its_private_redis(tmp_path: Path, signum: signal.Signals) -> None:
    """SIGTERM or SIGINT to `chainer run` shuts it down cleanly (exit 0) and stops the redis-server it started;
    uvicorn's re-raised SIGTERM used to kill the process first and leave the server running under PID 1."""
    (tmp_path / "rules.yaml").write_text((REPO / "rules.yaml").read_text())
    port, redis_port = free_port(), free_port()
    url = f"redis://127.0.0.1:{redis_port}/0"  # nothing answers there: run starts its private server
    env = {**os.environ, "CHAINER_REDIS_URL": url, "CHAINER_HOOK_TOKEN": "tok", "CHAINER_ADMIN_TOKEN": "adm"}
    redis_pid = None
    try:
        with chainer_process(["run", "--port", str(port)], tmp_path, env, [f"http://127.0.0.1:{port}/readyz"]) as run:
            redis_pid = _redis_pid(url)
            assert _running(redis_pid)
            run.process.send_signal(signum)
            run.process.wait(timeout=40)
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"private redis-server (AOF on, data under .chainer/), pid {redis_pid}" in run.stderr
        assert f"chainer: stopped ({signum.name})" in run.stderr
        assert not _running(redis_pid)
        with pytest.raises(syncredis.ConnectionError):
            _redis_pid(url)
    finally:  # never leave the server behind, even when the test fails
        if redis_pid is not None and _running(redis_pid):
            if b"redis-server" in Path(f"/proc/{redis_pid}/cmdline").read_bytes():
                os.kill(redis_pid, signal.SIGKILL)
