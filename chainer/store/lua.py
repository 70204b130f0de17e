"""The store's Lua scripts (``scripts/*.lua``, package data) and the batcher that runs them.

A script file may pull in a fragment with a line ``--#include _name.lua``; fragments (names starting
with ``_``) are shared pieces of the bigger scripts and are never run alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chainer.errors import StoreUnavailableError

SCRIPTS = ("accept", "append_audit", "audit_trail", "fire_join", "first_value", "transition")
_INCLUDE = re.compile(r"^--#include (\S+)$", re.MULTILINE)


def _read(filename: str) -> str:
    return (resources.files("chainer.store") / "scripts" / filename).read_text(encoding="utf-8")


@cache
def source(name: str) -> str:
    """The text of script ``name`` (``scripts/<name>.lua``) with its fragments included."""

    def include(match: re.Match[str]) -> str:
        fragment = _read(match.group(1))
        if _INCLUDE.search(fragment):
            raise ValueError(f"Lua fragment {match.group(1)} includes another; fragments must be flat")
        return fragment.rstrip("\n")

    return _INCLUDE.sub(include, _read(f"{name}.lua"))


def _pack_evalsha(sha: str, keys: Sequence[str], args: Sequence[str | bytes]) -> bytes:
    """``EVALSHA sha len(keys) *keys *args`` in Redis's wire protocol (RESP), as redis-py's ``pack_command`` writes it;
    text as UTF-8, bytes (compressed records) as they are. Packed here in one join: redis-py's encoder took about
    a tenth of an accept's CPU, argument by argument."""
    parts = [b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (3 + len(keys) + len(args), sha.encode())]
    count = str(len(keys)).encode()
    parts.append(b"$%d\r\n%s\r\n" % (len(count), count))
    for arg in (*keys, *args):
        data = arg if isinstance(arg, bytes) else arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


async def _round_trip(redis: Redis, packed: bytes, count: int) -> list[Any]:
    """Send ``count`` packed commands in one write on a pooled connection and read their ``count`` answers, an error
    answer in its place (``ResponseError``): what redis-py's ``pipeline(transaction=False).execute(raise_on_error=
    False)`` does, with its retries (the connection's ``retry`` and ``retry_on_error``) and its disconnect on a
    failure, without building a ``Pipeline`` per batch."""
    pool = redis.connection_pool
    conn = await pool.get_connection()

    async def send() -> list[Any]:
        await conn.send_packed_command(packed)
        answers: list[Any] = []
        for _ in range(count):
            try:
                answers.append(await conn.read_response())
            except ResponseError as exc:
                answers.append(exc)
        return answers

    async def failed(error: Exception) -> None:
        await conn.disconnect()
        if conn.retry_on_error is None or not isinstance(error, tuple(conn.retry_on_error)):
            raise error

    try:
        return cast(list[Any], await conn.retry.call_with_retry(send, failed))
    finally:
        await pool.release(conn)


class ScriptBatcher:
    """Runs one Lua script for many concurrent callers, pipelining the calls that are waiting together.

    A call joins the calls waiting to go out; they leave together, in one pipeline, once the event loop has
    run what was ready (a burst of webhooks parsed in one go shares a round trip), so N concurrent webhooks
    cost about one round trip instead of N. Up to ``_MAX_IN_FLIGHT`` pipelines are on the wire at once:
    with durable Redis (AOF ``appendfsync always``) every answer waits for an fsync, and a batch that had to
    wait for the one before it to come back would wait for two. Past that, calls wait and go out together
    in the next pipeline. Each script call stays atomic on its own, and fails on its own. A NOSCRIPT answer
    (script cache lost on restart or failover) means that call did not run, so it is loaded and sent again.
    """

    _MAX_BATCH = 256
    _MAX_IN_FLIGHT = 4

    def __init__(self, redis: Redis, name: str) -> None:
        self._redis = redis
        self.name = name
        self._source = source(name)
        self._sha = hashlib.sha1(self._source.encode(), usedforsecurity=False).hexdigest()
        self._pending: list[tuple[Sequence[str], Sequence[str | bytes], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._in_flight: set[asyncio.Task[None]] = set()

    async def __call__(self, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((keys, args, future))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and self._pending and len(self._in_flight) < self._MAX_IN_FLIGHT:
            self._scheduled = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending[: self._MAX_BATCH], self._pending[self._MAX_BATCH :]
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._in_flight.add(task)
        task.add_done_callback(self._landed)
        self._schedule(task.get_loop())  # more than a full batch was waiting

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._schedule(task.get_loop())

    async def _run(self, batch: list[tuple[Sequence[str], Sequence[str | bytes], asyncio.Future[Any]]]) -> None:
        try:
            results = await self._send([(keys, args) for keys, args, _ in batch])
        except (RedisError, OSError) as exc:
            error = StoreUnavailableError(f"Redis is unavailable: {exc}")
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException as exc:  # cancelled (shutdown) or a bug: no caller may wait forever
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(StoreUnavailableError(f"the write was interrupted: {exc!r}"))
            raise
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(StoreUnavailableError(f"Redis refused the write: {result}"))
            else:
                future.set_result(result)

    async def _send(self, calls: list[tuple[Sequence[str], Sequence[str | bytes]]]) -> list[Any]:
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(2):
            packed = b"".join(_pack_evalsha(self._sha, *calls[i]) for i in todo)
            answers = await _round_trip(self._redis, packed, len(todo))
            missing = []
            for i, answer in zip(todo, answers, strict=True):
                if isinstance(answer, NoScriptError):
                    missing.append(i)
                elif isinstance(answer, RedisConnectionError | RedisTimeoutError | OSError):
                    raise answer  # the connection is gone: the whole batch fails as unavailable
                else:
                    results[i] = answer
            if not missing:
                return results
            await self._redis.script_load(self._source)
            todo = missing
        for i in todo:
            results[i] = StoreUnavailableError("Redis lost the script cache twice in a row")
        return results
