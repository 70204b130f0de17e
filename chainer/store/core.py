"""``Store``: chainer's Redis data layer (key names in ``keys``, scripts in ``scripts/``).

Acceptance is one Lua script per event: dedupe, the lineage check, event, ledgers, audit records and arq
jobs are written together or not at all, and concurrent accepts share round trips (``lua.ScriptBatcher``).

The audit log is one stream (``keys.AUDIT``); each event's trail (``keys.event_audit``) is a short string of
its records' ids in it (``scripts/_trail.lua``), so a record is stored once. Records and the event's stored
fields are compressed in the store's format (``codec.Packer``: zstd, or zlib during a rolling upgrade) and read
back as they were written, in either.
Ledger values longer than ``keys.HASH_CHUNK`` bytes are stored in pieces (``scripts/_hset.lua``) so that a
ledger stays a compact listpack; ``get_action`` and ``get_ledger`` join them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from chainer import fastjson
from chainer.errors import StoreUnavailableError
from chainer.store import keys
from chainer.store.args import encode_actions, encode_audit
from chainer.store.codec import (
    PACKERS,
    ZSTD,
    Packer,
    decode_hash,
    encode_record,
    item_of,
    matches,
    now_ms,
    record_of,
    stream_item,
    text,
    unpack_fields,
)
from chainer.store.ledger import OPEN_STATES, Ledger, identity
from chainer.store.lua import ScriptBatcher
from chainer.store.plans import (
    AcceptOutcome,
    AcceptPlan,
    ActionSlot,
    AuditPage,
    QueuedAction,
    Transition,
    TransitionResult,
)

if TYPE_CHECKING:
    from chainer.settings import Settings

_DUPLICATE_ROUNDS = 3
# Event fields kept apart from the compressed ones: the fan-in script appends to ``actions``.
_PLAIN_EVENT_FIELDS = frozenset({"actions"})
_PACKED = "z"  # the event hash's field holding the other fields, compressed (codec.Packer.pack_fields)


def packed_event_fields(event_fields: Mapping[str, str]) -> dict[str, str]:
    """The fields of an accepted event that are stored as one compressed value (all but ``_PLAIN_EVENT_FIELDS``)."""
    return {k: v for k, v in event_fields.items() if k not in _PLAIN_EVENT_FIELDS}


class Store:
    """chainer's Redis data layer; every method raises StoreUnavailableError when Redis fails."""

    def __init__(
        self,
        redis: Redis,
        *,
        retention_ms: int = keys.RETENTION_MS,
        job_ttl_ms: int = keys.JOB_TTL_MS,
        packer: Packer = ZSTD,
    ) -> None:
        self.redis = redis
        self.packer = packer  # the format records and events are written in (all are read)
        self.retention_ms = retention_ms
        self.job_ttl_ms = job_ttl_ms
        self._accept = ScriptBatcher(redis, "accept")
        self._append = ScriptBatcher(redis, "append_audit")
        self._transition = ScriptBatcher(redis, "transition")
        self._first = ScriptBatcher(redis, "first_value")
        self._fire = ScriptBatcher(redis, "fire_join")
        self._trail = ScriptBatcher(redis, "audit_trail")

    @classmethod
    def configured(cls, redis: Redis, settings: Settings) -> Store:
        """The store as a process's settings make it: the audit retention, and the format it writes."""
        return cls(redis, retention_ms=settings.audit_retention_ms, packer=PACKERS[settings.store_compression])

    def _minid(self) -> str:
        return f"{max(now_ms() - self.retention_ms, 0)}-0"

    async def trim_audit(self, *, step: int = keys.TRIM_STEP, max_steps: int = keys.TRIM_MAX_STEPS) -> int:
        """Drop audit records older than the retention window, and dead letters as old; how many records went.

        Off the request path (the worker's ``trim_audit`` cron job; no write script trims), in commands that each
        touch at most ``step`` records, so Redis serves everyone else between them: ``XTRIM … MINID ~ <cutoff>
        LIMIT step`` drops whole stream nodes; once it drops nothing, the old records left (those sharing the
        first node with newer ones) are read (``XRANGE … COUNT step``) and deleted by id. At most ``max_steps``
        commands of each a run; a bigger backlog is left to the next run. Per-event keys (the event, its trail,
        its ledgers) expire on their own: every write sets their time to live to the retention.
        """
        minid = self._minid()
        removed = 0
        for _ in range(max_steps):
            dropped = int(await self._guard(self.redis.xtrim(keys.AUDIT, minid=minid, approximate=True, limit=step)))
            if dropped == 0:
                stale = await self._guard(self.redis.xrange(keys.AUDIT, "-", f"({minid}", count=step))
                if not stale:
                    break
                dropped = int(await self._guard(self.redis.xdel(keys.AUDIT, *(sid for sid, _ in stale))))
            removed += dropped
        cutoff = now_ms() - self.retention_ms
        dead = await self._guard(self.redis.zrange(keys.DLQ, 0, cutoff - 1, byscore=True, offset=0, num=step))
        if dead:  # their ledgers expired with the retention too: nothing is left to replay
            await self._guard(self.redis.zrem(keys.DLQ, *dead))
        return removed

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def accept(self, plan: AcceptPlan) -> AcceptOutcome:
        """Write the event, its ledgers, audit records and jobs atomically, unless a dedupe key exists or the
        event's lineage is not what the plan assumed.

        A duplicate writes only its ``webhook.duplicate`` record, to the log and to the trail of the event it
        duplicates (the one accepted first), whose id the outcome carries. When the first of the plan's
        ``lineage_keys`` that exists holds another value than ``plan.lineage`` (``""``: none exists), nothing
        is written and the outcome's ``lineage`` is the value found (``""`` when none): plan again with it.
        """
        names = [
            keys.event(plan.event_id),
            keys.AUDIT,
            keys.event_audit(plan.event_id),
            keys.ARQ_QUEUE,
            keys.OPEN,
            keys.children(plan.parent or "-"),
            *(keys.seen(k) for k in plan.dedupe_keys),
            *plan.lineage_keys,
        ]
        records: list[bytes] = []
        # ARGV: plan, event fields, records
        action_keys, actions = encode_actions(plan.actions, records, 2, self.packer)
        names += action_keys
        joins = []
        for jn in plan.joins:
            names += [jn.key, keys.arq_job(jn.job_id), jn.fired_key]
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
                    "rounds": jn.fired_key != jn.key,
                    "job": jn.job.decode(),
                    "record": encode_record(jn.record),
                }
            )
        names.append(keys.WAKE)  # wakes an idle worker when a job was queued (scripts/_wake.lua)
        plain = [x for name, value in plan.event_fields.items() if name in _PLAIN_EVENT_FIELDS for x in (name, value)]
        packed = self.packer.pack_fields(packed_event_fields(plan.event_fields))
        args = {
            "joins": joins,
            "now": now_ms(),
            "nd": len(plan.dedupe_keys),
            "nl": len(plan.lineage_keys),
            "lineage": plan.lineage,
            "parent": plan.parent,
            "event_id": plan.event_id,
            "event": plain,
            "audit": encode_audit(plan.audit, records, 2, self.packer),
            "dup": encode_record(plan.duplicate_record),
            "actions": actions,
            "ttl": self.retention_ms,
            "dedupe_ttl": max(self.retention_ms, keys.DEDUPE_TTL_MS),
            "job_ttl": self.job_ttl_ms,
            "wake": len(names),
            "wake_max": keys.WAKE_MAX,
            "chunk": keys.HASH_CHUNK,
        }
        # A duplicate of another event (a new delivery id, but an event key already seen) is audited on
        # that event's trail; the script names the event, and the call is repeated with its trail key.
        # Seen keys are only ever set once, so the second call finds the same event.
        target = ""
        for _ in range(_DUPLICATE_ROUNDS):
            args["dup_event"] = target
            args["dup_key"] = len(names) + 1 if target else 0
            call_keys = [*names, keys.event_audit(target)] if target else names
            result = await self._accept(call_keys, [fastjson.dumps(args), packed, *records])
            status, found, queued = (text(x) for x in result)
            if status == "lineage":
                return AcceptOutcome(duplicate=False, event_id=plan.event_id, lineage=found)
            if status != "elsewhere":
                return AcceptOutcome(duplicate=status == "duplicate", event_id=found, queued=int(queued))
            target = found
        raise StoreUnavailableError(f"the event a duplicate belongs to changed {_DUPLICATE_ROUNDS} times; retry")

    async def fire_join(
        self,
        key: str,
        event_id: str,
        actions: Sequence[QueuedAction],
        records: Sequence[Mapping[str, Any] | ActionSlot],
    ) -> int | None:
        """Write a completed fan-in's actions once; None when the join had already been fired and written."""
        packed: list[bytes] = []
        action_keys, encoded = encode_actions(actions, packed, 1, self.packer)  # ARGV: plan, records
        names = [
            key,
            keys.AUDIT,
            keys.event_audit(event_id),
            keys.ARQ_QUEUE,
            keys.OPEN,
            keys.event(event_id),
            *action_keys,
            keys.WAKE,
        ]
        args = {
            "event_id": event_id,
            "actions": encoded,
            "audit": encode_audit(records, packed, 1, self.packer),
            "ttl": self.retention_ms,
            "job_ttl": self.job_ttl_ms,
            "wake": len(names),
            "wake_max": keys.WAKE_MAX,
            "chunk": keys.HASH_CHUNK,
        }
        status, _, queued = (text(x) for x in await self._fire(names, [fastjson.dumps(args), *packed]))
        return int(queued) if status == "fired" else None

    async def get_join(self, key: str) -> dict[str, str]:
        return decode_hash(await self._guard(self.redis.hgetall(key)))

    async def append_audit(self, records: Iterable[Mapping[str, Any]], *, event_id: str | None = None) -> list[str]:
        """Append records to the audit log (and to the event's own stream when ``event_id`` is given)."""
        names = [keys.AUDIT] + ([keys.event_audit(event_id)] if event_id else [])
        args = {"ttl": self.retention_ms}
        ids = await self._append(names, [fastjson.dumps(args), *[self.packer.pack_record(r) for r in records]])
        return [text(i) for i in ids]

    async def transition(self, change: Transition) -> TransitionResult:
        """Apply ``change`` if the ledger's state is one of ``from_states`` (any state when empty)."""
        names = [
            keys.action(change.action_id),
            keys.AUDIT,
            keys.event_audit(change.event_id),
            keys.DLQ,
            keys.arq_job(change.job_id or change.action_id),
            keys.ARQ_QUEUE,
            keys.OPEN,
            keys.WAKE,
        ]
        new_state = change.set.get("state")
        open_change = "" if new_state is None else "add" if new_state in OPEN_STATES else "remove"
        args = {
            "from": list(change.from_states),
            "set": [x for kv in change.set.items() for x in kv],
            "incr": [x for kv in change.incr.items() for x in kv],
            "dlq": change.dlq,
            "open": open_change,
            "now": now_ms(),
            "action_id": change.action_id,
            "job_id": change.job_id,
            "job": change.job.decode(),
            "score": change.score_ms,
            "job_ttl": self.job_ttl_ms,
            "wake": len(names),
            "wake_max": keys.WAKE_MAX,
            "chunk": keys.HASH_CHUNK,
        }
        packed = [self.packer.pack_record(r) for r in change.audit]
        status, state = (text(x) for x in await self._transition(names, [fastjson.dumps(args), *packed]))
        return TransitionResult(ok=status == "ok", previous_state=state)

    async def get_action(self, action_id: str) -> dict[str, str]:
        """The action's ledger as text fields, with its identity (``ledger.identity``); {} when it does not exist."""
        raw = await self._guard(self.redis.hgetall(keys.action(action_id)))
        return identity(action_id) | decode_hash(raw) if raw else {}

    async def get_ledger(self, action_id: str) -> Ledger | None:
        """The action's ledger, typed; None when it does not exist (expired, or never written)."""
        raw = await self._guard(self.redis.hgetall(keys.action(action_id)))
        return Ledger.from_hash(identity(action_id) | decode_hash(raw)) if raw else None

    async def get_event(self, event_id: str) -> dict[str, str]:
        """The event's stored fields (``event``, ``raw``, ``decisions``, ``actions`` …) as text; {} when not stored."""
        raw = await self._guard(self.redis.hgetall(keys.event(event_id)))
        packed = raw.pop(_PACKED.encode(), None)
        fields = unpack_fields(packed) if packed is not None else {}
        return fields | decode_hash(raw)

    async def get_event_field(self, event_id: str, name: str) -> str | None:
        value, packed = await self._guard(self.redis.hmget(keys.event(event_id), [name, _PACKED]))
        if value is not None:
            return text(value)
        return None if packed is None else unpack_fields(packed).get(name)

    async def event_audit(self, event_id: str) -> list[dict[str, Any]]:
        """Every audit record of the event, oldest first (one round trip)."""
        return [stream_item(sid, fields) for sid, fields in await self._event_trail(event_id)]

    async def _event_trail(self, event_id: str) -> list[tuple[Any, dict[Any, Any]]]:
        entries = await self._trail([keys.event_audit(event_id), keys.AUDIT], [])
        return [(sid, dict(zip(fields[::2], fields[1::2], strict=True))) for sid, fields in entries]

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
        reverse = before is not None
        low = f"({after}" if after else (str(since_ms) if since_ms is not None else "-")
        high = f"({before}" if before and before != "+" else (str(until_ms) if until_ms is not None else "+")
        if reverse and after:
            low = f"({after}"
        if event_id:
            return await self._read_trail(event_id, low, high, reverse, limit, match, scan_cap)
        key = keys.AUDIT
        items: list[dict[str, Any]] = []
        scanned = 0
        cursor: str | None = None
        exhausted = False
        step = max(limit * 2, 50)  # filtered: read ahead, twice as far each round trip (up to _SCAN_STEP_MAX)
        while len(items) < limit and scanned < scan_cap:
            # Unfiltered, every record read is kept: read no more than the page.
            count = min(step if match else limit - len(items), scan_cap - scanned)
            step = min(step * 2, _SCAN_STEP_MAX)
            if reverse:
                chunk = await self._guard(self.redis.xrevrange(key, high, low, count=count))
            else:
                chunk = await self._guard(self.redis.xrange(key, low, high, count=count))
            if not chunk:
                exhausted = True
                break
            for sid, fields in chunk:
                scanned += 1
                cursor = text(sid)
                # Each record is inflated once; one the filters drop is never turned into an item.
                record = record_of(fields)
                if matches(record, match):
                    items.append(item_of(sid, record))
                    if len(items) == limit:
                        break
            if reverse:
                high = f"({cursor}"
            else:
                low = f"({cursor}"
            if len(chunk) < count and len(items) < limit:
                exhausted = True
                break
        return AuditPage(items=items, next=None if exhausted else cursor, scanned=scanned)

    async def _read_trail(
        self,
        event_id: str,
        low: str,
        high: str,
        reverse: bool,
        limit: int,
        match: Mapping[str, set[str]] | None,
        scan_cap: int,
    ) -> AuditPage:
        """``read_audit`` of one event: its trail read whole (one round trip), then the same range and walk."""
        start, end = _bound(low, 0), _bound(high, _MAX_SEQ)
        entries = [(sid, fields) for sid, fields in await self._event_trail(event_id) if _within(sid, start, end)]
        if reverse:
            entries.reverse()
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        scanned = 0
        for sid, fields in entries[:scan_cap]:
            scanned += 1
            cursor = text(sid)
            item = stream_item(sid, fields)
            if matches(item, match):
                items.append(item)
                if len(items) == limit:
                    break
        exhausted = scanned == len(entries) and len(items) < limit
        return AuditPage(items=items, next=None if exhausted else cursor, scanned=scanned)

    async def last_audit_id(self) -> str:
        """The id of the newest audit record, ``0-0`` when there is none (where a live follow starts)."""
        newest = await self._guard(self.redis.xrevrange(keys.AUDIT, "+", "-", count=1))
        return text(newest[0][0]) if newest else "0-0"

    async def follow_audit(self, after: str, *, block_ms: int, count: int = 100) -> list[dict[str, Any]]:
        """Up to ``count`` audit records after the id ``after``, oldest first, waiting up to ``block_ms`` for
        the first one (XREAD BLOCK; it holds one pooled connection while it waits). Empty when none came.

        The wait is cut to stay inside the client's read timeout (``socket_timeout``): a longer block would
        end as a timeout, as if Redis were gone, whenever nothing is written meanwhile."""
        read_timeout = self.redis.connection_pool.connection_kwargs.get("socket_timeout")
        if read_timeout:
            block_ms = max(1, min(block_ms, int(read_timeout * 800)))
        found = await self._guard(self.redis.xread({keys.AUDIT: after}, count=count, block=block_ms))
        return [stream_item(sid, fields) for _, entries in found or [] for sid, fields in entries]

    async def first_value(self, keys: Sequence[str]) -> str | None:
        """The value of the first of ``keys`` that exists (one batched round trip), or None."""
        if not keys:
            return None
        value = await self._first(keys, [])
        return None if value is None else text(value)

    async def set_many(self, items: Sequence[tuple[str, str, int]]) -> None:
        """SET each (key, value, ttl_ms) in one pipeline."""
        if not items:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, value, ttl in items:
                pipe.set(key, value, px=ttl)
            await self._guard(pipe.execute())

    async def children(self, event_id: str) -> list[str]:
        members = await self._guard(self.redis.smembers(keys.children(event_id)))
        return sorted(text(m) for m in members)

    async def open_actions(self, older_than_ms: int, limit: int = 200) -> list[str]:
        """Actions queued before ``older_than_ms`` that are still pending or calling."""
        ids = await self._guard(self.redis.zrangebyscore(keys.OPEN, "-inf", older_than_ms, start=0, num=limit))
        return [text(i) for i in ids]

    async def job_exists(self, job: str) -> bool:
        """Whether arq still holds the job (its key, or its place in the queue)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(keys.arq_job(job))
            pipe.zscore(keys.ARQ_QUEUE, job)
            exists, score = await self._guard(pipe.execute())
        return bool(exists) or score is not None

    async def forget_open(self, action_id: str) -> None:
        await self._guard(self.redis.zrem(keys.OPEN, action_id))

    async def dead_actions(self, *, limit: int = 100, offset: int = 0) -> list[str]:
        ids = await self._guard(self.redis.zrange(keys.DLQ, offset, offset + limit - 1))
        return [text(i) for i in ids]

    async def _guard(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis is unavailable: {exc}") from exc


_MAX_SEQ = 2**64 - 1
_SCAN_STEP_MAX = 1000  # records a filtered read asks for in one round trip at most
_Bound = tuple[tuple[int, int], bool] | None  # (ms, seq), exclusive; None: open


def _bound(text_: str, seq: int) -> _Bound:
    """A range end as XRANGE takes it (``-``, ``+``, ``<ms>``, ``<ms>-<seq>``, ``(`` for exclusive) as a key;
    ``seq`` completes a bare time (0 at the start, the largest at the end, as XRANGE does)."""
    if text_ in ("-", "+"):
        return None
    exclusive = text_.startswith("(")
    ms, _, rest = text_.lstrip("(").partition("-")
    return (int(ms), int(rest) if rest else seq), exclusive


def _within(sid: Any, start: _Bound, end: _Bound) -> bool:
    ms, _, seq = text(sid).partition("-")
    at = (int(ms), int(seq or 0))
    if start is not None and (at < start[0] or (start[1] and at == start[0])):
        return False
    return end is None or not (at > end[0] or (end[1] and at == end[0]))
