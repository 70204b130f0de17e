"""The stored format of compressed values: its preset dictionaries never change, and what was written reads back.

A compressed record or event can only be inflated with the dictionary it was deflated with, so a dictionary edited in
place would make every value already in Redis unreadable. These tests pin each dictionary by its digest and pin
values written by the first version of the format.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from chainer.store import codec

DICTIONARIES = Path(codec.__file__).parent / "dictionaries"
PINNED = {
    "records-1.dict": "f0f0a6c005ed85f1d24d72ddfc9f96df49677ef0d594d6e33aba34c2e8c76d3b",
    "events-1.dict": "c01db58504deeebff797ce0004e12d00d025526158852fa5eb9e79d62bcaa4d1",
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_a_dictionary_is_never_changed_in_place(name: str) -> None:
    assert hashlib.sha256((DICTIONARIES / name).read_bytes()).hexdigest() == PINNED[name], (
        f"{name} changed: values already stored cannot be read with it; add a new dictionary file and marker instead"
    )


def test_every_dictionary_file_is_pinned() -> None:
    assert sorted(p.name for p in DICTIONARIES.iterdir() if p.suffix == ".dict") == sorted(PINNED)


def test_a_record_written_by_the_first_format_reads_back() -> None:
    stored = bytes.fromhex("01837b0a6429ee104e4c4a06d9010996c40250a18c143200")
    assert codec.unpack_record(stored) == {"type": "rule.matched", "event_id": "evt_abc", "rule": "api", "actions": 1}


def test_event_fields_written_by_the_first_format_read_back() -> None:
    stored = bytes.fromhex("0203070997a119174a105628d5162456e6e427a6709903651295ac0c6b01")
    assert codec.unpack_fields(stored) == {"event": '{"provider":"x"}', "payload": '{"a":1}'}


@pytest.mark.parametrize("size", [0, 100, 5_000, 20_000, 70_000])
def test_fields_of_every_size_round_trip_through_their_compressor(size: int) -> None:
    text = "".join(chr(0x20 + (i * 7919) % 0x5F) for i in range(size)) + "\ud800é"
    fields = {"payload": text, "event": "{}"}
    packed = codec.pack_fields(fields)
    assert packed.startswith(codec.EVENT_MARK)
    assert codec.unpack_fields(packed) == fields


def test_json_text_written_before_compression_reads_as_it_is() -> None:
    assert codec.unpack_record('{"type":"webhook.received"}') == {"type": "webhook.received"}
    assert codec.inflate(b'{"a":1}') == b'{"a":1}'
