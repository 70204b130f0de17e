"""Percentiles and summaries of latency samples (no numpy: the bench needs only the standard library)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0 to 100) of ``values`` by linear interpolation between closest ranks.

    ``values`` need not be sorted; ``math.inf`` entries (samples that never completed) sort last, so a
    percentile that falls among them is ``inf``. An empty sequence has no percentile: ``nan``.
    """
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not between 0 and 100")
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    if low == high or ordered[high] == ordered[low]:
        return ordered[low]
    if math.isinf(ordered[high]):
        return math.inf
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Iterable[float], scale: float = 1.0) -> dict[str, float | int]:
    """count, mean, p50, p90, p99, max of ``values`` times ``scale`` (e.g. 1000 for seconds → ms).

    The mean is over the finite values; ``missing`` counts the infinite ones (never completed).
    """
    data = [v * scale for v in values]
    finite = [v for v in data if math.isfinite(v)]
    return {
        "count": len(data),
        "missing": len(data) - len(finite),
        "mean": sum(finite) / len(finite) if finite else math.nan,
        "p50": percentile(data, 50),
        "p90": percentile(data, 90),
        "p99": percentile(data, 99),
        "max": max(data) if data else math.nan,
    }


def json_safe(value: object) -> object:
    """``value`` with every non-finite float replaced by a string (JSON has no inf or nan)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
