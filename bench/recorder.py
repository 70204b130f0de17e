"""A recording CircleCI: the downstream end of the end-to-end runs.

``python -m bench.recorder --port P`` answers ``POST /api/v2/project/<slug>/pipeline`` with 201 and a pipeline
(``{id, number, state, created_at}``, as CircleCI does) and records, for every request, the moment its headers
had arrived (``time.monotonic()``: CLOCK_MONOTONIC, the same clock in every process of the machine), the path,
the branch and the ``upstream_build`` pipeline parameter that ties it to the event that caused it.

``GET /_bench/arrivals`` returns the records as JSON; ``DELETE /_bench/arrivals`` forgets them; ``GET /_bench/count``
says how many requests and distinct events arrived; ``GET /_bench/ping`` answers 200. Plain asyncio streams,
HTTP/1.1 keep-alive, Content-Length or chunked bodies: small and quick, so that the latency measured is chainer's,
not the recorder's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from bench.payloads import PARAMETER

_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
MAX_BODY = 1 << 20


class Recorder:
    def __init__(self) -> None:
        self.arrivals: list[dict[str, Any]] = []
        self.upstreams: set[str] = set()
        self.pipelines = 0

    def answer(self, method: str, path: str, arrived: float, body: bytes) -> tuple[int, Any]:
        route = path.split("?", 1)[0]
        if route == "/_bench/ping":
            return 200, {"ok": True}
        if route == "/_bench/count":
            return 200, {"requests": len(self.arrivals), "distinct": len(self.upstreams)}
        if route == "/_bench/arrivals":
            if method == "DELETE":
                self.arrivals.clear()
                self.upstreams.clear()
                return 200, {"cleared": True}
            return 200, {"arrivals": self.arrivals}
        if route.startswith("/api/v2/project/") and route.endswith("/pipeline"):
            if method != "POST":
                return 405, {"message": "Method Not Allowed"}
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                return 400, {"message": "the body is not JSON"}
            parameters = data.get("parameters") if isinstance(data, dict) else None
            upstream = parameters.get(PARAMETER) if isinstance(parameters, dict) else None
            self.pipelines += 1
            if upstream is not None:
                self.upstreams.add(str(upstream))
            self.arrivals.append(
                {
                    "t": arrived,
                    "path": route,
                    "branch": data.get("branch"),
                    "upstream": None if upstream is None else str(upstream),
                }
            )
            created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            return 201, {"id": str(uuid.uuid4()), "number": self.pipelines, "state": "created", "created_at": created}
        return 404, {"message": "Not Found"}


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = int(headers.get("content-length", "0") or 0)
    if length > MAX_BODY:
        raise ValueError("body too large")
    return await reader.readexactly(length) if length else b""


async def serve_connection(recorder: Recorder, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            arrived = time.monotonic()
            lines = head.decode("latin-1").split("\r\n")
            method, path, version = [*lines[0].split(" "), "", "", ""][:3]
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            try:
                body = await _read_body(reader, headers)
            except (asyncio.IncompleteReadError, ValueError, ConnectionError):
                return
            status, answer = recorder.answer(method, path, arrived, body)
            payload = json.dumps(answer).encode()
            close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n{'Connection: close' if close else 'Connection: keep-alive'}"
                f"\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            if close:
                return
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve(host: str, port: int) -> None:
    recorder = Recorder()
    server = await asyncio.start_server(lambda r, w: serve_connection(recorder, r, w), host, port, backlog=512)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A recording CircleCI pipeline endpoint for the bench.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
