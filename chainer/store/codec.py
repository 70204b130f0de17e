"""How values go into Redis and come back: times, audit records, stream entries, hashes, arq jobs.

Audit records and stored events are compressed against a dictionary of what they usually say, which takes a record
of about 400 bytes to about 90: the dictionary holds the field names and common values, so what is left is mostly
the ids. A compressed value starts with a marker byte naming its format and dictionary (``\x01``/``\x02`` zlib
records/event fields, ``\x03``/``\x04`` zstd records/event fields), which JSON text never does; readers take all of
them, so records written as JSON (by the Lua scripts, or before compression) read as before. The dictionaries
(``chainer/store/dictionaries/``) are part of the stored format: never change one, add a new file and a new marker
instead.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import zstandard

from chainer import clock, fastjson


def now_ms() -> int:
    """The Redis server's clock (``chainer.clock``), which every process's time-based decisions use."""
    return clock.now_ms()


def ms_to_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_json(record: Mapping[str, Any]) -> bytes:
    """An audit record as compact JSON, without empty fields: what is stored, before compression."""
    return fastjson.dumps({k: v for k, v in record.items() if v is not None})


def encode_record(record: Mapping[str, Any]) -> str:
    """``record_json`` as text (what the Lua scripts store as it is)."""
    return record_json(record).decode()


# -- compressed values ----------------------------------------------------------------------------------------------
# Two formats. zstd (the default since issue 11) with dictionaries trained on chainer's own records and events
# (scripts/train_dictionaries.py): a trained dictionary carries the entropy tables, so a record of about 400 bytes
# compresses in about 2.6 µs to about 110 bytes (`train_dictionaries.py --compare`, on samples naming other projects
# and branches than the training ones). zlib (raw deflate) with preset dictionaries, the first format: about 12 µs and
# 167 bytes, because deflate builds its Huffman tables for every value. Readers take both, always; which one
# a process writes is CHAINER_STORE_COMPRESSION (a rolling upgrade from a build that reads only zlib writes zlib
# until no such process is left). The dictionaries (``chainer/store/dictionaries/``) are data files of the package,
# pinned by their digests in the tests: a stored value can only be read with the dictionary it was written with.
RECORD_MARK = b"\x01"  # zlib, records-1.dict
EVENT_MARK = b"\x02"  # zlib, events-1.dict
RECORD_ZSTD_MARK = b"\x03"  # zstd, records-2.zdict
EVENT_ZSTD_MARK = b"\x04"  # zstd, events-2.zdict
_DICTIONARIES = resources.files(__package__) / "dictionaries"
_RECORD_DICT = (_DICTIONARIES / "records-1.dict").read_bytes()
_EVENT_DICT = (_DICTIONARIES / "events-1.dict").read_bytes()
_RECORD_ZDICT = zstandard.ZstdCompressionDict((_DICTIONARIES / "records-2.zdict").read_bytes())
_EVENT_ZDICT = zstandard.ZstdCompressionDict((_DICTIONARIES / "events-2.zdict").read_bytes())

# zlib. A compressor's state (window, hash tables) is copied per value, so the smallest window that holds the
# dictionary and the value is the cheapest (a 32 KiB window costs several times a 4 KiB one); inflating with the
# largest window reads what any smaller one wrote. Level 6 for records: 613 bytes for a typical event's five
# records instead of 685 at level 1, for about 1.8 µs more per record.
_RECORD_WBITS = -12  # records are small: a 4 KiB window holds the dictionary and the record
_EVENT_WBITS = -15  # payloads may be 20 KiB and more
_RECORD_COMPRESSOR = zlib.compressobj(6, zlib.DEFLATED, _RECORD_WBITS, 2, zlib.Z_DEFAULT_STRATEGY, _RECORD_DICT)
# Event fields by size: (largest value, compressor) — the window grows with the value it has to reach back over.
_EVENT_COMPRESSORS = [
    (4096 - 262 - len(_EVENT_DICT), zlib.compressobj(6, zlib.DEFLATED, -12, 2, zlib.Z_DEFAULT_STRATEGY, _EVENT_DICT)),
    (16_384, zlib.compressobj(6, zlib.DEFLATED, -14, 5, zlib.Z_DEFAULT_STRATEGY, _EVENT_DICT)),
    (None, zlib.compressobj(6, zlib.DEFLATED, _EVENT_WBITS, 8, zlib.Z_DEFAULT_STRATEGY, _EVENT_DICT)),
]


def _deflate(compressor: zlib._Compress, mark: bytes, data: bytes) -> bytes:
    fresh = compressor.copy()  # the primed compressor: its dictionary is set once, not per value
    return mark + fresh.compress(data) + fresh.flush()


def _inflater(wbits: int, zdict: bytes) -> Callable[[bytes], bytes]:
    return lambda data: zlib.decompressobj(wbits, zdict=zdict).decompress(data)


# zstd: frames without the magic number, checksum or dictionary id (the marker byte names the dictionary, and Redis
# keeps what it was given), with the content size, so a reader allocates once. Records at level 5: they are kept for
# the whole retention, five or so per event, and level 5 makes them 10 % smaller than level 3 for 0.6 µs more each
# (84 B in 2.4 µs); event fields at level 3 (259 B in 3.1 µs; level 5 takes 5.6 µs). A compression context is not
# safe for two threads at once, so each thread has its own.
def _zstd_params(level: int) -> zstandard.ZstdCompressionParameters:
    return zstandard.ZstdCompressionParameters.from_level(
        level, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=1, write_checksum=0, write_dict_id=0
    )


_RECORD_ZSTD_PARAMS = _zstd_params(5)
_EVENT_ZSTD_PARAMS = _zstd_params(3)
_RECORD_ZDICT.precompute_compress(compression_params=_RECORD_ZSTD_PARAMS)
_EVENT_ZDICT.precompute_compress(compression_params=_EVENT_ZSTD_PARAMS)


class _ZstdContexts(threading.local):
    def __init__(self) -> None:
        self.record = zstandard.ZstdCompressor(dict_data=_RECORD_ZDICT, compression_params=_RECORD_ZSTD_PARAMS)
        self.event = zstandard.ZstdCompressor(dict_data=_EVENT_ZDICT, compression_params=_EVENT_ZSTD_PARAMS)
        magicless = zstandard.FORMAT_ZSTD1_MAGICLESS
        self.record_reader = zstandard.ZstdDecompressor(dict_data=_RECORD_ZDICT, format=magicless)
        self.event_reader = zstandard.ZstdDecompressor(dict_data=_EVENT_ZDICT, format=magicless)


_zstd = _ZstdContexts()
# The most a zstd value may say it holds: a frame names its size, which decompress() allocates at once, so a damaged
# header must not make a reader reserve gigabytes. Event fields hold a payload (at most CHAINER_MAX_BODY_BYTES, 1 MiB
# by default) and what chainer made of it.
MAX_INFLATED = 64 * 1024 * 1024


def _unzstd(reader: zstandard.ZstdDecompressor, data: bytes) -> bytes:
    size = zstandard.get_frame_parameters(data, format=zstandard.FORMAT_ZSTD1_MAGICLESS).content_size
    if size > MAX_INFLATED:
        raise UnreadableValueError(f"a stored value says it holds {size} bytes, over {MAX_INFLATED}")
    return reader.decompress(data)


_INFLATERS: dict[int, Callable[[bytes], bytes]] = {
    RECORD_MARK[0]: _inflater(_RECORD_WBITS, _RECORD_DICT),
    EVENT_MARK[0]: _inflater(_EVENT_WBITS, _EVENT_DICT),
    RECORD_ZSTD_MARK[0]: lambda data: _unzstd(_zstd.record_reader, data),
    EVENT_ZSTD_MARK[0]: lambda data: _unzstd(_zstd.event_reader, data),
}


class UnreadableValueError(ValueError):
    """A stored value that cannot be read back: damaged in Redis, or cut short."""


def inflate(value: bytes) -> bytes:
    """A stored value as written: compressed ones (marked) decompressed, anything else as it is. Raises
    UnreadableValueError for a compressed value that does not decompress."""
    found = _INFLATERS.get(value[0]) if value else None
    if found is None:
        return value
    try:
        return found(value[1:])
    except (zstandard.ZstdError, zlib.error) as exc:
        raise UnreadableValueError(f"a stored value does not decompress: {exc}") from None


def join_fields(fields: Mapping[str, str]) -> bytes:
    """Text fields as one value before compression: each field is its name, a newline, its length in bytes, a
    newline and its UTF-8 text (``surrogatepass``: JSON decoding may keep a lone surrogate, and the text is given
    back exactly)."""
    parts = []
    for name, value in fields.items():
        data = value.encode("utf-8", "surrogatepass")
        parts.append(b"%s\n%d\n%s" % (name.encode(), len(data), data))
    return b"".join(parts)


def _zlib_fields(data: bytes) -> bytes:
    compressor = next(c for most, c in _EVENT_COMPRESSORS if most is None or len(data) <= most)
    return _deflate(compressor, EVENT_MARK, data)


@dataclass(frozen=True)
class Packer:
    """A format values are written in (``CHAINER_STORE_COMPRESSION``): ``pack_json`` compresses an audit record's
    JSON, ``pack_joined`` an event's ``join_fields``."""

    name: str
    pack_json: Callable[[bytes], bytes]
    pack_joined: Callable[[bytes], bytes]

    def pack_record(self, record: Mapping[str, Any]) -> bytes:
        """An audit record as it is stored: ``record_json``, compressed."""
        return self.pack_json(record_json(record))

    def pack_fields(self, fields: Mapping[str, str]) -> bytes:
        """Text fields (an event's JSON, its payload, decisions …) as one compressed value."""
        return self.pack_joined(join_fields(fields))


ZLIB = Packer("zlib", lambda data: _deflate(_RECORD_COMPRESSOR, RECORD_MARK, data), _zlib_fields)
ZSTD = Packer(
    "zstd",
    lambda data: RECORD_ZSTD_MARK + _zstd.record.compress(data),
    lambda data: EVENT_ZSTD_MARK + _zstd.event.compress(data),
)
PACKERS = {p.name: p for p in (ZSTD, ZLIB)}  # the first is the default (chainer.settings.STORE_COMPRESSIONS)


def unpack_record(value: bytes | str) -> dict[str, Any]:
    """A stored audit record (compressed in either format, or JSON text) as the record; UnreadableValueError when it
    is damaged."""
    data = inflate(value) if isinstance(value, bytes) else value
    try:
        record = fastjson.loads(data)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise UnreadableValueError(f"a stored record is not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise UnreadableValueError(f"a stored record is a JSON {type(record).__name__}, not an object")
    return record


def record_of(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """The record an audit stream entry holds; a damaged one as a ``record.unreadable`` record saying why, so that one
    bad entry does not hide the rest of the log."""
    try:
        return unpack_record(fields.get(b"r") or fields.get("r") or b"{}")
    except UnreadableValueError as exc:
        return {"type": "record.unreadable", "error": str(exc)}


def unpack_fields(value: bytes) -> dict[str, str]:
    """The fields ``Packer.pack_fields`` stored, in either format."""
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
    return item_of(sid, record_of(fields))


def item_of(sid: Any, record: Mapping[str, Any]) -> dict[str, Any]:
    """The record of the audit stream entry ``sid`` with the entry's ``id`` and ISO ``time``."""
    sid_text = text(sid)
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
