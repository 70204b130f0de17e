"""uvicorn's httptools protocol with a deadline on each request head (slow-loris headers).

uvicorn bounds only the idle time between two requests of a keep-alive connection (``timeout_keep_alive``): a
client that connects and sends nothing, or sends its request line and headers a byte at a time, holds the
connection for ever. ``HeadDeadlineProtocol`` gives each request head (from the connection or the request's first
byte to the end of its headers) ``HeadDeadlineProtocol.seconds`` (``CHAINER_HEADER_TIMEOUT_SECONDS``, set by
``chainer web`` and ``chainer run`` before they serve); past that it answers ``408`` and closes the connection.
uvicorn takes it by its import path, ``HTTP_PROTOCOL``. The body has its own deadline in the app
(``CHAINER_BODY_TIMEOUT_SECONDS``, ``chainer.web.common.read_body``).
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HTTP_PROTOCOL = "chainer.web.server:HeadDeadlineProtocol"
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b'content-length: 48\r\n\r\n{"error": "the request head came in too slowly"}'
)


class HeadDeadlineProtocol(HttpToolsProtocol):
    """An ``HttpToolsProtocol`` that closes a connection whose request head takes over ``seconds``."""

    seconds: ClassVar[float] = 10.0
    head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.head_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # the keep-alive timeout now bounds the wait for the next request

    def _arm(self) -> None:
        self._disarm()
        self.head_timer = self.loop.call_later(self.seconds, self._expired)

    def _disarm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _expired(self) -> None:
        self.head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served (its head arrived): the body's deadline is the app's
        if not self.transport.is_closing():
            self.transport.write(_TIMED_OUT)
            self.transport.close()
