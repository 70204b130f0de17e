"""Python's cyclic garbage collector paused around work that makes many objects that stay alive."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off inside, back on after (unless it was off already).

    Reading a big rules file, or drawing its project graph, makes millions of objects that stay alive, and
    the collector would walk them again and again as they pile up: three quarters of the time of a load of
    10 000 rules (3.8 of 4.9 s, PyYAML's own C loader as much as ours), two thirds of drawing its graph.
    Nothing made there needs it: the only cycles, self-containing YAML aliases, wait for the next collection.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
