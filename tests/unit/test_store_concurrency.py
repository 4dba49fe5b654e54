"""Acceptance: concurrent writers on one SQLite file never lose an update and never see "database is locked".

This is the failure mode of stock SQLite settings under several server workers (BentoML #5551, mem0 #7192,
llama-stack #5344); the store's WAL + busy_timeout + BEGIN IMMEDIATE setup is what these tests pin down.
"""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from pydantic import BaseModel

import guardrails.detector as detector
from guardrails.detector import register
from guardrails.store import SettingsStore

PROCS, PER_PROC = 8, 500
THREADS, PER_THREAD = 8, 200


class Counter(BaseModel):
    n: int = 0


def _bump(settings: dict) -> dict:
    counter = settings.get("counter", {"n": 0})
    return {**settings, "counter": {"n": counter["n"] + 1}}


def _worker(db: str, n: int, start: threading.Barrier) -> None:
    """Runs in a spawned process: its own imports, engine and connections, like a separate server worker."""
    register("railguard.settings", "counter", Counter)  # the child has its own plugin registry
    with SettingsStore(db) as store:
        start.wait(timeout=120)  # start writing together, after every process has finished importing
        for _ in range(n):
            store.update("default", "alice", _bump, actor="worker")


@pytest.fixture(autouse=True)
def _counter_section(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the test section in this process only for the duration of one test."""
    monkeypatch.setitem(detector._local["railguard.settings"], "counter", Counter)


def _check(db: Path, expected: int) -> None:
    with SettingsStore(db) as store:
        got = store.get("default", "alice")
        assert got.settings["counter"]["n"] == expected
        assert got.version == expected
    conn = sqlite3.connect(db)
    try:
        versions = [v for (v,) in conn.execute("select version from settings_audit order by id")]
    finally:
        conn.close()
    assert len(versions) == expected
    assert versions == list(range(1, expected + 1))  # one audit row per write, in commit order


def test_processes_never_lose_updates(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    SettingsStore(db).close()  # create the file (WAL) before the writers race to open it
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(PROCS + 1)
    procs = [ctx.Process(target=_worker, args=(str(db), PER_PROC, start)) for _ in range(PROCS)]
    t_spawn = time.perf_counter()
    for p in procs:
        p.start()
    start.wait(timeout=120)
    t0 = time.perf_counter()
    for p in procs:
        p.join(timeout=300)
    elapsed = time.perf_counter() - t0
    assert [p.exitcode for p in procs] == [0] * PROCS
    print(f"\n{PROCS} processes x {PER_PROC} updates: {elapsed:.1f}s writing, "
          f"{time.perf_counter() - t_spawn:.1f}s including spawn")
    _check(db, PROCS * PER_PROC)


def test_threads_never_lose_updates(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    errors: list[BaseException] = []
    with SettingsStore(db) as store:
        start = threading.Barrier(THREADS)

        def run() -> None:
            try:
                start.wait(timeout=30)
                for _ in range(PER_THREAD):
                    store.update("default", "alice", _bump, actor="thread")
            except BaseException as exc:  # surface worker failures in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(THREADS)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        print(f"\n{THREADS} threads x {PER_THREAD} updates: {time.perf_counter() - t0:.1f}s")
    assert errors == []
    _check(db, THREADS * PER_THREAD)
