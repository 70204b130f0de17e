"""The fault suite's cluster fixtures, and its totals at the end of a run: invariant checks passed and the accepted
events they covered.

``cluster`` is one running Cluster per module, built with the module's ``CLUSTER_OPTIONS`` (keyword arguments of
``Cluster``, e.g. ``web_env``) when it has them; ``fresh`` is that cluster reset for one test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults import harness
from tests.faults.harness import Cluster


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    name = request.module.__name__.rsplit(".", 1)[-1]
    running = Cluster(tmp_path_factory.mktemp(name), **getattr(request.module, "CLUSTER_OPTIONS", {}))
    running.start()
    yield running
    running.stop()


@pytest.fixture
def fresh(cluster: Cluster) -> Cluster:
    cluster.reset()
    return cluster


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for note in harness.NOTES:
        terminalreporter.write_line(f"fault suite: {note}")
    if harness.PASSED:
        terminalreporter.write_line(
            f"fault suite: {len(harness.PASSED)} invariant checks passed over {sum(harness.PASSED)} accepted events"
        )
