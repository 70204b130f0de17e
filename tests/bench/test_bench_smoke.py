"""The pure parts of the benchmark suite (bench/), so that CI notices when they rot.

Nothing here runs wrk, starts a server process or times anything: parsing wrk's report, the percentile math, the
generated bodies, rules and hooks (checked against chainer's own rules loader), the recorder and the sender over
a loopback socket inside the test, the key grouping of the Redis memory figure, and the report on canned results.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import payloads, procs, recorder, report, sender, stats, suite, wrk
from bench.machine import cpu_model
from bench.rules_load import catalogue_kwargs, load_rules_compat, measure, parse_rules_compat

WRK_REPORT = """\
Running 3s test @ http://127.0.0.1:39997/hooks/codeship?token=x
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    15.94ms    5.19ms    1.20s   75.80%
    Req/Sec     1.01k   208.79     1.36k    70.00%
  Latency Distribution
     50%  812.00us
     75%   18.81ms
     90%   22.55ms
     99%    1.01s
  3011 requests in 3.01s, 673.36KB read
  Socket errors: connect 0, read 2, write 0, timeout 7
  Non-2xx or 3xx responses: 12
Requests/sec:    999.84
Transfer/sec:    223.60KB
"""


# -- wrk ------------------------------------------------------------------------------------------
def test_wrk_report_is_read_with_units_errors_and_refusals() -> None:
    parsed = wrk.parse(WRK_REPORT)
    assert parsed["requests_per_s"] == 999.84
    assert parsed["requests"] == 3011
    assert parsed["duration_s"] == pytest.approx(3.01)
    assert parsed["latency_ms"]["p50"] == pytest.approx(0.812)
    assert parsed["latency_ms"]["p75"] == pytest.approx(18.81)
    assert parsed["latency_ms"]["p99"] == pytest.approx(1010.0)
    assert parsed["latency_ms"]["mean"] == pytest.approx(15.94)
    assert parsed["latency_ms"]["max"] == pytest.approx(1200.0)
    assert parsed["errors"] == {"connect": 0, "read": 2, "write": 0, "timeout": 7}
    assert parsed["non_2xx_3xx"] == 12


def test_wrk_report_without_requests_per_second_is_refused() -> None:
    with pytest.raises(ValueError, match="Requests/sec"):
        wrk.parse("unable to connect to 127.0.0.1:1 Connection refused\n")
    with pytest.raises(ValueError, match="duration"):
        wrk.to_ms("12 parsecs")


def test_wrk_script_sends_the_codeship_body_with_a_fresh_build_id() -> None:
    template, count = payloads.lua_format_template()
    script = wrk.lua_script(template, count, "/hooks/codeship?token=t")
    assert f"string.format(template, {', '.join(['id'] * count)})" in script
    assert 'wrk.path = "/hooks/codeship?token=t"' in script
    assert "next_id = tonumber(args[1]" in script
    # Lua's %d formats like Python's: the body wrk sends for id 7 is a Codeship build 7 of bench/fan.
    body = json.loads(template % ((7,) * count))
    assert body["build"]["build_id"] == 7
    assert body["build"]["branch"] == "b-7"
    assert body["build"]["project_name"] == payloads.FAN
    with pytest.raises(ValueError, match="]]"):
        wrk.lua_script("a]]b", 0, "/")


# -- statistics -----------------------------------------------------------------------------------
def test_percentiles_interpolate_and_never_completed_samples_sort_last() -> None:
    values = list(range(1, 101))
    assert stats.percentile(values, 50) == pytest.approx(50.5)
    assert stats.percentile(values, 99) == pytest.approx(99.01)
    assert stats.percentile([3.0], 99) == 3.0
    assert math.isnan(stats.percentile([], 50))
    assert stats.percentile([1.0, 2.0, math.inf, math.inf], 25) == pytest.approx(1.75)
    assert stats.percentile([1.0, 2.0, math.inf, math.inf], 50) == math.inf
    assert stats.percentile([1.0, 2.0, 3.0, math.inf], 99) == math.inf
    with pytest.raises(ValueError):
        stats.percentile(values, 101)
    summary = stats.summary([0.001, 0.002, math.inf], scale=1000)
    assert summary["count"] == 3
    assert summary["missing"] == 1
    assert summary["mean"] == pytest.approx(1.5)
    assert summary["p99"] == math.inf
    assert stats.json_safe({"a": [math.inf, math.nan, 1.0]}) == {"a": ["inf", "nan", 1.0]}


# -- payloads, rules, hooks -----------------------------------------------------------------------
def test_codeship_bodies_are_fresh_half_kilobyte_events() -> None:
    one, two = json.loads(payloads.codeship_body(1)), json.loads(payloads.codeship_body(2, payloads.ONE, "main"))
    assert one["build"]["build_id"] == 1 and one["build"]["branch"] == "b-1"
    assert two["build"]["project_name"] == payloads.ONE and two["build"]["branch"] == "main"
    assert one["build"]["commit_id"] != two["build"]["commit_id"]
    assert 400 <= len(payloads.codeship_body(123_456)) <= 700


def test_bench_rules_load_in_chainer_with_one_action_each() -> None:
    ruleset = parse_rules_compat(payloads.rules_yaml(), "bench-rules.yaml")
    assert [r.name for r in ruleset.rules] == ["bench-fan", "bench-one"]
    assert all(len(r.actions) == 1 for r in ruleset.rules)


def test_big_rules_are_valid_and_about_330_bytes_a_rule(tmp_path: Path) -> None:
    text = payloads.big_rules(200)
    assert 300 * 200 <= len(text.encode()) <= 360 * 200
    assert len(yaml.load(text, Loader=yaml.CSafeLoader)["rules"]) == 200
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    assert len(load_rules_compat(path).rules) == 200
    assert measure(path, "yaml")["rules"] == 200
    loaded = measure(path, "load")
    assert loaded["rules"] == 200 and loaded["seconds"] > 0


def test_catalogue_is_passed_only_to_a_loader_that_takes_one() -> None:
    def old(path: str) -> None: ...

    def new(path: str, *, catalogue: object) -> None: ...

    assert catalogue_kwargs(old) == {}
    given = catalogue_kwargs(new)
    assert list(given) == ["catalogue"] and given["catalogue"] is not None


def test_webhook_hook_checks_token_status_and_project() -> None:
    (hook,) = payloads.webhook_hooks("t0k")
    assert hook["id"] == "codeship"
    assert hook["execute-command"] == "/bin/true"
    assert hook["success-http-response-code"] == 202
    rules = json.dumps(hook["trigger-rule"])
    for expected in ('"t0k"', '"build.status"', '"build.project_name"', payloads.FAN):
        assert expected in rules


# -- recorder and sender --------------------------------------------------------------------------
def test_recorder_answers_like_circleci_and_records_the_event() -> None:
    rec = recorder.Recorder()
    body = json.dumps({"branch": "b-9", "parameters": {payloads.PARAMETER: "9"}}).encode()
    status, answer = rec.answer("POST", "/api/v2/project/gh/bench/down/pipeline", 12.5, body)
    assert status == 201 and answer["number"] == 1 and answer["state"] == "created" and answer["id"]
    assert rec.arrivals == [
        {"t": 12.5, "path": "/api/v2/project/gh/bench/down/pipeline", "branch": "b-9", "upstream": "9"}
    ]
    assert rec.answer("GET", "/_bench/count", 0, b"") == (200, {"requests": 1, "distinct": 1})
    assert rec.answer("POST", "/api/v2/project/gh/x/y/pipeline", 0, b"{nope")[0] == 400
    assert rec.answer("GET", "/api/v2/project/gh/x/y/pipeline", 0, b"")[0] == 405
    assert rec.answer("GET", "/elsewhere", 0, b"")[0] == 404
    assert rec.answer("DELETE", "/_bench/arrivals", 0, b"")[0] == 200
    assert rec.arrivals == []


async def test_sender_and_recorder_talk_http_over_loopback() -> None:
    rec = recorder.Recorder()
    server = await asyncio.start_server(lambda r, w: recorder.serve_connection(rec, r, w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        path = "/api/v2/project/gh/bench/down/pipeline"
        events = [
            (i, json.dumps({"branch": f"b-{i}", "parameters": {payloads.PARAMETER: i}}).encode()) for i in range(5)
        ]
        records = await sender.open_loop([("127.0.0.1", port)], path, events, rate=1000)
        assert [r.status for r in records] == [201] * 5
        assert all(r.sent >= r.due and r.done >= r.sent for r in records)
        seen: list[int] = []
        more = await sender.closed_loop(
            [("127.0.0.1", port)], path, 6, lambda i: events[i % 5], concurrency=3, progress=seen.append
        )
        assert sorted(r.status for r in more) == [201] * 6
        assert seen == [1, 2, 3, 4, 5, 6]
        status, body = await sender.post_json("127.0.0.1", port, "/_bench/count", b"")
    assert status == 200 and body == {"requests": 11, "distinct": 5}
    latencies, repeats = suite.latencies(records, rec.arrivals)
    assert repeats == 6
    assert all(0 <= v < math.inf for v in latencies.values())


# -- suite helpers --------------------------------------------------------------------------------
def test_key_patterns_group_keys_of_one_kind() -> None:
    assert suite.key_pattern("chainer:audit:event:evt_bb87") == "chainer:audit:event:*"
    assert suite.key_pattern("chainer:audit") == "chainer:audit"
    assert suite.key_pattern("chainer:seen:codeship:4711:success") == "chainer:seen:codeship:*:success"
    assert suite.key_pattern("arq:job:act:1:2") == "arq:job:act:*"
    assert suite.key_label("chainer:audit:event:*") == "per-event audit trail"
    assert suite.key_label("chainer:audit") == "global audit stream"
    assert suite.key_label("something:new") == "something:new"


def test_memory_breakdown_counts_only_what_the_events_added() -> None:
    before = {
        "chainer:audit": {"type": "stream", "keys": 1, "entries": 2, "bytes": 1000},
        "chainer:workers": {"type": "zset", "keys": 1, "entries": 1, "bytes": 100},
    }
    after = {
        "chainer:audit": {"type": "stream", "keys": 1, "entries": 42, "bytes": 21000},
        "chainer:workers": {"type": "zset", "keys": 1, "entries": 1, "bytes": 100},
        "chainer:event:*": {"type": "hash", "keys": 10, "entries": 70, "bytes": 20000, "ttl_ms": 30 * 86_400_000},
        "arq:result:*": {"type": "string", "keys": 10, "entries": 10, "bytes": 3000, "ttl_ms": 3_599_000},
    }
    rows = suite.memory_breakdown(before, after, 10)
    assert [r["pattern"] for r in rows] == ["chainer:audit", "chainer:event:*", "arq:result:*"]
    audit, event, result = rows
    assert audit["bytes_per_event"] == 2000 and audit["bytes_per_entry"] == 500 and audit["entries_per_event"] == 4
    assert event["keys_added"] == 10 and event["bytes_per_event"] == 2000
    assert audit["retained"] and event["retained"] and not result["retained"]
    assert [report.ttl(r["ttl_ms"]) for r in rows] == ["never (trimmed by time)", "30 d", "1 h"]


def test_e2e_specs_and_options() -> None:
    assert suite.parse_e2e_run("split:fan:50") == ("split", "fan", 50.0)
    assert suite.parse_e2e_run("run:one:12.5") == ("run", "one", 12.5)
    with pytest.raises(ValueError):
        suite.parse_e2e_run("both:fan:50")
    quick = suite.parse_args(["--quick", "--only", "ingest,rules", "--lint-sizes", "100,200", "--rules-size", "100"])
    assert quick.quick and quick.phases == ["ingest", "rules"] and quick.lint_sizes == [100, 200]
    assert quick.rules_load_size == 100 and quick.rss_events < suite.Config().rss_events
    full = suite.parse_args(["--skip", "rss"])
    assert "rss" not in full.phases and full.rss_events == 200_000 and full.lint_sizes == [1_000, 10_000, 50_000]
    with pytest.raises(SystemExit):
        suite.parse_args(["--only", "everything"])


def test_proc_readers_parse_linux_lines() -> None:
    line = "4242 (uvicorn (web)) S 1 2 3 4 5 6 7 8 9 10 150 50 7 3 20 0 4 0 99 123456 2500 rest"
    fields = procs.parse_proc_stat(line)
    assert fields == {"utime": 150, "stime": 50, "cutime": 7, "cstime": 3, "rss_pages": 2500}
    busy, total = procs.parse_cpu_line("cpu  100 5 50 800 20 3 2 10 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    assert busy == pytest.approx(170 / procs.CLK_TCK)
    assert total == pytest.approx(990 / procs.CLK_TCK)
    assert procs.cpu_seconds("self") > 0
    assert cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"


# -- report ---------------------------------------------------------------------------------------
def _cpu(others: float = 1.0) -> dict[str, float]:
    return {
        "wall_s": 10.0,
        "machine_busy_cpu_s": 12.0,
        "bench_cpu_s": 11.0,
        "others_cpu_s": others,
        "others_pct_of_machine": 5.0,
    }


def _wrk(rps: float, p99: float) -> dict[str, Any]:
    return {
        "label": "x",
        "requests_per_s": rps,
        "requests": int(rps * 10),
        "duration_s": 10.0,
        "latency_ms": {"p50": p99 / 3, "p75": p99 / 2, "p90": p99 / 1.5, "p99": p99, "mean": p99 / 3, "max": p99 * 2},
        "errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
        "non_2xx_3xx": 0,
        "server_cpu_s": 9.5,
        "server_rss_mb": 45.0,
        "cpu": _cpu(),
    }


def _e2e(layout: str, target: str, rate: float, p50: float, p99: float, late: int) -> dict[str, Any]:
    latencies = [p50] * 90 + [p99] * 9 + [math.inf if late else p99]
    return {
        "layout": layout,
        "target": target,
        "rate": rate,
        "events": 100,
        "accepted": 100,
        "statuses": {"202": 100},
        "latency_ms": stats.summary(latencies),
        "latencies_ms": latencies,
        "http_ms": stats.summary([5.0]),
        "late_or_unsent_after_s": 5.0,
        "late_or_unsent": late,
        "never_sent": 1 if late else 0,
        "downstream_repeats": 0,
        "sender_behind_ms": 0.4,
        "cpu": _cpu(),
    }


def canned_results(quick: bool = True) -> dict[str, Any]:
    return {
        "machine": {
            "date": "2026-12-03 15:00 UTC",
            "cores": 2,
            "cpu_model": "AMD EPYC",
            "memory_gib": 23.5,
            "kernel": "6.18",
            "os": "Linux-6.18",
            "load_average_at_start": [1.5, 1.2, 1.0],
            "versions": {"python": "3.11.7", "chainer": "0.1.0"},
            "git": {"commit": "c97fb36adf", "branch": "i11-bench", "dirty": False},
        },
        "config": {"quick": quick, "rules_load_size": 10000},
        "cpu": _cpu(33.0),
        "phases": {
            "ingest": {
                "wrk": "-t1 -c16 -d10s --latency",
                "cpu": _cpu(),
                "warmup_s": 3.0,
                "systems": {
                    "bare": _wrk(13635, 2.9),
                    "chainer": _wrk(1163, 28.7),
                    "naive": _wrk(1800, 20.0),
                    "webhook": {"label": "webhook", "error": "webhook exited (1)"},
                },
            },
            "e2e": {
                "late_after_s": 5.0,
                "runs": [
                    _e2e("split", "fan", 50, 349, 517, 0),
                    _e2e("split", "fan", 100, 8, 20, 0),
                    _e2e("split", "one", 50, 1500, 7800, 23),
                    {"layout": "run", "target": "one", "rate": 50.0, "error": "boom"},
                ],
                "cpu": _cpu(),
            },
            "idle": {
                "seconds": 20.0,
                "chainer web": {"cpu_s": 0.02, "pct_of_core": 0.1},
                "chainer worker": {"cpu_s": 0.1, "pct_of_core": 0.5},
                "cpu": _cpu(),
            },
            "redis_memory": {
                "events": 500,
                "payload_bytes": 520,
                "bytes_per_event_keys": 9500.0,
                "bytes_per_event_used_memory": 12000.0,
                "bytes_per_event_beyond_payload": 8980.0,
                "rows": [
                    {
                        "pattern": "chainer:audit:event:*",
                        "label": "per-event audit trail",
                        "type": "stream",
                        "keys_added": 500,
                        "entries_added": 2000,
                        "bytes_added": 2_400_000,
                        "bytes_per_event": 4800.0,
                        "bytes_per_entry": 1200.0,
                        "entries_per_event": 4.0,
                        "ttl_ms": 2_592_000_000,
                        "retained": True,
                    }
                ],
                "bytes_per_event_short_lived": 640.0,
                "cpu": _cpu(),
            },
            "rules": {
                "timeout_s": 120.0,
                "lint_startup_s": 0.61,
                "cpu": _cpu(),
                "sizes": {
                    "1000": {
                        "rules": 1000,
                        "bytes": 331_000,
                        "yaml": {"seconds": 0.4},
                        "load": {"seconds": 2.4},
                        "lint": {"seconds": 9.0, "exit": 0},
                    },
                    "10000": {
                        "rules": 10000,
                        "bytes": 3_311_000,
                        "yaml": {"seconds": 4.6},
                        "load": {"seconds": 24.0},
                        "lint": {"timed_out": True},
                    },
                    "50000": {
                        "rules": 50000,
                        "bytes": 16_500_000,
                        "yaml": {"seconds": 23.0},
                        "load": {"timed_out": True},
                        "lint": {"timed_out": True},
                    },
                },
            },
            "rss": {
                "warmup_events": 1000,
                "events": 200_000,
                "accepted": 200_000,
                "drained": True,
                "before": {"web_mb": 42.0, "worker_mb": 40.0},
                "after": {"web_mb": 42.5, "worker_mb": 47.0},
                "series": [],
                "redis_used_mb": 1900.0,
                "web_growth_pct": 1.2,
                "worker_growth_pct": 17.5,
                "cpu": _cpu(),
            },
            "scale": {
                "events": 300,
                "rate": 100.0,
                "statuses": {"202": 300},
                "accepted": 300,
                "queued_replies": 300,
                "queued_audit": 300,
                "succeeded_audit": 300,
                "sent": 300,
                "downstream_requests": 300,
                "duplicates": 0,
                "latency_ms": stats.summary([0.3, 0.5]),
                "ok": True,
                "cpu": _cpu(),
            },
        },
    }


def _row(markdown: str, start: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith(start))


def test_report_states_every_figure_against_its_target() -> None:
    text = report.markdown(canned_results())
    assert text.startswith("# Performance\n")
    assert "**Quick run**" in text
    assert "`c97fb36adf`" in text and "2 cores (AMD EPYC" in text and "33.0 CPU-seconds" in text
    ingest = _row(text, "| ingest, `POST /hooks/codeship`")
    assert (
        "1 163 vs 13 635 req/s (9 %)" in ingest and "p99 28.7 ms vs 2.90 ms" in ingest and ingest.endswith("**no** |")
    )
    assert "0.65× (1 800 req/s)" in _row(text, "| vs the naive design")
    # server CPU per request: 9.5 s over 11 630 and 136 350 requests
    assert "| 9.5 s | 817 µs |" in _row(text, "| chainer web |") and "| 70 µs |" in _row(text, "| bare Starlette")
    assert "webhook` failed" not in text and "failed: webhook exited (1)" in text
    fan100 = _row(text, "| webhook → provider, 100 events/s")
    assert "p50 8.00 ms, p99 20.0 ms" in fan100 and fan100.endswith("yes |")
    one = _row(text, "| the same, every event to one project and branch, 50 events/s")
    assert "23 of 100 not sent 5 s after the last POST" in one and one.endswith("**no** |")
    assert _row(text, "| idle worker CPU").endswith("yes |")
    assert "9 500 B (8 980 B beyond the payload)" in _row(text, "| Redis memory per retained event")
    assert "| per-event audit trail | `chainer:audit:event:*` | stream | 30 d | 500 | 4.00 | 1 200 | 4 800 |" in text
    assert "add 640 B per event for a while" in text
    load = _row(text, "| loading 10 000 rules")
    assert "24.00 s vs 4.60 s for the C-loader parse (5.2×)" in load and load.endswith("**no** |")
    assert "> 120 s" in _row(text, "| `chainer lint` of the same 10 000 rules")
    assert "| 50 000 | 16.50 | 23.00 s | > 120 s | – | > 120 s | – |" in text
    assert "start-up included: 0.61 s for a file of two rules" in text
    assert "| 10 000 | 3.31 | 4.60 s | 24.00 s | 5.2× | > 120 s | > 5.0× |" in text
    assert _row(text, "| RSS of web and worker over 200 000 events").endswith("**no** |")
    assert _row(text, "| two web processes + two workers").endswith("yes |")
    assert "Answers: 300 × 202." in text
    assert "| run | one | 50 | failed: boom" in text
    assert "| split | one | 50 | 100 | 1 500 ms |" in text and "| 23 |" in text
    assert re.search(r"\| ingest \| 10 s \| 11\.0 s \| 1\.0 s", text)
    full = report.markdown(canned_results(quick=False))
    assert "Quick run" not in full


def test_report_is_written_beside_its_charts(tmp_path: Path) -> None:
    output = tmp_path / "docs" / "performance.md"
    written = report.write(canned_results(), output, charts=False)
    assert written == [output]
    assert output.read_text() == report.markdown(canned_results())
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps(stats.json_safe(canned_results())))
    report.main([str(saved), "--output", str(tmp_path / "again.md"), "--no-charts"])
    assert "| split | one | 50 | 100 | 1 500 ms |" in (tmp_path / "again.md").read_text()


def test_charts_are_small_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    written = report.write(canned_results(), tmp_path / "performance.md")
    pngs = sorted(p.name for p in written if p.suffix == ".png")
    assert pngs == ["perf-e2e.png", "perf-ingest.png"]
    for name in pngs:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) < 200_000


def test_baselines_run_under_the_uvicorn_settings_of_chainer_web() -> None:
    """The bare and naive routes must be served like `chainer web`: when its uvicorn.run keywords change (a loop,
    an HTTP parser, logging), bench/bare_app.py's UVICORN_SETTINGS has to follow, or the ratio compares unlike."""
    import ast

    from bench.bare_app import UVICORN_SETTINGS
    from chainer.runner import SERVER_SETTINGS

    chainer_dir = Path(__file__).resolve().parents[2] / "chainer"
    calls = []
    for source in sorted(chainer_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "uvicorn.run":
                keywords: dict[str, object] = {}
                for k in node.keywords:
                    if k.arg is None:  # **SERVER_SETTINGS, the settings `chainer run` serves with too
                        assert ast.unparse(k.value) == "SERVER_SETTINGS", ast.unparse(node)
                        keywords.update(SERVER_SETTINGS)
                    elif k.arg not in ("host", "port"):
                        keywords[k.arg] = ast.literal_eval(k.value)
                calls.append(keywords)
    assert calls == [UVICORN_SETTINGS]


def test_ingest_rounds_keep_each_systems_median_round_and_say_so() -> None:
    runs = [_wrk(rps, p99) for rps, p99 in ((3000, 9.0), (1000, 30.0), (2000, 12.0))]
    median = suite.median_round(runs)
    assert median["requests_per_s"] == 2000 and median["latency_ms"]["p99"] == 12.0
    assert median["rounds_rps"] == [3000, 1000, 2000]  # in the order they ran
    assert suite.median_round(runs[:2])["requests_per_s"] == 1000  # an even count: the lower middle one
    assert suite.parse_args(["--ingest-rounds", "5"]).ingest_rounds == 5
    assert suite.parse_args(["--quick"]).ingest_rounds == 1 and suite.Config().ingest_rounds == 3
    with pytest.raises(SystemExit):
        suite.parse_args(["--ingest-rounds", "0"])
    results = canned_results(quick=False)
    results["phases"]["ingest"]["rounds"] = 3
    results["phases"]["ingest"]["systems"]["chainer"] = suite.median_round(
        [_wrk(1163, 28.7), _wrk(900, 30.0), _wrk(1500, 20.0)]
    )
    text = report.markdown(results)
    assert "3 rounds in which every system takes its turn" in text
    assert "Requests per second of each round: chainer web 1 163, 900, 1 500." in text
    assert "1 163 vs 13 635 req/s" in _row(text, "| ingest, `POST /hooks/codeship`")
