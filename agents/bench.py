"""`railguard bench` contribution: student-parser latency per command on this machine (CPU or GPU encoder)."""

from __future__ import annotations

import statistics
import time
from typing import Any


def bench(quick: bool = False) -> dict[str, Any]:
    """p50 latency of one `parse` call (MiniLM student) over the hand-written paraphrases (+ warm-up)."""
    from .parser import default_parser
    from .train import load_paraphrases

    parser = default_parser("minilm")
    texts = [s.text for s in load_paraphrases()]
    if quick:
        texts = texts[:20]
    for t in texts[:3]:
        parser.parse(t)  # warm-up: encoder load, lexicon build
    times, cpu = [], []
    for _ in range(1 if quick else 3):
        for t in texts:
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                parser.parse(t)
            except Exception:  # noqa: BLE001 - a bad command still counts as one parse
                pass
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    return {"parser_ms_p50": round(statistics.median(times), 2),
            "parser_cpu_ms_p50": round(statistics.median(cpu), 2), "parser_commands": len(times)}
