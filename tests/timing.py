"""One timer for the tests that bound a cost by a ratio measured in one run (never by an absolute time)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_time(fn: Callable[..., Any], *args: Any, repeat: int = 3) -> tuple[float, Any]:
    """(the least wall time of ``repeat`` calls of ``fn(*args)``, the last call's result): the least is the run the
    machine's noise disturbed least."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times), out
