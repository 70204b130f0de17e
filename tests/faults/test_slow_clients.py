"""Slow-loris and oversized requests over real sockets against a real ``chainer web`` (uvicorn, httptools).

Each web process gives a request head and a body 2 s each (``CHAINER_HEADER_TIMEOUT_SECONDS``,
``CHAINER_BODY_TIMEOUT_SECONDS`` in the harness). A client that connects and sends nothing, sends its head a
byte at a time, sends its body slower than that or never finishes it is answered 408 and its connection is
closed; a body declared or grown over the 1 MiB limit is 413 without being read to its end. Forty such clients
at once do not keep a normal delivery from its 202 meanwhile. Every socket has a hard timeout (a guard only:
the assertions are on what the server answered and that it closed the connection).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from tests.faults.harness import Cluster, check_invariants

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GUARD_S = 30.0  # no client here runs longer than this, whatever the server does
HEAD = b"POST /hooks/circleci HTTP/1.1\r\nhost: chainer\r\ncontent-type: application/json\r\ncircleci-event-type: x\r\n"


@dataclass
class Ending:
    """What one slow client saw: the status line the server sent (if any), whether it then closed the
    connection, and how many bytes the client had sent by then."""

    status: int | None
    closed: bool
    sent: int


def _connect(cluster: Cluster, web: int = 0) -> socket.socket:
    url = urlsplit(cluster.web_urls[web])
    conn = socket.create_connection((url.hostname, url.port), timeout=GUARD_S)
    conn.setblocking(False)
    return conn


def _drip(conn: socket.socket, data: bytes, *, every: float, chunk: int = 1, then_wait: bool = True) -> Ending:
    """Send ``data`` ``chunk`` bytes every ``every`` seconds until the server answers or closes; then read to EOF."""
    deadline = time.monotonic() + GUARD_S
    sent, received = 0, b""
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([conn], [], [], every)
            if readable:
                piece = conn.recv(65536)
                if not piece:
                    return Ending(_status(received), True, sent)
                received += piece
                continue
            if sent < len(data):
                try:
                    sent += conn.send(data[sent : sent + chunk])
                except (BrokenPipeError, ConnectionResetError):
                    return Ending(_status(received), True, sent)
            elif not then_wait:
                break
        return Ending(_status(received), False, sent)
    except ConnectionResetError:
        return Ending(_status(received), True, sent)
    finally:
        conn.close()


def _status(received: bytes) -> int | None:
    if not received.startswith(b"HTTP/1.1 "):
        return None
    return int(received[9:12])


def test_a_client_that_sends_nothing_is_answered_408_and_closed(fresh: Cluster) -> None:
    ending = _drip(_connect(fresh), b"", every=0.2)
    assert (ending.status, ending.closed) == (408, True)


def test_headers_one_byte_at_a_time_are_cut_off_with_408(fresh: Cluster) -> None:
    """Four bytes a second: the head (about 100 bytes) would take 25 s; the server cuts it off before."""
    ending = _drip(_connect(fresh, 1), HEAD * 3 + b"content-length: 2\r\n\r\n{}", every=0.25)
    assert (ending.status, ending.closed) == (408, True)
    assert ending.sent < len(HEAD) * 3


def test_a_body_slower_than_allowed_is_408_and_closed(fresh: Cluster) -> None:
    body = b'{"pad": "' + b"x" * 200 + b'"}'
    conn = _connect(fresh)
    conn.sendall(HEAD + f"content-length: {len(body)}\r\n\r\n".encode())
    ending = _drip(conn, body, every=0.25)
    assert (ending.status, ending.closed) == (408, True)
    assert ending.sent < len(body)


def test_a_body_that_never_finishes_is_408_and_closed(fresh: Cluster) -> None:
    conn = _connect(fresh, 1)
    conn.sendall(HEAD + b"content-length: 1000\r\n\r\n" + b'{"a": 1')
    ending = _drip(conn, b"", every=0.2)
    assert (ending.status, ending.closed) == (408, True)


def test_a_declared_length_over_the_limit_is_413_before_any_body_byte(fresh: Cluster) -> None:
    conn = _connect(fresh)
    conn.sendall(HEAD + b"content-length: 50000000\r\n\r\n")
    ending = _drip(conn, b"", every=0.2)
    assert (ending.status, ending.closed) == (413, True)


def test_a_chunked_body_growing_past_the_limit_is_413_without_reading_it_all(fresh: Cluster) -> None:
    """64 KiB chunks of a body that would be 40 MiB: the server answers 413 and closes once past 1 MiB."""
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    conn = _connect(fresh, 1)
    conn.sendall(HEAD + b"transfer-encoding: chunked\r\n\r\n")
    ending = _drip(conn, chunk * 640, every=0.01, chunk=len(chunk))
    assert (ending.status, ending.closed) == (413, True)
    assert ending.sent < len(chunk) * 640 // 4


def test_forty_slow_clients_do_not_stop_a_delivery_from_being_accepted(fresh: Cluster) -> None:
    """Forty slow-loris connections (heads and bodies, on both webs) held open while normal deliveries arrive:
    each delivery is 202 and its action done (invariants); every slow client was cut off with 408."""
    fresh.start_worker()
    endings: list[Ending] = []

    def slow(n: int) -> None:
        conn = _connect(fresh, n % 2)
        if n % 2:
            conn.sendall(HEAD + b"content-length: 400\r\n\r\n")
            endings.append(_drip(conn, b"{" + b" " * 398 + b"}", every=0.3))
        else:
            endings.append(_drip(conn, HEAD + b"content-length: 2\r\n\r\n{}", every=0.3))

    threads = [threading.Thread(target=slow, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    answers = [fresh.deliver("meanwhile") for _ in range(6)]
    for thread in threads:
        thread.join(timeout=GUARD_S + 5)
    assert [a.status for a in answers] == [202] * 6
    assert len(endings) == 40 and all((e.status, e.closed) == (408, True) for e in endings), endings
    check_invariants(fresh)
