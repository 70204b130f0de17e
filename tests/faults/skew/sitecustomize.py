"""Test-only: a process started with this folder on PYTHONPATH and ``CHAINER_TEST_CLOCK_SKEW_SECONDS`` set sees
its wall clock (``time.time``, ``time.time_ns``) that many seconds off, as a host with a wrong clock would. The
monotonic clock and Redis's ``TIME`` are untouched. Imported by ``site`` at interpreter start, before chainer
or arq import ``time``."""

from __future__ import annotations

import os
import time

_SKEW = float(os.environ.get("CHAINER_TEST_CLOCK_SKEW_SECONDS") or 0)
if _SKEW:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _SKEW
    time.time_ns = lambda: _time_ns() + int(_SKEW * 1_000_000_000)
