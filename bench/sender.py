"""Load generators in Python: an open-loop sender at a fixed event rate, and a closed-loop sender of N events.

A bare asyncio HTTP/1.1 client (keep-alive, Content-Length bodies) keeps the sender cheap beside the servers it
measures. Open loop: event ``i`` is sent at ``start + i / rate`` whatever happened to the ones before (on an idle
kept-alive connection, or a new one when all are busy), so a slow server meets the same arrival rate as a fast one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Sent:
    """One request: when it was due and written (``time.monotonic()``), and what came back."""

    key: int
    due: float
    sent: float = 0.0
    done: float = 0.0
    status: int = 0
    body: Any = None
    error: str = ""


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "connection" and value.strip().lower() == "close":
                close = True
            elif name == "transfer-encoding":
                raise RuntimeError("chunked answers are not expected from a webhook endpoint")
        data = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def _decode(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return data[:200].decode("latin-1")


JSON = {"Content-Type": "application/json"}


@dataclass
class _Pool:
    host: str
    port: int
    idle: list[Connection] = field(default_factory=list)
    opened: int = 0

    def take(self) -> Connection:
        if self.idle:
            return self.idle.pop()
        self.opened += 1
        return Connection(self.host, self.port)


async def _send(pool: _Pool, path: str, body: bytes, record: Sent, timeout: float) -> None:
    conn = pool.take()
    record.sent = time.monotonic()
    try:
        status, data = await asyncio.wait_for(conn.request("POST", path, body, JSON), timeout)
        record.status, record.body = status, _decode(data)
        pool.idle.append(conn)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, RuntimeError, ValueError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
        await conn.close()
    record.done = time.monotonic()


async def open_loop(
    targets: Sequence[tuple[str, int]],
    path: str,
    events: Sequence[tuple[int, bytes]],
    rate: float,
    *,
    timeout: float = 10.0,
) -> list[Sent]:
    """Send ``events`` (key, body) at ``rate`` per second, round-robin over ``targets``; every request ends within
    ``timeout`` seconds. Returns one ``Sent`` per event, in order."""
    pools = [_Pool(host, port) for host, port in targets]
    records: list[Sent] = []
    tasks: list[asyncio.Task[None]] = []
    start = time.monotonic() + 0.05
    for i, (key, body) in enumerate(events):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        record = Sent(key, due)
        records.append(record)
        tasks.append(asyncio.create_task(_send(pools[i % len(pools)], path, body, record, timeout)))
    await asyncio.gather(*tasks)
    for pool in pools:
        for conn in pool.idle:
            await conn.close()
    return records


async def closed_loop(
    targets: Sequence[tuple[str, int]],
    path: str,
    count: int,
    make: Callable[[int], tuple[int, bytes]],
    *,
    concurrency: int = 16,
    timeout: float = 10.0,
    progress: Callable[[int], None] | None = None,
    deadline: float | None = None,
) -> list[Sent]:
    """Send ``count`` events made by ``make(i)`` with ``concurrency`` requests in flight, round-robin over
    ``targets``; stop early at the ``deadline`` (``time.monotonic()``). ``progress(n)`` is called as the n-th request
    ends (n = 1, 2, … once each)."""
    records: list[Sent] = []
    counter = iter(range(count))
    finished = 0

    async def lane(index: int) -> None:
        nonlocal finished
        pool = _Pool(*targets[index % len(targets)])
        for i in counter:
            if deadline is not None and time.monotonic() > deadline:
                return
            key, body = make(i)
            record = Sent(key, time.monotonic())
            records.append(record)
            await _send(pool, path, body, record, timeout)
            finished += 1
            if progress is not None:
                progress(finished)
        for conn in pool.idle:
            await conn.close()

    await asyncio.gather(*(lane(i) for i in range(concurrency)))
    return records


async def post_json(host: str, port: int, path: str, body: bytes) -> tuple[int, Any]:
    """One POST on a fresh connection: (status, decoded body)."""
    conn = Connection(host, port)
    try:
        status, data = await asyncio.wait_for(conn.request("POST", path, body, JSON), 10)
        return status, _decode(data)
    finally:
        await conn.close()
