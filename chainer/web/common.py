"""What the web modules share: the app's state, JSON answers, and reading a bounded JSON body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import Receive

from chainer.errors import BodyTimeoutError, PayloadTooLargeError, UnsupportedMediaError
from chainer.intake import Intake
from chainer.rules import RuleSet
from chainer.settings import Settings
from chainer.store import Store


class WebState:
    """What the routes share: settings, the store, the active rules and the intake built on them.

    ``store`` is None until the app's lifespan has connected (when none was handed in); the routes
    that need it answer 503 meanwhile.
    """

    def __init__(self, settings: Settings, ruleset: RuleSet, store: Store | None) -> None:
        self.settings = settings
        self.ruleset = ruleset
        self.store: Store | None = None
        self.intake: Intake | None = None
        if store is not None:
            self.use_store(store)

    def use_store(self, store: Store) -> None:
        """Serve from ``store``: the operator API reads it, the intake writes accepted events to it."""
        self.store = store
        self.intake = Intake(self.settings, store, self.rules)

    def release_store(self) -> None:
        """Stop serving from the store (its connection is closing): the routes answer 503 until ``use_store``."""
        self.store = None
        self.intake = None

    def rules(self) -> RuleSet:
        """The active rules (they change on reload)."""
        return self.ruleset

    def activate(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset


def state(request: Request) -> WebState:
    found: WebState = request.app.state.chainer
    return found


class _JSONResponse(JSONResponse):
    """JSON that always encodes: text holding a lone surrogate (a payload may escape one, ``"\\ud800"``, and
    JSON decoding keeps it) is written as that same JSON escape instead of failing as strict UTF-8.

    orjson writes what starlette's ``json.dumps`` would (compact, UTF-8); what it refuses (lone surrogates,
    keys that are not strings, integers beyond 64 bits) goes the standard library's way."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:
            pass
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON answer."""
    return _JSONResponse(body, status_code=status, headers=headers)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error answer: ``{"error": message}``."""
    return answer(status, {"error": message}, headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read by ``receive_body`` with the app's body deadline."""
    return await receive_body(request.receive, request.headers, limit, state(request).settings.body_timeout_seconds)


async def receive_body(receive: Receive, headers: Mapping[str, str], limit: int, seconds: float) -> bytes:
    """An ASGI request's body; PayloadTooLargeError as soon as it is known to be over ``limit`` bytes,
    BodyTimeoutError (408) when it has not all arrived within ``seconds`` (``CHAINER_BODY_TIMEOUT_SECONDS``: a slow
    or stalled sender), ClientDisconnect when the client hung up first (as starlette's ``Request.stream``)."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"body of {declared} bytes is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(f"body is over the {limit}-byte limit")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise BodyTimeoutError(f"the body did not arrive within {seconds:g} s ({size} bytes came)") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def check_content_type(headers: Mapping[str, str], also: tuple[str, ...] = ()) -> None:
    """UnsupportedMediaError unless the request's ``headers`` say it carries JSON (``application/json`` or
    ``…+json``) or one of the media types ``also`` names (a provider's ``Hook.content_types``)."""
    value = headers.get("content-type", "")
    media = value.split(";", 1)[0].strip().lower()
    if media in also:
        return
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        shown = media or "none"
        accepted = " or ".join(("application/json", *also))
        raise UnsupportedMediaError(f"content type {shown!r} is not supported; send {accepted}")
