"""What every emulated API handler of the sandbox shares: the ``Call`` it gets and the checks it answers with."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from chainer.sandbox.state import SandboxState

DIGITS = re.compile(r"[0-9]{1,9}")  # ASCII digits, bounded: int() of other "digits" or of 5000 of them raises
NOT_JSON = object()
_T = TypeVar("_T")


def decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return NOT_JSON


@dataclass(frozen=True, slots=True)
class Call:
    """One request as a handler sees it: the request, the shared state, the raw body and the path as sent."""

    request: Request
    state: SandboxState
    raw: bytes
    path: str = ""  # percent-escapes kept, unlike request.url.path

    def param(self, name: str) -> str:
        """A path parameter as text."""
        return str(self.request.path_params[name])

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object (``{}`` when empty); raises ``HTTPException(400)`` otherwise."""
        data = decode(self.raw) if self.raw.strip() else {}
        refuse(data is NOT_JSON, 400, "the request body is not valid JSON")
        refuse(not isinstance(data, dict), 400, "the request body must be a JSON object")
        return data


Handler = Callable[[Call], Awaitable[Response]]


def basic(request: Request) -> tuple[str | None, str | None]:
    """User and password of a ``Basic`` authorization header; ``(None, None)`` without a readable one."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return (user, password) if scheme.lower() == "basic" else (None, None)


def refuse(when: object, status: int, message: str) -> None:
    """Answer ``status`` with ``message`` (in the called API's error shape) when ``when`` is true."""
    if when:
        raise HTTPException(status, message)


def must_find(item: _T | None, message: str) -> _T:
    if item is None:
        raise HTTPException(404, message)
    return item


def whole_number(text: str, status: int, message: str) -> int:
    refuse(not DIGITS.fullmatch(text), status, message)
    return int(text)


def same(given: str | None, expected: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode(), expected.encode())
