"""How values go into Redis and come back: times, audit records, stream entries, hashes, arq jobs.

Audit records and stored events are compressed (raw deflate, ``zlib`` of the standard library) against a preset
dictionary of what they usually say, which takes a record of about 400 bytes to about 130: the dictionary holds
the field names and common values, so what is left is mostly the ids. A compressed value starts with a marker
byte naming its dictionary (``\x01`` audit records, ``\x02`` event fields), which JSON text never does; readers
take both, so records written as JSON (by the Lua scripts, or before compression) read as before. The
dictionaries (``chainer/store/dictionaries/``) are part of the stored format: never change one, add a new file
and a new marker instead.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from chainer import clock, fastjson


def now_ms() -> int:
    """The Redis server's clock (``chainer.clock``), which every process's time-based decisions use."""
    return clock.now_ms()


def ms_to_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_record(record: Mapping[str, Any]) -> str:
    """An audit record as compact JSON, without empty fields."""
    return fastjson.dumps_str({k: v for k, v in record.items() if v is not None})


# -- compressed values ----------------------------------------------------------------------------------------------
# Raw deflate. A compressor's state (window, hash tables) is copied per value, so the smallest window that holds
# the dictionary and the value is the cheapest (a 32 KiB window costs several times a 4 KiB one); inflating with
# the largest window reads what any smaller one wrote.
_RECORD_WBITS = -12  # records are small: a 4 KiB window holds the dictionary and the record
_EVENT_WBITS = -15  # payloads may be 20 KiB and more
RECORD_MARK = b"\x01"
EVENT_MARK = b"\x02"
# The preset dictionaries are samples of what records and stored events usually say (field names, common values,
# the registered providers' usual payload fields), rarest first: deflate reaches the end of a dictionary most
# cheaply. They are data files of the package, pinned by their digests in the tests: a stored value can only be
# read with the dictionary it was written with.
_DICTIONARIES = resources.files(__package__) / "dictionaries"
_RECORD_DICT = (_DICTIONARIES / "records-1.dict").read_bytes()
_EVENT_DICT = (_DICTIONARIES / "events-1.dict").read_bytes()
# Level 6 for records: the five records of a typical event take 613 bytes instead of 685 at level 1, for about
# 1.8 µs more per record (4.5 → 6.3 µs; level 5: 627 bytes, 5.5 µs; level 9: as level 6). Records are kept for the
# whole retention, so the bytes count more than the microseconds.
_RECORD_COMPRESSOR = zlib.compressobj(6, zlib.DEFLATED, _RECORD_WBITS, 2, zlib.Z_DEFAULT_STRATEGY, _RECORD_DICT)
# Event fields by size: (largest value, compressor) — the window grows with the value it has to reach back over.
_EVENT_COMPRESSORS = [
    (4096 - 262 - len(_EVENT_DICT), zlib.compressobj(6, zlib.DEFLATED, -12, 2, zlib.Z_DEFAULT_STRATEGY, _EVENT_DICT)),
    (16_384, zlib.compressobj(6, zlib.DEFLATED, -14, 5, zlib.Z_DEFAULT_STRATEGY, _EVENT_DICT)),
    (None, zlib.compressobj(6, zlib.DEFLATED, _EVENT_WBITS, 8, zlib.Z_DEFAULT_STRATEGY, _EVENT_DICT)),
]
_FORMATS = {RECORD_MARK[0]: (_RECORD_WBITS, _RECORD_DICT), EVENT_MARK[0]: (_EVENT_WBITS, _EVENT_DICT)}


def _deflate(compressor: zlib._Compress, mark: bytes, data: bytes) -> bytes:
    fresh = compressor.copy()  # the primed compressor: its dictionary is set once, not per value
    return mark + fresh.compress(data) + fresh.flush()


def inflate(value: bytes) -> bytes:
    """A stored value as written: compressed ones (marked) decompressed, anything else as it is."""
    found = _FORMATS.get(value[0]) if value else None
    if found is None:
        return value
    wbits, zdict = found
    return zlib.decompressobj(wbits, zdict=zdict).decompress(value[1:])


def pack_record(record: Mapping[str, Any]) -> bytes:
    """An audit record as it is stored: compact JSON without empty fields, compressed."""
    return _deflate(_RECORD_COMPRESSOR, RECORD_MARK, fastjson.dumps({k: v for k, v in record.items() if v is not None}))


def unpack_record(value: bytes | str) -> dict[str, Any]:
    """A stored audit record (compressed, or JSON text) as the record."""
    record: dict[str, Any] = fastjson.loads(inflate(value) if isinstance(value, bytes) else value)
    return record


def pack_fields(fields: Mapping[str, str]) -> bytes:
    """Text fields (an event's JSON, its payload, decisions …) as one compressed value: each field is its name,
    a newline, its length in bytes, a newline and its UTF-8 text (``surrogatepass``: JSON decoding may keep a
    lone surrogate, and the text is given back exactly)."""
    parts = []
    for name, value in fields.items():
        data = value.encode("utf-8", "surrogatepass")
        parts.append(b"%s\n%d\n%s" % (name.encode(), len(data), data))
    data = b"".join(parts)
    compressor = next(c for most, c in _EVENT_COMPRESSORS if most is None or len(data) <= most)
    return _deflate(compressor, EVENT_MARK, data)


def unpack_fields(value: bytes) -> dict[str, str]:
    """The fields ``pack_fields`` stored."""
    data = inflate(value)
    fields: dict[str, str] = {}
    at = 0
    while at < len(data):
        name_end = data.index(b"\n", at)
        size_end = data.index(b"\n", name_end + 1)
        size = int(data[name_end + 1 : size_end])
        start = size_end + 1
        fields[data[at:name_end].decode()] = data[start : start + size].decode("utf-8", "surrogatepass")
        at = start + size
    return fields


def text(value: Any) -> str:
    """A Redis reply (bytes, or already text or a number) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def job_serializer(obj: Any) -> bytes:
    """arq serializer: JSON, never pickle (anyone who can write Redis must not be able to run code)."""
    return fastjson.dumps(obj)


def job_deserializer(data: bytes) -> Any:
    return fastjson.loads(data)


def decode_hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A hash as ``HGETALL`` returns it, as text; a value stored in pieces (``name``, ``name~1`` …, see
    ``keys.HASH_CHUNK``) is joined (as bytes: a piece may end inside a UTF-8 character)."""
    pieces: dict[str, dict[int, Any]] = {}
    fields: dict[str, Any] = {}
    for k, v in raw.items():
        name = text(k)
        base, sep, number = name.rpartition("~")
        if sep and number.isdigit():
            pieces.setdefault(base, {})[int(number)] = v
        else:
            fields[name] = v
    for base, rest in pieces.items():
        first = fields.get(base)
        if first is None:
            continue  # pieces of a field that is gone: nothing to join them to
        parts = [first, *(rest[i] for i in sorted(rest))]
        fields[base] = b"".join(p if isinstance(p, bytes) else str(p).encode() for p in parts)
    return {name: text(v) for name, v in fields.items()}


def stream_item(sid: Any, fields: Mapping[Any, Any]) -> dict[str, Any]:
    """An audit stream entry as the record it holds, with its stream ``id`` and ISO ``time``."""
    sid_text = text(sid)
    raw = fields.get(b"r") or fields.get("r") or b"{}"
    record = unpack_record(raw)
    return {"id": sid_text, "time": ms_to_iso(int(sid_text.split("-", 1)[0])), **record}


def matches(item: Mapping[str, Any], match: Mapping[str, set[str]] | None) -> bool:
    """Whether an audit record has, for every field in ``match``, one of the wanted values."""
    if not match:
        return True
    for name, wanted in match.items():
        value = item.get(name)
        if name == "rule" and value is None:
            value = item.get("rules")
        if isinstance(value, list):
            if not wanted.intersection(str(v) for v in value):
                return False
        elif value is None or str(value) not in wanted:
            return False
    return True
