"""Fault injection on real processes (arq-redis.md §5): workers killed and stopped around the downstream call,
downstream faults, duplicates across two web processes; ``check_invariants`` after every case.

Redis runs with ``appendfsync always`` here; tests/faults/test_redis.py restarts Redis itself.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
import redis as syncredis

from tests.faults.harness import Cluster, InvariantViolation, check_invariants, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_kill_9_during_the_call_is_never_called_twice(fresh: Cluster) -> None:
    """The sandbox holds its 201 while the worker is killed: the restarted worker finds the action `calling`
    and dead-letters it as ambiguous instead of calling again (DESIGN §6: at most once)."""
    fresh.script("held", 201, body={"id": "p-held", "number": 1, "state": "created"}, delay=1.2)
    worker = fresh.start_worker()
    sent = fresh.deliver("held")
    assert sent.status == 202
    wait_for(lambda: fresh.calls(sent.body["event_id"]), "the held call to reach the sandbox", 20)
    worker.kill()
    worker.wait(timeout=10)
    fresh.start_worker()
    action = fresh.wait_state(sent.body["event_id"], {"dead"})
    assert action["dead_reason"] == "ambiguous"
    assert len(fresh.calls(sent.body["event_id"])) == 1
    check_invariants(fresh)


def test_kill_9_in_a_burst_before_during_and_after_calls(fresh: Cluster) -> None:
    """Twelve events, every call held 0.4 s, the worker killed -9 once the first calls are answered: actions not
    yet claimed, claimed but not yet sent, in flight and done all end terminal with at most one call each."""
    fresh.script("burst", 201, body={"id": "p", "number": 1, "state": "created"}, delay=0.4, times=100)
    worker = fresh.start_worker()
    events = [fresh.deliver("burst").body["event_id"] for _ in range(12)]
    wait_for(lambda: len(fresh.calls()) >= 2, "the first calls of the burst", 20)
    worker.kill()
    worker.wait(timeout=10)
    fresh.start_worker()
    check_invariants(fresh)
    states = {fresh.action(e)["state"] for e in events}
    assert states <= {"done", "dead"} and "done" in states


def test_sigterm_mid_call_lets_the_call_finish_and_records_it(fresh: Cluster) -> None:
    """SIGTERM while the sandbox holds the answer: arq waits for the running job, the answer is recorded (done),
    the worker exits cleanly and nothing is called again."""
    fresh.script("graceful", 201, body={"id": "p-graceful", "number": 1, "state": "created"}, delay=1.0)
    worker = fresh.start_worker()
    sent = fresh.deliver("graceful")
    wait_for(lambda: fresh.calls(sent.body["event_id"]), "the held call", 20)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    fresh.workers.remove(worker)
    assert fresh.action(sent.body["event_id"])["state"] == "done"
    fresh.start_worker()
    check_invariants(fresh)


def test_kill_before_the_action_is_marked_calling_runs_it_once_after_the_lease(fresh: Cluster) -> None:
    """A worker that claimed the job (arq's in-progress key, attempt.started written) and died before sending:
    after the lease another worker runs it, and the provider sees one call."""
    sent = fresh.deliver("claimed")
    event_id = sent.body["event_id"]
    client = syncredis.Redis.from_url(fresh.redis.url)
    job = f"act:{event_id}:{'chain'}:0:0"
    assert client.exists(f"arq:job:{job}")
    client.psetex(f"arq:in-progress:{job}", 7000, b"1")  # what the dead worker's claim leaves behind
    client.hincrby(f"chainer:action:{event_id}:chain:0", "attempts", 1)
    client.close()
    fresh.start_worker()
    action = fresh.wait_state(event_id, {"done"})
    assert action["attempts"] == 2
    check_invariants(fresh)


def test_fifty_concurrent_duplicates_across_both_webs_make_one_event_and_one_call(fresh: Cluster) -> None:
    """The same delivery 50 times at once, alternating web processes: one 202, 49 duplicates, one call."""
    fresh.start_worker()
    results: list[int] = []
    statuses: list[str] = []

    def post(n: int) -> None:
        answer = fresh.deliver("dup", delivery="0b8d4c1e-dup0-4000-8000-000000000050", workflow="wf-dup", web=n % 2)
        results.append(answer.status)
        statuses.append(answer.body.get("status", ""))

    threads = [threading.Thread(target=post, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(set(results)) == [200, 202] and statuses.count("accepted") == 1
    assert statuses.count("duplicate") == 49
    check_invariants(fresh)
    assert len(fresh.calls()) == 1


def test_circleci_n_plus_one_workflow_completed_for_one_cancel_is_one_event(fresh: Cluster) -> None:
    """CircleCI sends a workflow-completed per cancelled job (different delivery ids, one workflow): one event."""
    fresh.start_worker()
    answers = [fresh.deliver("cancel", workflow="wf-cancel", status="success") for _ in range(4)]
    assert [a.body["status"] for a in answers] == ["accepted", "duplicate", "duplicate", "duplicate"]
    check_invariants(fresh)
    assert len(fresh.calls()) == 1


def test_downstream_500_three_times_then_201_is_done_after_four_calls(fresh: Cluster) -> None:
    fresh.script("flaky", 500, body={"message": "boom"}, times=3)
    fresh.start_worker()
    sent = fresh.deliver("flaky")
    action = fresh.wait_state(sent.body["event_id"], {"done", "dead"})
    assert action["state"] == "done" and action["attempts"] == 4
    assert [c["status"] for c in fresh.calls(sent.body["event_id"])] == [500, 500, 500, 201]
    check_invariants(fresh)


def test_429_with_retry_after_waits_and_then_succeeds(fresh: Cluster) -> None:
    fresh.script("limited", 429, body={"message": "slow down"}, headers={"Retry-After": "1"}, times=1)
    fresh.start_worker()
    sent = fresh.deliver("limited")
    fresh.wait_state(sent.body["event_id"], {"done"})
    first, second = fresh.calls(sent.body["event_id"])
    assert (first["status"], second["status"]) == (429, 201)
    assert second["time"] - first["time"] >= 1.0  # the sandbox's own clock, both stamps from one process
    check_invariants(fresh)


def test_hang_past_the_client_timeout_is_ambiguous_and_dead(fresh: Cluster) -> None:
    """The provider holds the request past the HTTP client's timeout: the call may have taken effect, so the
    action is dead (ambiguous), never called twice."""
    fresh.script("hang", 201, body={"id": "late", "number": 1, "state": "created"}, delay=40)
    fresh.start_worker()
    sent = fresh.deliver("hang")
    action = fresh.wait_state(sent.body["event_id"], {"dead", "done"}, timeout=60)
    assert action["state"] == "dead" and action["dead_reason"] == "ambiguous"
    check_invariants(fresh, bound=60)


@pytest.mark.parametrize("status", [400, 401, 404])
def test_permanent_refusals_are_dead_at_once(fresh: Cluster, status: int) -> None:
    fresh.script(f"refused{status}", status, body={"message": "no"})
    fresh.start_worker()
    sent = fresh.deliver(f"refused{status}")
    action = fresh.wait_state(sent.body["event_id"], {"dead", "done"})
    assert (action["state"], action["dead_reason"], len(fresh.calls(sent.body["event_id"]))) == ("dead", "permanent", 1)
    check_invariants(fresh)


def test_retries_to_exhaustion_then_replay_from_the_dead_letter_list(fresh: Cluster) -> None:
    """503 on every try: after CHAINER_RETRY_MAX_TRIES calls the action is dead (exhausted); a replay makes one
    more call, which succeeds; a second replay is refused (409) and calls nothing."""
    fresh.script("exhaust", 503, body={"message": "down"}, times=4)
    fresh.start_worker()
    sent = fresh.deliver("exhaust")
    event_id = sent.body["event_id"]
    action = fresh.wait_state(event_id, {"dead"})
    assert action["dead_reason"] == "exhausted" and len(fresh.calls(event_id)) == 4
    check_invariants(fresh)
    replay = fresh.operator("POST", f"/dlq/{action['action_id']}/replay")
    assert replay.status_code == 200
    fresh.replayed[action["action_id"]] += 1
    fresh.wait_state(event_id, {"done"})
    again = fresh.operator("POST", f"/dlq/{action['action_id']}/replay")
    assert again.status_code == 409
    assert [c["status"] for c in fresh.calls(event_id)] == [503, 503, 503, 503, 201]
    check_invariants(fresh)


def test_a_poison_job_is_swept_to_the_dead_letter_list_and_the_worker_carries_on(fresh: Cluster) -> None:
    """Garbage bytes under an arq job key: the worker logs the failure and keeps running; the sweeper marks the
    action lost; the next event is served."""
    sent = fresh.deliver("poison")
    event_id = sent.body["event_id"]
    client = syncredis.Redis.from_url(fresh.redis.url)
    client.set(f"arq:job:act:{event_id}:chain:0:0", b"\x80\x04garbage\xff", keepttl=True)
    client.close()
    worker = fresh.start_worker()
    action = fresh.wait_state(event_id, {"dead"})
    assert action["dead_reason"] == "lost" and worker.poll() is None
    after = fresh.deliver("poison")
    fresh.wait_state(after.body["event_id"], {"done"})
    check_invariants(fresh)


def test_the_sweeper_dead_letters_an_action_whose_job_vanished(fresh: Cluster) -> None:
    sent = fresh.deliver("vanished")
    event_id = sent.body["event_id"]
    client = syncredis.Redis.from_url(fresh.redis.url)
    job = f"act:{event_id}:chain:0:0"
    client.delete(f"arq:job:{job}")
    client.zrem("arq:queue", job)
    client.close()
    fresh.start_worker()
    action = fresh.wait_state(event_id, {"dead"})
    assert action["dead_reason"] == "lost" and fresh.calls() == []
    check_invariants(fresh)


def test_a_redelivery_after_arqs_result_expired_is_still_a_duplicate(fresh: Cluster) -> None:
    fresh.start_worker()
    first = fresh.deliver("expired", delivery="4c7e9a10-0000-4000-8000-00000000e0e0", workflow="wf-expired")
    fresh.wait_state(first.body["event_id"], {"done"})
    client = syncredis.Redis.from_url(fresh.redis.url)
    for key in client.scan_iter("arq:result:*"):
        client.delete(key)
    client.close()
    again = fresh.deliver("expired", delivery="4c7e9a10-0000-4000-8000-00000000e0e0", workflow="wf-expired")
    assert (again.status, again.body["status"]) == (200, "duplicate")
    time.sleep(0.5)  # a second job, if one had been queued, would be picked at once by the idle worker
    check_invariants(fresh)
    assert len(fresh.calls()) == 1


def test_rules_reloaded_mid_burst_lose_nothing(fresh: Cluster) -> None:
    """The rules file changes (a second, identical rule under another name) while 20 events arrive: every
    accepted event still ends terminal with at most one call per action."""
    fresh.start_worker()
    for n in range(20):
        if n == 10:
            text = fresh.rules_path.read_text()
            fresh.rules_path.write_text(text + "  # reloaded\n")
        assert fresh.deliver("reload").status == 202
    check_invariants(fresh)


def test_the_invariant_check_sees_a_second_call(fresh: Cluster) -> None:
    """Control for I2: a call the worker did not make, carrying an accepted event's marker, is reported."""
    import httpx

    fresh.start_worker()
    sent = fresh.deliver("control")
    fresh.wait_state(sent.body["event_id"], {"done"})
    httpx.post(
        f"{fresh.sandbox_url}/api/v2/project/gh/acme/control/pipeline",
        json={"branch": "main", "parameters": {"marker": sent.body["event_id"]}},
        headers={"circle-token": "sandbox-token"},
        timeout=5,
    )
    with pytest.raises(InvariantViolation, match="I2"):
        check_invariants(fresh)


def test_a_worker_crash_loop_loses_no_job_and_calls_nothing_twice(fresh: Cluster) -> None:
    """Eight events to one target, every call held 0.6 s (calls to one target run one at a time); five times a
    worker is started and killed -9 as soon as a call of its reaches the sandbox (it dies holding the target's
    lease, its claim and a call in flight), then one stays up. Every action ends terminal: done with one
    accepted call, or dead as ambiguous (its one call was in flight when its worker died); none lost, none
    called twice. The workers' target lease is 1 s so that a dead holder's target is free again soon."""
    fresh.script("crash", 201, body={"id": "p", "number": 1, "state": "created"}, delay=0.6, times=100)
    lease = {"CHAINER_TARGET_LEASE_SECONDS": "1", "CHAINER_TARGET_LEASE_RENEW_SECONDS": "0.3"}
    events = [fresh.deliver("crash").body["event_id"] for _ in range(8)]
    for _ in range(5):
        seen = len(fresh.calls())
        worker = fresh.start_worker(lease)
        wait_for(lambda seen=seen: len(fresh.calls()) > seen, "a call by the restarted worker", 30)
        worker.kill()
        worker.wait(timeout=10)
    fresh.start_worker(lease)
    check_invariants(fresh, bound=60)
    actions = [fresh.action(e) for e in events]
    assert {a["state"] for a in actions} <= {"done", "dead"}
    assert all(a["dead_reason"] == "ambiguous" for a in actions if a["state"] == "dead"), actions
    assert all(len(fresh.calls(e)) == 1 for e in events)
    assert sum(a["state"] == "dead" for a in actions) <= 5 and any(a["state"] == "done" for a in actions)


def test_a_retry_after_longer_than_the_jobs_lifetime_waits_and_then_succeeds(fresh: Cluster) -> None:
    """429 with Retry-After: 9, longer than the job timeout (6 s) and its lease (7 s): the action waits (not
    counted as a try, not swept as lost, not called meanwhile) and the one call after the wait succeeds."""
    fresh.script("patience", 429, body={"message": "later"}, headers={"Retry-After": "9"}, times=1)
    fresh.start_worker()
    sent = fresh.deliver("patience")
    action = fresh.wait_state(sent.body["event_id"], {"done", "dead"})
    first, second = fresh.calls(sent.body["event_id"])
    assert (first["status"], second["status"], action["state"], action["attempts"]) == (429, 201, "done", 1)
    assert second["time"] - first["time"] >= 9.0  # the sandbox's own clock, both stamps from one process
    check_invariants(fresh)
