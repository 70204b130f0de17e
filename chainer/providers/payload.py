"""Reading a delivery's body: bytes to a JSON object, then typed fields by dotted path (DESIGN §3).

What every provider's ``parse`` shares. Pure and synchronous; the only exception raised is
``PayloadError`` (→ 400), whose message names the problem or the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import orjson

from chainer.errors import PayloadError
from chainer.fastjson import has_long_integer

# Real payloads nest about 7 levels; the cap keeps json.loads far from the interpreter's recursion limit.
MAX_JSON_DEPTH = 64
_SHOWN_CHARS = 100
# A JSON string (closing quote optional, so an unterminated one never makes the scan quadratic) or a bracket.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_JSON_TOKEN_BYTES = re.compile(_JSON_TOKEN.pattern.encode(), re.DOTALL)


def decode_json_object(body: bytes) -> dict[str, Any]:
    """Bytes → JSON object.

    Raises PayloadError naming the problem for invalid UTF-8, invalid JSON (including NaN/Infinity),
    nesting deeper than MAX_JSON_DEPTH, or a top level that is not an object.

    orjson reads the body when it would read it as ``json`` does (a well-formed object, nested at most
    MAX_JSON_DEPTH levels, without lone surrogate escapes or integers beyond 64 bits); everything else,
    and every refusal, goes through ``json``, so results and messages are the standard library's.
    """
    if not has_long_integer(body) and not _too_deep(body):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # json says what is wrong, or reads what orjson refuses (lone surrogate escapes, 1e400)
        else:
            if isinstance(data, dict):
                return data
    return _decode_with_json(body)


def _decode_with_json(body: bytes) -> dict[str, Any]:
    """``decode_json_object`` by the standard library alone: the reference for every result and message."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not valid UTF-8 (byte 0x{body[exc.start]:02x} at offset {exc.start})") from None
    if not text.strip(" \t\r\n"):
        raise PayloadError("body is empty; expected a JSON object")
    if _too_deep(text):
        raise PayloadError(f"body is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # integers over the digit limit; recursion is a second guard
        raise PayloadError(f"body is not valid JSON: {clip(str(exc))}") from None
    if not isinstance(data, dict):
        raise PayloadError(f"body must be a JSON object, got {describe(data)}")
    return data


def header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, item in headers.items():
        if key.lower() == name:
            return item
    return None


def _too_deep(text: str | bytes) -> bool:
    """Whether brackets outside strings nest deeper than MAX_JSON_DEPTH (text, or UTF-8 bytes: the same tokens)."""
    if isinstance(text, bytes):
        if text.count(b"{") + text.count(b"[") <= MAX_JSON_DEPTH:
            return False
        return _deeper(text, _JSON_TOKEN_BYTES, (b"[", b"{"), (b"]", b"}"))
    if text.count("{") + text.count("[") <= MAX_JSON_DEPTH:
        return False
    return _deeper(text, _JSON_TOKEN, ("[", "{"), ("]", "}"))


def _deeper(text: Any, tokens: re.Pattern[Any], opening: tuple[Any, ...], closing: tuple[Any, ...]) -> bool:
    depth = 0
    for match in tokens.finditer(text):
        token = match.group()
        if token in opening:
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif token in closing:
            depth -= 1
    return False


def _reject_constant(name: str) -> Any:
    raise PayloadError(f"body is not valid JSON: {name} is not a JSON value")


def clip(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def describe(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return clip(json.dumps(value))


def first_str(data: dict[str, Any], *paths: str) -> str | None:
    """The first of several string fields that is present (every one is type-checked)."""
    values = [opt_str(data, path) for path in paths]
    return next((value for value in values if value is not None), None)


def lookup(data: dict[str, Any], path: str) -> Any:
    """The value at a dotted path; None when it or a parent is absent or null."""
    node: Any = data
    walked: list[str] = []
    for part in path.split("."):
        if node is None:
            return None
        if not isinstance(node, dict):
            raise PayloadError(f"{'.'.join(walked)}: expected an object, got {describe(node)}")
        node = node.get(part)
        walked.append(part)
    return node


def need_object(data: dict[str, Any], path: str) -> None:
    value = lookup(data, path)
    if value is None:
        raise PayloadError(f"missing field {path}")
    if not isinstance(value, dict):
        raise PayloadError(f"{path}: expected an object, got {describe(value)}")


def opt_str(data: dict[str, Any], path: str) -> str | None:
    """A string field, or None when absent, null or empty."""
    value = lookup(data, path)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{path}: expected a string, got {describe(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(f"{path}: contains an unpaired UTF-16 surrogate escape") from None
    return value or None


def need_str(data: dict[str, Any], path: str) -> str:
    value = opt_str(data, path)
    if value is None:
        detail = "must not be empty" if lookup(data, path) == "" else None
        raise PayloadError(f"{path}: {detail}" if detail else f"missing field {path}")
    return value


def opt_id(data: dict[str, Any], path: str) -> str | int | None:
    value = lookup(data, path)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return opt_str(data, path)


def opt_int(data: dict[str, Any], path: str) -> int | None:
    value = lookup(data, path)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise PayloadError(f"{path}: expected an integer, got {describe(value)}")
    return value


def need_int(data: dict[str, Any], path: str) -> int:
    value = opt_int(data, path)
    if value is None:
        raise PayloadError(f"missing field {path}")
    return value
