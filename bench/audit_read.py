"""Benchmark: the operator's reads with a big audit log (issue 13): ``GET /audit``, ``GET /events`` and ``/ui``.

Run from the repository root: ``.venv/bin/python -m bench.audit_read`` (1 000 000 records, a few minutes on
2 cores and about 1 GB of Redis), ``--records 2000`` for a short one, ``--help`` for every option.

1. Starts a fresh ``redis-server`` on a free loopback port (no persistence: reads never touch it, and no
   fork or rewrite lands in a measurement).
2. Fills the audit log with ``--records`` records written by chainer's own code: most through
   ``Store.append_audit`` (the store's ``append_audit.lua``, the script the app appends with), five records
   per synthetic delivery built by ``chainer.audit``'s builders, each filed in its event's trail, as a
   delivery, its rule, its action and its attempt write them; the newest ``--recent`` deliveries go
   through ``Intake.receive`` itself (authenticate, parse, match, plan, ``accept.lua``), so the pages that
   summarise deliveries read real events and ledgers. Projects rotate over ``PROJECTS`` names.
3. Starts ``chainer web`` on that Redis and times requests over one keep-alive loopback connection
   (``http.client``), one at a time: each query ``--samples`` times after ``WARMUP`` untimed ones.
4. Reads Redis memory: ``MEMORY USAGE`` of the audit stream per record, of a sample of event trails,
   and the growth of ``used_memory`` per record.

Targets (issue 13): ``/audit`` unfiltered page of 100 ≤ 20 ms, ``/ui`` recent events ≤ 50 ms (p50 here; the
p99 is reported next to it). Results: a table on stdout and ``bench/results/audit_read.json`` (machine,
commit, date). Nothing here asserts on time; ``tests/bench/test_audit_read.py`` runs it with 2 000 records.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis as syncredis
from redis.asyncio import Redis

from bench import machine, payloads, procs, stats
from chainer import audit
from chainer.events import BuildEvent, make_event_id
from chainer.intake import Intake
from chainer.jobs import action_id as make_action_id
from chainer.jobs import job_id as make_job_id
from chainer.jobs import ledger_context
from chainer.providers import catalogue
from chainer.rules import load_rules
from chainer.settings import Settings
from chainer.store import Store, keys

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
RECORDS = 1_000_000
RECENT = 500  # deliveries accepted through Intake.receive, the newest of the log
PER_DELIVERY = 5  # webhook.received, rule.matched, action.queued, attempt.started, attempt.succeeded
PROJECTS = 50
SAMPLES = 200
WARMUP = 5
CONCURRENT = 256  # append_audit calls in flight while filling (the store pipelines them)
TARGETS_MS = {"audit_newest": 20.0, "audit_oldest": 20.0, "ui_events": 50.0}
RULE = "bench-fan"
ACTION = "circleci.trigger_pipeline"


def project(n: int) -> str:
    return f"bench/p-{n % PROJECTS}"


def delivery_records(n: int, version: str) -> tuple[str, list[dict[str, Any]]]:
    """Delivery ``n``'s five records, built as intake, the plan and a worker build them."""
    build = 10_000_000 + n
    commit = payloads.commit_of(build)
    event = BuildEvent(
        provider="codeship",
        kind="build",
        event_id=make_event_id("codeship", f"bench:{build}"),
        project=project(n),
        status="success",
        raw_status="success",
        branch=f"b-{build}",
        commit=commit,
        build_id=build,
        build_url=f"https://app.codeship.com/projects/31337/builds/{build}",
    )
    action = make_action_id(event.event_id, RULE, 0)
    ledger = {
        "event_id": event.event_id,
        "rule": RULE,
        "action_id": action,
        "action": ACTION,
        "project": event.project or "",
        "branch": event.branch or "",
        "commit": commit,
        "rules_version": version,
    }
    context = ledger_context(ledger)
    params = {"project_slug": payloads.DOWN_FAN, "branch": event.branch, "parameters": {payloads.PARAMETER: build}}
    records = [
        audit.webhook_received(event, version, f"bench-{build}"),
        audit.rule_matched(event, version, RULE, 1),
        audit.action_queued(context, make_job_id(action), params),
        audit.attempt_started(context, 1),
        audit.attempt_succeeded(context, 1, 201, f"pipeline-{build}", {"number": build, "state": "created"}),
    ]
    return event.event_id, records


def settings_env(redis_url: str, rules_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINER_")}
    env.update(
        CHAINER_REDIS_URL=redis_url,
        CHAINER_RULES=str(rules_path),
        CHAINER_HOOK_TOKEN=payloads.HOOK_TOKEN,
        CHAINER_ADMIN_TOKEN=payloads.ADMIN_TOKEN,
        CHAINER_CIRCLECI_TOKEN=payloads.CIRCLECI_TOKEN,
        CHAINER_CIRCLECI_URL=f"http://{HOST}:9",
    )
    return env


async def fill(redis_url: str, rules_path: Path, records: int, recent: int) -> dict[str, Any]:
    """Write ``records`` audit records (about; whole deliveries) and answer what was written and how fast."""
    settings = Settings.from_env(settings_env(redis_url, rules_path))
    ruleset = load_rules(rules_path, catalogue=catalogue())
    client = Redis.from_url(redis_url)
    store = Store.configured(client, settings)
    try:
        started = time.perf_counter()
        intake = Intake(settings, store, lambda: ruleset)
        # Measure what one accepted delivery writes to the log, so the bulk makes up the rest of the count.
        before = await client.xlen(keys.AUDIT)
        outcome = await intake.receive("codeship", {}, payloads.codeship_body(1), payloads.HOOK_TOKEN)
        per_accept = max(await client.xlen(keys.AUDIT) - before, 1)
        if outcome.kind != "accepted":
            raise procs.BenchError(f"the probe delivery was not accepted: {outcome}")
        recent = min(recent, max(records // per_accept - 1, 0))
        bulk = max(records - per_accept * (recent + 1), 0) // PER_DELIVERY
        semaphore = asyncio.Semaphore(CONCURRENT)

        async def append(n: int) -> None:
            async with semaphore:
                event_id, items = delivery_records(n, ruleset.version)
                await store.append_audit(items, event_id=event_id)

        for first in range(0, bulk, 10_000):
            await asyncio.gather(*(append(n) for n in range(first, min(first + 10_000, bulk))))
        bulk_s = time.perf_counter() - started

        async def deliver(build: int) -> None:
            async with semaphore:
                body = payloads.codeship_body(build, payloads.FAN)
                done = await intake.receive("codeship", {}, body, payloads.HOOK_TOKEN)
                if done.kind != "accepted":
                    raise procs.BenchError(f"delivery {build} was not accepted: {done}")

        await asyncio.gather(*(deliver(2 + i) for i in range(recent)))
        return {
            "records": await client.xlen(keys.AUDIT),
            "bulk_deliveries": bulk,
            "accepted_deliveries": recent + 1,
            "records_per_accepted_delivery": per_accept,
            "fill_s": round(time.perf_counter() - started, 1),
            "bulk_fill_s": round(bulk_s, 1),
        }
    finally:
        await client.aclose()


def memory(redis_url: str, used_before: int, trails: int = 200) -> dict[str, Any]:
    """Bytes per record of the audit stream (MEMORY USAGE), of event trails, and of used_memory growth."""
    client = syncredis.Redis.from_url(redis_url)
    try:
        count = int(client.xlen(keys.AUDIT))
        stream = int(client.memory_usage(keys.AUDIT, samples=0) or 0)
        sampled = []
        for key in client.scan_iter(match=keys.event_audit("*"), count=1000):
            sampled.append(int(client.memory_usage(key, samples=0) or 0))
            if len(sampled) >= trails:
                break
        per_trail = sum(sampled) / len(sampled) if sampled else 0.0
        used = int(client.info("memory")["used_memory"])
        return {
            "stream_bytes": stream,
            "stream_bytes_per_record": round(stream / count, 1) if count else None,
            "trail_bytes_per_event": round(per_trail, 1),
            "trail_bytes_per_record": round(per_trail / PER_DELIVERY, 1),
            "used_memory_growth_per_record": round((used - used_before) / count, 1) if count else None,
            "used_memory_bytes": used,
        }
    finally:
        client.close()


def queries(mid_cursor: str) -> dict[str, str]:
    """The requests timed, by name: the figures of issue 13 and a few around them."""
    q = urllib.parse.quote
    busy = project(7)
    return {
        "audit_newest": "/audit?limit=100&before=%2B",
        "audit_oldest": "/audit?limit=100",
        "audit_middle": f"/audit?limit=100&after={q(mid_cursor)}",
        "audit_type": "/audit?limit=100&before=%2B&type=webhook.received",
        "audit_type_project": f"/audit?limit=100&before=%2B&type=attempt.succeeded&project={q(busy)}",
        "events": "/events?limit=50",
        "events_project": f"/events?limit=50&project={q(busy)}",
        "events_rule": f"/events?limit=50&rule={RULE}",
        "ui_events": "/ui",
    }


def time_requests(port: int, path: str, samples: int) -> tuple[list[float], dict[str, Any]]:
    """``samples`` timed GETs of ``path`` (after ``WARMUP`` untimed) on one keep-alive connection; seconds each,
    and what the last answer said (status, bytes, items)."""
    headers = {"Authorization": f"Bearer {payloads.ADMIN_TOKEN}"}
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    times: list[float] = []
    last: dict[str, Any] = {}
    try:
        for i in range(WARMUP + samples):
            started = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise procs.BenchError(f"GET {path} answered {response.status}: {body[:300]!r}")
            if i >= WARMUP:
                times.append(elapsed)
            last = {"status": response.status, "bytes": len(body)}
        if body.startswith(b"{"):
            page = json.loads(body)
            last["items"] = len(page["items"])
            last["next"] = page.get("next")
        else:
            last["rows"] = body.count(b'<tr class="outcome-')
    finally:
        conn.close()
    return times, last


def middle_cursor(redis_url: str) -> str:
    client = syncredis.Redis.from_url(redis_url)
    try:
        count = int(client.xlen(keys.AUDIT))
        first = client.xrange(keys.AUDIT, "-", "+", count=1)
        last = client.xrevrange(keys.AUDIT, "+", "-", count=1)
        if not first or count < 2:
            return "0-0"
        # Ids are <ms>-<seq>: halfway in time is about halfway in records for a fill at a steady rate.
        low = int(first[0][0].decode().split("-")[0])
        high = int(last[0][0].decode().split("-")[0])
        return f"{(low + high) // 2}-0"
    finally:
        client.close()


def run(
    records: int = RECORDS, samples: int = SAMPLES, recent: int = RECENT, workdir: Path | None = None
) -> dict[str, Any]:
    """The whole benchmark; every process it starts is stopped by its pid before it returns."""
    work = Path(workdir or tempfile.mkdtemp(prefix="chainer-audit-read-"))
    runner = procs.Processes(work / "logs")
    try:
        port = procs.free_port()
        data = work / "redis"
        data.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--bind", HOST, "--port", str(port), "--dir", str(data), "--save", ""]
        args += ["--appendonly", "no", "--maxmemory-policy", "noeviction"]
        server = runner.start("redis", args, stop_signal=signal.SIGTERM)
        url = f"redis://{HOST}:{port}/0"
        procs.wait_until(lambda: _ping(url), 20, f"redis-server on port {port} answers", server)
        rules_path = work / "rules.yaml"
        rules_path.write_text(payloads.rules_yaml())
        used_before = int(syncredis.Redis.from_url(url).info("memory")["used_memory"])
        filled = asyncio.run(fill(url, rules_path, records, recent))
        mem = memory(url, used_before)
        web_port = procs.free_port()
        chainer = [str(Path(sys.executable).with_name("chainer"))]
        if not Path(chainer[0]).exists():
            chainer = [sys.executable, "-m", "chainer.cli"]
        web = runner.start(
            "chainer-web",
            [*chainer, "web", "--host", HOST, "--port", str(web_port)],
            env=settings_env(url, rules_path),
            cwd=work,
        )
        procs.wait_until(lambda: procs.http_ok(f"http://{HOST}:{web_port}/readyz"), 60, "chainer web is ready", web)
        figures: dict[str, Any] = {}
        for name, path in queries(middle_cursor(url)).items():
            times, last = time_requests(web_port, path, samples)
            figures[name] = {"path": path, "ms": stats.summary(times, 1000.0), **last}
            if name in TARGETS_MS:
                figures[name]["target_ms"] = TARGETS_MS[name]
                figures[name]["met"] = figures[name]["ms"]["p50"] <= TARGETS_MS[name]
        return {
            "benchmark": "audit_read",
            "machine": machine.describe(ROOT),
            "config": {"records": records, "samples": samples, "recent": recent, "projects": PROJECTS},
            "fill": filled,
            "memory": mem,
            "requests": figures,
        }
    finally:
        runner.stop_all()


def _ping(url: str) -> bool:
    try:
        client = syncredis.Redis.from_url(url, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (syncredis.RedisError, OSError):
        return False


def table(results: dict[str, Any]) -> str:
    fill_ = results["fill"]
    mem = results["memory"]
    lines = [
        f"{fill_['records']:,} audit records ({fill_['bulk_deliveries']:,} deliveries through append_audit, "
        f"{fill_['accepted_deliveries']:,} through Intake.receive) written in {fill_['fill_s']} s",
        f"memory: stream {mem['stream_bytes_per_record']} B/record, trails {mem['trail_bytes_per_record']} B/record, "
        f"used_memory growth {mem['used_memory_growth_per_record']} B/record",
        f"{'request':<20} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'items':>6} {'target':>8}",
    ]
    for name, fig in results["requests"].items():
        ms = fig["ms"]
        items = fig.get("items", fig.get("rows", ""))
        target = f"≤ {fig['target_ms']:.0f}" + (" ok" if fig["met"] else " MISS") if "target_ms" in fig else ""
        cells = f"{ms['p50']:>8.2f} {ms['p90']:>8.2f} {ms['p99']:>8.2f} {ms['max']:>8.2f}"
        lines.append(f"{name:<20} {cells} {items!s:>6} {target:>8}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_read", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=RECORDS, help=f"audit records in the log ({RECORDS:,})")
    parser.add_argument("--samples", type=int, default=SAMPLES, help=f"timed requests per query ({SAMPLES})")
    parser.add_argument("--recent", type=int, default=RECENT, help=f"deliveries through Intake.receive ({RECENT})")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "audit_read.json")
    args = parser.parse_args(argv)
    results = run(args.records, args.samples, args.recent)
    print(table(results))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(stats.json_safe(results), indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
