"""Secrets never leave chainer (DESIGN §2): a whole scenario through real `chainer web` and `chainer worker`
processes logging at DEBUG, with distinctive secret values that all travel, and none of them in anything captured."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
import uvicorn

from chainer.sandbox import SandboxState, create_sandbox_app
from tests import payloads
from tests.processes import chainer_process
from tests.redis_server import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]

REPO = Path(__file__).resolve().parents[1]
HOOK = "hooK+8d1fQ2zW"  # a "+" so encoded forms differ from the raw one
ADMIN = "admiN-5kT7vX0q"
WEBHOOK_SECRET = "whseC-3nB9rJ6m"
CIRCLE_TOKEN = "circlE-7yH2pL4s"
CODESHIP_USER = "csuseR-1gV8@example.org"
CODESHIP_PASSWORD = "cspasS-6wM3xN5c"
CODESHIP_API_KEY = "cskeY+4qZ0tD7h"
WRONG_TOKEN = "wronG-9sE1uK3f"  # sent by a misconfigured sender: maybe someone's real secret, so never logged either
SECRETS = {
    "hook token": HOOK,
    "admin token": ADMIN,
    "CircleCI webhook secret": WEBHOOK_SECRET,
    "CircleCI token": CIRCLE_TOKEN,
    "Codeship user": CODESHIP_USER,
    "Codeship password": CODESHIP_PASSWORD,
    "Codeship API key": CODESHIP_API_KEY,
    "wrong token": WRONG_TOKEN,
}

RULES = """
version: 1
rules:
  - name: legacy-restart
    when: {provider: codeship, project: acme/legacy, status: failed}
    then:
      - codeship.v1_restart_build: {build: "{{ event.build_id }}"}
  - name: smoke-after-web
    when: {provider: codeship, project: acme/web, status: success}
    then:
      - codeship.trigger_build: {project: acme/smoke, ref: "heads/{{ event.branch }}", commit: "{{ event.commit }}"}
  - name: api-after-lib
    when: {provider: circleci, project: acme/lib, status: success}
    then:
      - circleci.trigger_pipeline: {project: gh/acme/api, branch: "{{ event.branch }}"}
      - circleci.v1_trigger_build: {project: github/acme/packaging, branch: main, revision: "{{ event.commit }}"}
  - name: retry-e2e
    when: {provider: circleci, project: acme/e2e, status: failed}
    then:
      - circleci.v1_retry_build: {project: github/acme/e2e, build: "{{ event.build_id }}"}
"""


def _forms(secret: str) -> set[str]:
    """The ways a secret can be written out: as is, percent-encoded, form-encoded."""
    return {secret, quote(secret, safe=""), quote_plus(secret, safe="")}


FORBIDDEN = {
    **{f"{name} ({form})": form for name, secret in SECRETS.items() for form in _forms(secret)},
    "Codeship Basic credentials": base64.b64encode(f"{CODESHIP_USER}:{CODESHIP_PASSWORD}".encode()).decode(),
}


def _leaks(where: str, text: str) -> list[str]:
    return [f"{name} in {where}" for name, form in FORBIDDEN.items() if form in text]


@contextlib.contextmanager
def _sandbox(state: SandboxState) -> Iterator[str]:
    """The provider sandbox with ``state`` under uvicorn in a thread; its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_sandbox_app(state), host="127.0.0.1", port=port, log_config=None, lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the sandbox did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@contextlib.contextmanager
def _chainer(args: list[str], cwd: Path, env: dict[str, str], output: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`chainer ARGS` with stdout and stderr both written to ``output``; SIGINT on the way out."""
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "chainer.cli", *args], cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"{url} did not answer 200 within 30 s")


def _settled(base: str, event_id: str, admin: dict[str, str]) -> dict[str, Any]:
    """GET /events/{id} once every action of the event is done, dead or skipped (at most 60 s)."""
    deadline = time.monotonic() + 60
    while True:
        view: dict[str, Any] = httpx.get(f"{base}/events/{event_id}", headers=admin, timeout=5).json()
        if all(a["state"] in ("done", "dead", "skipped") for a in view["actions"]):
            return view
        assert time.monotonic() < deadline, f"actions of {event_id} still running: {view['actions']}"
        time.sleep(0.2)


@pytest.mark.timeout(150)
def test_no_secret_appears_in_logs_audit_answers_or_the_sandbox_log(tmp_path: Path, redis_url: str) -> None:
    """Deliveries with the hook token in the path and in the query, a signed CircleCI delivery, a wrong token;
    actions on Codeship v1 (api_key in the query) and v2 (Basic auth, then a bearer token), CircleCI v2 and v1.1,
    one refused with a body that quotes the credentials. Every secret is used, and none appears in the web's and
    the worker's output at DEBUG, the audit log, any answer, or the provider sandbox's request log."""
    state = SandboxState(
        codeship_user=CODESHIP_USER,
        codeship_password=CODESHIP_PASSWORD,
        circleci_token=CIRCLE_TOKEN,
        codeship_api_key=CODESHIP_API_KEY,
    )
    state.add_codeship_project("acme/smoke")
    legacy = state.add_codeship_project("acme/legacy")
    upstream = state.add_codeship_build("acme/legacy", branch="main", commit_sha=payloads.COMMIT, status="error")
    echo = f"bad credentials {CIRCLE_TOKEN} / {CODESHIP_API_KEY} / {CODESHIP_PASSWORD}"
    state.script("circleci.v1.1", status=400, body={"message": echo}, path_contains="/retry")
    (tmp_path / "rules.yaml").write_text(RULES)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    admin = {"authorization": f"Bearer {ADMIN}"}
    answers: list[str] = []

    with _sandbox(state) as sandbox:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINER_")} | {
            "CHAINER_REDIS_URL": redis_url,
            "CHAINER_RULES": str(tmp_path / "rules.yaml"),
            "CHAINER_LOG_LEVEL": "DEBUG",
            "CHAINER_HOOK_TOKEN": HOOK,
            "CHAINER_ADMIN_TOKEN": ADMIN,
            "CHAINER_CIRCLECI_WEBHOOK_SECRETS": WEBHOOK_SECRET,
            "CHAINER_CIRCLECI_TOKEN": CIRCLE_TOKEN,
            "CHAINER_CIRCLECI_URL": sandbox,
            "CHAINER_CODESHIP_USER": CODESHIP_USER,
            "CHAINER_CODESHIP_PASSWORD": CODESHIP_PASSWORD,
            "CHAINER_CODESHIP_URL": sandbox,
            "CHAINER_CODESHIP_API_KEY": CODESHIP_API_KEY,
            "CHAINER_CODESHIP_V1_URL": sandbox,
        }
        web_log, worker_log = tmp_path / "web.log", tmp_path / "worker.log"
        with (
            _chainer(["web", "--port", str(port)], tmp_path, env, web_log),
            _chainer(["worker"], tmp_path, env, worker_log),
        ):
            _wait_ready(f"{base}/readyz")

            def post(path: str, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> httpx.Response:
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                response = httpx.post(
                    f"{base}{path}", content=raw, headers=headers or {"content-type": "application/json"}, timeout=10
                )
                answers.append(response.text)
                return response

            codeship_v1 = payloads.codeship(
                "error", project="acme/legacy", build_id=upstream["id"], project_id=legacy["id"]
            )
            signed_body, signed_headers = payloads.signed(payloads.circleci_workflow("success"), WEBHOOK_SECRET)
            legacy_circle = json.loads((REPO / "examples" / "circleci-legacy-failed.json").read_text())
            legacy_circle["payload"]["reponame"] = "e2e"
            deliveries = [
                post(f"/hooks/codeship/{quote(HOOK, safe='')}", codeship_v1),
                post(f"/hooks/codeship?token={quote(HOOK, safe='')}", payloads.codeship("success", project="acme/web")),
                post("/hooks/circleci", signed_body, signed_headers),
                post(f"/hooks/circleci?token={quote_plus(HOOK)}", legacy_circle),
            ]
            assert [d.status_code for d in deliveries] == [202] * 4, [d.text for d in deliveries]
            assert [d.json()["matched"] for d in deliveries] == [
                ["legacy-restart"],
                ["smoke-after-web"],
                ["api-after-lib"],
                ["retry-e2e"],
            ]
            assert post(f"/hooks/codeship/{WRONG_TOKEN}", codeship_v1).status_code == 401
            refused = httpx.get(f"{base}/audit", headers={"authorization": f"Bearer {WRONG_TOKEN}"}, timeout=5)
            assert refused.status_code == 401
            answers.append(refused.text)

            events = [_settled(base, d.json()["event_id"], admin) for d in deliveries]
            states = [[a["state"] for a in e["actions"]] for e in events]
            assert states == [["done"], ["done"], ["done", "done"], ["dead"]], states
            dead = events[3]["actions"][0]
            assert "400" in dead["last_error"] and "***" in dead["last_error"]
            for path in ("/audit?limit=500", "/dlq", "/rules", *(f"/events/{e['event']['event_id']}" for e in events)):
                response = httpx.get(f"{base}{path}", headers=admin, timeout=5)
                assert response.status_code == 200, response.text
                answers.append(response.text)
            audit = json.loads(answers[-len(events) - 3])["items"]
            assert {"webhook.rejected", "attempt.succeeded", "action.dead"} <= {r["type"] for r in audit}
            recorded = httpx.get(f"{sandbox}/_sandbox/requests", timeout=5)

    # Every secret travelled: the sandbox refuses wrong credentials with 401, and these calls succeeded.
    calls = {(r["api"], r["method"], r["status"]) for r in recorded.json()}
    v1 = [r for r in recorded.json() if r["api"] == "codeship.v1"]
    assert v1 and v1[0]["query"]["api_key"] == "***" and v1[0]["status"] == 200
    assert ("codeship.v2", "POST", 200) in calls and ("codeship.v2", "POST", 202) in calls  # auth, build
    assert ("circleci.v2", "POST", 201) in calls and ("circleci.v1.1", "POST", 400) in calls
    assert any(
        r["api"] == "circleci.v1.1" and r["path"].endswith("/tree/main") and r["status"] < 300 for r in recorded.json()
    )

    web, worker = web_log.read_text(), worker_log.read_text()
    leaks = _leaks("the web's output", web) + _leaks("the worker's output", worker)
    leaks += _leaks("the sandbox's request log", recorded.text)
    for index, answer in enumerate(answers):
        leaks += _leaks(f"answer {index}", answer)
    assert leaks == [], "\n".join(leaks)
    # The logs are real and at DEBUG: the redacted access lines, chainer's own provider request lines, arq's jobs.
    assert "chainer.access request method=POST path=/hooks/codeship/*** status=202" in web
    assert "path=/hooks/codeship?token=*** status=202" in web and "path=/hooks/circleci?token=*** status=202" in web
    assert "path=/hooks/codeship/*** status=401" in web
    assert 'downstream_request api="Codeship v1"' in worker and "api_key=***" in worker
    assert "run_action(" in worker and "debug chainer.downstream" in worker


@pytest.mark.timeout(120)
def test_run_sandbox_logs_no_token_or_api_key(tmp_path: Path) -> None:
    """`chainer run --sandbox` at DEBUG: neither its web server nor its in-process sandbox writes uvicorn's access
    log, so the hook token (path and query) and the sandbox's API key sent in ``?api_key=`` appear nowhere."""
    (tmp_path / "rules.yaml").write_text((REPO / "rules.yaml").read_text())
    port, sandbox_port, redis_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINER_")} | {
        "CHAINER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "CHAINER_HOOK_TOKEN": HOOK,
        "CHAINER_ADMIN_TOKEN": ADMIN,
        "CHAINER_LOG_LEVEL": "DEBUG",
    }
    base, sandbox = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sandbox_port}"
    key = SandboxState().codeship_api_key  # what `chainer run --sandbox` sends to its sandbox
    args = ["run", "--sandbox", "--port", str(port), "--sandbox-port", str(sandbox_port)]
    with chainer_process(args, tmp_path, env, [f"{base}/readyz", f"{sandbox}/_sandbox/requests"]) as running:
        legacy = json.dumps(payloads.codeship("stopped", project="acme/legacy-app")).encode()
        headers = {"content-type": "application/json"}
        first = httpx.post(f"{base}/hooks/codeship/{quote(HOOK, safe='')}", content=legacy, headers=headers)
        assert first.status_code == 202 and "retry-codeship-legacy" in first.json()["matched"]
        web = json.dumps(payloads.codeship("success", project="acme/web", build_id=4712)).encode()
        second = httpx.post(f"{base}/hooks/codeship", params={"token": HOOK}, content=web, headers=headers)
        assert second.status_code == 202
        deadline = time.monotonic() + 30
        v1: list[Any] = []
        while not v1:
            assert time.monotonic() < deadline, "no Codeship API v1 call reached the sandbox"
            time.sleep(0.2)
            v1 = [r for r in httpx.get(f"{sandbox}/_sandbox/requests", timeout=5).json() if r["api"] == "codeship.v1"]
    output = running.stderr
    leaks = _leaks("chainer run's output", output) + [
        f"the sandbox's API key {form}" for form in _forms(key) if f"api_key={form}" in output
    ]
    assert leaks == [], "\n".join(leaks)
    assert "path=/hooks/codeship/*** status=202" in output and "path=/hooks/codeship?token=*** status=202" in output
    assert "api_key=***" in output  # chainer's own DEBUG line for the v1 call


BUILDKITE_HOOK = "bkhooK+2vQ8mR4t"
BUILDKITE_TOKEN = "bkapI-9cW3nF6j"
BUILDKITE_RULES = """
version: 1
rules:
  - name: deploy-after-lib
    when: {provider: buildkite, project: acme/lib, status: success}
    then:
      - buildkite.create_build: {pipeline: acme/deploy}
  - name: rebuild-flaky
    when: {provider: buildkite, project: acme/flaky, status: failed}
    then:
      - buildkite.rebuild: {}
"""


@pytest.mark.timeout(150)
def test_no_buildkite_token_appears_in_logs_audit_answers_or_the_sandbox_log(tmp_path: Path, redis_url: str) -> None:
    """A signed Buildkite delivery, a plain-token one (refused: not allowed), one with a wrong token; a build created
    with the API token and a rebuild refused with a body that quotes both tokens. Neither token shows in the web's
    or the worker's DEBUG output, the audit log, any answer, or the sandbox's request log."""
    state = SandboxState(buildkite_token=BUILDKITE_TOKEN)
    state.add_buildkite_pipeline("acme/deploy")
    state.add_buildkite_build("acme/flaky", 7, branch="main", commit=payloads.COMMIT, state="failed")
    echo = {"message": f"token {BUILDKITE_TOKEN} (hook {BUILDKITE_HOOK}) is not allowed here"}
    state.script("buildkite", status=401, body=echo, path_contains="/rebuild")
    (tmp_path / "rules.yaml").write_text(BUILDKITE_RULES)
    port = free_port()
    base, admin = f"http://127.0.0.1:{port}", {"authorization": f"Bearer {ADMIN}"}
    forbidden = {
        f"{name} ({form})": form
        for name, secret in (
            ("webhook token", BUILDKITE_HOOK),
            ("API token", BUILDKITE_TOKEN),
            ("wrong token", WRONG_TOKEN),
        )
        for form in _forms(secret)
    }
    answers: list[str] = []
    with _sandbox(state) as sandbox:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINER_")} | {
            "CHAINER_REDIS_URL": redis_url,
            "CHAINER_RULES": str(tmp_path / "rules.yaml"),
            "CHAINER_LOG_LEVEL": "DEBUG",
            "CHAINER_ADMIN_TOKEN": ADMIN,
            "CHAINER_BUILDKITE_WEBHOOK_TOKEN": BUILDKITE_HOOK,
            "CHAINER_BUILDKITE_TOKEN": BUILDKITE_TOKEN,
            "CHAINER_BUILDKITE_URL": sandbox,
        }
        web_log, worker_log = tmp_path / "web.log", tmp_path / "worker.log"
        with (
            _chainer(["web", "--port", str(port)], tmp_path, env, web_log),
            _chainer(["worker"], tmp_path, env, worker_log),
        ):
            _wait_ready(f"{base}/readyz")

            def post(raw: bytes, headers: dict[str, str]) -> httpx.Response:
                response = httpx.post(f"{base}/hooks/buildkite", content=raw, headers=headers, timeout=10)
                answers.append(response.text)
                return response

            now = int(time.time())
            green = payloads.buildkite_build(org="acme", pipeline="lib")
            red = payloads.buildkite_build(state="failed", org="acme", pipeline="flaky", number=7)
            accepted = [post(*payloads.buildkite_signed(body, BUILDKITE_HOOK, now)) for body in (green, red)]
            assert [a.status_code for a in accepted] == [202, 202], [a.text for a in accepted]
            raw = json.dumps(green).encode()
            for token in (BUILDKITE_HOOK, WRONG_TOKEN):
                plain = {"content-type": "application/json", "x-buildkite-event": "build.finished"}
                assert post(raw, plain | {"x-buildkite-token": token}).status_code == 401
            events = [_settled(base, a.json()["event_id"], admin) for a in accepted]
            assert [[a["state"] for a in e["actions"]] for e in events] == [["done"], ["dead"]]
            assert "401" in events[1]["actions"][0]["last_error"] and "***" in events[1]["actions"][0]["last_error"]
            for path in ("/audit?limit=500", "/dlq", *(f"/events/{a.json()['event_id']}" for a in accepted)):
                response = httpx.get(f"{base}{path}", headers=admin, timeout=5)
                assert response.status_code == 200, response.text
                answers.append(response.text)
            recorded = httpx.get(f"{sandbox}/_sandbox/requests", timeout=5)
    calls = [(r["method"], r["status"]) for r in recorded.json() if r["api"] == "buildkite"]
    assert ("GET", 200) in calls and ("POST", 201) in calls and ("PUT", 401) in calls  # check, create, rebuild
    texts = {"the web's output": web_log.read_text(), "the worker's output": worker_log.read_text()}
    texts |= {"the sandbox's request log": recorded.text} | {f"answer {i}": a for i, a in enumerate(answers)}
    leaks = [f"{name} in {where}" for where, text in texts.items() for name, form in forbidden.items() if form in text]
    assert leaks == [], "\n".join(leaks)
    worker = texts["the worker's output"]
    assert "downstream_request api=Buildkite method=POST" in worker and "/builds/7/rebuild status=401" in worker
    assert "path=/hooks/buildkite status=202" in texts["the web's output"]
