"""The same store against a real PostgreSQL (the multi-instance deployment). CI starts one
(`scripts/start_postgres`) and sets RAILGUARD_TEST_PG_URL, so there these tests must run, never skip."""

from __future__ import annotations

import multiprocessing as mp
import os
import uuid

import pytest
import sqlalchemy as sa

from guardrails.errors import ConfigError, StoreError, VersionConflictError
from guardrails.store import SettingsStore

PG_URL = os.environ.get("RAILGUARD_TEST_PG_URL")


@pytest.fixture
def pg() -> SettingsStore:
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must provide RAILGUARD_TEST_PG_URL (scripts/start_postgres)")
        pytest.skip("no PostgreSQL configured (set RAILGUARD_TEST_PG_URL)")
    with SettingsStore(PG_URL) as store:
        yield store


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"  # tests share one database: a fresh tenant isolates each run


def test_crud_versioning_and_audit(pg):
    t = _tenant()
    s1 = pg.put(t, "alice", {"guard": {"shadow": True}}, expected_version=0, actor="test")
    assert s1.version == 1
    with pytest.raises(VersionConflictError):
        pg.put(t, "alice", {"guard": {"shadow": False}}, expected_version=0, actor="test")
    s2 = pg.update_section(t, "alice", "guard", lambda g: {**g, "disabled_detectors": ["pii"]}, actor="test")
    assert s2.version == 2 and s2.settings["guard"]["disabled_detectors"] == ["pii"]
    assert [e.version for e in pg.history(t, "alice")] == [2, 1]
    with pytest.raises(ConfigError):
        pg.update_section(t, "alice", "guard", lambda g: {**g, "thresholds": {"x": 3}}, actor="test")
    assert pg.get(t, "alice").version == 2
    assert pg.get(t, "bob").version == 0 and pg.list_users(t) == ["alice"]
    pg.delete(t, "alice", actor="test")
    assert pg.get(t, "alice").version == 0


def test_session_state_isolated(pg):
    t = _tenant()
    pg.put_state(t, "alice", "s1", "velocity", {"S": 1.0})
    pg.put_state(t, "alice", "s1", "velocity", {"S": 2.0})
    pg.put_state(t, "bob", "s1", "velocity", {"S": 9.0})
    assert pg.get_state(t, "alice", "s1", "velocity") == {"S": 2.0}
    assert pg.get_state(t, "alice", "s2", "velocity") is None
    assert pg.get_state(t, "bob", "s1", "velocity") == {"S": 9.0}


def _bump(settings: dict) -> dict:
    g = settings.get("guard", {})
    return {**settings, "guard": {**g, "disabled_detectors": [*g.get("disabled_detectors", []), "x"]}}


def _writer(url: str, tenant: str, n: int) -> None:
    with SettingsStore(url) as store:
        for _ in range(n):
            store.update(tenant, "alice", _bump, actor="worker")


def test_concurrent_processes_lose_no_update(pg):
    t, procs_n, per = _tenant(), 4, 50
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(PG_URL, t, per)) for _ in range(procs_n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * procs_n
    final = pg.get(t, "alice")
    assert final.version == procs_n * per
    assert len(final.settings["guard"]["disabled_detectors"]) == procs_n * per
    with pg.engine.connect() as conn:
        n_audit = conn.execute(sa.text("select count(*) from settings_audit where tenant_id = :t"), {"t": t}).scalar()
    assert n_audit == procs_n * per


def _open_fresh(url: str, q) -> None:
    from guardrails.service.auth import KeyRing

    try:
        with SettingsStore(url) as store:
            KeyRing(store.engine)
        q.put("ok")
    except Exception as exc:  # reported to the parent, which asserts on it
        q.put(repr(exc)[:300])


def test_instances_starting_together_on_a_fresh_database_all_open(pg):
    """Several instances (or service workers) starting at once on a database without railguard's tables: each
    ran CREATE TABLE and all but one died with a duplicate key in pg_type (2 of 5 trials, 6 processes). The
    creation is now serialised; the schema version is recorded once, and a newer one is refused."""
    from guardrails.store.schema import SCHEMA_VERSION

    schema = f"fresh_{uuid.uuid4().hex[:10]}"
    with pg.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    try:
        for _ in range(2):  # fresh, then reopened by many at once
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            procs = [ctx.Process(target=_open_fresh, args=(url, q)) for _ in range(6)]
            for p in procs:
                p.start()
            for p in procs:
                p.join(timeout=120)
            assert [q.get(timeout=5) for _ in procs] == ["ok"] * 6
        with pg.engine.begin() as conn:
            rows = conn.execute(sa.text(f"SELECT component, version FROM {schema}.railguard_schema "
                                        "ORDER BY component")).all()
            # each recorded once (the second: the audit rename's marker, test_audit_scrub.py)
            assert [tuple(r) for r in rows] == [("audit_paths_named", 1), ("settings_store", SCHEMA_VERSION)]
            conn.execute(sa.text(f"UPDATE {schema}.railguard_schema SET version = version + 1"))
        with pytest.raises(StoreError, match="newer railguard"):
            SettingsStore(url)
    finally:
        with pg.engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


def test_update_state_is_atomic_across_connections_including_the_first_write(pg):
    """Two requests of one session at once (a double submit) must not lose a turn: the advisory lock covers the
    row's first write too (SELECT ... FOR UPDATE locks nothing while there is no row)."""
    import threading

    t = _tenant()
    barrier = threading.Barrier(6)

    def run() -> None:
        barrier.wait()
        for _ in range(10):
            pg.update_state(t, "u", "s", "k", lambda raw: {"n": (raw or {}).get("n", 0) + 1})

    ts = [threading.Thread(target=run) for _ in range(6)]
    for th in ts:
        th.start()
    for th in ts:
        th.join(60)
    assert pg.get_state(t, "u", "s", "k") == {"n": 60}


def test_erase_user_removes_one_users_rows_only(pg):
    t = _tenant()
    for user in ("erin", "bob"):
        pg.update_section(t, user, "guard", lambda g: {**g, "shadow": True}, actor="t")
        pg.put_state(t, user, "s1", "velocity", {"turn": 1})
    assert pg.erase_user(t, "erin") == {"settings": 1, "session_state": 1, "audit": 1}
    assert pg.get(t, "erin").version == 0 and pg.history(t, "erin") == []
    assert pg.get(t, "bob").version == 1 and pg.get_state(t, "bob", "s1", "velocity") == {"turn": 1}


def test_old_audit_paths_are_renamed_on_postgres_too(pg):
    """Session 41's audit rename (`guardrails.store.audit_scrub`) on PostgreSQL: batches in their own transactions,
    the marker row, and the command for rows written after it."""
    import json
    from datetime import UTC, datetime

    from guardrails import name_hash
    from guardrails.store.audit_scrub import MARKER
    from guardrails.store.schema import schema_info, settings_audit

    t = _tenant()
    old = ["moderation.categories.posts-about-jane-doe-s-divorce.action", "moderation.categories.spam.threshold"]
    renamed = (f"moderation.categories.{name_hash('posts-about-jane-doe-s-divorce')}.action", old[1])
    with pg.engine.begin() as conn:
        conn.execute(sa.delete(schema_info).where(schema_info.c.component == MARKER))
        conn.execute(sa.insert(settings_audit).values(tenant_id=t, user_id="alice", actor="cli", version=1,
                                                      at=datetime.now(UTC), op="put", changed=json.dumps(old)))
    with SettingsStore(PG_URL) as again:
        assert again.audit_rows_renamed >= 1
        assert again.history(t, "alice")[0].changed == renamed
        with again.engine.connect() as conn:
            assert conn.execute(sa.select(schema_info).where(schema_info.c.component == MARKER)).first()
        with again.engine.begin() as conn:  # an older worker writes another after the marker
            conn.execute(sa.insert(settings_audit).values(tenant_id=t, user_id="bob", actor="cli", version=1,
                                                          at=datetime.now(UTC), op="put", changed=json.dumps(old)))
        assert again.scrub_audit() >= 1 and again.history(t, "bob")[0].changed == renamed
