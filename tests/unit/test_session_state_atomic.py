"""Session state advanced atomically (`update_state`) and pruned by the store itself (`state_ttl`)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from guardrails.errors import ConfigError, InvalidInputError
from guardrails.store import SettingsStore
from guardrails.store.schema import session_state


def _increment(threads: int, per_thread: int, bump: Any) -> None:
    barrier = threading.Barrier(threads)

    def run() -> None:
        barrier.wait()
        for _ in range(per_thread):
            bump()

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)


def _count(raw: dict[str, Any] | None) -> dict[str, Any]:
    return {"n": (raw or {}).get("n", 0) + 1}


def test_update_state_never_loses_a_concurrent_update_including_the_first(tmp_path):
    store = SettingsStore(tmp_path / "atomic.db")
    try:
        _increment(8, 25, lambda: store.update_state("t", "u", "s", "k", _count))
        assert store.get_state("t", "u", "s", "k") == {"n": 200}
    finally:
        store.close()


def test_update_state_none_leaves_it_and_an_error_writes_nothing(tmp_path):
    store = SettingsStore(tmp_path / "noop.db")
    try:
        assert store.update_state("t", "u", "s", "k", lambda raw: None) is None
        assert store.get_state("t", "u", "s", "k") is None
        store.put_state("t", "u", "s", "k", {"n": 1})
        assert store.update_state("t", "u", "s", "k", lambda raw: None) == {"n": 1}

        def boom(raw: dict[str, Any] | None) -> dict[str, Any]:
            raise InvalidInputError("bad step")

        with pytest.raises(InvalidInputError):
            store.update_state("t", "u", "s", "k", boom)
        with pytest.raises(InvalidInputError):
            store.update_state("t", "u", "s", "k", lambda raw: ["not", "a", "dict"])  # type: ignore[arg-type,return-value]
        assert store.get_state("t", "u", "s", "k") == {"n": 1}
    finally:
        store.close()


def _age(store: SettingsStore, session: str, days: float) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.update(session_state).where(session_state.c.session_id == session)
                     .values(updated_at=datetime.now(UTC) - timedelta(days=days)))


def test_the_store_prunes_idle_state_itself_at_most_once_per_interval(tmp_path, monkeypatch):
    """An SDK embedding the store (no `railguard serve`, whose lifespan prunes hourly) must not grow forever."""
    from guardrails.store import state as state_module

    store = SettingsStore(tmp_path / "ttl.db", state_ttl=timedelta(days=30))
    try:
        store.put_state("t", "u", "old", "k", {"n": 1})  # the first write prunes (nothing yet)
        while store._prune_lock.locked():  # that first prune has finished
            time.sleep(0.01)
        _age(store, "old", 40)
        store.put_state("t", "u", "new", "k", {"n": 1})
        assert store.get_state("t", "u", "old", "k") is not None  # within the interval: not pruned again
        monkeypatch.setattr(state_module, "PRUNE_EVERY_S", 0.0)
        store.update_state("t", "u", "new", "k", _count)  # prunes in a background thread, off the write's path
        deadline = time.monotonic() + 10
        while store.get_state("t", "u", "old", "k") is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.get_state("t", "u", "old", "k") is None and store.get_state("t", "u", "new", "k") == {"n": 2}
    finally:
        store.close()
    keep = SettingsStore(tmp_path / "keep.db", state_ttl=None)
    try:
        keep.put_state("t", "u", "old", "k", {"n": 1})
        _age(keep, "old", 4000)
        keep.put_state("t", "u", "new", "k", {"n": 1})
        assert keep.get_state("t", "u", "old", "k") == {"n": 1}
    finally:
        keep.close()


def test_state_ttl_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RAILGUARD_STATE_TTL_DAYS", "0")
    with SettingsStore(tmp_path / "a.db") as s:
        assert s.state_ttl is None
    monkeypatch.setenv("RAILGUARD_STATE_TTL_DAYS", "2.5")
    with SettingsStore(tmp_path / "b.db") as s:
        assert s.state_ttl == timedelta(days=2.5)
    monkeypatch.delenv("RAILGUARD_STATE_TTL_DAYS")
    with SettingsStore(tmp_path / "c.db") as s:
        assert s.state_ttl == timedelta(days=30)
    for bad in ("-1", "soon", "inf"):
        monkeypatch.setenv("RAILGUARD_STATE_TTL_DAYS", bad)
        with pytest.raises(ConfigError, match="RAILGUARD_STATE_TTL_DAYS"):
            SettingsStore(tmp_path / "d.db")
    for bad in (timedelta(days=-1), 5, "30d"):
        with pytest.raises(ConfigError):
            SettingsStore(tmp_path / "e.db", state_ttl=bad)  # type: ignore[arg-type]
    for keep in (None, 0, timedelta(0)):
        with SettingsStore(tmp_path / "f.db", state_ttl=keep) as s:  # type: ignore[arg-type]
            assert s.state_ttl is None
    monkeypatch.setenv("RAILGUARD_STATE_TTL_DAYS", "1e10")
    with pytest.raises(ConfigError, match="36500"):
        SettingsStore(tmp_path / "g.db")


def test_close_waits_for_a_background_prune(tmp_path, monkeypatch):
    """No connection may be opened after close() returns: a prune running then is waited for."""
    from guardrails.store import state as state_module

    store = SettingsStore(tmp_path / "close.db", state_ttl=timedelta(days=1))
    real = SettingsStore.prune_state
    started = threading.Event()

    def slow_prune(self: SettingsStore, older_than: timedelta) -> int:
        started.set()
        time.sleep(0.5)
        return real(self, older_than)

    monkeypatch.setattr(SettingsStore, "prune_state", slow_prune)
    monkeypatch.setattr(state_module, "PRUNE_EVERY_S", 0.0)
    store.put_state("t", "u", "s", "k", {"n": 1})
    assert started.wait(5)
    store.close()
    assert not any(t.name == "railguard-state-prune" and t.is_alive() for t in threading.enumerate())


def test_an_existing_database_gets_the_pruning_index_and_pruning_uses_it(tmp_path, monkeypatch, caplog):
    """Added after session_state was first created: an older database gets it when opened (no schema bump: an
    older railguard reads the database as before); a role that may not create it is warned about, not refused."""
    import sqlite3

    path = tmp_path / "old.db"
    with SettingsStore(path) as s:
        s.put_state("t", "u", "s", "k", {"n": 1})
    with sqlite3.connect(path) as c:
        c.execute("DROP INDEX ix_session_state_updated_at")

    def refuse(self: Any, bind: Any, **kw: Any) -> None:
        raise sa.exc.ProgrammingError("CREATE INDEX", {}, PermissionError("permission denied"))

    monkeypatch.setattr(sa.Index, "create", refuse)
    with caplog.at_level("WARNING", logger="railguard.store"), SettingsStore(path) as s:
        assert s.get_state("t", "u", "s", "k") == {"n": 1}
    assert "cannot create index ix_session_state_updated_at" in caplog.text
    monkeypatch.undo()
    with SettingsStore(path) as s:
        assert "ix_session_state_updated_at" in {i["name"] for i in sa.inspect(s.engine).get_indexes("session_state")}
        cutoff = datetime.now(UTC) - timedelta(days=1)
        stmt = sa.delete(session_state).where(session_state.c.updated_at < cutoff)
        with s.engine.connect() as conn:
            sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(r) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        assert "ix_session_state_updated_at" in plan, plan
