"""Everything chainer keeps in Redis: accepted events, action ledgers, arq jobs and the audit log.

Keys (all ``chainer:`` except arq's own):

    chainer:seen:<dedupe key>      STRING event id; a delivery whose key exists is a duplicate (30 days)
    chainer:event:<event id>       HASH   event JSON, raw payload, decisions, action ids, rules version
    chainer:action:<action id>     HASH   ledger: rule, action, rendered params, state, attempts, …
    chainer:audit                  STREAM every audit record, trimmed by time (MINID)
    chainer:audit:event:<event id> STREAM the same records of one event, under the same ids
    chainer:dlq                    ZSET   dead action ids → time they died
    chainer:open                   ZSET   actions not yet finished → when they were queued (sweeper input)
    arq:job:<job id>, arq:queue    arq's job and queue keys, written here so acceptance is one atomic step

Acceptance is one Lua script per event: dedupe, event, ledgers, audit records and arq jobs are written
together or not at all, and concurrent accepts share round trips (``_ScriptBatcher``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from chainer.errors import StoreUnavailableError

PREFIX = "chainer:"
AUDIT_KEY = f"{PREFIX}audit"
DLQ_KEY = f"{PREFIX}dlq"
OPEN_KEY = f"{PREFIX}open"
OPEN_STATES = frozenset({"pending", "calling"})
QUEUE_KEY = "arq:queue"
JOB_PREFIX = "arq:job:"
DEDUPE_DAYS = 30
_DUPLICATE_ROUNDS = 3
_DAY_MS = 86_400_000


def event_key(event_id: str) -> str:
    return f"{PREFIX}event:{event_id}"


def event_audit_key(event_id: str) -> str:
    return f"{PREFIX}audit:event:{event_id}"


def action_key(action_id: str) -> str:
    return f"{PREFIX}action:{action_id}"


def children_key(event_id: str) -> str:
    return f"{PREFIX}children:{event_id}"


def seen_key(dedupe_key: str) -> str:
    return f"{PREFIX}seen:{dedupe_key}"


def now_ms() -> int:
    return int(time.time() * 1000)


def ms_to_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_record(record: Mapping[str, Any]) -> str:
    """An audit record as compact JSON, without empty fields."""
    return json.dumps({k: v for k, v in record.items() if v is not None}, separators=(",", ":"), default=str)


# Writes plan.actions: a ledger each, an arq job (queue KEYS[4], open set KEYS[5]) unless a budget
# is spent, and the chosen audit record into `chosen`. Expects `chosen`, `queued` and `k` (the
# index of the last key before the first action's keys) to be defined.
_WRITE_ACTIONS = """
for a, act in ipairs(plan.actions) do
  local lk, jk = KEYS[k + 1], KEYS[k + 2]
  k = k + 2
  local spent = nil
  for b, budget in ipairs(act.budget) do
    local used = tonumber(redis.call('GET', KEYS[k + b]) or '0')
    if spent == nil and used >= budget[1] then spent = budget[3] end
  end
  if spent == nil then
    for b, budget in ipairs(act.budget) do
      if redis.call('INCR', KEYS[k + b]) == 1 then redis.call('PEXPIRE', KEYS[k + b], budget[2]) end
    end
    redis.call('HSET', lk, unpack(act.ledger))
    if act.job_id ~= '' then
      redis.call('SET', jk, act.job, 'PX', plan.job_ttl)
      redis.call('ZADD', KEYS[4], act.score, act.job_id)
      redis.call('ZADD', KEYS[5], act.score, act.action_id)
      queued = queued + 1
    end
    chosen[a] = act.record
  else
    redis.call('HSET', lk, unpack(act.ledger))
    redis.call('HSET', lk, 'state', 'skipped', 'job_id', '', 'last_error', spent)
    local skip = cjson.decode(act.skip)
    skip.reason = spent
    chosen[a] = cjson.encode(skip)
  end
  redis.call('PEXPIRE', lk, plan.ttl)
  k = k + #act.budget
end
"""

_AUDIT_LUA = """
for _, rec in ipairs(plan.audit) do
  if type(rec) == 'table' then rec = chosen[rec.a] end
  local id = redis.call('XADD', KEYS[2], 'MINID', '~', plan.minid, '*', 'r', rec)
  redis.call('XADD', KEYS[3], id, 'r', rec)
end
"""

# KEYS: join hash, audit, event audit, queue, open set, event hash, then the actions' keys.
_FIRE = (
    """
local plan = cjson.decode(ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'done') == 1 then return {'done', redis.call('HGET', KEYS[1], 'done'), 0} end
redis.call('HSET', KEYS[1], 'done', plan.event_id)
local chosen = {}
local queued = 0
local k = 6
"""
    + _WRITE_ACTIONS
    + _AUDIT_LUA
    + """
redis.call('PEXPIRE', KEYS[3], plan.ttl)
if #plan.actions > 0 then
  local listed = redis.call('HGET', KEYS[6], 'actions')
  local ids = {}
  if listed then
    for id in string.gmatch(listed, '"([^"]+)"') do table.insert(ids, id) end
  end
  for _, act in ipairs(plan.actions) do table.insert(ids, act.action_id) end
  redis.call('HSET', KEYS[6], 'actions', cjson.encode(ids))
end
return {'fired', plan.event_id, queued}
"""
)

_ACCEPT = (
    """
local plan = cjson.decode(ARGV[1])
local nd = plan.nd
for i = 1, nd do
  local existing = redis.call('GET', KEYS[6 + i])
  if existing then
    -- The duplicate is recorded on the accepted event's own stream, a declared key: this event's
    -- (a redelivery) or the one the caller named in dup_key; any other event is reported back first.
    local target = KEYS[3]
    if existing ~= plan.event_id then
      if plan.dup_key == 0 or existing ~= plan.dup_event then return {'elsewhere', existing, 0} end
      target = KEYS[plan.dup_key]
    end
    for j = 1, nd do redis.call('SET', KEYS[6 + j], existing, 'PX', plan.dedupe_ttl, 'NX') end
    local dup = cjson.decode(plan.dup)
    dup.event_id = existing
    local rec = cjson.encode(dup)
    local id = redis.call('XADD', KEYS[2], 'MINID', '~', plan.minid, '*', 'r', rec)
    if redis.call('EXISTS', target) == 1 then redis.call('XADD', target, id, 'r', rec) end
    return {'duplicate', existing, 0}
  end
end
for i = 1, nd do redis.call('SET', KEYS[6 + i], plan.event_id, 'PX', plan.dedupe_ttl) end
redis.call('HSET', KEYS[1], unpack(plan.event))
redis.call('PEXPIRE', KEYS[1], plan.ttl)
if plan.parent ~= '' then
  redis.call('SADD', KEYS[6], plan.event_id)
  redis.call('PEXPIRE', KEYS[6], plan.ttl)
end
local chosen = {}
local queued = 0
local k = 6 + nd
"""
    + _WRITE_ACTIONS
    + """local progress = {}
for _, jn in ipairs(plan.joins) do
  local jk, fk = KEYS[k + 1], KEYS[k + 2]
  k = k + 2
  local fired = redis.call('HGET', jk, 'fired')
  if not fired then
    for _, i in ipairs(jn.resets) do redis.call('HDEL', jk, 'c' .. i) end
    for _, i in ipairs(jn.contributes) do redis.call('HSET', jk, 'c' .. i, plan.event_id) end
    if redis.call('HSETNX', jk, 'rule', jn.rule) == 1 then
      redis.call('HSET', jk, 'n', jn.clauses, 'on', jn.on, 'value', jn.value, 'started_ms', plan.now)
      redis.call('PEXPIRE', jk, jn.within)
    end
  end
  local satisfied = {}
  for i = 0, jn.clauses - 1 do
    if redis.call('HEXISTS', jk, 'c' .. i) == 1 then table.insert(satisfied, i) end
  end
  local rec = cjson.decode(jn.record)
  rec.complete = (#satisfied == jn.clauses)
  if fired then
    rec.already_fired_by = fired
  elseif rec.complete then
    redis.call('HSET', jk, 'fired', plan.event_id)
    redis.call('PEXPIRE', jk, plan.ttl)
    redis.call('SET', fk, jn.job, 'PX', plan.job_ttl)
    redis.call('ZADD', KEYS[4], plan.now, jn.job_id)
    rec.fired = true
  end
  rec.satisfied = '__satisfied__'
  local text = string.gsub(cjson.encode(rec), '"__satisfied__"', '[' .. table.concat(satisfied, ',') .. ']')
  table.insert(progress, text)
end
"""
    + _AUDIT_LUA
    + """
for _, rec in ipairs(progress) do
  local id = redis.call('XADD', KEYS[2], 'MINID', '~', plan.minid, '*', 'r', rec)
  redis.call('XADD', KEYS[3], id, 'r', rec)
end
redis.call('PEXPIRE', KEYS[3], plan.ttl)
return {'accepted', plan.event_id, queued}
"""
)

_FIRST = """
for i = 1, #KEYS do
  local value = redis.call('GET', KEYS[i])
  if value then return value end
end
return false
"""

_APPEND = """
local p = cjson.decode(ARGV[1])
local ids = {}
for _, rec in ipairs(p.audit) do
  local id = redis.call('XADD', KEYS[1], 'MINID', '~', p.minid, '*', 'r', rec)
  if #KEYS > 1 then redis.call('XADD', KEYS[2], id, 'r', rec) end
  table.insert(ids, id)
end
if #KEYS > 1 then redis.call('PEXPIRE', KEYS[2], p.ttl) end
return ids
"""

# KEYS: ledger, audit, event audit, dlq, job key, queue, open set.  Compare-and-set on the ledger's state, then
# the field writes, audit records, dead-letter bookkeeping and (for replays and retries) a new job.
_TRANSITION = """
local p = cjson.decode(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing', ''} end
if #p.from > 0 then
  local ok = false
  for _, s in ipairs(p.from) do if s == state then ok = true end end
  if not ok then return {'conflict', state} end
end
if #p.set > 0 then redis.call('HSET', KEYS[1], unpack(p.set)) end
for i = 1, #p.incr, 2 do redis.call('HINCRBY', KEYS[1], p.incr[i], p.incr[i + 1]) end
for _, rec in ipairs(p.audit) do
  local id = redis.call('XADD', KEYS[2], 'MINID', '~', p.minid, '*', 'r', rec)
  redis.call('XADD', KEYS[3], id, 'r', rec)
end
if p.dlq == 'add' then redis.call('ZADD', KEYS[4], p.now, p.action_id)
elseif p.dlq == 'remove' then redis.call('ZREM', KEYS[4], p.action_id) end
if p.open == 'add' then redis.call('ZADD', KEYS[7], p.now, p.action_id)
elseif p.open == 'remove' then redis.call('ZREM', KEYS[7], p.action_id) end
if p.job_id ~= '' then
  redis.call('SET', KEYS[5], p.job, 'PX', p.job_ttl)
  redis.call('ZADD', KEYS[6], p.score, p.job_id)
end
return {'ok', state}
"""


class _ScriptBatcher:
    """Runs one Lua script for many concurrent callers, pipelining every call queued meanwhile.

    While one batch is on the wire, new calls wait in ``_pending``; they go out together in the next
    pipeline, so N concurrent webhooks cost about one round trip instead of N. Each script call stays
    atomic on its own. A NOSCRIPT answer (script cache lost on restart or failover) means that call
    did not run, so it is loaded and sent again.
    """

    _MAX_BATCH = 256

    def __init__(self, redis: Redis, source: str) -> None:
        self._redis = redis
        self._source = source
        self._sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._pending: list[tuple[Sequence[str], Sequence[str], asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((keys, args, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._MAX_BATCH], self._pending[self._MAX_BATCH :]
            try:
                results = await self._send([(keys, args) for keys, args, _ in batch])
            except (RedisError, OSError) as exc:
                error = StoreUnavailableError(f"Redis is unavailable: {exc}")
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, _, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(StoreUnavailableError(f"Redis refused the write: {result}"))
                else:
                    future.set_result(result)

    async def _send(self, calls: list[tuple[Sequence[str], Sequence[str]]]) -> list[Any]:
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                for i in todo:
                    keys, args = calls[i]
                    pipe.evalsha(self._sha, len(keys), *keys, *args)
                answers = await pipe.execute(raise_on_error=False)
            missing = []
            for i, answer in zip(todo, answers, strict=True):
                if isinstance(answer, NoScriptError):
                    missing.append(i)
                elif isinstance(answer, (ConnectionError, OSError)):
                    raise answer
                else:
                    results[i] = answer
            if not missing:
                return results
            await self._redis.script_load(self._source)
            todo = missing
        for i in todo:
            results[i] = StoreUnavailableError("Redis lost the script cache twice in a row")
        return results


@dataclass(frozen=True, slots=True)
class Budget:
    """A counter an action spends at acceptance; at ``limit`` the action is skipped with ``reason``."""

    key: str
    limit: int
    ttl_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class QueuedAction:
    """One action to write at acceptance: its ledger, its arq job (unless skipped) and its audit record.

    ``record`` is written when the action is queued; when one of ``budgets`` is spent the action is
    skipped instead and ``skip_record`` is written with the budget's reason.
    """

    action_id: str
    ledger: Mapping[str, str]
    record: Mapping[str, Any]
    job_id: str = ""
    job: bytes = b""
    score_ms: int = 0
    budgets: Sequence[Budget] = ()
    skip_record: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JoinPlan:
    """One event's step in a fan-in join; the script fires ``job`` when the step completes the join."""

    key: str
    rule: str
    on: str
    value: str
    clauses: int
    contributes: Sequence[int]
    resets: Sequence[int]
    within_ms: int
    job_id: str
    job: bytes
    record: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ActionSlot:
    """The place of the ``index``-th action's record in an accept plan's audit trail."""

    index: int


@dataclass(frozen=True, slots=True)
class AcceptPlan:
    """Everything one accepted event writes, prepared in Python and applied by one atomic script.

    ``audit`` holds records, and for each action an ``ActionSlot`` where its record (queued or
    skipped, decided inside the script) goes.
    """

    event_id: str
    dedupe_keys: Sequence[str]
    event_fields: Mapping[str, str]
    audit: Sequence[Mapping[str, Any] | ActionSlot]
    duplicate_record: Mapping[str, Any]
    actions: Sequence[QueuedAction] = field(default_factory=tuple)
    parent: str = ""  # the event whose action caused this one (lineage), if any
    joins: Sequence[JoinPlan] = ()


@dataclass(frozen=True, slots=True)
class AcceptOutcome:
    duplicate: bool
    event_id: str
    queued: int = 0


@dataclass(frozen=True, slots=True)
class Transition:
    """A compare-and-set on an action ledger with its audit records (see ``Store.transition``)."""

    action_id: str
    event_id: str
    from_states: Sequence[str] = ()
    set: Mapping[str, str] = field(default_factory=dict)
    incr: Mapping[str, int] = field(default_factory=dict)
    audit: Sequence[Mapping[str, Any]] = ()
    dlq: str = ""  # "add" | "remove" | ""
    job_id: str = ""
    job: bytes = b""
    score_ms: int = 0


@dataclass(frozen=True, slots=True)
class TransitionResult:
    ok: bool
    previous_state: str  # "" when the ledger does not exist


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: list[dict[str, Any]]
    next: str | None


class Store:
    """chainer's Redis data layer; every method raises StoreUnavailableError when Redis fails."""

    def __init__(self, redis: Redis, *, retention_ms: int = 30 * _DAY_MS, job_ttl_ms: int = _DAY_MS) -> None:
        self.redis = redis
        self.retention_ms = retention_ms
        self.job_ttl_ms = job_ttl_ms
        self._accept = _ScriptBatcher(redis, _ACCEPT)
        self._append = _ScriptBatcher(redis, _APPEND)
        self._transition = _ScriptBatcher(redis, _TRANSITION)
        self._first = _ScriptBatcher(redis, _FIRST)
        self._fire = _ScriptBatcher(redis, _FIRE)

    def _minid(self) -> str:
        return f"{max(now_ms() - self.retention_ms, 0)}-0"

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def accept(self, plan: AcceptPlan) -> AcceptOutcome:
        """Write the event, its ledgers, audit records and jobs atomically, unless a dedupe key exists.

        A duplicate writes only its ``webhook.duplicate`` record, to the log and to the stream of the
        event it duplicates (the one accepted first), whose id the outcome carries.
        """
        keys = [
            event_key(plan.event_id),
            AUDIT_KEY,
            event_audit_key(plan.event_id),
            QUEUE_KEY,
            OPEN_KEY,
            children_key(plan.parent or "-"),
            *(seen_key(k) for k in plan.dedupe_keys),
        ]
        action_keys, actions = _encode_actions(plan.actions)
        keys += action_keys
        joins = []
        for jn in plan.joins:
            keys += [jn.key, JOB_PREFIX + jn.job_id]
            joins.append(
                {
                    "rule": jn.rule,
                    "on": jn.on,
                    "value": jn.value,
                    "clauses": jn.clauses,
                    "contributes": list(jn.contributes),
                    "resets": list(jn.resets),
                    "within": jn.within_ms,
                    "job_id": jn.job_id,
                    "job": jn.job.decode(),
                    "record": encode_record(jn.record),
                }
            )
        args = {
            "joins": joins,
            "now": now_ms(),
            "nd": len(plan.dedupe_keys),
            "parent": plan.parent,
            "event_id": plan.event_id,
            "event": [x for kv in plan.event_fields.items() for x in kv],
            "audit": _encode_audit(plan.audit),
            "dup": encode_record(plan.duplicate_record),
            "actions": actions,
            "minid": self._minid(),
            "ttl": self.retention_ms,
            "dedupe_ttl": max(self.retention_ms, DEDUPE_DAYS * _DAY_MS),
            "job_ttl": self.job_ttl_ms,
        }
        # A duplicate of another event (a new delivery id, but an event key already seen) is audited on
        # that event's stream; the script names the event, and the call is repeated with its stream key.
        # Seen keys are only ever set once, so the second call finds the same event.
        target = ""
        for _ in range(_DUPLICATE_ROUNDS):
            args["dup_event"] = target
            args["dup_key"] = len(keys) + 1 if target else 0
            call_keys = [*keys, event_audit_key(target)] if target else keys
            result = await self._accept(call_keys, [json.dumps(args, separators=(",", ":"))])
            status, event_id, queued = (_text(x) for x in result)
            if status != "elsewhere":
                return AcceptOutcome(duplicate=status == "duplicate", event_id=event_id, queued=int(queued))
            target = event_id
        raise StoreUnavailableError(f"the event a duplicate belongs to changed {_DUPLICATE_ROUNDS} times; retry")

    async def fire_join(
        self,
        key: str,
        event_id: str,
        actions: Sequence[QueuedAction],
        records: Sequence[Mapping[str, Any] | ActionSlot],
    ) -> int | None:
        """Write a completed fan-in's actions once; None when the join had already been fired and written."""
        action_keys, encoded = _encode_actions(actions)
        keys = [key, AUDIT_KEY, event_audit_key(event_id), QUEUE_KEY, OPEN_KEY, event_key(event_id), *action_keys]
        args = {
            "event_id": event_id,
            "actions": encoded,
            "audit": _encode_audit(records),
            "minid": self._minid(),
            "ttl": self.retention_ms,
            "job_ttl": self.job_ttl_ms,
        }
        status, _, queued = (_text(x) for x in await self._fire(keys, [json.dumps(args, separators=(",", ":"))]))
        return int(queued) if status == "fired" else None

    async def get_join(self, key: str) -> dict[str, str]:
        return _decode_hash(await self._guard(self.redis.hgetall(key)))

    async def append_audit(self, records: Iterable[Mapping[str, Any]], *, event_id: str | None = None) -> list[str]:
        """Append records to the audit log (and to the event's own stream when ``event_id`` is given)."""
        keys = [AUDIT_KEY] + ([event_audit_key(event_id)] if event_id else [])
        args = {"audit": [encode_record(r) for r in records], "minid": self._minid(), "ttl": self.retention_ms}
        ids = await self._append(keys, [json.dumps(args)])
        return [_text(i) for i in ids]

    async def transition(self, change: Transition) -> TransitionResult:
        """Apply ``change`` if the ledger's state is one of ``from_states`` (any state when empty)."""
        keys = [
            action_key(change.action_id),
            AUDIT_KEY,
            event_audit_key(change.event_id),
            DLQ_KEY,
            JOB_PREFIX + (change.job_id or change.action_id),
            QUEUE_KEY,
            OPEN_KEY,
        ]
        new_state = change.set.get("state")
        open_change = "" if new_state is None else "add" if new_state in OPEN_STATES else "remove"
        args = {
            "from": list(change.from_states),
            "set": [x for kv in change.set.items() for x in kv],
            "incr": [x for kv in change.incr.items() for x in kv],
            "audit": [encode_record(r) for r in change.audit],
            "minid": self._minid(),
            "dlq": change.dlq,
            "open": open_change,
            "now": now_ms(),
            "action_id": change.action_id,
            "job_id": change.job_id,
            "job": change.job.decode(),
            "score": change.score_ms,
            "job_ttl": self.job_ttl_ms,
        }
        status, state = (_text(x) for x in await self._transition(keys, [json.dumps(args)]))
        return TransitionResult(ok=status == "ok", previous_state=state)

    async def get_action(self, action_id: str) -> dict[str, str]:
        return _decode_hash(await self._guard(self.redis.hgetall(action_key(action_id))))

    async def get_event(self, event_id: str) -> dict[str, str]:
        return _decode_hash(await self._guard(self.redis.hgetall(event_key(event_id))))

    async def get_event_field(self, event_id: str, name: str) -> str | None:
        value = await self._guard(self.redis.hget(event_key(event_id), name))
        return None if value is None else _text(value)

    async def event_audit(self, event_id: str) -> list[dict[str, Any]]:
        entries = await self._guard(self.redis.xrange(event_audit_key(event_id), "-", "+"))
        return [_item(sid, fields) for sid, fields in entries]

    async def read_audit(
        self,
        *,
        after: str | None = None,
        before: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        limit: int = 100,
        match: Mapping[str, set[str]] | None = None,
        event_id: str | None = None,
        scan_cap: int = 5000,
    ) -> AuditPage:
        """One page of audit records, oldest first (or newest first with ``before``).

        Cursors are stream ids and ranges are exclusive, so a walk sees every record once even while
        writers append. Filters are applied server-side over at most ``scan_cap`` records per request;
        ``next`` is then the position reached, so the client keeps walking from there.
        """
        key = event_audit_key(event_id) if event_id else AUDIT_KEY
        reverse = before is not None
        low = f"({after}" if after else (str(since_ms) if since_ms is not None else "-")
        high = f"({before}" if before and before != "+" else (str(until_ms) if until_ms is not None else "+")
        if reverse and after:
            low = f"({after}"
        items: list[dict[str, Any]] = []
        scanned = 0
        cursor: str | None = None
        exhausted = False
        while len(items) < limit and scanned < scan_cap:
            count = min(max(limit * 2, 50), scan_cap - scanned)
            if reverse:
                chunk = await self._guard(self.redis.xrevrange(key, high, low, count=count))
            else:
                chunk = await self._guard(self.redis.xrange(key, low, high, count=count))
            if not chunk:
                exhausted = True
                break
            for sid, fields in chunk:
                scanned += 1
                cursor = _text(sid)
                item = _item(sid, fields)
                if _matches(item, match):
                    items.append(item)
                    if len(items) == limit:
                        break
            if reverse:
                high = f"({cursor}"
            else:
                low = f"({cursor}"
            if len(chunk) < count and len(items) < limit:
                exhausted = True
                break
        return AuditPage(items=items, next=None if exhausted else cursor)

    async def first_value(self, keys: Sequence[str]) -> str | None:
        """The value of the first of ``keys`` that exists (one batched round trip), or None."""
        if not keys:
            return None
        value = await self._first(keys, [])
        return None if value is None else _text(value)

    async def set_many(self, items: Sequence[tuple[str, str, int]]) -> None:
        """SET each (key, value, ttl_ms) in one pipeline."""
        if not items:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, value, ttl in items:
                pipe.set(key, value, px=ttl)
            await self._guard(pipe.execute())

    async def children(self, event_id: str) -> list[str]:
        members = await self._guard(self.redis.smembers(children_key(event_id)))
        return sorted(_text(m) for m in members)

    async def open_actions(self, older_than_ms: int, limit: int = 200) -> list[str]:
        """Actions queued before ``older_than_ms`` that are still pending or calling."""
        ids = await self._guard(self.redis.zrangebyscore(OPEN_KEY, "-inf", older_than_ms, start=0, num=limit))
        return [_text(i) for i in ids]

    async def job_exists(self, job: str) -> bool:
        """Whether arq still holds the job (its key, or its place in the queue)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(JOB_PREFIX + job)
            pipe.zscore(QUEUE_KEY, job)
            exists, score = await self._guard(pipe.execute())
        return bool(exists) or score is not None

    async def forget_open(self, action_id: str) -> None:
        await self._guard(self.redis.zrem(OPEN_KEY, action_id))

    async def dead_actions(self, *, limit: int = 100, offset: int = 0) -> list[str]:
        ids = await self._guard(self.redis.zrange(DLQ_KEY, offset, offset + limit - 1))
        return [_text(i) for i in ids]

    async def _guard(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc


def _encode_actions(actions: Sequence[QueuedAction]) -> tuple[list[str], list[dict[str, Any]]]:
    keys: list[str] = []
    encoded = []
    for action in actions:
        keys += [action_key(action.action_id), JOB_PREFIX + (action.job_id or action.action_id)]
        keys += [b.key for b in action.budgets]
        encoded.append(
            {
                "ledger": [x for kv in action.ledger.items() for x in kv],
                "action_id": action.action_id,
                "job_id": action.job_id,
                "job": action.job.decode(),
                "score": action.score_ms,
                "record": encode_record(action.record),
                "skip": encode_record(action.skip_record),
                "budget": [[b.limit, b.ttl_ms, b.reason] for b in action.budgets],
            }
        )
    return keys, encoded


def _encode_audit(records: Sequence[Mapping[str, Any] | ActionSlot]) -> list[Any]:
    return [{"a": r.index + 1} if isinstance(r, ActionSlot) else encode_record(r) for r in records]


# Ledger states in which ``last_error`` says why the action is where it is: waiting for a retry, dead (or
# discarded after dying), skipped. A done or calling action's ``last_error`` is left from an earlier try.
ERROR_STATES = frozenset({"pending", "dead", "discarded", "skipped"})


def current_error(ledger: Mapping[str, str]) -> str | None:
    """The error that explains the action's state now, or None (an earlier try's error is history)."""
    if ledger.get("state") not in ERROR_STATES:
        return None
    return ledger.get("last_error") or None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode_hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _item(sid: Any, fields: Mapping[Any, Any]) -> dict[str, Any]:
    sid_text = _text(sid)
    raw = fields.get(b"r") or fields.get("r") or b"{}"
    record: dict[str, Any] = json.loads(raw)
    return {"id": sid_text, "time": ms_to_iso(int(sid_text.split("-", 1)[0])), **record}


def _matches(item: Mapping[str, Any], match: Mapping[str, set[str]] | None) -> bool:
    if not match:
        return True
    for name, wanted in match.items():
        value = item.get(name)
        if name == "rule" and value is None:
            value = item.get("rules")
        if isinstance(value, list):
            if not wanted.intersection(str(v) for v in value):
                return False
        elif value is None or str(value) not in wanted:
            return False
    return True
