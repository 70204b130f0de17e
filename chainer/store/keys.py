"""Every Redis key chainer reads or writes, and how long each lives: the one place that spells them.

Like arq's ``constants.py``: modules build key names here and never write a ``chainer:`` or ``arq:``
literal of their own. The layout:

    chainer:seen:<dedupe key>                   STRING event id; a delivery whose key exists is a duplicate
    chainer:event:<event id>                    HASH   ``actions`` (action ids) and ``z``: event JSON, raw payload,
                                                       decisions, rules version… compressed (codec.pack_fields)
    chainer:children:<event id>                 SET    events caused by this event's actions (lineage tree)
    chainer:action:<action id>                  HASH   the action's ledger (see ``chainer.store.ledger``); values over
                                                       HASH_CHUNK bytes in pieces (``name``, ``name~1`` …), so the
                                                       hash stays a listpack; its identity is the key's id
    chainer:audit                               STREAM every audit record (compressed), trimmed by time by the worker
    chainer:audit:event:<event id>              STRING the ids of the event's records in chainer:audit, compactly
                                                       (scripts/_trail.lua); a LIST of the ids, or a STREAM of the
                                                       records themselves, for events stored by earlier versions
    chainer:dlq                                 ZSET   dead action ids → time they died
    chainer:open                                ZSET   actions not yet finished → when they were queued
    chainer:join:<rule>:<on>:<value>            HASH   a fan-in join's clauses and whether it fired (a branch
                                                       join's fired round moves to …:fired:<event id>)
    chainer:budget:<rule>:commit:<sha>          STRING actions a rule ran for a commit
    chainer:budget:<rule>:day:<YYYY-MM-DD>      STRING actions a rule ran on a UTC day
    chainer:rate:<provider>                     ZSET   outbound requests in the provider's rate window
    chainer:inflight:<provider>:<target>:<ref>  STRING lease: the job whose call is in flight to a target and ref
    chainer:waiting:<provider>:<target>:<ref>   ZSET   jobs waiting for that lease → when they were queued (order)
    chainer:wake                                LIST   tokens pushed when a job is queued due now; idle workers BLPOP
    chainer:rewake                              ZSET   jobs handed a lease while their wait was still being recorded
    chainer:lineage:<kind>:…                    STRING the chain a started build inherits (see ``lineage_*``)
    chainer:workers                             ZSET   live workers → Redis time until which they count alive
    chainer:session:<sha256 of the session id>  STRING a signed-in operator page session (chainer.web.session)
    arq:queue, arq:job:<job id>, arq:retry:<job id>, arq:in-progress:<job id>   arq's own keys (from ``arq.constants``)
"""

from __future__ import annotations

from arq import constants as _arq

PREFIX = "chainer:"

# How long things live, in milliseconds.
DAY_MS = 86_400_000
RETENTION_MS = 30 * DAY_MS  # events, ledgers and audit records, unless CHAINER_AUDIT_RETENTION_DAYS says otherwise
DEDUPE_DAYS = 30
DEDUPE_TTL_MS = DEDUPE_DAYS * DAY_MS  # at least this long, longer when the retention is longer
# The worker's trim of the audit log (Store.trim_audit): records dropped per XTRIM call, calls per run.
TRIM_STEP = 1000
TRIM_MAX_STEPS = 100
JOB_TTL_MS = DAY_MS  # an arq job key written by chainer, as arq's own enqueue would (expires_extra_ms)
BUDGET_COMMIT_TTL_MS = 30 * DAY_MS
BUDGET_DAY_TTL_MS = 2 * DAY_MS
LINEAGE_ID_TTL_MS = 7 * DAY_MS  # a build recognised by the id its provider returned
# Where a provider's webhooks carry no id chainer could have been given, its build is recognised by
# project, branch and commit (or, when the action named no commit, by project and branch alone for
# an hour: a build someone else starts there in that hour is taken as part of the chain too).
LINEAGE_REF_TTL_MS = 3_600_000

# The longest value written into a ledger hash in one piece: Redis's default hash-max-listpack-value. A hash
# with a longer value becomes a hashtable (a ledger: about 1.7 KB instead of about 0.7 KB), so a longer value
# is stored in pieces of this size (scripts/_hset.lua) and joined again when read (codec.decode_hash).
HASH_CHUNK = 64

# Single keys.
AUDIT = f"{PREFIX}audit"
DLQ = f"{PREFIX}dlq"
OPEN = f"{PREFIX}open"
WORKERS = f"{PREFIX}workers"
WAKE = f"{PREFIX}wake"
WAKE_MAX = 64  # tokens kept at most: enough to wake every idle worker, never a backlog of useless polls
REWAKE = f"{PREFIX}rewake"

# arq's keys, spelled by arq itself: chainer writes jobs into arq's queue in its accept script.
ARQ_QUEUE: str = _arq.default_queue_name
ARQ_JOB_PREFIX: str = _arq.job_key_prefix
ARQ_RETRY_PREFIX: str = _arq.retry_key_prefix
ARQ_IN_PROGRESS_PREFIX: str = _arq.in_progress_key_prefix

LINEAGE_PREFIX = f"{PREFIX}lineage:"
LINEAGE_ANY_COMMIT = "*"  # a ref key for a build whose commit the action did not name
LINEAGE_ANY_REPO = "-"  # a build key by an id that is unique without its repository (a provider's numeric build ids)


def seen(dedupe_key: str) -> str:
    return f"{PREFIX}seen:{dedupe_key}"


def event(event_id: str) -> str:
    return f"{PREFIX}event:{event_id}"


def session(digest: str) -> str:
    """An operator page session, by the SHA-256 of its id (the cookie's id is never stored as it is)."""
    return f"{PREFIX}session:{digest}"


def event_audit(event_id: str) -> str:
    return f"{PREFIX}audit:event:{event_id}"


def children(event_id: str) -> str:
    return f"{PREFIX}children:{event_id}"


def action(action_id: str) -> str:
    return f"{PREFIX}action:{action_id}"


def join(rule: str, on: str, value: str) -> str:
    """A fan-in join: one per rule and join value (commit, branch or tag)."""
    return f"{PREFIX}join:{rule}:{on}:{value}"


def budget_commit(rule: str, commit: str) -> str:
    return f"{PREFIX}budget:{rule}:commit:{commit}"


def budget_day(rule: str, day: str) -> str:
    """``day`` is the UTC date, ``YYYY-MM-DD``."""
    return f"{PREFIX}budget:{rule}:day:{day}"


def rate(provider: str) -> str:
    """The sliding window of a provider's outbound request budget (shared by every worker)."""
    return f"{PREFIX}rate:{provider}"


INFLIGHT_PREFIX = f"{PREFIX}inflight:"


def inflight(provider: str, target: str, ref: str) -> str:
    """The lease on a downstream target (project or workflow) and ref (branch, ref or tag)."""
    return f"{INFLIGHT_PREFIX}{provider}:{target}:{ref}"


def waiting(lease_key: str) -> str:
    """The ordered queue of jobs waiting for the lease ``lease_key`` (an ``inflight`` key)."""
    name = lease_key[len(INFLIGHT_PREFIX) :] if lease_key.startswith(INFLIGHT_PREFIX) else lease_key
    return f"{PREFIX}waiting:{name}"


def lineage_pipeline(pipeline_id: str) -> str:
    return f"{LINEAGE_PREFIX}pipeline:{pipeline_id}"


def lineage_workflow(workflow_id: str) -> str:
    return f"{LINEAGE_PREFIX}workflow:{workflow_id}"


def lineage_build(provider: str, repo: str, build_id: object) -> str:
    """A build by its provider's number or id; ``repo`` is ``owner/repo`` or ``LINEAGE_ANY_REPO``."""
    return f"{LINEAGE_PREFIX}build:{provider}:{repo}:{build_id}"


def lineage_ref(provider: str, repo: str, ref: str, commit: object = None) -> str:
    """A build by repository, branch (or tag) and commit; no commit means any (``LINEAGE_ANY_COMMIT``)."""
    return f"{LINEAGE_PREFIX}ref:{provider}:{repo}:{ref}:{commit or LINEAGE_ANY_COMMIT}"


def arq_job(job_id: str) -> str:
    return f"{ARQ_JOB_PREFIX}{job_id}"


def arq_retry(job_id: str) -> str:
    return f"{ARQ_RETRY_PREFIX}{job_id}"


def arq_in_progress(job_id: str) -> str:
    return f"{ARQ_IN_PROGRESS_PREFIX}{job_id}"
