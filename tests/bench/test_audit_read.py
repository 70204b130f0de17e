"""bench/audit_read.py end to end at a small size: 2 000 records filled through chainer's store and intake, a real
``chainer web`` on a real redis-server, every timed query answered with what it promises. Nothing asserts on time."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import audit_read

pytestmark = pytest.mark.integration


def test_audit_read_bench_runs_at_2000_records(tmp_path: Path) -> None:
    results = audit_read.run(records=2000, samples=3, recent=60, workdir=tmp_path)
    filled = results["fill"]
    assert 2000 - audit_read.PER_DELIVERY < filled["records"] <= 2000
    assert filled["accepted_deliveries"] == 61 and filled["bulk_deliveries"] > 300
    memory = results["memory"]
    assert 50 < memory["stream_bytes_per_record"] < 1000 and memory["trail_bytes_per_record"] > 0
    figures = results["requests"]
    assert set(audit_read.TARGETS_MS) <= set(figures)
    for name, figure in figures.items():
        assert figure["status"] == 200 and figure["ms"]["count"] == 3, name
        assert 0 < figure["ms"]["p50"] <= figure["ms"]["max"], name
    for name in ("audit_newest", "audit_oldest", "audit_middle", "audit_type"):
        assert figures[name]["items"] == 100, name
    assert figures["audit_newest"]["next"] is not None
    assert 0 < figures["audit_type_project"]["items"] < 100  # one project in 50: the scan cap ends the page
    assert figures["events"]["items"] == figures["events_rule"]["items"] == 50
    assert figures["ui_events"]["rows"] == 50
    assert "audit_newest" in audit_read.table(results)
