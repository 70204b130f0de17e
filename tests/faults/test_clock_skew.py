"""Clock skew between processes: the Redis clock decides (chainer.clock).

The web processes and workers run with their wall clocks an hour off (tests/faults/skew/sitecustomize.py patches
``time.time`` in the child). Every time one process writes and another compares with its own clock (a job's due
time, a retry's, an action's age for the sweeper, a target lease) is read on Redis's clock, so: a job queued by a
web an hour ahead is run at once by a worker an hour behind; a retry scheduled by a worker an hour behind is not
run early by one an hour ahead (the sandbox's own timestamps, one process, show the wait); no action is called
twice and every one ends terminal (``check_invariants``).
"""

from __future__ import annotations

import pytest

from tests.faults.harness import Cluster, check_invariants, skewed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

HOUR = 3600.0
RETRY = {"CHAINER_RETRY_BASE_SECONDS": "2", "CHAINER_RETRY_CAP_SECONDS": "2"}  # a retry waits 1 to 2 s


CLUSTER_OPTIONS = {"web_env": [skewed(HOUR), skewed(-HOUR)]}


def test_a_job_queued_by_a_web_an_hour_ahead_runs_at_once_on_a_worker_an_hour_behind(fresh: Cluster) -> None:
    """Without the Redis clock the job's due time (web +1 h) is two hours ahead of the worker (-1 h): it would
    wait two hours and the invariant check's bound (30 s) would fail."""
    fresh.start_worker(skewed(-HOUR))
    sent = [fresh.deliver("ahead", web=0) for _ in range(3)]
    assert [s.status for s in sent] == [202] * 3
    for s in sent:
        assert fresh.wait_state(s.body["event_id"], {"done"})["attempts"] == 1
    check_invariants(fresh)


def test_retries_across_workers_an_hour_apart_are_neither_early_nor_doubled(fresh: Cluster) -> None:
    """Two workers, one an hour behind and one an hour ahead, both waiting 1 to 2 s before a retry; every
    event's first call is a 500. Whichever worker schedules the retry, the next call comes at least 1 s later
    (by the sandbox's clock), each action is done with one accepted call, and nothing is called twice."""
    for n in range(4):
        fresh.script(f"skew{n}", 500, body={"message": "once"}, times=1)
    fresh.start_worker({**skewed(-HOUR), **RETRY})
    fresh.start_worker({**skewed(HOUR), **RETRY})
    events = [fresh.deliver(f"skew{n}", web=n % 2).body["event_id"] for n in range(4)]
    for event_id in events:
        fresh.wait_state(event_id, {"done", "dead"})
    check_invariants(fresh)
    for event_id in events:
        first, second = fresh.calls(event_id)
        assert (first["status"], second["status"]) == (500, 201)
        assert second["time"] - first["time"] >= 1.0, (event_id, second["time"] - first["time"])
