"""store.keys spells every Redis key: the names stay what they were, and no other module spells one.

A renamed key would orphan every event, ledger, budget and lineage entry already in Redis at an
upgrade, so each name is pinned here to its exact text.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import time
from pathlib import Path

import httpx
import pytest
from arq import constants as arq_constants
from redis.asyncio import Redis

from chainer import limits, lineage, store
from chainer.events import BuildEvent, ChainLink
from chainer.providers.http import Scrubber
from chainer.settings import Settings
from chainer.store import keys

CHAINER = Path(__file__).resolve().parents[2] / "chainer"
# Modules other helpers are changing while store.keys is introduced; their literals move to keys.py
# after the merge (keys.py already has the names they need: rate, lineage_*, WORKERS).
PENDING = {"jobs.py"}
KEY_LITERAL = re.compile(r"^(chainer|arq):(\S|$)")
# Literals that look like keys but name no Redis key: the Buildkite build meta-data key chainer sets.
NOT_KEYS = {"chainer:cause"}


def test_every_key_name_is_unchanged() -> None:
    """Each builder gives exactly the name chainer has always used for that key."""
    assert keys.seen("delivery:1") == "chainer:seen:delivery:1"
    assert keys.event("e1") == "chainer:event:e1"
    assert keys.event_audit("e1") == "chainer:audit:event:e1"
    assert keys.children("e1") == "chainer:children:e1"
    assert keys.action("e1:r:0") == "chainer:action:e1:r:0"
    assert (keys.AUDIT, keys.DLQ, keys.OPEN, keys.WORKERS) == (
        "chainer:audit",
        "chainer:dlq",
        "chainer:open",
        "chainer:workers",
    )
    assert keys.join("both", "commit", "abc") == "chainer:join:both:commit:abc"
    assert keys.budget_commit("r", "abc") == "chainer:budget:r:commit:abc"
    assert keys.budget_day("r", "2026-01-31") == "chainer:budget:r:day:2026-01-31"
    assert keys.rate("codeship") == "chainer:rate:codeship"
    assert keys.inflight("codeship", "acme/web", "heads/main") == "chainer:inflight:codeship:acme/web:heads/main"
    assert keys.lineage_pipeline("p1") == "chainer:lineage:pipeline:p1"
    assert keys.lineage_workflow("w1") == "chainer:lineage:workflow:w1"
    assert keys.lineage_build("circleci", "acme/b", 7) == "chainer:lineage:build:circleci:acme/b:7"
    assert keys.lineage_build("codeship", keys.LINEAGE_ANY_REPO, 7) == "chainer:lineage:build:codeship:-:7"
    assert keys.lineage_ref("codeship", "acme/a", "main", "abc") == "chainer:lineage:ref:codeship:acme/a:main:abc"
    assert keys.lineage_ref("codeship", "acme/a", "main") == "chainer:lineage:ref:codeship:acme/a:main:*"
    assert (keys.arq_job("act:e1:r:0:0"), keys.arq_retry("j")) == ("arq:job:act:e1:r:0:0", "arq:retry:j")


def test_ttls_are_unchanged() -> None:
    day = 86_400_000
    assert (keys.RETENTION_MS, keys.DEDUPE_TTL_MS, keys.JOB_TTL_MS) == (30 * day, 30 * day, day)
    assert (keys.BUDGET_COMMIT_TTL_MS, keys.BUDGET_DAY_TTL_MS) == (30 * day, 2 * day)
    assert (keys.LINEAGE_ID_TTL_MS, keys.LINEAGE_REF_TTL_MS) == (7 * day, 3_600_000)


def test_arq_keys_are_the_ones_arq_uses() -> None:
    """The accept script writes jobs straight into arq's queue: the names must be arq's own."""
    assert keys.ARQ_QUEUE == arq_constants.default_queue_name == "arq:queue"
    assert keys.ARQ_JOB_PREFIX == arq_constants.job_key_prefix == "arq:job:"
    assert keys.ARQ_RETRY_PREFIX == arq_constants.retry_key_prefix == "arq:retry:"


def test_the_names_chainer_store_exported_still_work() -> None:
    """``chainer.store`` keeps the key names it had before it became a package."""
    assert (store.AUDIT_KEY, store.DLQ_KEY, store.OPEN_KEY) == (keys.AUDIT, keys.DLQ, keys.OPEN)
    assert (store.QUEUE_KEY, store.JOB_PREFIX, store.PREFIX) == ("arq:queue", "arq:job:", "chainer:")
    assert store.event_key("e") == keys.event("e") and store.event_audit_key("e") == keys.event_audit("e")
    assert store.action_key("a") == keys.action("a") and store.seen_key("k") == keys.seen("k")
    assert store.children_key("e") == keys.children("e")


def test_inflight_locks_use_the_keys_module() -> None:
    assert limits.inflight_key("circleci.trigger_pipeline", {"project": "gh/acme/b", "branch": "dev"}) == (
        keys.inflight("circleci", "gh/acme/b", "dev")
    )
    assert limits.inflight_key("codeship.restart_build", {}) == keys.inflight("codeship", "-", "-")


def _event(provider: str, **fields: object) -> BuildEvent:
    base: dict[str, object] = {"kind": "build", "event_id": "evt", "project": "acme/a", "status": "success"}
    return BuildEvent(provider=provider, raw_status="success", **(base | fields))


def test_lineage_keys_mirror_the_lineage_module() -> None:
    """lineage.py builds every lineage key (and its lifetime) with store.keys, from the providers' lineage keys."""
    assert not any(hasattr(lineage, name) for name in ("PREFIX", "ID_TTL_MS", "REF_TTL_MS"))  # no spelling of its own
    circle = _event(
        "circleci",
        project="acme/b",
        branch="main",
        commit="abc",
        build_id=9,
        workflow_id="w1",
        raw={"pipeline": {"id": "p1"}},
    )
    assert lineage.event_keys(circle) == [
        keys.lineage_pipeline("p1"),
        keys.lineage_workflow("w1"),
        keys.lineage_build("circleci", "acme/b", 9),
        keys.lineage_ref("circleci", "acme/b", "main", "abc"),
        keys.lineage_ref("circleci", "acme/b", "main"),
    ]
    codeship = _event("codeship", branch="main", commit="abc", build_id=4711)
    assert lineage.event_keys(codeship) == [
        keys.lineage_build("codeship", "acme/a", 4711),
        keys.lineage_build("codeship", keys.LINEAGE_ANY_REPO, 4711),
        keys.lineage_ref("codeship", "acme/a", "main", "abc"),
        keys.lineage_ref("codeship", "acme/a", "main"),
    ]
    cause = _event("codeship", branch="main", commit="abc", chain=(ChainLink("e0", "r", "acme/a", "a0"),))
    targets = {
        ("circleci.trigger_pipeline", "p9"): [(keys.lineage_pipeline("p9"), keys.LINEAGE_ID_TTL_MS)],
        ("circleci.rerun_workflow", "w9"): [(keys.lineage_workflow("w9"), keys.LINEAGE_ID_TTL_MS)],
        ("circleci.v1_trigger_build", "12"): [(keys.lineage_build("circleci", "acme/b", "12"), keys.LINEAGE_ID_TTL_MS)],
        ("codeship.trigger_build", None): [(keys.lineage_ref("codeship", "acme/b", "dev"), keys.LINEAGE_REF_TTL_MS)],
        ("codeship.restart_build", None): [
            (keys.lineage_ref("codeship", "acme/b", "main", "abc"), keys.LINEAGE_REF_TTL_MS)
        ],
        ("codeship.v1_restart_build", "77"): [
            (keys.lineage_build("codeship", keys.LINEAGE_ANY_REPO, "77"), keys.LINEAGE_ID_TTL_MS)
        ],
    }
    params = {"project": "gh/acme/b", "ref": "heads/dev"}
    for (action, downstream_id), expected in targets.items():
        assert lineage.target_keys(action, params, downstream_id, cause) == expected, action


async def test_modules_waiting_for_keys_agree_with_it() -> None:
    """The literals still left in the modules being changed elsewhere are the names keys.py gives."""
    codeship = importlib.import_module("chainer.providers").get("codeship")
    async with httpx.AsyncClient() as http:  # nothing is sent: the limiter only registers its script
        client = codeship.client(Settings(), http, scrub=Scrubber(()), clock=time.time, redis=Redis())
    assert client._v2._throttle.key == client._v1._throttle.key == keys.rate("codeship")  # one budget, v1 and v2
    if importlib.util.find_spec("chainer.heartbeat") is not None:
        assert importlib.import_module("chainer.heartbeat").WORKERS_KEY == keys.WORKERS


def _key_literals(path: Path) -> list[tuple[int, str]]:
    """String constants in ``path`` that spell a Redis key (docstrings aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and KEY_LITERAL.search(node.value)
        and node.value not in NOT_KEYS
    )


def test_the_literal_finder_sees_plain_and_formatted_keys(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""chainer:doc is a docstring."""\n'
        'A = "chainer:dlq"\nB = f"chainer:event:{A}"\nC = "arq:"\nD = "chainer: a message"\nE = "urn:chainer:x"\n'
    )
    assert sorted(value for _, value in _key_literals(sample)) == ["arq:", "chainer:dlq", "chainer:event:"]


@pytest.mark.parametrize(
    "path",
    sorted(p for p in CHAINER.rglob("*.py") if p.name not in PENDING and p != CHAINER / "store" / "keys.py"),
    ids=lambda p: str(p.relative_to(CHAINER)),
)
def test_no_module_spells_a_key_of_its_own(path: Path) -> None:
    """Every chainer module but keys.py (and the ones listed as pending) builds key names with store.keys."""
    assert _key_literals(path) == []
