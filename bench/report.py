"""``docs/performance.md`` and its charts from the results of one ``bench/run``.

Pure functions of the results dictionary (``bench/results/latest.json`` has the same shape), so a report can
be written again from saved results: ``python -m bench.report bench/results/<stamp>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

Results = dict[str, Any]

INGEST_ORDER = ("bare", "chainer", "naive", "webhook")
INGEST_NAMES = {
    "bare": "bare Starlette route",
    "chainer": "chainer web",
    "naive": "naive (enqueue_job)",
    "webhook": "adnanh/webhook",
}


# -- formatting -----------------------------------------------------------------------------------
def num(value: Any, digits: int = 0) -> str:
    """``1 163``, ``28.7``; ``∞`` for inf; ``–`` for a missing value."""
    if value is None or value == "nan" or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value == "inf" or (isinstance(value, float) and math.isinf(value)):
        return "∞"
    return f"{float(value):,.{digits}f}".replace(",", " ")


def ms(value: Any) -> str:
    """Milliseconds with sensible digits: ``0.84 ms``, ``12.3 ms``, ``1 520 ms``, ``never`` for inf."""
    if value == "inf" or (isinstance(value, float) and math.isinf(value)):
        return "not sent"
    if value is None or value == "nan" or (isinstance(value, float) and math.isnan(value)):
        return "–"
    v = float(value)
    return f"{num(v, 2 if v < 10 else 1 if v < 100 else 0)} ms"


def seconds(entry: dict[str, Any] | None, timeout: float) -> str:
    if not entry:
        return "–"
    if entry.get("timed_out"):
        return f"> {num(timeout)} s"
    if "error" in entry:
        return "error"
    return f"{num(entry['seconds'], 2)} s"


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f} %" if whole else "–"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def _ok(phases: Results, name: str) -> Results | None:
    phase = phases.get(name)
    return phase if isinstance(phase, dict) and "error" not in phase else None


def _float(value: Any) -> float:
    return math.inf if value == "inf" else math.nan if value in (None, "nan") else float(value)


# -- the report -----------------------------------------------------------------------------------
def header(results: Results) -> list[str]:
    m = results["machine"]
    cfg = results["config"]
    git = m.get("git", {})
    cpu = results.get("cpu", {})
    lines = ["# Performance", ""]
    if cfg.get("quick"):
        lines += [
            "> **Quick run** (`bench/run --quick`): short loads and small counts, on a development machine shared "
            "with other work, not a quiet one reserved for measuring (other processes used "
            f"{num(cpu.get('others_pct_of_machine'), 1)} % of it during this run, more or less from one phase to the "
            "next: see the last table). These numbers show that the suite works and roughly where chainer stands; "
            "the figures to judge by come from a full `bench/run` on a quiet machine.",
            "",
        ]
    dirty = " (with uncommitted changes)" if git.get("dirty") else ""
    lines += [
        f"Measured {m['date']} by `bench/run{' --quick' if cfg.get('quick') else ''}` at commit "
        f"`{git.get('commit', '?')}`{dirty} on {m['cores']} cores ({m['cpu_model']}, {m['memory_gib']} GiB), "
        f"{m['os']}. Ratios compare systems measured in this same run. Raw results: `bench/results/` "
        "(not committed). How to run it: `bench/README.md`.",
        "",
        f"*Other processes* used {num(cpu.get('others_cpu_s'), 1)} CPU-seconds during the run's "
        f"{num(cpu.get('wall_s'))} s ({num(cpu.get('others_pct_of_machine'), 1)} % of the machine); "
        f"the load average was {', '.join(str(x) for x in m.get('load_average_at_start', []))} at the start.",
        "",
    ]
    return lines


def summary_table(results: Results) -> list[str]:
    phases = results["phases"]
    rows: list[tuple[str, str, str, str]] = []
    ingest = _ok(phases, "ingest")
    if ingest:
        s = ingest["systems"]
        bare, ch, hook, naive = (s.get(k, {}) for k in ("bare", "chainer", "webhook", "naive"))
        if "requests_per_s" in ch and "requests_per_s" in bare:
            share = ch["requests_per_s"] / bare["requests_per_s"]
            p99c, p99b = ch["latency_ms"].get("p99"), bare["latency_ms"].get("p99")
            rows.append(
                (
                    "ingest, `POST /hooks/codeship` vs the bare route",
                    f"{num(ch['requests_per_s'])} vs {num(bare['requests_per_s'])} req/s ({100 * share:.0f} %); "
                    f"p99 {ms(p99c)} vs {ms(p99b)}",
                    "≥ 60 % of the bare route; p99 ≤ 15 ms at 16 connections",
                    verdict(share >= 0.6 and p99c is not None and p99c <= 15),
                )
            )
        if "requests_per_s" in ch and "requests_per_s" in hook:
            ratio = ch["requests_per_s"] / hook["requests_per_s"]
            rows.append(
                (
                    "vs adnanh/webhook (`/bin/true`, same body)",
                    f"{ratio:.2f}× ({num(hook['requests_per_s'])} req/s)",
                    "≥ 2×",
                    verdict(ratio >= 2),
                )
            )
        if "requests_per_s" in ch and "requests_per_s" in naive:
            ratio = ch["requests_per_s"] / naive["requests_per_s"]
            rows.append(
                (
                    "vs the naive design (one `enqueue_job` per request)",
                    f"{ratio:.2f}× ({num(naive['requests_per_s'])} req/s)",
                    "–",
                    "–",
                )
            )
    e2e = _ok(phases, "e2e")
    if e2e:
        for run in e2e["runs"]:
            if "error" in run or run["layout"] != "split":
                continue
            lat = run["latency_ms"]
            p50, p99 = _float(lat["p50"]), _float(lat["p99"])
            if run["target"] == "fan":
                label = f"webhook → provider, {num(run['rate'])} events/s, each to its own branch"
                target = "p50 ≤ 10 ms, p99 ≤ 25 ms at 100 events/s"
                ok = (p50 <= 10 and p99 <= 25) if run["rate"] >= 100 else None
            else:
                label = f"the same, every event to one project and branch, {num(run['rate'])} events/s"
                target = "p50 ≤ 20 ms, p99 ≤ 100 ms at 50 events/s; none late"
                ok = (p50 <= 20 and p99 <= 100 and run["late_or_unsent"] == 0) if run["rate"] <= 50 else None
            after = num(run["late_or_unsent_after_s"])
            late = f"; {run['late_or_unsent']} of {run['events']} not sent {after} s after the last POST"
            rows.append(
                (label, f"p50 {ms(p50)}, p99 {ms(p99)}{late if run['late_or_unsent'] else ''}", target, verdict(ok))
            )
    idle = _ok(phases, "idle")
    if idle and "chainer worker" in idle:
        worker = idle["chainer worker"]["pct_of_core"]
        rows.append(("idle worker CPU", f"{num(worker, 2)} % of a core", "≤ 1 %", verdict(worker <= 1)))
    memory = _ok(phases, "redis_memory")
    if memory:
        beyond = memory["bytes_per_event_beyond_payload"]
        rows.append(
            (
                f"Redis memory per retained event ({num(memory['payload_bytes'])} B Codeship payload, one action)",
                f"{num(memory['bytes_per_event_keys'])} B ({num(beyond)} B beyond the payload)",
                "≤ 2 KB beyond the stored payload, payloads compressed",
                verdict(beyond <= 2048),
            )
        )
    rules = _ok(phases, "rules")
    if rules:
        size = str(results["config"]["rules_load_size"])
        row = rules["sizes"].get(size, {})
        timeout = rules["timeout_s"]
        load, parse, lint = row.get("load", {}), row.get("yaml", {}), row.get("lint")
        if "seconds" in load and "seconds" in parse and not load.get("timed_out"):
            ratio = load["seconds"] / parse["seconds"]
            rows.append(
                (
                    f"loading {num(int(size))} rules ({num(row['bytes'] / 1e6, 1)} MB, `load_rules`)",
                    f"{seconds(load, timeout)} vs {seconds(parse, timeout)} for the C-loader parse ({ratio:.1f}×)",
                    "within 1.5× of that parse",
                    verdict(ratio <= 1.5),
                )
            )
        if lint is not None and "seconds" in load:
            ok = None if lint.get("timed_out") else lint["seconds"] <= 2 * load["seconds"]
            rows.append(
                (
                    f"`chainer lint` of the same {num(int(size))} rules",
                    seconds(lint, timeout),
                    f"within 2× of loading them ({seconds(load, timeout)})",
                    verdict(False if lint.get("timed_out") and timeout >= 2 * load["seconds"] else ok),
                )
            )
    rss = _ok(phases, "rss")
    if rss:
        growth = max(rss["web_growth_pct"], rss["worker_growth_pct"])
        rows.append(
            (
                f"RSS of web and worker over {num(rss['events'])} events",
                f"web {num(rss['before']['web_mb'], 1)} → {num(rss['after']['web_mb'], 1)} MB, worker "
                f"{num(rss['before']['worker_mb'], 1)} → {num(rss['after']['worker_mb'], 1)} MB",
                "flat within 10 % (over 200 000 events)",
                verdict(growth <= 10),
            )
        )
    scale = _ok(phases, "scale")
    if scale:
        rows.append(
            (
                "two web processes + two workers on one Redis",
                f"{scale['events']} events: accepted {scale['accepted']}, queued {scale['queued_audit']}, "
                f"sent {scale['sent']}, duplicates {scale['duplicates']}",
                "accepted = queued = sent",
                verdict(scale["ok"]),
            )
        )
    lines = [
        "## Against the targets (issue 11, DESIGN §9)",
        "",
        "| figure | measured | target | met |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    errors = [f"- `{name}` failed: {phase['error']}" for name, phase in phases.items() if "error" in phase]
    return [*lines, "", *errors, *([""] if errors else [])]


def per_request_us(cpu_s: float, requests: int | None) -> str:
    """CPU seconds spread over the requests served, in µs; a dash when none were served."""
    return f"{num(cpu_s / requests * 1e6)} µs" if requests else "–"


def ingest_section(phase: Results) -> list[str]:
    systems = phase["systems"]
    bare = systems.get("bare", {}).get("requests_per_s")
    lines = [
        "## Ingest",
        "",
        f"`wrk {phase['wrk']}` after a {num(phase['warmup_s'], 1)} s warm-up, loopback, one server process each, "
        f"{_rounds_text(phase.get('rounds', 1))} a "
        "fresh Codeship event (its own build id) per request, matching one rule with one action. The bare route "
        "and the naive route run under uvicorn with the settings of `chainer web`; chainer and the naive route "
        "each write to a fresh redis-server with AOF (`appendfsync always`). *Server CPU* is the server process's "
        "CPU during the measured run (*per request*: divided by the requests served), *others* the CPU of "
        "processes outside the bench.",
        "",
        "| system | req/s | of bare | p50 | p90 | p99 | max | non-2xx | socket errors | server CPU | per request "
        "| others |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in INGEST_ORDER:
        s = systems.get(key)
        if s is None:
            continue
        if "error" in s:
            lines.append(f"| {INGEST_NAMES[key]} | failed: {s['error'][:120]} ||||||||||")
            continue
        lat = s["latency_ms"]
        errors = sum(s["errors"].values())
        lines.append(
            f"| {INGEST_NAMES[key]} | {num(s['requests_per_s'])} | {pct(s['requests_per_s'], bare or 0)} | "
            f"{ms(lat.get('p50'))} | {ms(lat.get('p90'))} | {ms(lat.get('p99'))} | {ms(lat.get('max'))} | "
            f"{num(s['non_2xx_3xx'])} | {num(errors)} | {num(s['server_cpu_s'], 1)} s | "
            f"{per_request_us(s['server_cpu_s'], s.get('requests'))} | {num(s['cpu']['others_pct_of_machine'], 1)} % |"
        )
    rounds = [
        f"{INGEST_NAMES[key]} {', '.join(num(r) for r in systems[key]['rounds_rps'])}"
        for key in INGEST_ORDER
        if len(systems.get(key, {}).get("rounds_rps", ())) > 1
    ]
    if rounds:
        lines += ["", "Requests per second of each round: " + "; ".join(rounds) + "."]
    return [*lines, "", "![requests per second of each system](perf-ingest.png)", ""]


def _rounds_text(rounds: int) -> str:
    if rounds <= 1:
        return "one run of each system,"
    return (
        f"{rounds} rounds in which every system takes its turn, in an order that turns each round (a shared "
        "machine's faster and slower spells fall on all of them alike; each system's row is its median round; a "
        "system keeps its server and Redis across rounds),"
    )


def e2e_section(phase: Results) -> list[str]:
    lines = [
        "## Webhook → request at the provider",
        "",
        "An open-loop sender POSTs Codeship events at a fixed rate (each on time whatever happened to the earlier "
        "ones); a recording CircleCI on loopback notes when each `trigger_pipeline` request arrives and which event "
        "it carries (the `upstream_build` pipeline parameter). Latency is from the start of the POST to the arrival "
        "downstream. *fan*: each event to its own downstream branch; *one*: every event to one project and branch "
        "(one call in flight per target). *split*: `chainer web` + `chainer worker`; *run*: `chainer run`. "
        f"*Late* counts events not sent {num(phase['late_after_s'])} s after the last POST.",
        "",
        "| layout | target | events/s | events | p50 | p90 | p99 | max | late or unsent | repeats | POST p99 "
        "| others |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in phase["runs"]:
        if "error" in run:
            lines.append(
                f"| {run['layout']} | {run['target']} | {num(run['rate'])} | failed: {run['error'][:100]} |||||||||"
            )
            continue
        lat = run["latency_ms"]
        lines.append(
            f"| {run['layout']} | {run['target']} | {num(run['rate'])} | {run['events']} | {ms(lat['p50'])} | "
            f"{ms(lat['p90'])} | {ms(lat['p99'])} | {ms(lat['max'])} | {run['late_or_unsent']} | "
            f"{run['downstream_repeats']} | {ms(run['http_ms']['p99'])} | "
            f"{num(run['cpu']['others_pct_of_machine'], 1)} % |"
        )
    return [*lines, "", "![latency distribution of the end-to-end runs](perf-e2e.png)", ""]


def idle_section(phase: Results) -> list[str]:
    lines = [
        "## Idle CPU",
        "",
        f"CPU time over {num(phase['seconds'])} s with nothing to do (from `/proc/<pid>/stat`, "
        "10 ms ticks), after 3 s of settling.",
        "",
        "| process | CPU | of one core |",
        "|---|---:|---:|",
    ]
    for name, value in phase.items():
        if isinstance(value, dict) and "pct_of_core" in value:
            lines.append(f"| {name} | {num(value['cpu_s'], 2)} s | {num(value['pct_of_core'], 2)} % |")
    return [*lines, ""]


def ttl(ms_left: Any) -> str:
    """A key's time to live: ``never`` (-1), ``30 d``, ``1 h``, ``–`` when unknown."""
    if ms_left is None or ms_left == -2:
        return "–"
    if ms_left == -1:
        return "never (trimmed by time)"
    value = float(ms_left) / 1000
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if value >= 0.98 * size:  # a key written a moment ago has a moment less than its whole TTL
            return f"{value / size:.0f} {unit}"
    return f"{value:.0f} s"


def memory_section(phase: Results) -> list[str]:
    days = num(phase.get("retained_ttl_days", 7))
    lines = [
        "## Redis memory per retained event",
        "",
        f"{num(phase['events'])} Codeship events of {num(phase['payload_bytes'])} B, each matching one rule with one "
        "action that succeeded, then `MEMORY USAGE <key> SAMPLES 0` over every key, grouped by key pattern. "
        f"*Retained*: keys without a time to live or living longer than {days} days, kept for the audit retention; "
        f"the others (arq results, lineage) add {num(phase.get('bytes_per_event_short_lived'))} B per event for a "
        "while. The growth of `INFO memory` `used_memory` (allocator overhead included) is "
        f"{num(phase['bytes_per_event_used_memory'])} B per event.",
        "",
        "| keys | pattern | type | expires in | keys added | entries per event | bytes per entry | bytes per event |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for row in phase["rows"]:
        lines.append(
            f"| {row['label']} | `{row['pattern']}` | {row['type']} | {ttl(row.get('ttl_ms'))} | "
            f"{num(row['keys_added'])} | {num(row['entries_per_event'], 2)} | {num(row['bytes_per_entry'])} | "
            f"{num(row['bytes_per_event'])} |"
        )
    lines.append(f"| **retained** | | | | | | | **{num(phase['bytes_per_event_keys'])}** |")
    return [*lines, ""]


def rules_section(phase: Results) -> list[str]:
    timeout = phase["timeout_s"]
    lines = [
        "## Rules: loading and lint",
        "",
        "Generated files with `bench/rules_match.py`'s mix of rules (literal, glob and regex projects, branch lists, "
        "templated actions), padded with a description to about 330 bytes a rule. *C-loader parse*: "
        "`yaml.load(text, Loader=yaml.CSafeLoader)`; *load*: `chainer.rules.load_rules`, each in a fresh process "
        "after the imports; *lint*: `chainer lint FILE` as a whole command (start-up included: "
        f"{num(phase.get('lint_startup_s'), 2)} s for a file of two rules). "
        f"Anything slower than {num(timeout)} s is stopped and shown as `> {num(timeout)} s`.",
        "",
        "| rules | MB | C-loader parse | load | load / parse | lint | lint / load |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, row in sorted(phase["sizes"].items(), key=lambda kv: int(kv[0])):
        load, parse, lint = row.get("load"), row.get("yaml"), row.get("lint")
        ratio = (
            f"{load['seconds'] / parse['seconds']:.1f}×"
            if load and parse and "seconds" in load and "seconds" in parse and not load.get("timed_out")
            else "–"
        )
        lint_ratio = "–"
        if lint and load and "seconds" in lint and "seconds" in load and not load.get("timed_out"):
            lint_ratio = f"{lint['seconds'] / load['seconds']:.1f}×"
        elif lint and lint.get("timed_out") and load and "seconds" in load and not load.get("timed_out"):
            lint_ratio = f"> {timeout / load['seconds']:.1f}×"
        lines.append(
            f"| {num(row['rules'])} | {num(row['bytes'] / 1e6, 2)} | {seconds(parse, timeout)} | "
            f"{seconds(load, timeout)} | {ratio} | {seconds(lint, timeout) if lint is not None else 'not run'} | "
            f"{lint_ratio} |"
        )
    return [*lines, ""]


def rss_section(phase: Results) -> list[str]:
    lines = [
        "## Memory of the processes",
        "",
        f"Resident set size (`VmRSS`) of `chainer web` and `chainer worker` after {num(phase['warmup_events'])} "
        f"warm-up events (*before*) and after {num(phase['events'])} more ({num(phase['accepted'])} accepted; "
        f"every action sent: {'yes' if phase['drained'] else '**no**'}), sent 16 at a time. "
        f"Redis held {num(phase['redis_used_mb'], 1)} MB at the end.",
        "",
        "| process | before | after | growth |",
        "|---|---:|---:|---:|",
        f"| chainer web | {num(phase['before']['web_mb'], 1)} MB | {num(phase['after']['web_mb'], 1)} MB | "
        f"{num(phase['web_growth_pct'], 1)} % |",
        f"| chainer worker | {num(phase['before']['worker_mb'], 1)} MB | {num(phase['after']['worker_mb'], 1)} MB | "
        f"{num(phase['worker_growth_pct'], 1)} % |",
        "",
    ]
    return lines


def scale_section(phase: Results) -> list[str]:
    lat = phase["latency_ms"]
    return [
        "## Two web processes and two workers on one Redis",
        "",
        f"{num(phase['events'])} events at {num(phase['rate'])} events/s, alternating between the two web "
        "processes; every event to its own downstream branch. Answers: "
        + ", ".join(f"{count} × {status}" for status, count in sorted(phase["statuses"].items()))
        + ".",
        "",
        "| accepted (202) | queued (replies) | queued (audit) | succeeded (audit) | sent downstream | duplicates | "
        "p50 | p99 | accepted = queued = sent |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {phase['accepted']} | {phase['queued_replies']} | {phase['queued_audit']} | {phase['succeeded_audit']} | "
        f"{phase['sent']} | {phase['duplicates']} | {ms(lat['p50'])} | {ms(lat['p99'])} | {verdict(phase['ok'])} |",
        "",
    ]


def machine_section(results: Results) -> list[str]:
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines = [
        "## Machine, versions, other processes",
        "",
        f"- {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB, Linux {m['kernel']}",
        f"- {versions}",
        "",
        "| phase | wall | CPU of the bench | CPU of other processes |",
        "|---|---:|---:|---:|",
    ]
    for name, phase in results["phases"].items():
        cpu = phase.get("cpu") if isinstance(phase, dict) else None
        if cpu:
            lines.append(
                f"| {name} | {num(cpu['wall_s'])} s | {num(cpu['bench_cpu_s'], 1)} s | "
                f"{num(cpu['others_cpu_s'], 1)} s ({num(cpu['others_pct_of_machine'], 1)} % of the machine) |"
            )
    return [*lines, ""]


def markdown(results: Results) -> str:
    phases = results["phases"]
    lines = header(results) + summary_table(results)
    sections = {
        "ingest": ingest_section,
        "e2e": e2e_section,
        "idle": idle_section,
        "redis_memory": memory_section,
        "rules": rules_section,
        "rss": rss_section,
        "scale": scale_section,
    }
    for name, section in sections.items():
        phase = _ok(phases, name)
        if phase is not None:
            lines += section(phase)
    lines += machine_section(results)
    return "\n".join(lines).rstrip() + "\n"


# -- charts ---------------------------------------------------------------------------------------
def ingest_chart(phase: Results, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = [
        (INGEST_NAMES[k], phase["systems"][k])
        for k in INGEST_ORDER
        if k in phase["systems"] and "requests_per_s" in phase["systems"][k]
    ]
    if not systems:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 2.6), dpi=100)
    names = [n for n, _ in systems][::-1]
    values = [s["requests_per_s"] for _, s in systems][::-1]
    colors = ["#d62728" if n == "chainer web" else "#7f7f7f" for n in names]
    bars = ax.barh(names, values, color=colors)
    for bar, (_, s) in zip(bars, systems[::-1], strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {num(s['requests_per_s'])} req/s, p99 {ms(s['latency_ms'].get('p99'))}",
            va="center",
            fontsize=8,
        )
    ax.set_xlabel("requests per second (wrk -t1 -c16, a fresh Codeship event each)")
    ax.set_xlim(0, max(values) * 1.55)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def e2e_chart(phase: Results, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in phase["runs"] if "error" not in r and r.get("latencies_ms")]
    if not runs:
        return False
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    for run in runs:
        values = [_float(v) for v in run["latencies_ms"]]
        finite = sorted(v for v in values if math.isfinite(v))
        if not finite:
            continue
        ys = [100 * (i + 1) / len(values) for i in range(len(finite))]
        label = f"{run['layout']} {run['target']} {num(run['rate'])}/s"
        ax.step([max(v, 0.1) for v in finite], ys, where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("webhook → request at the provider (ms, log scale)")
    ax.set_ylabel("% of events")
    ax.set_ylim(0, 100)
    ax.axvline(10, color="#555555", linestyle=":", linewidth=1)
    ax.axvline(25, color="#555555", linestyle="--", linewidth=1)
    ax.text(10, 2, " 10 ms", color="#555555", fontsize=7)
    ax.text(25, 8, " 25 ms", color="#555555", fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write(results: Results, output: Path, *, charts: bool = True) -> list[Path]:
    """Write the Markdown report (and, with matplotlib installed, the charts beside it); return the paths."""
    output.parent.mkdir(parents=True, exist_ok=True)
    written = []
    phases = results["phases"]
    if charts:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            charts = False
    if charts:
        for name, draw, file_name in (("ingest", ingest_chart, "perf-ingest.png"), ("e2e", e2e_chart, "perf-e2e.png")):
            phase = _ok(phases, name)
            if phase is not None and draw(phase, output.parent / file_name):
                written.append(output.parent / file_name)
    output.write_text(markdown(results))
    return [output, *written]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write docs/performance.md again from saved results.")
    parser.add_argument("results", type=Path)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "performance.md"
    )
    parser.add_argument("--no-charts", action="store_true")
    args = parser.parse_args(argv)
    for path in write(json.loads(args.results.read_text()), args.output, charts=not args.no_charts):
        print(path)


if __name__ == "__main__":
    main()
