"""The benchmark suite of issue 11 (DESIGN §9): ``bench/run [--quick] [--only PHASES]``.

Phases (each starts its own redis-server on a free loopback port, AOF on as in deploy/compose.yaml, and stops
every process it started before the next one):

* ``ingest``: wrk ``-t1 -c16`` with a fresh Codeship event per request against ``chainer web``, the bare Starlette
  route, the naive design (one arq job per request) and adnanh/webhook;
* ``e2e``: webhook → request at the (recorded) provider, open loop at 50 and 100 events/s, each event to its own
  downstream branch or all to one, with ``chainer web`` + ``chainer worker`` and with ``chainer run``;
* ``idle``: CPU of an idle worker (and web, and ``chainer run``) from /proc/<pid>/stat;
* ``redis_memory``: Redis bytes per retained event, by key type;
* ``rules``: ``load_rules`` of 10 000 rules against PyYAML's C loader, ``chainer lint`` of 1 000 to 50 000 rules;
* ``rss``: RSS of web and worker before and after N events;
* ``scale``: two web processes and two workers on one Redis, counting accepted = queued = sent.

Raw results go to ``bench/results/<UTC stamp>/`` (and ``bench/results/latest.json``), the table and charts to
``docs/performance.md`` and ``docs/perf-*.png``. Loopback only; every load is bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import payloads, procs, report, sender, stats, wrk
from bench.machine import describe
from bench.procs import BenchError, CpuAccount, Proc, Processes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PHASES = ("ingest", "e2e", "idle", "redis_memory", "rules", "rss", "scale")
HOST = "127.0.0.1"
HOOK_PATH = f"/hooks/codeship?token={payloads.HOOK_TOKEN}"


@dataclass
class Config:
    quick: bool = False
    phases: list[str] = field(default_factory=lambda: list(PHASES))
    ingest_seconds: float = 10.0
    ingest_rounds: int = 3
    warmup_seconds: float = 3.0
    connections: int = 16
    e2e_runs: list[str] = field(
        default_factory=lambda: [
            "split:fan:50",
            "split:fan:100",
            "split:one:50",
            "split:one:100",
            "run:fan:100",
            "run:one:50",
        ]
    )
    e2e_events: int = 500
    late_after_s: float = 5.0
    drain_timeout_s: float = 60.0
    idle_seconds: float = 20.0
    memory_events: int = 2000
    rss_events: int = 200_000
    rss_timeout_s: float = 3600.0
    rules_load_size: int = 10_000
    lint_sizes: list[int] = field(default_factory=lambda: [1_000, 10_000, 50_000])
    rules_timeout_s: float = 120.0
    scale_events: int = 1000
    scale_rate: float = 100.0
    output: Path = ROOT / "docs" / "performance.md"
    charts: bool = True

    @classmethod
    def quick_defaults(cls) -> Config:
        return cls(
            quick=True,
            ingest_seconds=5.0,
            ingest_rounds=1,
            warmup_seconds=2.0,
            e2e_runs=["split:fan:50", "split:fan:100", "split:one:50", "run:fan:100"],
            e2e_events=150,
            drain_timeout_s=30.0,
            idle_seconds=10.0,
            memory_events=500,
            rss_events=3000,
            rss_timeout_s=300.0,
            lint_sizes=[1_000, 10_000],
            rules_timeout_s=60.0,
            scale_events=300,
        )


def chainer_command() -> list[str]:
    """The ``chainer`` console script of this Python's environment (``python -m chainer.cli`` without one)."""
    script = Path(sys.executable).with_name("chainer")
    return [str(script)] if script.exists() else [sys.executable, "-m", "chainer.cli"]


class Bench:
    """One run: its directory, its processes and the servers each phase starts."""

    def __init__(self, config: Config, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self.procs = Processes(run_dir / "logs")
        self.chainer = chainer_command()
        self.rules_path = run_dir / "rules.yaml"
        self.rules_path.write_text(payloads.rules_yaml())
        self._serial = 0
        self.next_id = 1_000_000  # build ids: every event of the run is a fresh one

    def ids(self, count: int) -> list[int]:
        first = self.next_id
        self.next_id += count
        return list(range(first, first + count))

    def name(self, what: str) -> str:
        self._serial += 1
        return f"{self._serial:02d}-{what}"

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """Stop every process started inside the block when it ends, however it ends."""
        before = len(self.procs.items)
        try:
            yield
        finally:
            self.procs.stop_these(self.procs.items[before:])

    # -- servers ----------------------------------------------------------------------------------
    def redis(self, label: str) -> tuple[Proc, str]:
        port = procs.free_port()
        directory = self.run_dir / "redis" / label
        directory.mkdir(parents=True, exist_ok=True)
        # As deploy/compose.yaml runs it (AOF, fsync always, noeviction); no RDB snapshots, so that no fork or
        # dump of a big data set lands in a measurement or in the shutdown.
        args = [
            "redis-server",
            "--bind",
            HOST,
            "--port",
            str(port),
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--maxmemory-policy",
            "noeviction",
            "--save",
            "",
        ]
        proc = self.procs.start(self.name(f"redis-{label}"), args, stop_signal=signal.SIGTERM)
        url = f"redis://{HOST}:{port}/0"
        procs.wait_until(lambda: _redis_ping(url), 20, f"redis-server on port {port} answers", proc)
        return proc, url

    def env(self, redis_url: str, recorder_port: int | None = None) -> dict[str, str]:
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINER_")}
        env.update(
            CHAINER_REDIS_URL=redis_url,
            CHAINER_RULES=str(self.rules_path),
            CHAINER_HOOK_TOKEN=payloads.HOOK_TOKEN,
            CHAINER_ADMIN_TOKEN=payloads.ADMIN_TOKEN,
            CHAINER_CIRCLECI_TOKEN=payloads.CIRCLECI_TOKEN,
            CHAINER_CIRCLECI_URL=f"http://{HOST}:{recorder_port or 9}",
        )
        return env

    def recorder(self) -> tuple[Proc, int]:
        port = procs.free_port()
        proc = self.procs.start(
            self.name("recorder"), [sys.executable, "-m", "bench.recorder", "--port", str(port)], cwd=ROOT
        )
        procs.wait_until(lambda: procs.http_ok(f"http://{HOST}:{port}/_bench/ping"), 20, "the recorder answers", proc)
        return proc, port

    def chainer_web(self, env: dict[str, str]) -> tuple[Proc, int]:
        port = procs.free_port()
        proc = self.procs.start(
            self.name("chainer-web"),
            [*self.chainer, "web", "--host", HOST, "--port", str(port)],
            env=env,
            cwd=self.run_dir,
        )
        procs.wait_until(lambda: procs.http_ok(f"http://{HOST}:{port}/readyz"), 60, "chainer web is ready", proc)
        return proc, port

    def chainer_worker(self, env: dict[str, str]) -> Proc:
        return self.procs.start(self.name("chainer-worker"), [*self.chainer, "worker"], env=env, cwd=self.run_dir)

    def chainer_run(self, env: dict[str, str]) -> tuple[Proc, int]:
        port = procs.free_port()
        proc = self.procs.start(
            self.name("chainer-run"),
            [*self.chainer, "run", "--host", HOST, "--port", str(port)],
            env=env,
            cwd=self.run_dir,
        )
        procs.wait_until(
            lambda: procs.http_ok(f"http://{HOST}:{port}/readyz?workers=1"),
            60,
            "chainer run is ready with its worker",
            proc,
        )
        return proc, port

    def wait_workers(self, web_port: int, count: int, watch: list[Proc]) -> None:
        def ready() -> bool:
            for proc in watch:
                if not proc.alive():
                    raise BenchError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
            return procs.http_ok(f"http://{HOST}:{web_port}/readyz?workers={count}")

        procs.wait_until(ready, 60, f"{count} chainer worker(s) are live")

    def stack(self, label: str, *, webs: int = 1, workers: int = 1, run: bool = False) -> Stack:
        """Redis, the recorder, and chainer as ``webs`` web + ``workers`` worker processes or one ``chainer run``."""
        redis_proc, url = self.redis(label)
        recorder, recorder_port = self.recorder()
        env = self.env(url, recorder_port)
        stack = Stack(url, recorder_port, redis_proc, recorder)
        if run:
            proc, port = self.chainer_run(env)
            stack.webs.append((proc, port))
            stack.workers.append(proc)
            return stack
        for _ in range(webs):
            stack.webs.append(self.chainer_web(env))
        for _ in range(workers):
            stack.workers.append(self.chainer_worker(env))
        if workers:
            self.wait_workers(stack.webs[0][1], workers, stack.workers)
        return stack


@dataclass
class Stack:
    redis_url: str
    recorder_port: int
    redis: Proc
    recorder: Proc
    webs: list[tuple[Proc, int]] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)

    @property
    def targets(self) -> list[tuple[str, int]]:
        return [(HOST, port) for _, port in self.webs]

    def count(self) -> dict[str, int]:
        return dict(procs.http_json(f"http://{HOST}:{self.recorder_port}/_bench/count"))

    def arrivals(self) -> list[dict[str, Any]]:
        return list(procs.http_json(f"http://{HOST}:{self.recorder_port}/_bench/arrivals", timeout=60)["arrivals"])

    def clear(self) -> None:
        import urllib.request

        request = urllib.request.Request(f"http://{HOST}:{self.recorder_port}/_bench/arrivals", method="DELETE")
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 (the recorder on loopback)
            pass

    def wait_distinct(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count()["distinct"] >= count:
                return True
            for proc in [self.redis, self.recorder, *(p for p, _ in self.webs), *self.workers]:
                if not proc.alive():
                    raise BenchError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
            time.sleep(0.1)
        return False

    def audit_count(self, record_type: str) -> int:
        return audit_count(self.webs[0][1], record_type)


def audit_count(port: int, record_type: str, max_pages: int = 10_000) -> int:
    """How many audit records of ``record_type`` the operator API lists (every page of ``GET /audit``)."""
    headers = {"Authorization": f"Bearer {payloads.ADMIN_TOKEN}"}
    total, cursor = 0, None
    for _ in range(max_pages):
        query = f"type={record_type}&limit=500" + (f"&after={cursor}" if cursor else "")
        page = procs.http_json(f"http://{HOST}:{port}/audit?{query}", headers)
        total += len(page["items"])
        cursor = page.get("next")
        if not cursor or not page["items"]:
            return total
    return total


def _redis_ping(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def _log(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", flush=True)


def _check_accepts(port: int, build_id: int, expect_status: int = 202) -> Any:
    """One event by hand before a load: the server must accept it, or the load would measure refusals."""
    status, body = asyncio.run(sender.post_json(HOST, port, HOOK_PATH, payloads.codeship_body(build_id)))
    if status != expect_status:
        raise BenchError(f"a Codeship event was answered {status} {body!r}, not {expect_status}")
    return body


# -- ingest ---------------------------------------------------------------------------------------
def phase_ingest(b: Bench) -> dict[str, Any]:
    cfg = b.config
    template, count = payloads.lua_format_template(payloads.FAN)
    script = b.run_dir / "codeship.lua"
    script.write_text(wrk.lua_script(template, count, HOOK_PATH))
    hooks = b.run_dir / "hooks.json"
    hooks.write_text(json.dumps(payloads.webhook_hooks(), indent=2))

    def bare() -> tuple[Proc, int]:
        port = procs.free_port()
        proc = b.procs.start(
            b.name("bare-route"),
            [sys.executable, "-m", "bench.bare_app", "--mode", "bare", "--port", str(port)],
            cwd=ROOT,
        )
        procs.wait_until(lambda: procs.port_open(port), 30, "the bare route listens", proc)
        return proc, port

    def chainer() -> tuple[Proc, int]:
        _, url = b.redis("ingest-chainer")
        return b.chainer_web(b.env(url))

    def naive() -> tuple[Proc, int]:
        _, url = b.redis("ingest-naive")
        port = procs.free_port()
        proc = b.procs.start(
            b.name("naive-route"),
            [sys.executable, "-m", "bench.bare_app", "--mode", "naive", "--port", str(port), "--redis", url],
            cwd=ROOT,
        )
        procs.wait_until(lambda: procs.port_open(port), 30, "the naive route listens", proc)
        return proc, port

    def webhook() -> tuple[Proc, int]:
        port = procs.free_port()
        proc = b.procs.start(
            b.name("webhook"),
            ["webhook", "-hooks", str(hooks), "-ip", HOST, "-port", str(port)],
            stop_signal=signal.SIGTERM,
        )
        procs.wait_until(lambda: procs.port_open(port), 30, "adnanh/webhook listens", proc)
        return proc, port

    systems: list[tuple[str, str, Callable[[], tuple[Proc, int]]]] = [
        ("bare", "bare Starlette route (parse, 202)", bare),
        ("chainer", "chainer web (durable accept)", chainer),
        ("naive", "naive: one arq enqueue_job per request", naive),
        ("webhook", "adnanh/webhook running /bin/true", webhook),
    ]
    results: dict[str, Any] = {
        "wrk": f"-t1 -c{cfg.connections} -d{cfg.ingest_seconds:g}s --latency",
        "warmup_s": cfg.warmup_seconds,
        "rounds": cfg.ingest_rounds,
        "systems": {},
    }
    failures = (BenchError, RuntimeError, OSError, subprocess.TimeoutExpired)

    def load(port: int, seconds: float) -> tuple[dict[str, Any], str]:
        first, b.next_id = b.next_id, b.next_id + 10_000_000  # every request of the run a fresh event
        return wrk.run(f"http://{HOST}:{port}{HOOK_PATH}", script, first, seconds=seconds, connections=cfg.connections)

    # Every system is started and warmed up first, then measured in turns, round after round: a shared machine
    # goes through faster and slower spells, and turns put each system through the same ones. Each system's
    # figures are those of its median round (by req/s); ``rounds_rps`` keeps every round's.
    with b.group():
        live: dict[str, tuple[str, Proc, int, Any]] = {}  # key: label, server, port, its first answer
        for key, label, start in systems:
            _log(f"ingest: start {label}")
            try:
                proc, port = start()
                answer = _check_accepts(port, b.ids(1)[0], 202)
                if cfg.warmup_seconds > 0:
                    load(port, cfg.warmup_seconds)
                live[key] = (label, proc, port, answer)
            except failures as exc:
                results["systems"][key] = {"label": label, "error": str(exc)}
                _log(f"  failed: {exc}")
        order = list(live)
        measured: dict[str, list[dict[str, Any]]] = {key: [] for key in order}
        failed: dict[str, str] = {}
        for turn in range(cfg.ingest_rounds):
            # The order turns with each round, so that no system always follows the same one (whose Redis may still
            # be flushing its load).
            for key in order[turn % len(order) :] + order[: turn % len(order)]:
                if key in failed:
                    continue
                label, proc, port, answer = live[key]
                try:
                    account = CpuAccount(b.procs)
                    cpu_before = procs.cpu_seconds(proc.pid)
                    parsed, raw = load(port, cfg.ingest_seconds)
                    server_cpu = procs.cpu_seconds(proc.pid) - cpu_before
                except failures as exc:
                    failed[key] = str(exc)  # no more turns for it; the rounds it finished still count
                    _log(f"  {label} failed: {exc}")
                    continue
                (b.run_dir / f"wrk-{key}-{turn + 1}.txt").write_text(raw)
                measured[key].append(
                    {
                        "label": label,
                        **parsed,
                        "first_answer": answer,
                        "server_cpu_s": round(server_cpu, 2),
                        "server_rss_mb": round(procs.rss_bytes(proc.pid) / 2**20, 1),
                        "cpu": account.finish(),
                    }
                )
                _log(
                    f"ingest round {turn + 1}/{cfg.ingest_rounds}, {label}: {parsed['requests_per_s']:.0f} req/s, "
                    f"p99 {parsed['latency_ms'].get('p99', 0):.1f} ms"
                )
        for key, runs in measured.items():
            if not runs:
                results["systems"][key] = {"label": live[key][0], "error": failed[key]}
                continue
            results["systems"][key] = median_round(runs) | ({"failed_round": failed[key]} if key in failed else {})
        if measured.get("chainer"):  # a duplicate is answered 200, which wrk counts as a success
            results["systems"]["chainer"]["duplicates"] = audit_count(live["chainer"][2], "webhook.duplicate")
    return results


def median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A system's ingest figures: its median round by req/s (the lower middle one of an even count), with every
    round's req/s in ``rounds_rps`` in the order they ran."""
    ranked = sorted(runs, key=lambda run: run["requests_per_s"])
    return {**ranked[(len(ranked) - 1) // 2], "rounds_rps": [run["requests_per_s"] for run in runs]}


def parse_e2e_run(spec: str) -> tuple[str, str, float]:
    """``layout:target:rate``, e.g. ``split:fan:50`` (web + worker, each event to its own branch, 50/s)."""
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] not in ("split", "run") or parts[1] not in ("fan", "one"):
        raise ValueError(f"{spec!r}: use split|run : fan|one : <events per second>")
    return parts[0], parts[1], float(parts[2])


def latencies(records: list[sender.Sent], arrivals: list[dict[str, Any]]) -> tuple[dict[int, float], int]:
    """Seconds from each event's POST to the first downstream request that carries its build id
    (``inf`` when none came), and how many downstream requests repeated an event already served."""
    first: dict[str, float] = {}
    repeats = 0
    for arrival in arrivals:
        key = arrival.get("upstream")
        if key is None:
            continue
        if key in first:
            repeats += 1
            first[key] = min(first[key], arrival["t"])
        else:
            first[key] = arrival["t"]
    out = {}
    for record in records:
        arrived = first.get(str(record.key))
        out[record.key] = arrived - record.sent if arrived is not None and record.sent else float("inf")
    return out, repeats


def e2e_once(b: Bench, layout: str, target: str, rate: float, events: int) -> dict[str, Any]:
    cfg = b.config
    project = payloads.FAN if target == "fan" else payloads.ONE
    with b.group():
        stack = b.stack(f"e2e-{layout}-{target}-{rate:g}", run=layout == "run")
        warm = b.ids(10)
        asyncio.run(
            sender.open_loop(stack.targets, HOOK_PATH, [(i, payloads.codeship_body(i, payloads.FAN)) for i in warm], 20)
        )
        if not stack.wait_distinct(len(warm), 60):
            raise BenchError("the warm-up events did not reach the recorder within 60 s")
        stack.clear()
        ids = b.ids(events)
        bodies = [(i, payloads.codeship_body(i, project)) for i in ids]
        account = CpuAccount(b.procs)
        records = asyncio.run(sender.open_loop(stack.targets, HOOK_PATH, bodies, rate))
        last_post = max(r.sent for r in records)
        accepted = [
            r for r in records if r.status == 202 and isinstance(r.body, dict) and r.body.get("status") == "accepted"
        ]
        remaining = last_post + cfg.late_after_s + cfg.drain_timeout_s - time.monotonic()
        stack.wait_distinct(len(accepted), max(remaining, cfg.late_after_s))
        cpu = account.finish()
        arrivals = stack.arrivals()
    by_event, repeats = latencies(records, arrivals)
    (b.run_dir / f"e2e-{layout}-{target}-{rate:g}.json").write_text(
        json.dumps(
            stats.json_safe(
                {"events": [asdict(r) | {"latency_s": by_event[r.key]} for r in records], "arrivals": arrivals}
            )
        )
    )
    arrived_by = last_post + cfg.late_after_s
    late = sum(1 for r in records if not (by_event[r.key] < float("inf") and r.sent + by_event[r.key] <= arrived_by))
    values = [by_event[r.key] for r in records]
    return {
        "layout": layout,
        "target": target,
        "rate": rate,
        "events": events,
        "accepted": len(accepted),
        "statuses": _statuses(records),
        "latency_ms": stats.summary(values, 1000),
        "latencies_ms": sorted(round(v * 1000, 3) if v < float("inf") else float("inf") for v in values),
        "http_ms": stats.summary([r.done - r.sent for r in records if r.done], 1000),
        "late_or_unsent_after_s": cfg.late_after_s,
        "late_or_unsent": late,
        "never_sent": sum(1 for v in values if v == float("inf")),
        "downstream_repeats": repeats,
        "sender_behind_ms": round(max(r.sent - r.due for r in records) * 1000, 1),
        "cpu": cpu,
    }


def _statuses(records: list[sender.Sent]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        key = str(r.status) if r.status else f"error: {r.error.split(':')[0]}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def phase_e2e(b: Bench) -> dict[str, Any]:
    runs = []
    for spec in b.config.e2e_runs:
        layout, target, rate = parse_e2e_run(spec)
        _log(f"e2e: {spec} ({b.config.e2e_events} events)")
        try:
            result = e2e_once(b, layout, target, rate, b.config.e2e_events)
            lat = result["latency_ms"]
            _log(f"  p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, late/unsent {result['late_or_unsent']}")
        except (BenchError, OSError, ValueError) as exc:
            result = {"layout": layout, "target": target, "rate": rate, "error": str(exc)}
            _log(f"  failed: {exc}")
        runs.append(result)
    return {"runs": runs, "late_after_s": b.config.late_after_s}


# -- idle -----------------------------------------------------------------------------------------
def phase_idle(b: Bench) -> dict[str, Any]:
    seconds = b.config.idle_seconds
    out: dict[str, Any] = {"seconds": seconds}
    for layout in ("split", "run"):
        _log(f"idle: {layout} for {seconds:g} s")
        with b.group():
            stack = b.stack(f"idle-{layout}", run=layout == "run")
            time.sleep(3)  # start-up work done
            watched = (
                {"worker": stack.workers[0]}
                if layout == "run"
                else {"web": stack.webs[0][0], "worker": stack.workers[0]}
            )
            name = {"worker": "chainer run"} if layout == "run" else {"web": "chainer web", "worker": "chainer worker"}
            before = {k: procs.cpu_seconds(p.pid) for k, p in watched.items()}
            redis_before = procs.cpu_seconds(stack.redis.pid)
            started = time.monotonic()
            time.sleep(seconds)
            wall = time.monotonic() - started
            for key, proc in watched.items():
                used = procs.cpu_seconds(proc.pid) - before[key]
                out[name[key]] = {"cpu_s": round(used, 3), "pct_of_core": round(100 * used / wall, 2)}
            used = procs.cpu_seconds(stack.redis.pid) - redis_before
            out[f"redis-server ({layout})"] = {"cpu_s": round(used, 3), "pct_of_core": round(100 * used / wall, 2)}
    _log(f"  worker {out.get('chainer worker', {}).get('pct_of_core')} % of a core")
    return out


# -- Redis memory ---------------------------------------------------------------------------------
def key_pattern(key: str) -> str:
    """A key with its ids replaced by ``*``: any ``:``-separated part holding a digit (event and action ids,
    build ids, branches ``b-<id>``), so that one pattern groups the keys of one kind."""
    parts = ["*" if any(c.isdigit() for c in part) else part for part in key.split(":")]
    collapsed: list[str] = []
    for part in parts:
        if not (part == "*" and collapsed and collapsed[-1] == "*"):
            collapsed.append(part)
    return ":".join(collapsed)


KEY_LABELS = (
    ("chainer:audit:event:", "per-event audit trail"),
    ("chainer:audit", "global audit stream"),
    ("chainer:event:", "event hash"),
    ("chainer:action:", "ledger (per action)"),
    ("chainer:seen:", "dedupe key"),
    ("chainer:children:", "lineage children"),
    ("chainer:lineage:", "lineage of started builds"),
    ("chainer:open", "open actions index"),
    ("arq:result:", "arq job result"),
    ("arq:job:", "arq job"),
)


def key_label(pattern: str) -> str:
    for prefix, label in KEY_LABELS:
        if pattern == prefix or pattern.startswith(prefix):
            return label
    return pattern


RETAINED_TTL_MS = 7 * 86_400_000  # a key that lives longer than this (or has no TTL) counts as retained


def redis_keys(url: str) -> dict[str, dict[str, Any]]:
    """Per key pattern: Redis type, key count, entries (stream/list/hash/set/zset length), MEMORY USAGE bytes,
    and the longest time to live among its keys (``ttl_ms``; -1 when one of them never expires)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=30)
    groups: dict[str, dict[str, Any]] = {}
    try:
        batch: list[bytes] = []

        def flush() -> None:
            pipe = client.pipeline(transaction=False)
            for key in batch:
                pipe.type(key)
                pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
            answers = pipe.execute()
            lengths = client.pipeline(transaction=False)
            kinds = []
            for key, kind in zip(batch, answers[0::2], strict=True):
                kind = kind.decode() if isinstance(kind, bytes) else str(kind)
                kinds.append(kind)
                command = {"stream": "XLEN", "list": "LLEN", "hash": "HLEN", "set": "SCARD", "zset": "ZCARD"}.get(kind)
                lengths.execute_command(command, key) if command else lengths.execute_command("EXISTS", key)
                lengths.pttl(key)
            replies = lengths.execute()
            for key, kind, usage, size, ttl in zip(
                batch, kinds, answers[1::2], replies[0::2], replies[1::2], strict=True
            ):
                pattern = key_pattern(key.decode(errors="replace"))
                group = groups.setdefault(pattern, {"type": kind, "keys": 0, "entries": 0, "bytes": 0, "ttl_ms": -2})
                group["keys"] += 1
                group["entries"] += int(size or 0) if kind != "string" else 1
                group["bytes"] += int(usage or 0)
                ttl = int(ttl)
                if ttl == -1 or group["ttl_ms"] == -1:
                    group["ttl_ms"] = -1
                elif ttl >= 0:
                    group["ttl_ms"] = max(group["ttl_ms"], ttl)
            batch.clear()

        for key in client.scan_iter(count=1000):
            batch.append(key)
            if len(batch) >= 500:
                flush()
        if batch:
            flush()
    finally:
        client.close()
    return groups


def used_memory(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=30)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def memory_breakdown(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], events: int
) -> list[dict[str, Any]]:
    rows = []
    for pattern, group in sorted(after.items(), key=lambda kv: -kv[1]["bytes"]):
        old = before.get(pattern, {"keys": 0, "entries": 0, "bytes": 0})
        added = group["bytes"] - old["bytes"]
        entries = group["entries"] - old["entries"]
        if added <= 0 and group["keys"] == old["keys"]:
            continue
        rows.append(
            {
                "pattern": pattern,
                "label": key_label(pattern),
                "type": group["type"],
                "keys_added": group["keys"] - old["keys"],
                "entries_added": entries,
                "bytes_added": added,
                "bytes_per_event": round(added / events, 1),
                "bytes_per_entry": round(added / entries, 1) if entries > 0 else None,
                "entries_per_event": round(entries / events, 2),
                "ttl_ms": group.get("ttl_ms", -1),
                "retained": group.get("ttl_ms", -1) in (-1, -2) or group.get("ttl_ms", -1) > RETAINED_TTL_MS,
            }
        )
    return rows


def phase_redis_memory(b: Bench) -> dict[str, Any]:
    events = b.config.memory_events
    _log(f"redis memory: {events} events, one action each")
    with b.group():
        stack = b.stack("memory")
        before, used_before = redis_keys(stack.redis_url), used_memory(stack.redis_url)
        ids = b.ids(events)
        body_bytes = len(payloads.codeship_body(ids[0]))
        records = asyncio.run(
            sender.closed_loop(
                stack.targets, HOOK_PATH, events, lambda i: (ids[i], payloads.codeship_body(ids[i])), concurrency=8
            )
        )
        accepted = sum(1 for r in records if r.status == 202)
        if not stack.wait_distinct(accepted, 120):
            raise BenchError("not every action reached the recorder within 120 s")
        deadline = time.monotonic() + 60
        while stack.audit_count("attempt.succeeded") < accepted and time.monotonic() < deadline:
            time.sleep(0.5)  # the ledger and audit trail are final only once each attempt is recorded
        time.sleep(1)
        after, used_after = redis_keys(stack.redis_url), used_memory(stack.redis_url)
    rows = memory_breakdown(before, after, accepted)
    per = max(accepted, 1)
    retained = sum(r["bytes_added"] for r in rows if r["retained"])
    result = {
        "events": accepted,
        "payload_bytes": body_bytes,
        "rows": rows,
        "retained_ttl_days": RETAINED_TTL_MS / 86_400_000,
        "bytes_per_event_keys": round(retained / per, 1),
        "bytes_per_event_short_lived": round(sum(r["bytes_added"] for r in rows if not r["retained"]) / per, 1),
        "bytes_per_event_used_memory": round((used_after - used_before) / per, 1),
        "bytes_per_event_beyond_payload": round(retained / per - body_bytes, 1),
    }
    _log(f"  {result['bytes_per_event_keys']:.0f} B per retained event (MEMORY USAGE), payload {body_bytes} B")
    return result


# -- rules ----------------------------------------------------------------------------------------
def _timed(
    args: list[str], timeout: float, env: dict[str, str] | None = None
) -> tuple[float | None, subprocess.CompletedProcess[str] | None]:
    started = time.perf_counter()
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env, check=False)
    except subprocess.TimeoutExpired:
        return None, None
    return time.perf_counter() - started, done


def phase_rules(b: Bench) -> dict[str, Any]:
    cfg = b.config
    timeout = cfg.rules_timeout_s
    sizes = sorted({cfg.rules_load_size, *cfg.lint_sizes})
    out: dict[str, Any] = {"timeout_s": timeout, "sizes": {}}
    startup, done = _timed([*b.chainer, "lint", str(b.rules_path)], timeout)
    out["lint_startup_s"] = startup if done is not None and done.returncode == 0 else None
    for n in sizes:
        path = b.run_dir / f"rules-{n}.yaml"
        path.write_text(payloads.big_rules(n))
        row: dict[str, Any] = {"rules": n, "bytes": path.stat().st_size}
        _log(f"rules: {n} rules ({row['bytes'] / 1e6:.1f} MB)")
        for how in ("yaml", "load"):
            wall, done = _timed([sys.executable, "-m", "bench.rules_load", str(path), "--how", how], timeout + 10)
            if done is None or wall is None:
                row[how] = {"timed_out": True}
            elif done.returncode != 0:
                row[how] = {"error": (done.stderr or done.stdout).strip()[-2000:]}
            else:
                row[how] = json.loads(done.stdout.strip().splitlines()[-1])
                if row[how]["seconds"] > timeout:
                    row[how]["timed_out"] = True
        if n in cfg.lint_sizes:
            wall, done = _timed([*b.chainer, "lint", str(path)], timeout)
            if done is None or wall is None:
                row["lint"] = {"timed_out": True}
            else:
                row["lint"] = {
                    "seconds": wall,
                    "exit": done.returncode,
                    "last_line": (done.stdout.strip().splitlines() or [""])[-1][:200],
                }
        out["sizes"][str(n)] = row
        _log(f"  yaml {_secs(row.get('yaml'))}, load {_secs(row.get('load'))}, lint {_secs(row.get('lint'))}")
    return out


def _secs(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    if entry.get("timed_out"):
        return "timed out"
    if "error" in entry:
        return "error"
    return f"{entry['seconds']:.2f} s"


# -- RSS ------------------------------------------------------------------------------------------
def phase_rss(b: Bench) -> dict[str, Any]:
    cfg = b.config
    total = cfg.rss_events
    warm = min(1000, max(100, total // 20))
    _log(f"rss: {warm} warm-up events, then {total} events")
    with b.group():
        stack = b.stack("rss")
        web, worker = stack.webs[0][0], stack.workers[0]

        def sample(done: int) -> dict[str, Any]:
            return {
                "events": done,
                "t": round(time.monotonic() - t0, 1),
                "web_mb": round(procs.rss_bytes(web.pid) / 2**20, 1),
                "worker_mb": round(procs.rss_bytes(worker.pid) / 2**20, 1),
            }

        t0 = time.monotonic()
        series = [sample(0)]
        ids = b.ids(warm + total)
        make = lambda i: (ids[i], payloads.codeship_body(ids[i]))  # noqa: E731
        asyncio.run(sender.closed_loop(stack.targets, HOOK_PATH, warm, make, concurrency=16))
        if not stack.wait_distinct(warm, 120):
            raise BenchError("the warm-up events did not all reach the recorder within 120 s")
        before = sample(0)
        series.append(before)
        step = max(1, total // 10)
        deadline = time.monotonic() + cfg.rss_timeout_s

        def progress(n: int) -> None:
            if n % step == 0:
                series.append(sample(n))

        records = asyncio.run(
            sender.closed_loop(
                stack.targets,
                HOOK_PATH,
                total,
                lambda i: make(warm + i),
                concurrency=16,
                progress=progress,
                deadline=deadline,
            )
        )
        accepted = sum(1 for r in records if r.status == 202)
        drain_until = max(time.monotonic() + 30.0, deadline)
        drained = False
        while not drained and time.monotonic() < drain_until:  # the worker catches up; sample it every 10 s
            drained = stack.wait_distinct(warm + accepted, min(10.0, max(0.1, drain_until - time.monotonic())))
            if not drained:
                series.append(sample(len(records)))
        after = sample(len(records))
        series.append(after)
        redis_mb = round(used_memory(stack.redis_url) / 2**20, 1)
    out = {
        "warmup_events": warm,
        "events": len(records),
        "accepted": accepted,
        "drained": drained,
        "before": before,
        "after": after,
        "series": series,
        "redis_used_mb": redis_mb,
        "web_growth_pct": round(100 * (after["web_mb"] / before["web_mb"] - 1), 1),
        "worker_growth_pct": round(100 * (after["worker_mb"] / before["worker_mb"] - 1), 1),
    }
    _log(f"  web {before['web_mb']} → {after['web_mb']} MB, worker {before['worker_mb']} → {after['worker_mb']} MB")
    return out


# -- two webs, two workers ------------------------------------------------------------------------
def phase_scale(b: Bench) -> dict[str, Any]:
    cfg = b.config
    events = cfg.scale_events
    _log(f"scale: 2 web + 2 workers, {events} events at {cfg.scale_rate:g}/s")
    with b.group():
        stack = b.stack("scale", webs=2, workers=2)
        ids = b.ids(events)
        records = asyncio.run(
            sender.open_loop(stack.targets, HOOK_PATH, [(i, payloads.codeship_body(i)) for i in ids], cfg.scale_rate)
        )
        accepted = [
            r for r in records if r.status == 202 and isinstance(r.body, dict) and r.body.get("status") == "accepted"
        ]
        queued_replies = sum(int(r.body.get("queued", 0)) for r in accepted if isinstance(r.body, dict))
        stack.wait_distinct(len(accepted), cfg.drain_timeout_s + 30)
        time.sleep(1)
        arrivals = stack.arrivals()
        queued_audit = stack.audit_count("action.queued")
        succeeded_audit = stack.audit_count("attempt.succeeded")
    mine = {str(i) for i in ids}
    sent = {a["upstream"] for a in arrivals if a.get("upstream") in mine}
    requests = sum(1 for a in arrivals if a.get("upstream") in mine)
    by_event, _ = latencies(records, arrivals)
    out = {
        "events": events,
        "rate": cfg.scale_rate,
        "statuses": _statuses(records),
        "accepted": len(accepted),
        "queued_replies": queued_replies,
        "queued_audit": queued_audit,
        "succeeded_audit": succeeded_audit,
        "sent": len(sent),
        "downstream_requests": requests,
        "duplicates": requests - len(sent),
        "latency_ms": stats.summary(list(by_event.values()), 1000),
    }
    # The promise: every accepted event is queued and sent, once. (A 503 under load is allowed: the provider
    # redelivers; the statuses show how many there were.)
    out["ok"] = (
        out["accepted"] == out["queued_replies"] == out["queued_audit"] == out["sent"] > 0 and out["duplicates"] == 0
    )
    _log(f"  accepted {out['accepted']}, queued {queued_audit}, sent {out['sent']}, duplicates {out['duplicates']}")
    return out


PHASE_FUNCTIONS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "ingest": phase_ingest,
    "e2e": phase_e2e,
    "idle": phase_idle,
    "redis_memory": phase_redis_memory,
    "rules": phase_rules,
    "rss": phase_rss,
    "scale": phase_scale,
}


# -- main -----------------------------------------------------------------------------------------
class Stopped(KeyboardInterrupt):
    pass


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} rounds: at least 1")
    return value


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="bench/run", description="chainer's benchmark suite (bench/README.md).")
    parser.add_argument("--quick", action="store_true", help="short loads and small counts (a few minutes)")
    parser.add_argument("--only", help=f"comma-separated phases of {', '.join(PHASES)}")
    parser.add_argument("--skip", help="comma-separated phases to leave out")
    parser.add_argument("--ingest-seconds", type=float)
    parser.add_argument("--ingest-rounds", type=_at_least_one, help="turns of every system in the ingest phase (3)")
    parser.add_argument("--warmup-seconds", type=float)
    parser.add_argument("--e2e-runs", help="comma-separated layout:target:rate, e.g. split:fan:50,run:one:50")
    parser.add_argument("--e2e-events", type=int)
    parser.add_argument("--idle-seconds", type=float)
    parser.add_argument("--memory-events", type=int)
    parser.add_argument("--rss-events", type=int)
    parser.add_argument("--rules-size", type=int, help="rule count of the load_rules vs C-loader figure (10 000)")
    parser.add_argument("--lint-sizes", help="comma-separated rule counts for chainer lint")
    parser.add_argument("--rules-timeout", type=float, help="seconds before a load or lint counts as too slow")
    parser.add_argument("--scale-events", type=int)
    parser.add_argument("--output", type=Path, help="the Markdown report (default docs/performance.md)")
    parser.add_argument("--no-charts", action="store_true")
    args = parser.parse_args(argv)
    cfg = Config.quick_defaults() if args.quick else Config()
    if args.only:
        cfg.phases = _phases(parser, args.only)
    if args.skip:
        skipped = _phases(parser, args.skip)
        cfg.phases = [p for p in cfg.phases if p not in skipped]
    simple = {
        "ingest_seconds": "ingest_seconds",
        "ingest_rounds": "ingest_rounds",
        "warmup_seconds": "warmup_seconds",
        "e2e_events": "e2e_events",
        "idle_seconds": "idle_seconds",
        "memory_events": "memory_events",
        "rss_events": "rss_events",
        "rules_timeout": "rules_timeout_s",
        "rules_size": "rules_load_size",
        "scale_events": "scale_events",
        "output": "output",
    }
    for arg, attribute in simple.items():
        if getattr(args, arg) is not None:
            setattr(cfg, attribute, getattr(args, arg))
    if args.e2e_runs:
        cfg.e2e_runs = [s.strip() for s in args.e2e_runs.split(",") if s.strip()]
        for spec in cfg.e2e_runs:
            try:
                parse_e2e_run(spec)
            except ValueError as exc:
                parser.error(str(exc))
    if args.lint_sizes:
        cfg.lint_sizes = [int(s) for s in args.lint_sizes.split(",") if s.strip()]
    cfg.charts = not args.no_charts
    return cfg


def _phases(parser: argparse.ArgumentParser, text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    return names


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    missing = [tool for tool in ("redis-server", "wrk", "webhook") if shutil.which(tool) is None]
    if missing:
        print(f"bench: missing {', '.join(missing)} (bench/run installs them)", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = RESULTS / stamp
    run_dir.mkdir(parents=True)
    bench = Bench(cfg, run_dir)
    results: dict[str, Any] = {"machine": describe(ROOT), "config": _config_json(cfg), "phases": {}}
    _log(f"bench: {'quick ' if cfg.quick else ''}run, phases {', '.join(cfg.phases)}; raw results in {run_dir}")
    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    # Ctrl-C too, even when started in the background of a shell that set SIGINT to be ignored.
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    account = CpuAccount(bench.procs)
    interrupted = failed = False
    try:
        for phase in cfg.phases:
            phase_account = CpuAccount(bench.procs)
            try:
                results["phases"][phase] = PHASE_FUNCTIONS[phase](bench)
            except (BenchError, OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                failed = True
                results["phases"][phase] = {"error": f"{type(exc).__name__}: {exc}"}
                _log(f"{phase} failed: {exc}")
                (run_dir / f"{phase}-error.txt").write_text(traceback.format_exc())
            results["phases"][phase]["cpu"] = results["phases"][phase].get("cpu") or phase_account.finish()
            _save(results, run_dir)
    except KeyboardInterrupt as exc:
        interrupted = True
        _log(f"bench: interrupted ({str(exc) or 'SIGINT'}); stopping every process it started")
    finally:
        bench.procs.stop_all()
        shutil.rmtree(run_dir / "redis", ignore_errors=True)  # the AOF files: big and of no further use
        for s, handler in previous.items():
            signal.signal(s, handler)
    results["cpu"] = account.finish()
    results["interrupted"] = interrupted
    _save(results, run_dir)
    if interrupted:
        return 130
    written = report.write(results, cfg.output, charts=cfg.charts)
    _log(f"bench: wrote {', '.join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in written)}")
    return 1 if failed else 0


def _config_json(cfg: Config) -> dict[str, Any]:
    data = asdict(cfg)
    data["output"] = str(cfg.output)
    return data


def _save(results: dict[str, Any], run_dir: Path) -> None:
    text = json.dumps(stats.json_safe(results), indent=2)
    (run_dir / "results.json").write_text(text)
    (RESULTS / "latest.json").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
