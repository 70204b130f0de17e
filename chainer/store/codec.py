"""How values go into Redis and come back: times, audit records, stream entries, hashes, arq jobs."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def now_ms() -> int:
    return int(time.time() * 1000)


def ms_to_iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_record(record: Mapping[str, Any]) -> str:
    """An audit record as compact JSON, without empty fields."""
    return json.dumps({k: v for k, v in record.items() if v is not None}, separators=(",", ":"), default=str)


def text(value: Any) -> str:
    """A Redis reply (bytes, or already text or a number) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def job_serializer(obj: Any) -> bytes:
    """arq serializer: JSON, never pickle (anyone who can write Redis must not be able to run code)."""
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


def job_deserializer(data: bytes) -> Any:
    return json.loads(data)


def decode_hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}


def stream_item(sid: Any, fields: Mapping[Any, Any]) -> dict[str, Any]:
    """An audit stream entry as the record it holds, with its stream ``id`` and ISO ``time``."""
    sid_text = text(sid)
    raw = fields.get(b"r") or fields.get("r") or b"{}"
    record: dict[str, Any] = json.loads(raw)
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
