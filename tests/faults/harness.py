"""Fault-injection harness: real processes on loopback, the sandbox's request log as the oracle, one invariant check.

``Cluster`` runs a private redis-server (AOF on, ``appendfsync`` chosen per module, restartable on its data dir),
the provider sandbox (``chainer sandbox``), two ``chainer web`` processes and any number of ``chainer worker``
processes the test can ``kill -9``, SIGTERM and restart, all with compressed job timings (``TIMINGS``).

Every delivery is a signed CircleCI ``workflow-completed`` for ``acme/lib``; the one rule triggers a pipeline of
``gh/acme/<branch>`` carrying the event id as the pipeline parameter ``marker``, so each accepted provider call in
the sandbox's log names the action that made it (one action per event), and a test scopes scripted faults to its
own branch. ``check_invariants`` raises ``InvariantViolation`` naming the first broken promise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis as syncredis

from tests import payloads
from tests.redis_server import RedisServer, free_port

HOOK, WHSEC, ADMIN = "fault-hook-token", "fault-whsec", "fault-admin-token"
AUTH = {"authorization": f"Bearer {ADMIN}"}
CIRCLE_TOKEN = "sandbox-token"  # the sandbox's published demo token
RULE = "chain"
RULES = f"""
version: 1
rules:
  - name: {RULE}
    when: {{project: acme/lib, status: success}}
    then:
      - circleci.trigger_pipeline:
          project: "gh/acme/{{{{ event.branch }}}}"
          branch: main
          parameters: {{marker: "{{{{ event.event_id }}}}"}}
"""
# Compressed timings: a job may run 6 s (so the HTTP client gives up after 2 s) and is held 7 s, backoff 0.2 s
# to 1 s over 4 tries, sweeps every second; a request head and a body each have 2 s to arrive.
TIMINGS = {
    "CHAINER_JOB_TIMEOUT_SECONDS": "6",
    "CHAINER_JOB_LEASE_SECONDS": "7",
    "CHAINER_RETRY_BASE_SECONDS": "0.2",
    "CHAINER_RETRY_CAP_SECONDS": "1",
    "CHAINER_RETRY_MAX_TRIES": "4",
    "CHAINER_WORKER_POLL_SECONDS": "0.05",
    "CHAINER_SWEEP_INTERVAL_SECONDS": "1",
    "CHAINER_SWEEP_GRACE_SECONDS": "2",
    "CHAINER_WORKER_HEARTBEAT_SECONDS": "0.2",
    "CHAINER_WORKER_RECONNECT_MAX_SECONDS": "0.5",
    "CHAINER_RULES_POLL_SECONDS": "0.1",
    "CHAINER_HEADER_TIMEOUT_SECONDS": "2",
    "CHAINER_BODY_TIMEOUT_SECONDS": "2",
}
TERMINAL = {"done", "dead", "skipped", "discarded"}
BOUND_S = 30.0  # every action of an accepted event is terminal within this many seconds
NOTES: list[str] = []  # measurements a case reports in the run's summary (tests/faults/conftest.py)
PASSED: list[int] = []  # one entry per passed check_invariants call in this run: (accepted events checked)


class InvariantViolation(AssertionError):
    """A delivery promise does not hold; the message names the event or action and the promise."""


@dataclass
class Delivery:
    """One POST to a web process and its answer."""

    status: int
    body: dict[str, Any]
    web: int


@dataclass
class Cluster:
    """The processes of one test module and what the test knows it sent."""

    root: Path
    appendfsync: str = "always"
    appendonly: bool = True
    redis: RedisServer = field(init=False)
    sandbox_url: str = ""
    web_urls: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)  # event ids a web answered 2xx for
    replayed: Counter[str] = field(default_factory=Counter)  # action id -> successful DLQ replays
    checks: int = 0
    web_env: list[dict[str, str]] = field(default_factory=lambda: [{}, {}])  # extra environment of each web
    _next_web: int = 0

    def __post_init__(self) -> None:
        self.redis = RedisServer(self.root / "redis", appendonly=self.appendonly, appendfsync=self.appendfsync)
        self.rules_path = self.root / "rules.yaml"
        self.rules_path.write_text(RULES)

    # -- processes ---------------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("CHAINER_")},
            **TIMINGS,
            "CHAINER_REDIS_URL": self.redis.url,
            "CHAINER_RULES": str(self.rules_path),
            "CHAINER_HOOK_TOKEN": HOOK,
            "CHAINER_CIRCLECI_WEBHOOK_SECRETS": WHSEC,
            "CHAINER_ADMIN_TOKEN": ADMIN,
            "CHAINER_CIRCLECI_TOKEN": CIRCLE_TOKEN,
            "CHAINER_CIRCLECI_URL": self.sandbox_url or "http://127.0.0.1:9",
            "CHAINER_LOG_LEVEL": "INFO",
        }

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with (self.root / log_name).open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "chainer.cli", *args],
                cwd=self.root,
                env={**self.env, **(env or {})},
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.processes.append(process)
        return process

    def start(self) -> None:
        self.redis.start()
        port = free_port()
        self.sandbox_url = f"http://127.0.0.1:{port}"
        self._spawn(["sandbox", "--port", str(port)], "sandbox.log")
        for n in range(2):
            web_port = free_port()
            self._spawn(["web", "--port", str(web_port)], f"web{n}.log", self.web_env[n])
            self.web_urls.append(f"http://127.0.0.1:{web_port}")
        for url in [f"{self.sandbox_url}/_sandbox/requests", *(f"{u}/healthz" for u in self.web_urls)]:
            wait_for(lambda url=url: _answers(url), f"{url} to answer", 30)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.redis.stop()

    def start_worker(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        worker = self._spawn(["worker"], "worker.log", env)
        self.workers.append(worker)
        return worker

    def live_workers(self) -> int:
        client = syncredis.Redis.from_url(self.redis.url)
        try:
            count: int = client.zcount("chainer:workers", int(time.time() * 1000), "+inf")
            return count
        finally:
            client.close()

    def stop_workers(self, sig: int = signal.SIGKILL) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(sig)
        for worker in self.workers:
            worker.wait(timeout=40)
        self.workers.clear()

    def reset(self) -> None:
        """Between cases: no worker, an empty Redis, an empty sandbox log and no scripted faults."""
        self.stop_workers()
        if self.redis.process is None or self.redis.process.poll() is not None:
            self.redis.start()
        self.flush()
        httpx.delete(f"{self.sandbox_url}/_sandbox/requests", timeout=5)
        httpx.delete(f"{self.sandbox_url}/_sandbox/script", timeout=5)
        self.accepted.clear()
        self.replayed.clear()
        self.rules_path.write_text(RULES)

    def flush(self) -> None:
        client = syncredis.Redis.from_url(self.redis.url)
        client.flushall()
        client.close()

    # -- traffic -------------------------------------------------------------------------------------
    def deliver(
        self,
        branch: str,
        *,
        delivery: str | None = None,
        workflow: str | None = None,
        web: int | None = None,
        status: str = "success",
    ) -> Delivery:
        """POST one signed workflow-completed to a web process (alternating); remember an accepted event."""
        body = payloads.circleci_workflow(
            status,
            delivery=delivery or str(uuid.uuid4()),
            workflow_id=workflow or str(uuid.uuid4()),
            branch=branch,
        )
        raw, headers = payloads.signed(body, WHSEC)
        if web is None:
            web, self._next_web = self._next_web, (self._next_web + 1) % len(self.web_urls)
        try:
            response = httpx.post(f"{self.web_urls[web]}/hooks/circleci", content=raw, headers=headers, timeout=10)
        except httpx.TransportError as exc:
            return Delivery(0, {"error": str(exc)}, web)
        answer = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        if 200 <= response.status_code < 300 and answer.get("status") == "accepted":
            self.accepted.add(answer["event_id"])
        return Delivery(response.status_code, answer, web)

    def operator(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.web_urls[0]}{path}", headers=AUTH, timeout=10, **kw)

    def script(self, branch: str, status: int, **kw: Any) -> None:
        """Script the sandbox's answer to the next pipeline triggers of ``gh/acme/<branch>``."""
        fault = {"api": "circleci.v2", "status": status, "path_contains": f"/gh/acme/{branch}/pipeline", **kw}
        response = httpx.post(f"{self.sandbox_url}/_sandbox/script", json=fault, timeout=5)
        assert response.status_code == 201, response.text

    def calls(self, marker: str | None = None) -> list[dict[str, Any]]:
        """The pipeline triggers the sandbox saw (optionally only those carrying ``marker``)."""
        log = httpx.get(f"{self.sandbox_url}/_sandbox/requests", timeout=10).json()
        found = [r for r in log if r["method"] == "POST" and r["path"].endswith("/pipeline")]
        return [r for r in found if marker is None or _marker(r) == marker]

    def action(self, event_id: str) -> dict[str, Any]:
        view = self.operator("GET", f"/events/{event_id}")
        if view.status_code != 200:
            return {}
        actions: list[dict[str, Any]] = view.json()["actions"]
        return actions[0] if actions else {}

    def wait_state(self, event_id: str, states: set[str], timeout: float = BOUND_S) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def reached() -> bool:
            nonlocal found
            found = self.action(event_id)
            return found.get("state") in states

        wait_for(reached, f"action of {event_id} in {sorted(states)}", timeout)
        return found


def skewed(seconds: float) -> dict[str, str]:
    """The environment of a process whose wall clock is ``seconds`` off (tests/faults/skew/sitecustomize.py)."""
    paths = [str(Path(__file__).parent / "skew"), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p), "CHAINER_TEST_CLOCK_SKEW_SECONDS": str(seconds)}


def _marker(request: dict[str, Any]) -> str | None:
    body = request.get("body")
    if isinstance(body, dict) and isinstance(body.get("parameters"), dict):
        marker = body["parameters"].get("marker")
        return marker if isinstance(marker, str) else None
    return None


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(check: Any, what: str, timeout: float) -> None:
    """Poll ``check`` every 50 ms; raise naming ``what`` when it does not hold within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise InvariantViolation(f"{what}: not seen within {timeout:g} s")


# -- the invariants --------------------------------------------------------------------------------
def check_invariants(cluster: Cluster, *, bound: float = BOUND_S) -> None:
    """Every promise of DESIGN §3, §6, §9 over what the test sent; raise InvariantViolation on the first broken one.

    I1 every 2xx'd event exists with its decisions, and its action is terminal within ``bound``;
    I2 each done action produced exactly one accepted (2xx) provider call, no action more than one, and no call
       carries a marker of an event that was not accepted;
    I3 each dead action is listed once in the dead-letter list, with a reason;
    I4 Redis holds no event the test was not answered 2xx for (nothing rejected was stored);
    I5 the audit log pages cleanly forwards and backwards, every record once, and tells the same story:
       one webhook.received per event, one attempt.succeeded per done action, one action.dead per death.
    """
    deadline = time.monotonic() + bound
    actions: dict[str, dict[str, Any]] = {}
    for event_id in sorted(cluster.accepted):
        view = cluster.operator("GET", f"/events/{event_id}")
        if view.status_code != 200:
            raise InvariantViolation(f"I1: accepted event {event_id} is gone (GET /events answered {view.status_code})")
        if not view.json().get("decisions"):
            raise InvariantViolation(f"I1: accepted event {event_id} has no rule decisions")
        while True:
            action = cluster.action(event_id)
            if action.get("state") in TERMINAL:
                break
            if time.monotonic() > deadline:
                raise InvariantViolation(f"I1: action of {event_id} is {action.get('state')!r}, not terminal")
            time.sleep(0.1)
        actions[event_id] = action
    calls = [c for c in cluster.calls() if 200 <= c["status"] < 300]
    per_marker = Counter(_marker(c) for c in calls)
    for marker, count in per_marker.items():
        if marker not in cluster.accepted:
            raise InvariantViolation(f"I2: {count} accepted call(s) for {marker!r}, an event never accepted")
    listed = cluster.operator("GET", "/dlq", params={"limit": 500}).json()["items"]
    dead = {e["action_id"]: e for e in listed}
    dead_ids = Counter(e["action_id"] for e in listed)
    for event_id, action in actions.items():
        sent = per_marker[event_id]
        state = action["state"]
        if sent > 1:
            raise InvariantViolation(f"I2: action {action['action_id']} was accepted by the provider {sent} times")
        if state == "done" and sent != 1:
            raise InvariantViolation(f"I2: action {action['action_id']} is done but the provider accepted {sent} calls")
        if state == "skipped" and sent:
            raise InvariantViolation(f"I2: action {action['action_id']} was skipped but {sent} call(s) went out")
        if state == "dead":
            if dead_ids[action["action_id"]] != 1 or not dead[action["action_id"]].get(
                "reason", action.get("dead_reason")
            ):
                raise InvariantViolation(f"I3: dead action {action['action_id']} is not listed once with a reason")
    _check_stored_events(cluster)
    _check_audit(cluster, actions)
    cluster.checks += 1
    PASSED.append(len(actions))


def _check_stored_events(cluster: Cluster) -> None:
    client = syncredis.Redis.from_url(cluster.redis.url)
    try:
        stored = {k.decode().removeprefix("chainer:event:") for k in client.scan_iter("chainer:event:*", count=1000)}
    finally:
        client.close()
    extra = stored - cluster.accepted
    if extra:
        raise InvariantViolation(f"I4: {len(extra)} event(s) stored that no 2xx acknowledged, e.g. {sorted(extra)[0]}")


def _check_audit(cluster: Cluster, actions: dict[str, dict[str, Any]]) -> None:
    forward: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 37}
    for _ in range(10_000):
        page = cluster.operator("GET", "/audit", params=params).json()
        forward += page["items"]
        if not page["items"] or page["next"] is None:
            break
        params = {"limit": 37, "after": page["next"]}
    backward: list[dict[str, Any]] = []
    params = {"limit": 41, "before": "+"}
    for _ in range(10_000):
        page = cluster.operator("GET", "/audit", params=params).json()
        backward += page["items"]
        if not page["items"] or page["next"] is None:
            break
        params = {"limit": 41, "before": page["next"]}
    ids = [r["id"] for r in forward]
    if len(set(ids)) != len(ids) or ids != sorted(ids, key=_stream_order):
        raise InvariantViolation("I5: the forward walk of /audit repeats a record or is out of order")
    last = _stream_order(ids[-1]) if ids else (0, 0)
    back_ids = [i for i in reversed([r["id"] for r in backward]) if _stream_order(i) <= last]
    if back_ids != ids:
        raise InvariantViolation("I5: the backward walk of /audit is not the forward walk reversed")
    kinds = Counter((r.get("type"), r.get("event_id")) for r in forward)
    for event_id, action in actions.items():
        if kinds[("webhook.received", event_id)] != 1:
            raise InvariantViolation(
                f"I5: event {event_id} has {kinds[('webhook.received', event_id)]} webhook.received"
            )
        succeeded = kinds[("attempt.succeeded", event_id)]
        if succeeded != (1 if action["state"] == "done" else 0):
            raise InvariantViolation(
                f"I5: action {action['action_id']} is {action['state']} with {succeeded} successes"
            )
        deaths = kinds[("action.dead", event_id)]
        expected = cluster.replayed[action["action_id"]] + (1 if action["state"] == "dead" else 0)
        if action["state"] in ("dead", "done") and deaths != expected:
            raise InvariantViolation(f"I5: action {action['action_id']} has {deaths} action.dead, expected {expected}")


def _stream_order(sid: str) -> tuple[int, int]:
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)
