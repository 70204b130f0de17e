"""JSON on the hot path: orjson wherever it gives what the standard library gives, ``json`` wherever it does not.

orjson encodes and decodes several times faster than ``json``, but differs from it in a few corners; each one is
routed to ``json`` here, so callers get the standard library's results at orjson's speed:

- encoding: a lone surrogate (``"\\ud800"``, which a payload may escape and ``json`` keeps), a dict key that is not
  a string, an integer beyond 64 bits: orjson refuses them, ``json`` encodes them (``ensure_ascii``, so the text
  stays valid UTF-8). Objects orjson would encode natively but ``json`` hands to ``default`` (datetimes,
  dataclasses) are passed through to ``default`` as well.
- decoding: orjson refuses lone surrogate escapes, which ``json`` reads, and turns an integer beyond 64 bits into a
  float, where ``json`` keeps it exact: text with a run of 19 digits or more is read by ``json``.

One difference is kept: a NaN or infinite float is encoded as ``null`` (``json`` writes ``NaN``, which is not JSON,
and which chainer's answers refuse to send). Decoded payloads never hold one: ``NaN`` and ``Infinity`` are refused
(``chainer.providers.payload``) and ``1e400`` is read by ``json`` (orjson refuses it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_POSITIVE = b"0" * 20  # 20 digits or more: may be 2**64 or above
_LONG_NEGATIVE = b"-" + b"0" * 19  # a minus and 19 digits or more: may be below -2**63


def dumps(obj: Any, default: Callable[[Any], Any] | None = str) -> bytes:
    """Compact JSON bytes, as ``json.dumps(obj, separators=(",", ":"), default=default)`` would read back."""
    try:
        return orjson.dumps(obj, default=default, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, a non-string key, a very big integer
        return json.dumps(obj, separators=(",", ":"), default=default).encode()


def dumps_str(obj: Any, default: Callable[[Any], Any] | None = str) -> str:
    """``dumps`` as text."""
    return dumps(obj, default).decode()


def has_long_integer(data: bytes) -> bool:
    """Whether ``data`` holds a run of digits that orjson might not read as ``json`` does (beyond 64 bits)."""
    digits = data.translate(_DIGITS)
    return _LONG_POSITIVE in digits or _LONG_NEGATIVE in digits


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """``json.loads(data)``, by orjson unless the text is one orjson reads differently."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if not has_long_integer(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # lone surrogate escapes, 1e400, or invalid: json reads the first two, and raises for the last
    return json.loads(data if isinstance(data, str) else raw)
