"""orjson on the hot path reads and writes what the standard library does (chainer.fastjson, payload decoding).

``decode_json_object`` reads most bodies with orjson and hands the rest to ``json``; every result and every
message must be the one the standard library alone gives (``_decode_with_json``, the reference): on the recorded
payloads, on the corners where the two libraries differ (lone surrogates, integers beyond 64 bits, NaN, 1e400,
depth, BOM), and on thousands of random bodies.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from chainer import fastjson
from chainer.errors import PayloadError
from chainer.providers.payload import MAX_JSON_DEPTH, _decode_with_json, decode_json_object

PAYLOADS = sorted((Path(__file__).resolve().parents[1] / "data" / "payloads").glob("*.json"))


def _result(decode: Any, body: bytes) -> tuple[str, str]:
    """What a decoder gives: the value, exactly (types included: ``repr``), or the error's class and message."""
    try:
        return "value", repr(decode(body))
    except PayloadError as exc:
        return "PayloadError", str(exc)


def _same(body: bytes) -> None:
    assert _result(decode_json_object, body) == _result(_decode_with_json, body), body[:200]


CORNERS = [
    b'{"a": "\\ud800"}',  # lone high surrogate: json keeps it, orjson refuses it
    b'{"\\udc00": 1}',  # lone low surrogate as a key
    b'{"a": "\\ud83d\\ude00"}',  # a proper pair
    b'{"n": 18446744073709551615}',  # 2**64 - 1: both exact
    b'{"n": 18446744073709551616}',  # 2**64: orjson would make it a float
    b'{"n": -9223372036854775808}',
    b'{"n": -9223372036854775809}',  # below -2**63: orjson would make it a float
    b'{"n": 123456789012345678901234567890}',
    b'{"n": 1' + b"0" * 5000 + b"}",  # over the interpreter's digit limit
    b'{"f": 1e400}',  # json: inf; orjson refuses
    b'{"f": -1e400, "g": 5e-400}',
    b'{"f": 0.1, "g": 1E5, "h": -0.0, "i": -0, "j": 1.7976931348623157e308}',
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'{"a": -Infinity}',
    b'\xef\xbb\xbf{"a": 1}',  # UTF-8 BOM
    b'{"a": 1, "a": 2}',  # a repeated key: the last wins, in the first one's place
    b' \t\r\n{"a": [1, 2, {"b": null}]} \n',
    b'{"a": "\x01"}',  # a raw control character
    b'{"a": "\x7f\xc3\xa9"}',
    b'{"a": "\\u00e9\\/"}',
    b"{}",
    b"[]",
    b'"text"',
    b"",
    b"\x00",
    b'{"a": 1} x',
    b'{"a": [1, 2,]}',
    b'{"a": 01}',
    b'{"a": "\xed\xa0\x80"}',  # a surrogate encoded in UTF-8: invalid UTF-8
    b'{"a": ' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}",
    b'{"a": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}",
    json.dumps({"s": "[{" * 5000, "t": '\\"[[[['}).encode(),
    json.dumps({f"k{i}": [{}] for i in range(200)}).encode(),
    b"[" * 100_000,
]


@pytest.mark.parametrize("body", CORNERS, ids=range(len(CORNERS)))
def test_corners_where_orjson_and_json_differ_decode_as_json_does(body: bytes) -> None:
    _same(body)


@pytest.mark.parametrize("path", PAYLOADS, ids=[p.stem for p in PAYLOADS])
def test_recorded_payloads_decode_as_json_does(path: Path) -> None:
    _same(path.read_bytes())


def test_most_bodies_are_read_by_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is taken: a recorded payload never reaches the standard library's decoder."""
    called: list[bytes] = []
    monkeypatch.setattr("chainer.providers.payload._decode_with_json", lambda body: called.append(body))
    for path in PAYLOADS:
        assert isinstance(decode_json_object(path.read_bytes()), dict)
    assert called == []
    decode_json_object(b'{"a": "\\ud800"}')
    assert called == [b'{"a": "\\ud800"}']


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(9 if depth > 0 else 7)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 10**30, rng.randrange(-9, 9)])
    if kind == 2:
        return rng.choice([0.5, -0.0, 1e-7, 1e16, 1.7976931348623157e308, 5e-324, rng.random()])
    if kind in (3, 4):
        return rng.choice(["", "a", "é", "😀", "\ud800", "\udfff", "x\u0000y", "\\", '"', "\u2028", "[{"])
    if kind in (5, 6):
        return "".join(rng.choice("ab1-_ é\ud800") for _ in range(rng.randrange(0, 8)))
    if kind == 7:
        return [_random_value(rng, depth - 1) for _ in range(rng.randrange(0, 4))]
    return {str(_random_value(rng, 0)): _random_value(rng, depth - 1) for _ in range(rng.randrange(0, 4))}


def test_random_documents_decode_as_json_does() -> None:
    """Two thousand random documents (as json writes them, and with raw UTF-8), and byte-level mutations of them."""
    rng = random.Random(20261203)
    for _ in range(2000):
        doc = {"k": _random_value(rng, 4)}
        texts = [json.dumps(doc), json.dumps(doc, ensure_ascii=False, separators=(",", ":"))]
        for text in texts:
            body = text.encode("utf-8", "surrogatepass")
            _same(body)
            if body:
                at = rng.randrange(len(body))
                _same(body[:at] + bytes([rng.randrange(256)]) + body[at + 1 :])
                _same(body[:at])


def test_fastjson_round_trips_what_orjson_refuses() -> None:
    """Encoding: lone surrogates, non-string keys and big integers take json's way; decoding reads them back."""
    for value in [
        {"a": "\ud800"},
        {1: "x", None: 2},
        {"n": 2**64, "m": -(2**63) - 1},
        {"t": (1, 2), "é": "é"},
        {"n": 18446744073709551615, "f": 0.1},
    ]:
        encoded = fastjson.dumps(value)
        assert json.loads(encoded) == json.loads(json.dumps(value)), value
        assert fastjson.loads(encoded) == json.loads(encoded), value
        assert fastjson.loads(encoded.decode("utf-8")) == json.loads(encoded), value
    assert fastjson.dumps({"a": [1, "b"]}) == orjson.dumps({"a": [1, "b"]})  # the fast path when it agrees
    assert fastjson.dumps({"d": object}) == json.dumps({"d": object}, separators=(",", ":"), default=str).encode()
