"""The stored formats of compressed values: their dictionaries never change, and what was written reads back.

A compressed record or event can only be read with the dictionary it was written with, so a dictionary edited in
place would make every value already in Redis unreadable. These tests pin each dictionary by its digest, pin values
written by each format (zlib, the first; zstd, the second), and round-trip what chainer writes for deliveries of
every provider (the samples the zstd dictionaries were trained on, scripts/train_dictionaries.py) in both.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from chainer.store import codec

DICTIONARIES = Path(codec.__file__).parent / "dictionaries"
ROOT = Path(__file__).resolve().parents[2]
PINNED = {
    "records-1.dict": "f0f0a6c005ed85f1d24d72ddfc9f96df49677ef0d594d6e33aba34c2e8c76d3b",
    "events-1.dict": "c01db58504deeebff797ce0004e12d00d025526158852fa5eb9e79d62bcaa4d1",
    "records-2.zdict": "7f34c96b044391011806ba27c629abe49bc1656476524263e2e9f69a7492211a",
    "events-2.zdict": "fb12376e43de2eb91153891b92ad2fe344d5d9bb9e451029d4a3a152d7be57e4",
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_a_dictionary_is_never_changed_in_place(name: str) -> None:
    assert hashlib.sha256((DICTIONARIES / name).read_bytes()).hexdigest() == PINNED[name], (
        f"{name} changed: values already stored cannot be read with it; add a new dictionary file and marker instead"
    )


def test_every_dictionary_file_is_pinned() -> None:
    assert sorted(p.name for p in DICTIONARIES.iterdir() if p.suffix in (".dict", ".zdict")) == sorted(PINNED)


def test_a_record_written_by_the_first_format_reads_back() -> None:
    stored = bytes.fromhex("01837b0a6429ee104e4c4a06d9010996c40250a18c143200")
    assert codec.unpack_record(stored) == {"type": "rule.matched", "event_id": "evt_abc", "rule": "api", "actions": 1}


def test_event_fields_written_by_the_first_format_read_back() -> None:
    stored = bytes.fromhex("0203070997a119174a105628d5162456e6e427a6709903651295ac0c6b01")
    assert codec.unpack_fields(stored) == {"event": '{"provider":"x"}', "payload": '{"a":1}'}


def test_a_record_written_by_the_zstd_format_reads_back() -> None:
    stored = bytes.fromhex("032045b50000286162223a2204fc8c8502e21b8aa37499a34c586b04")
    assert codec.unpack_record(stored) == {"type": "rule.matched", "event_id": "evt_abc", "rule": "api", "actions": 1}


def test_event_fields_written_by_the_zstd_format_read_back() -> None:
    stored = bytes.fromhex("04202a050100b0313678227d7061796c6f61640a370a7b2261223a317d02ccae057b9d42780a")
    assert codec.unpack_fields(stored) == {"event": '{"provider":"x"}', "payload": '{"a":1}'}


def test_each_format_writes_its_own_marks() -> None:
    assert list(codec.PACKERS) == ["zstd", "zlib"]
    assert codec.ZSTD.pack_record({"type": "x"})[:1] == codec.RECORD_ZSTD_MARK
    assert codec.ZSTD.pack_fields({"a": "b"})[:1] == codec.EVENT_ZSTD_MARK
    assert codec.ZLIB.pack_record({"type": "x"})[:1] == codec.RECORD_MARK
    assert codec.ZLIB.pack_fields({"a": "b"})[:1] == codec.EVENT_MARK


RECORD = {"type": "webhook.received", "event_id": "evt_abc", "project": "acme/lib", "branch": "main"}


def _damaged() -> dict[str, bytes]:
    zstd, zlib_ = codec.ZSTD.pack_record(RECORD), codec.ZLIB.pack_record(RECORD)
    huge = bytearray(codec.ZSTD.pack_fields({"payload": "x" * 100}))
    return {
        "zstd cut short": zstd[: len(zstd) // 2],
        "zlib cut short": zlib_[: len(zlib_) // 2],
        "a marker alone": codec.RECORD_ZSTD_MARK,
        "zstd flipped": zstd[:1] + bytes(b ^ 0x5A for b in zstd[1:]),
        "not JSON": b"{not json",
        "JSON but no object": b"[1, 2]",
        # a frame header claiming 2**40 bytes (single-segment frame, 8-byte content size)
        "a huge claimed size": bytes(huge[:1]) + bytes([0xE0]) + (2**40).to_bytes(8, "little") + bytes(huge[3:]),
    }


@pytest.mark.parametrize("name", sorted(_damaged()))
def test_a_damaged_record_is_unreadable_not_a_crash(name: str) -> None:
    """Damaged stored values raise UnreadableValueError (never zstd's or zlib's own errors, nor a gigabyte
    allocation); the audit log shows them as ``record.unreadable`` with the reason."""
    value = _damaged()[name]
    with pytest.raises(codec.UnreadableValueError):
        codec.unpack_record(value)
    item = codec.stream_item(b"1700000000000-0", {b"r": value})
    assert item["type"] == "record.unreadable" and item["id"] == "1700000000000-0" and item["error"]


def test_damaged_event_fields_are_unreadable() -> None:
    packed = codec.ZSTD.pack_fields({"event": "{}", "payload": "x" * 1000})
    with pytest.raises(codec.UnreadableValueError):
        codec.unpack_fields(packed[:-5])


@pytest.mark.parametrize("packer", [codec.ZSTD, codec.ZLIB], ids=lambda p: p.name)
@pytest.mark.parametrize("size", [0, 100, 5_000, 20_000, 70_000])
def test_fields_of_every_size_round_trip_through_their_compressor(packer: codec.Packer, size: int) -> None:
    text = "".join(chr(0x20 + (i * 7919) % 0x5F) for i in range(size)) + "\ud800é"
    fields = {"payload": text, "event": "{}"}
    packed = packer.pack_fields(fields)
    assert packed[:1] == (codec.EVENT_ZSTD_MARK if packer is codec.ZSTD else codec.EVENT_MARK)
    assert codec.unpack_fields(packed) == fields


def _training_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_dictionaries", ROOT / "scripts" / "train_dictionaries.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_what_chainer_writes_for_every_provider_round_trips_in_both_formats_and_zstd_is_smaller() -> None:
    """The training script's samples (other deliveries than it trains on): accept and worker records and stored
    event fields for Codeship, CircleCI, GitHub and Buildkite deliveries."""
    records, events = _training_script().samples(seed=11, count=120)
    decoded = [json.loads(r) for r in records]
    assert {r["provider"] for r in decoded if "provider" in r} == {"codeship", "circleci", "github", "buildkite"}
    assert {"webhook.received", "rule.not_matched", "action.queued", "attempt.succeeded"} <= {
        r["type"] for r in decoded
    }
    sizes: dict[str, int] = {}
    for packer in (codec.ZSTD, codec.ZLIB):
        packed_records = [packer.pack_json(r) for r in records]
        packed_events = [packer.pack_joined(e) for e in events]
        assert [codec.inflate(p) for p in packed_records] == records
        assert [codec.inflate(p) for p in packed_events] == events
        sizes[packer.name] = sum(map(len, packed_records + packed_events))
    assert sizes["zstd"] < sizes["zlib"], sizes


def test_json_text_written_before_compression_reads_as_it_is() -> None:
    assert codec.unpack_record('{"type":"webhook.received"}') == {"type": "webhook.received"}
    assert codec.inflate(b'{"a":1}') == b'{"a":1}'
