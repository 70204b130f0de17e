"""The fault suite's totals at the end of a run: invariant checks passed and the accepted events they covered."""

from __future__ import annotations

from typing import Any

from tests.faults import harness


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for note in harness.NOTES:
        terminalreporter.write_line(f"fault suite: {note}")
    if harness.PASSED:
        terminalreporter.write_line(
            f"fault suite: {len(harness.PASSED)} invariant checks passed over {sum(harness.PASSED)} accepted events"
        )
