"""Train the zstd dictionaries of chainer's stored format from chainer's own records and events.

    .venv/bin/python scripts/train_dictionaries.py --check    # train again: are the committed dictionaries these?
    .venv/bin/python scripts/train_dictionaries.py --compare  # sizes and times of each format, on other samples
    .venv/bin/python scripts/train_dictionaries.py --out DIR  # write *-2.zdict to DIR (never over other bytes)

A stored value can only be read with the dictionary it was written with: the dictionaries are part of the stored
format, pinned by digest in tests/store/test_codec.py, and never retrained in place. To change one, write it under a
new name with a new marker byte in chainer/store/codec.py and keep the old one readable.

The samples are what chainer itself writes for webhook deliveries of all four providers, built by the test suite's
delivery builders (tests/payloads.py, tests/providers/github/support.py) with projects, branches, statuses and ids
drawn from a seeded random generator, parsed as chainer parses them, matched against the example rules.yaml and
planned as an accept plans them: the accept's audit records and stored event fields; and the worker's records for
the queued actions, each called by chainer's own provider client against the sandbox's emulation of its API
(chainer/sandbox), with transient failures and retries drawn now and then; and a share of duplicates,
rejections, ignored deliveries and skipped actions. ``--compare`` measures on samples from another seed with other
project and branch names, so the figures are not those of the training set itself (they are still samples of
chainer's own builders: real payloads, GitHub's above all, are bigger). The samples, and so the dictionaries,
depend on this script, the builders, rules.yaml, chainer's record shapes and zstandard's trainer: ``--check``
tells whether they still give the committed bytes; they need not, as long as the committed files stay.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import zstandard  # noqa: E402

from chainer import fastjson  # noqa: E402
from chainer.audit import (  # noqa: E402
    action_dead,
    attempt_failed,
    attempt_started,
    attempt_succeeded,
    retry_scheduled,
    webhook_ignored,
    webhook_rejected,
)
from chainer.errors import DownstreamError, PermanentDownstreamError, TransientDownstreamError  # noqa: E402
from chainer.events import BuildEvent  # noqa: E402
from chainer.explain import parse_any  # noqa: E402
from chainer.jobs import ledger_context  # noqa: E402
from chainer.plan import ignored_reason, plan_accept  # noqa: E402
from chainer.providers import Downstream, catalogue  # noqa: E402
from chainer.rules.validate import parse_rules  # noqa: E402
from chainer.sandbox import SandboxState, create_sandbox_app, sandbox_settings, seed_sandbox  # noqa: E402
from chainer.settings import Settings  # noqa: E402
from chainer.store import codec  # noqa: E402
from chainer.store.codec import record_json  # noqa: E402
from chainer.store.core import packed_event_fields  # noqa: E402
from chainer.store.plans import QueuedAction  # noqa: E402
from tests import payloads  # noqa: E402
from tests.providers.github import support as github  # noqa: E402

DICTIONARIES = ROOT / "chainer" / "store" / "dictionaries"
RECORDS_SIZE = 8192
EVENTS_SIZE = 8192
# zstandard always trains with fastCover; segment and d-mer sizes fixed, no parameter search (steps=0) and one thread
# (threads=0), so training is one deterministic pass.
COVER = {"k": 200, "d": 8, "steps": 0, "threads": 0}
RECORDS_ID = 0x43480201  # "CH", format 2, records
EVENTS_ID = 0x43480202
TRAIN_SEED = 20_261_203
COMPARE_SEED = 7
SAMPLES = 2_500  # deliveries; each gives one stored event and three to a dozen records

# Rules beyond the example rules.yaml, so that every action of every provider is called often enough: the example
# has no Buildkite action and no repository_dispatch, and most of its other rules need projects or workflows the
# drawn deliveries rarely name.
_MORE_RULES = """
  - name: train-buildkite-deploy
    when: {provider: [codeship, github], status: success}
    then:
      - buildkite.create_build:
          {pipeline: acme/deploy, message: "after {{ event.project }}", env: {SHA: "{{ event.commit }}"}}
  - name: train-buildkite-rebuild
    when: {provider: buildkite, status: failed}
    then:
      - buildkite.rebuild: {}
  - name: train-github-dispatch
    when: {provider: [circleci, buildkite], status: success}
    then:
      - github.repository_dispatch:
          {repo: acme/docs-site, event_type: upstream-green, client_payload: {sha: "{{ event.commit }}"}}
      - github.dispatch_workflow:
          {repo: acme/docs-site, workflow: deploy.yml, inputs: {upstream_sha: "{{ event.commit }}"}}
  - name: train-github-rerun
    when: {provider: github, status: failed}
    then:
      - github.rerun_workflow_run: {}
  - name: train-circleci-pipeline
    when: {provider: [github, buildkite, codeship], status: success}
    then:
      - circleci.trigger_pipeline:
          {project: gh/acme/api, branch: "{{ event.branch }}", parameters: {upstream_sha: "{{ event.commit }}"}}
  - name: train-circleci-v1
    when: {provider: [codeship, github], status: [failed, error]}
    then:
      - circleci.v1_trigger_build: {project: github/acme/packaging, branch: main, revision: "{{ event.commit }}"}
      - codeship.v1_restart_build: {}
"""
# (projects, branches) the deliveries name: the example rules' for training, others for --compare
_TRAIN_NAMES = (
    ["acme/lib", "acme/web", "acme/web-admin", "acme/api", "acme/smoke-tests", "tools/release", "x/y"],
    ["main", "develop", "release/2.4", "hotfix-12", "experiment/new-ui", "dependabot/npm/left-pad-2.0.1"],
)
_COMPARE_NAMES = (
    ["shop/checkout", "shop/cart-service", "infra/terraform", "data/etl-jobs", "mobile/ios"],
    ["master", "feature/PAY-1234-refunds", "release/7.0", "renovate/lodash-4.x", "trunk"],
)
_REJECTIONS = [
    (401, "missing or wrong token"),
    (401, "no circleci-signature header matches any CHAINER_CIRCLECI_WEBHOOK_SECRETS"),
    (400, "the body is not JSON: Expecting value: line 1 column 1 (char 0)"),
    (415, "Content-Type text/plain is not JSON or form data"),
]
_ERRORS = [
    (503, "503 Service Unavailable: upstream is down"),
    (429, "429 Too Many Requests: rate limit exceeded"),
    (None, "connection refused"),
    (None, "timed out after 30.0 s"),
    (404, "404 Not Found: no such project"),
    (401, '401 Unauthorized: {"message":"Bad credentials"}'),
]


def _hex(rnd: random.Random, n: int) -> str:
    return "".join(rnd.choice("0123456789abcdef") for _ in range(n))


def _uuid(rnd: random.Random) -> str:
    h = _hex(rnd, 32)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _delivery(rnd: random.Random, i: int, names: tuple[list[str], list[str]]) -> tuple[str, dict[str, Any]]:
    """One webhook body of a provider taken in turn, with drawn projects, branches, statuses and ids."""
    projects, branches = names
    project, branch, commit = rnd.choice(projects), rnd.choice(branches), _hex(rnd, 40)
    org, repo = project.split("/")
    provider = ("codeship", "circleci", "github", "buildkite")[i % 4]
    if provider == "codeship":
        status = rnd.choice(["success", "error", "testing", "stopped", "infrastructure_failure", "waiting"])
        build = rnd.randrange(10**6, 10**8)
        return provider, payloads.codeship(
            status, build_id=build, project=project, branch=branch, commit=commit, project_id=rnd.randrange(10**5)
        )
    if provider == "circleci":
        status = rnd.choice(["success", "failed", "error", "canceled", "unauthorized"])
        return provider, payloads.circleci_workflow(
            status, delivery=_uuid(rnd), workflow_id=_uuid(rnd), org=org, repo=repo, branch=branch, commit=commit
        )
    if provider == "github":
        conclusion = rnd.choice(["success", "failure", "cancelled", "timed_out", "startup_failure"])
        number = projects.index(project)  # each repository has ids of its own, its workflow too
        workflow = {"id": 200_000 + number, "name": "CI", "path": ".github/workflows/ci.yml", "state": "active"}
        run_id = rnd.randrange(10**9, 10**11)
        body = github.workflow_run(
            conclusion, run_id=run_id, repo=project, repo_id=10**8 + number, branch=branch, workflow=workflow
        )
        body["workflow_run"] |= {"head_sha": commit, "workflow_id": workflow["id"]}
        return provider, body
    state = rnd.choice(["passed", "failed", "canceled", "running", "blocked"])
    return provider, payloads.buildkite_build(
        "build.finished" if state != "running" else "build.running",
        state,
        build_id=_uuid(rnd),
        number=rnd.randrange(1, 10**5),
        org=org,
        pipeline=repo,
        branch=branch,
        commit=commit,
    )


async def _worker_records(
    rnd: random.Random, downstream: Downstream, action: QueuedAction, event: BuildEvent
) -> list[dict[str, Any]]:
    """What a worker writes about one action, its call made by chainer's own provider client against the sandbox's
    emulated API: the attempt and its result (the API's answer as the client records it, or the error it raised),
    with a transient failure and its retry first now and then."""
    context = ledger_context(action.record)  # the action's queued record names what its ledger holds
    records = [attempt_started(context, 1)]
    if rnd.random() < 0.2:
        status, message = rnd.choice(_ERRORS)
        exc: DownstreamError = TransientDownstreamError(message, status=status, retry_after=rnd.choice([None, 30.0]))
        records.append(attempt_failed(context, 1, exc, "transient"))
        records.append(retry_scheduled(context, 2, rnd.uniform(1, 120), rnd.choice([None, message])))
        records.append(attempt_started(context, 2))
    attempt = records[-1]["attempt"]
    params = fastjson.loads(action.ledger["params"])
    try:
        result = await downstream.execute(str(action.record["action"]), params, event)
    except TransientDownstreamError as exc:
        records.append(attempt_failed(context, attempt, exc, "transient"))
        records.append(retry_scheduled(context, attempt + 1, rnd.uniform(1, 120)))
        return records
    except DownstreamError as exc:
        reason = "permanent" if isinstance(exc, PermanentDownstreamError) else "ambiguous"
        records.append(attempt_failed(context, attempt, exc, reason))
        records.append(action_dead(context, reason, exc.message, exc.status))
        return records
    records.append(attempt_succeeded(context, attempt, result.status, result.downstream_id, result.detail))
    return records


async def _samples(seed: int, count: int, names: tuple[list[str], list[str]]) -> tuple[list[bytes], list[bytes]]:
    rnd = random.Random(seed)
    rules = parse_rules((ROOT / "rules.yaml").read_text() + _MORE_RULES, catalogue=catalogue())
    # A clock of its own (the same samples on every run) and no Codeship rate limit (the samples are not about it).
    ticks = itertools.count()
    state = SandboxState(codeship_rate_limit=10**9, clock=lambda: 1_795_000_000.0 + next(ticks) * 0.37)
    base = "http://sandbox.test"
    cfg = sandbox_settings(Settings(), state, base)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_sandbox_app(state)), base_url=base)
    downstream = Downstream(cfg, http)
    records: list[bytes] = []
    events: list[bytes] = []
    async with http:
        for i in range(count):
            provider, body = _delivery(rnd, i, names)
            if i % 25 == 0:
                status, cause = rnd.choice(_REJECTIONS)
                remote = f"10.0.{rnd.randrange(256)}.{rnd.randrange(256)}"
                records.append(record_json(webhook_rejected(provider, status, cause, remote)))
            event = parse_any(provider, {}, json.dumps(body).encode())
            if not isinstance(event, BuildEvent):
                continue
            decisions = rules.evaluate(event)
            reason = ignored_reason(event, decisions)
            if reason is not None:
                records.append(record_json(webhook_ignored(provider, reason, rules.version, event)))
                continue
            seed_sandbox(state, rules, [event])
            at_ms = 1_795_000_000_000 + i * rnd.randrange(1, 60_000)
            plan = plan_accept(event, decisions, rules.version, at_ms, rules.limits)
            audit = [r for r in plan.audit if isinstance(r, dict)] + [a.record for a in plan.actions]
            if i % 10 == 0:
                audit.append(plan.duplicate_record)
            for action in plan.actions:
                if action.budgets and rnd.random() < 0.3:
                    audit.append(action.skip_record)  # its budget was spent
                elif action.job_id:  # queued, not skipped
                    audit += await _worker_records(rnd, downstream, action, event)
            records += [record_json(r) for r in audit]
            events.append(codec.join_fields(packed_event_fields(plan.event_fields)))
    return records, events


def samples(seed: int, count: int = SAMPLES, *, other_names: bool = False) -> tuple[list[bytes], list[bytes]]:
    """(records, event fields) as chainer stores them before compression, for ``count`` deliveries; with
    ``other_names``, of projects and branches the training samples never name."""
    return asyncio.run(_samples(seed, count, _COMPARE_NAMES if other_names else _TRAIN_NAMES))


def train(records: list[bytes], events: list[bytes]) -> tuple[bytes, bytes]:
    """The two dictionaries' bytes, the same for the same samples."""
    trained = []
    for size, dict_id, data in ((RECORDS_SIZE, RECORDS_ID, records), (EVENTS_SIZE, EVENTS_ID, events)):
        trained.append(zstandard.train_dictionary(size, data, dict_id=dict_id, **COVER).as_bytes())
    return trained[0], trained[1]


def _measure(name: str, pack: Callable[[bytes], bytes], data: list[bytes]) -> None:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        out = [pack(d) for d in data]
        best = min(best, time.perf_counter() - start)
    print(f"{name:28s} {1e6 * best / len(data):6.2f} µs  {sum(map(len, out)) / len(out):7.1f} B on average")


def compare() -> None:
    records, events = samples(COMPARE_SEED, 1_000, other_names=True)
    raw = sum(map(len, records)) / len(records), sum(map(len, events)) / len(events)
    print(f"{len(records)} records ({raw[0]:.0f} B of JSON), {len(events)} events ({raw[1]:.0f} B of fields)")
    for name, packer in (("zlib", codec.ZLIB), ("zstd", codec.ZSTD)):
        _measure(f"{name} records", lambda d, p=packer: p.pack_json(d), records)
        _measure(f"{name} event fields", lambda d, p=packer: p.pack_joined(d), events)
    if any(codec.inflate(codec.ZSTD.pack_json(r)) != r for r in records):
        raise SystemExit("a record did not read back as it was written")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", action="store_true", help="measure the formats instead of training")
    parser.add_argument("--check", action="store_true", help="train, and compare with the committed dictionaries")
    parser.add_argument("--out", type=Path, default=DICTIONARIES, help="where to write them (never over other bytes)")
    args = parser.parse_args()
    if args.compare:
        compare()
        return
    trained = dict(zip(("records-2.zdict", "events-2.zdict"), train(*samples(TRAIN_SEED)), strict=True))
    differ = []
    for name, data in trained.items():
        path = (DICTIONARIES if args.check else args.out) / name
        print(f"{name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
        if path.exists() and path.read_bytes() != data:
            differ.append(str(path))
        elif not args.check and not path.exists():
            path.write_bytes(data)
            print(f"  wrote {path}")
    if differ:
        raise SystemExit(
            f"training gives other bytes than {', '.join(differ)}: left as they are (values stored with them must "
            "stay readable); to change the format, write new files under new names and markers"
        )


if __name__ == "__main__":
    main()
