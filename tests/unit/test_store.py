"""Settings store: CRUD, versioning, audit privacy, validation, failure modes, session state, async twins.

Everything runs against real SQLite files in tmp_path: the behaviours under test (locking, WAL, corrupt
files, persistence across instances) only exist on a real database.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import sys
import time
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, ClassVar

import platformdirs
import pytest
from pydantic import BaseModel, Field

import guardrails.detector as detector
from guardrails.decision import name_hash
from guardrails.errors import ConfigError, InvalidInputError, StoreError, UnknownUserError, VersionConflictError
from guardrails.store import (
    AuditEntry,
    GuardSettings,
    SettingsStore,
    StoredSettings,
    changed_paths,
    default_url,
    validate_sections,
)

SECRET = "my-bank-pin-is-4242-xyzzy"


class Category(BaseModel):
    block: bool = False


class Moderation(BaseModel):
    """Stand-in for the moderation plugin's section: free-text examples a user wrote themselves, and categories
    the user names, but for one the section declares its own (the audit trail shows the others hashed)."""

    audit_public_keys: ClassVar[dict[str, frozenset[str]]] = {"categories": frozenset({"crypto"})}

    categories: dict[str, Category] = Field(default_factory=dict)
    examples: list[str] = Field(default_factory=list)


class Counter(BaseModel):
    n: int = 0


@pytest.fixture(autouse=True)
def _plugin_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register test sections the way a plugin would, and undo it after each test."""
    local = detector._local["railguard.settings"]
    monkeypatch.setitem(local, "moderation", Moderation)
    monkeypatch.setitem(local, "counter", Counter)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "settings.db"


@pytest.fixture
def store(db: Path):
    with SettingsStore(db) as s:
        yield s


def _raw(db: Path, sql: str, *args: object) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _sha(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# -- CRUD and versioning -------------------------------------------------------------------------------------


def test_unknown_user_reads_as_version_zero_and_creates_nothing(store: SettingsStore, db: Path) -> None:
    got = store.get("default", "alice")
    assert got == StoredSettings(tenant_id="default", user_id="alice", version=0)
    assert not store.exists("default", "alice")
    assert _raw(db, "select count(*) from user_settings") == [(0,)]
    with pytest.raises(UnknownUserError, match="alice"):
        store.require("default", "alice")
    with pytest.raises(UnknownUserError):
        store.delete("default", "alice", actor="admin")
    assert store.history("default", "alice") == []


def test_put_get_roundtrip_fills_defaults_and_bumps_version(store: SettingsStore) -> None:
    first = store.put("default", "alice", {"guard": {"shadow": True}}, expected_version=0, actor="admin")
    assert first.version == 1
    assert first.settings == {"guard": {"shadow": True, "disabled_detectors": [], "thresholds": {}}}
    assert first.updated_at is not None and first.updated_at.tzinfo is not None
    assert store.get("default", "alice") == first
    assert store.require("default", "alice") == first
    second = store.put("default", "alice", {"guard": {"thresholds": {"pii": 0.7}}}, expected_version=1,
                       actor="admin")
    assert second.version == 2
    assert store.get("default", "alice").section("guard")["thresholds"] == {"pii": 0.7}
    assert store.get("default", "alice").section("nope") == {}


def test_put_version_conflicts_leave_data_untouched(store: SettingsStore) -> None:
    store.put("default", "alice", {"guard": {"shadow": True}}, expected_version=0, actor="a")
    with pytest.raises(VersionConflictError) as err:
        store.put("default", "alice", {"guard": {}}, expected_version=0, actor="a")  # must not exist
    assert (err.value.expected, err.value.actual) == (0, 1)
    with pytest.raises(VersionConflictError):
        store.put("default", "alice", {"guard": {}}, expected_version=5, actor="a")
    with pytest.raises(VersionConflictError):
        store.put("default", "bob", {"guard": {}}, expected_version=1, actor="a")  # absent user is version 0
    got = store.get("default", "alice")
    assert got.version == 1 and got.settings["guard"]["shadow"] is True
    assert not store.exists("default", "bob")
    assert len(store.history("default", "alice")) == 1


def test_update_and_update_section(store: SettingsStore) -> None:
    r = store.update("default", "alice", lambda s: {**s, "counter": {"n": 1}}, actor="a")
    assert r.version == 1 and r.settings == {"counter": {"n": 1}}
    r = store.update_section("default", "alice", "counter", lambda c: {"n": c["n"] + 1}, actor="a")
    assert r.version == 2 and r.settings["counter"] == {"n": 2}
    r = store.update_section("default", "alice", "guard", lambda g: {**g, "shadow": True}, actor="a")
    assert r.version == 3 and r.settings["guard"]["shadow"] is True and r.settings["counter"] == {"n": 2}

    def forgets_to_return(settings: dict) -> Any:  # fn gets a copy: mutating it alone changes nothing
        settings.clear()

    with pytest.raises(ConfigError, match="must return"):
        store.update("default", "alice", forgets_to_return, actor="a")
    assert store.get("default", "alice").version == 3


def test_list_users_is_per_tenant_and_sorted(store: SettingsStore) -> None:
    for tenant, user in [("default", "carol"), ("default", "alice"), ("acme", "alice"), ("acme", "zed")]:
        store.put(tenant, user, {}, expected_version=0, actor="a")
    assert store.list_users() == ["alice", "carol"]
    assert store.list_users("acme") == ["alice", "zed"]
    assert store.list_users("nobody") == []
    store.put("acme", "alice", {"guard": {"shadow": True}}, expected_version=1, actor="a")
    assert store.get("default", "alice").settings == {}  # same user id, other tenant: separate row


def test_delete_is_audited_and_user_can_be_recreated(store: SettingsStore) -> None:
    store.put("default", "alice", {"guard": {"shadow": True}}, expected_version=0, actor="admin")
    store.delete("default", "alice", actor="gdpr-bot")
    assert store.get("default", "alice").version == 0 and not store.exists("default", "alice")
    hist = store.history("default", "alice")
    assert [h.op for h in hist] == ["delete", "put"]
    assert hist[0].actor == "gdpr-bot" and hist[0].digest is None
    assert "guard.shadow" in hist[0].changed
    again = store.put("default", "alice", {}, expected_version=0, actor="admin")
    assert again.version == 2  # continues after the deleted row's version 1 (never reused)


# -- audit trail ----------------------------------------------------------------------------------------------


def test_audit_rows_hold_paths_digest_actor_and_utc_time(store: SettingsStore) -> None:
    a = store.put("default", "alice", {"moderation": {"categories": {"crypto": {"block": True}}}},
                  expected_version=0, actor="user:alice")
    b = store.update_section("default", "alice", "moderation",
                             lambda m: {**m, "categories": {**m["categories"], "gambling": {"block": True}}},
                             actor="user:alice")
    c = store.update_section("default", "alice", "guard", lambda g: {"thresholds": {"pii": 0.2}}, actor="ops")
    hist = store.history("default", "alice")
    assert all(isinstance(h, AuditEntry) for h in hist)
    assert [h.version for h in hist] == [3, 2, 1]
    assert [h.op for h in hist] == ["update", "update", "put"]
    assert [h.actor for h in hist] == ["ops", "user:alice", "user:alice"]
    assert hist[2].changed == ("moderation.categories.crypto.block", "moderation.examples")  # defaults too
    assert hist[1].changed == (f"moderation.categories.{name_hash('gambling')}.block",)  # a name the user chose
    assert hist[0].changed == ("guard.disabled_detectors", "guard.shadow", "guard.thresholds.pii")
    assert [h.digest for h in hist] == [_sha(c.settings), _sha(b.settings), _sha(a.settings)]
    assert all(h.at.tzinfo == UTC for h in hist)
    assert len(store.history("default", "alice", limit=1)) == 1
    with pytest.raises(InvalidInputError):
        store.history("default", "alice", limit=0)


def test_audit_never_stores_values_or_free_text(store: SettingsStore, db: Path) -> None:
    settings = {"moderation": {"examples": [f"please never show me {SECRET}"],
                               "categories": {f"stuff about {SECRET}": {"block": True}}}}
    store.put("default", "alice", settings, expected_version=0, actor="user:alice")
    store.update_section("default", "alice", "moderation", lambda m: {**m, "examples": [SECRET]}, actor="u")

    # 1) the audit rows, column by column, never contain the secret (nor the free-text key)
    rows = _raw(db, "select * from settings_audit")
    assert len(rows) == 2
    assert SECRET not in repr(rows) and "stuff about" not in repr(rows)
    changed = [tuple(json.loads(r[0])) for r in _raw(db, "select changed from settings_audit order by id")]
    assert changed[1] == ("moderation.examples",)
    assert changed[0][0].startswith("moderation.categories.#")  # free-text key is hashed, not written
    assert all(SECRET not in str(h) for h in store.history("default", "alice"))

    # 2) sanity for the byte-level check: the settings row itself legitimately holds the secret ...
    store.close()
    _raw(db, "pragma wal_checkpoint(TRUNCATE)")
    assert SECRET.encode() in db.read_bytes()

    # 3) ... and once that row is deleted and the file compacted, no byte of the whole database holds it,
    # while the audit rows are all still there: the audit table never had it.
    with SettingsStore(db) as s2:
        s2.delete("default", "alice", actor="gdpr-bot")
    conn = sqlite3.connect(db)
    conn.execute("pragma wal_checkpoint(TRUNCATE)")
    conn.execute("vacuum")
    conn.close()
    blobs = [db.read_bytes()] + [p.read_bytes() for p in db.parent.glob(db.name + "-*")]
    assert all(SECRET.encode() not in b and b"stuff about" not in b for b in blobs)
    assert _raw(db, "select count(*) from settings_audit") == [(3,)]


def test_database_errors_never_echo_values(store: SettingsStore, db: Path) -> None:
    """A failing write must not put the settings (user text) into the exception text, which gets logged."""
    store.put("default", "alice", {}, expected_version=0, actor="a")
    _raw(db, "create trigger no_updates before update on user_settings begin select raise(abort, 'boom'); end")
    with pytest.raises(StoreError, match="boom") as err:
        store.update("default", "alice", lambda s: {"moderation": {"examples": [SECRET]}}, actor="a")
    assert SECRET not in str(err.value) and SECRET not in str(err.value.__cause__)
    assert store.get("default", "alice").version == 1
    # a constraint failure on first insert is a StoreError, not mistaken for a lost version race
    _raw(db, "create trigger no_inserts before insert on user_settings begin select raise(abort, 'nope'); end")
    with pytest.raises(StoreError, match="nope") as err2:
        store.put("default", "bob", {"moderation": {"examples": [SECRET]}}, expected_version=0, actor="a")
    assert not isinstance(err2.value, VersionConflictError) and SECRET not in str(err2.value.__cause__)


class _Section(BaseModel):
    b: list[int] = Field(default_factory=list)
    x: int = 0
    n: int | bool = 0


def test_changed_paths_reports_containers_not_elements() -> None:
    models = {"a": _Section, "g": _Section}
    assert changed_paths({"a": {"b": [1, 2]}}, {"a": {"b": [1, 3]}}, models) == ["a.b"]
    assert changed_paths({"a": {"x": 1}}, {"a": {"x": 1}}, models) == []
    assert changed_paths({}, {"g": {}}, models) == ["g"]
    assert changed_paths({"a": {"n": 1}}, {"a": {"n": True}}, models) == ["a.n"]


# -- section validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"nonsense": {}}, "unknown settings section 'nonsense'"),
        ({"guard": {"thresholds": {"pii": 1.5}}}, "thresholds must lie in"),
        ({"guard": {"thresholds": {"pii": -0.1}}}, "thresholds must lie in"),
        ({"guard": {"thresholds": {"pii": True}}}, "thresholds.pii"),  # not silently 1.0
        ({"guard": {"thresholds": {"pii": "0.7"}}}, "thresholds.pii"),
        ({"guard": {"shaddow": True}}, "shaddow"),
        ({"guard": ["not", "an", "object"]}, "must be an object"),
        ({"counter": {"n": "many"}}, "counter"),
    ],
)
def test_invalid_settings_write_nothing(store: SettingsStore, db: Path, settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        store.put("default", "alice", settings, expected_version=0, actor="a")
    assert store.get("default", "alice").version == 0
    store.put("default", "alice", {"guard": {"shadow": True}}, expected_version=0, actor="a")
    with pytest.raises(ConfigError):
        store.put("default", "alice", settings, expected_version=1, actor="a")
    with pytest.raises(ConfigError):
        store.update("default", "alice", lambda s: {**s, **settings}, actor="a")
    got = store.get("default", "alice")
    assert got.version == 1 and got.settings["guard"]["shadow"] is True
    assert _raw(db, "select count(*) from settings_audit") == [(1,)]


def test_validate_sections_uses_registry_and_normalises() -> None:
    out = validate_sections({"guard": GuardSettings(shadow=True), "moderation": {"examples": ["x"]}})
    assert out == {"guard": {"shadow": True, "disabled_detectors": [], "thresholds": {}},
                   "moderation": {"categories": {}, "examples": ["x"]}}
    with pytest.raises(ConfigError, match="mapping"):
        validate_sections(["guard"])  # type: ignore[arg-type]


def test_invalid_keys_and_values_are_rejected(store: SettingsStore) -> None:
    for tenant, user in [("default", ""), ("", "alice"), ("default", "x" * 257), ("default", "bad\nid"),
                         ("default", 42)]:
        with pytest.raises(InvalidInputError):
            store.get(tenant, user)  # type: ignore[arg-type]
    assert store.get("default", "x" * 256).version == 0
    with pytest.raises(InvalidInputError, match="actor"):
        store.put("default", "alice", {}, expected_version=0, actor="")
    with pytest.raises(InvalidInputError):
        store.put_state("default", "alice", "s1", "k", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        store.put_state("default", "alice", "", "k", {})
    small = SettingsStore(store.location, max_value_bytes=100)
    with pytest.raises(InvalidInputError, match="larger"):
        small.put("default", "alice", {"moderation": {"examples": ["x" * 200]}}, expected_version=0, actor="a")
    small.close()


# -- opening: URLs, defaults, bad files -----------------------------------------------------------------------


def test_sqlite_pragmas_are_set_on_every_connection(db: Path) -> None:
    with SettingsStore(db, busy_timeout_ms=1234) as s, s.engine.connect() as conn:
        pragma = {p: conn.exec_driver_sql(f"pragma {p}").scalar()
                  for p in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")}
    assert pragma == {"journal_mode": "wal", "busy_timeout": 1234, "synchronous": 1, "foreign_keys": 1}
    with SettingsStore(db) as s, s.engine.connect() as conn:
        assert conn.exec_driver_sql("pragma busy_timeout").scalar() == 30000


def test_writes_take_the_write_lock_up_front(store: SettingsStore, db: Path) -> None:
    """BEGIN IMMEDIATE: while update's fn runs (after only a SELECT) nobody else can start writing."""
    store.put("default", "alice", {"counter": {"n": 0}}, expected_version=0, actor="a")
    seen: list[str] = []

    def fn(settings: dict) -> dict:
        other = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            other.execute("begin immediate")
            seen.append("other writer got the lock")
            other.execute("rollback")
        except sqlite3.OperationalError as exc:
            seen.append(str(exc))
        finally:
            other.close()
        return {"counter": {"n": settings["counter"]["n"] + 1}}

    store.update("default", "alice", fn, actor="a")
    assert seen == ["database is locked"]


def test_lock_timeout_is_a_store_error_and_reads_continue(db: Path) -> None:
    with SettingsStore(db, busy_timeout_ms=200) as s:
        s.put("default", "alice", {}, expected_version=0, actor="a")
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("begin immediate")
        try:
            t0 = time.perf_counter()
            with pytest.raises(StoreError, match="locked"):
                s.put("default", "alice", {}, expected_version=1, actor="a")
            assert time.perf_counter() - t0 < 5
            assert s.get("default", "alice").version == 1  # WAL: readers are not blocked by a writer
        finally:
            holder.execute("rollback")
            holder.close()
        assert s.put("default", "alice", {"guard": {"shadow": True}}, expected_version=1, actor="a").version == 2


def test_corrupt_file_is_a_store_error_naming_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match="corrupt.db") as err:
        SettingsStore(bad)
    assert "not a database" in str(err.value)


def test_directory_as_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    with pytest.raises(StoreError, match="adir"):
        SettingsStore(tmp_path / "adir")
    with pytest.raises(StoreError, match="adir"):
        SettingsStore(f"sqlite:///{tmp_path / 'adir'}")


def test_unusable_location_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "plainfile").write_text("x")
    with pytest.raises(StoreError, match="plainfile"):
        SettingsStore(tmp_path / "plainfile" / "settings.db")  # parent is a file, not a directory


def test_unreachable_server_url_hides_password() -> None:
    with pytest.raises(StoreError) as err:
        SettingsStore("postgresql+psycopg://rg:hunter2@127.0.0.1:1/railguard")
    assert "hunter2" not in str(err.value) and "127.0.0.1" in str(err.value)


def test_a_malformed_url_is_a_config_error_that_never_quotes_it() -> None:
    """A bad port was a bare ValueError, and a URL make_url refused was quoted whole, password included."""
    for url in ("postgresql+psycopg://rg:hunter2@h:notaport/db", "not a url://rg:hunter2@x"):
        with pytest.raises(ConfigError) as err:
            SettingsStore(url)
        assert "hunter2" not in str(err.value)


def test_a_corrupt_row_is_a_typed_error_that_quotes_nothing_and_erasure_still_removes_it(db: Path) -> None:
    """A settings row written around the store ({"guard": "my secret note"}) raised a pydantic error quoting it,
    and stopped Guard.erase_user before the store; a corrupt session-state row raised JSONDecodeError."""
    from guardrails import Guard

    with SettingsStore(db) as s:
        s.put("default", "alice", {"guard": {"shadow": True}}, expected_version=0, actor="a")
        s.put_state("default", "alice", "s1", "k", {"n": 1})
    con = sqlite3.connect(db)
    con.execute("UPDATE user_settings SET settings = ?", (json.dumps({"guard": "my secret note"}),))
    con.execute("UPDATE session_state SET value = ?", ("{not json",))
    con.commit()
    con.close()
    with SettingsStore(db) as s:
        for call in (lambda: s.get("default", "alice"),
                     lambda: Guard([], store=s).check("hi", user_id="alice")):
            with pytest.raises(StoreError, match="unreadable") as err:
                call()
            assert "secret" not in str(err.value)
        assert s.get_state("default", "alice", "s1", "k") is None  # a new start for that session
        assert s.update_state("default", "alice", "s1", "k", lambda cur: {"n": 2 if cur is None else 0}) == {"n": 2}
        erased = Guard([], store=s).erase_user("alice")
        assert erased["settings"] == 1 and s.get("default", "alice").version == 0


def test_settings_errors_never_quote_a_users_keys(db: Path) -> None:
    with SettingsStore(db) as s:
        for bad in ({"thresholds": {"my ssn is 078-05-1120": 0.5}}, {"thresholds": {"my ssn is 078-05-1120": 5.0}},
                    {"thresholds": {"pii.email": 5.0}}):
            with pytest.raises(ConfigError) as err:
                s.put("default", "alice", {"guard": bad}, expected_version=0, actor="a")
            assert "078-05" not in str(err.value)
        assert s.get("default", "alice").version == 0


def test_env_var_and_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_db = tmp_path / "from_env" / "s.db"
    monkeypatch.setenv("RAILGUARD_DB_URL", f"sqlite:///{env_db}")
    with SettingsStore() as s:
        s.put("default", "alice", {}, expected_version=0, actor="a")
    assert env_db.exists()
    monkeypatch.delenv("RAILGUARD_DB_URL")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_url() == f"sqlite:///{Path(platformdirs.user_data_dir('railguard')) / 'settings.db'}"
    if sys.platform.startswith("linux"):  # only there does XDG_DATA_HOME redirect the default safely
        with SettingsStore() as s:
            assert s.location == str(tmp_path / "xdg" / "railguard" / "settings.db")
        assert (tmp_path / "xdg" / "railguard" / "settings.db").exists()


def test_closed_store_refuses_work(db: Path) -> None:
    s = SettingsStore(db)
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.get("default", "alice")


def test_in_memory_url_works() -> None:
    with SettingsStore("sqlite://") as s:
        s.put("default", "alice", {}, expected_version=0, actor="a")
        assert s.get("default", "alice").version == 1


# -- session state --------------------------------------------------------------------------------------------


def test_session_state_is_isolated_by_tenant_user_and_session(store: SettingsStore) -> None:
    keys = [("t1", "alice", "s1"), ("t1", "alice", "s2"), ("t1", "bob", "s1"), ("t2", "alice", "s1")]
    for i, (t, u, sid) in enumerate(keys):
        store.put_state(t, u, sid, "velocity", {"turns": i})
    for i, (t, u, sid) in enumerate(keys):
        assert store.get_state(t, u, sid, "velocity") == {"turns": i}
        assert store.get_state(t, u, sid, "other-key") is None
    store.put_state("t1", "alice", "s1", "velocity", {"turns": 99})  # overwrite touches only its own row
    assert store.get_state("t1", "alice", "s1", "velocity") == {"turns": 99}
    assert store.get_state("t2", "alice", "s1", "velocity") == {"turns": 3}
    store.put_state("t1", "alice", "s1", "second", {"x": [1, 2]})
    assert store.delete_session("t1", "alice", "s1") == 2
    assert store.get_state("t1", "alice", "s1", "velocity") is None
    assert store.get_state("t1", "alice", "s2", "velocity") == {"turns": 1}
    assert store.get_state("t1", "bob", "s1", "velocity") == {"turns": 2}
    assert store.delete_session("t1", "alice", "s1") == 0


def test_state_and_settings_survive_a_restart(db: Path) -> None:
    with SettingsStore(db) as first:
        first.put_state("default", "alice", "s1", "velocity", {"scores": [0.1, 0.9]})
        first.put("default", "alice", {"guard": {"shadow": True}}, expected_version=0, actor="a")
    with SettingsStore(db) as second:  # a new process / another instance reading the same database
        assert second.get_state("default", "alice", "s1", "velocity") == {"scores": [0.1, 0.9]}
        assert second.get("default", "alice").settings["guard"]["shadow"] is True
        assert [h.op for h in second.history("default", "alice")] == ["put"]


def test_prune_state_drops_only_stale_sessions(store: SettingsStore) -> None:
    store.put_state("default", "alice", "s1", "k", {"v": 1})
    assert store.prune_state(timedelta(hours=1)) == 0
    time.sleep(0.01)
    assert store.prune_state(timedelta(0)) == 1
    assert store.get_state("default", "alice", "s1", "k") is None


# -- async twins ----------------------------------------------------------------------------------------------


async def test_async_twins(store: SettingsStore) -> None:
    with pytest.raises(UnknownUserError):
        await store.arequire("default", "alice")
    put = await store.aput("default", "alice", {"counter": {"n": 0}}, expected_version=0, actor="a")
    assert put.version == 1 and await store.aexists("default", "alice")
    with pytest.raises(VersionConflictError):
        await store.aput("default", "alice", {}, expected_version=0, actor="a")
    await asyncio.gather(*[
        store.aupdate_section("default", "alice", "counter", lambda c: {"n": c["n"] + 1}, actor="a")
        for _ in range(20)
    ])
    got = await store.aget("default", "alice")
    assert got.settings["counter"]["n"] == 20 and got.version == 21
    upd = await store.aupdate("default", "alice", lambda s: {"guard": {"shadow": True}}, actor="a")
    assert upd.settings == {"guard": {"shadow": True, "disabled_detectors": [], "thresholds": {}}}
    assert await store.alist_users() == ["alice"]
    assert len(await store.ahistory("default", "alice", 5)) == 5
    await store.aput_state("default", "alice", "s", "k", {"v": 1})
    assert await store.aget_state("default", "alice", "s", "k") == {"v": 1}
    assert await store.adelete_session("default", "alice", "s") == 1
    await store.adelete("default", "alice", actor="a")
    assert (await store.aget("default", "alice")).version == 0


def test_no_op_writes_keep_the_version_and_add_no_audit_row(db: Path) -> None:
    """Writing what is already stored (unblocking an unblocked category, a retried PUT) is not a change: the same
    version comes back, nothing is audited; a first write of empty settings still creates the user."""
    with SettingsStore(db) as s:
        first = s.put("default", "alice", {}, expected_version=0, actor="a")
        assert first.version == 1 and s.exists("default", "alice")
        s1 = s.update_section("default", "alice", "guard", lambda g: {**g, "shadow": True}, actor="a")
        assert s1.version == 2
        assert s.update_section("default", "alice", "guard", lambda g: {**g, "shadow": True}, actor="a") == s1
        assert s.put("default", "alice", s1.settings, expected_version=2, actor="a") == s1
        assert s.update("default", "alice", lambda st: st, actor="a") == s1
        assert [a.version for a in s.history("default", "alice")] == [2, 1]
        with pytest.raises(VersionConflictError):  # a stale CAS is still a conflict, even when it would be a no-op
            s.put("default", "alice", s1.settings, expected_version=1, actor="a")
        # normalised equality: a default-valued field written explicitly is the same settings
        assert s.update_section("default", "alice", "guard", lambda g: {**g, "disabled_detectors": []},
                                actor="a") == s1
        assert s.update_section("default", "alice", "guard", lambda g: {**g, "shadow": False},
                                actor="a").version == 3


def test_schema_version_is_recorded_and_a_newer_database_is_refused(tmp_path: Path) -> None:
    """A database remembers the schema that wrote it. One from a newer railguard (a downgrade, or an old worker
    beside upgraded ones) is refused with a StoreError naming the versions, and nothing in it is touched; a
    database from before the version table existed opens, keeps its rows and is stamped."""
    from guardrails.store.schema import SCHEMA_VERSION

    path = tmp_path / "s.db"
    with SettingsStore(path) as s:
        s.put("default", "alice", {"guard": {"shadow": True}}, expected_version=0, actor="test")

    def version() -> list[tuple[str, int]]:
        with sqlite3.connect(path) as c:
            # (the audit scrub's marker is another component of the table: test_audit_scrub.py)
            return c.execute("SELECT component, version FROM railguard_schema "
                             "WHERE component = 'settings_store'").fetchall()

    assert version() == [("settings_store", SCHEMA_VERSION)]
    with sqlite3.connect(path) as c:
        c.execute("UPDATE railguard_schema SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}.*newer railguard"):
        SettingsStore(path)
    assert version() == [("settings_store", SCHEMA_VERSION + 1)]
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT version FROM user_settings WHERE user_id = 'alice'").fetchone() == (1,)
        c.execute("DROP TABLE railguard_schema")  # a database written before the table existed
        c.execute("DROP TABLE railguard_erasures")  # ... and before the erasure log (this failed to open: review)
    with SettingsStore(path) as s:
        assert s.get("default", "alice").settings["guard"]["shadow"] is True
        assert s.erasures_since(None) == (0, False)
    assert version() == [("settings_store", SCHEMA_VERSION)]


def test_invalid_section_errors_never_quote_the_values(tmp_path: Path) -> None:
    """pydantic's str(ValidationError) quotes the input (input_value=...): a section holding a user's example
    texts put them into the ConfigError (logged by callers) and the service's 422 body."""
    secret = "my neighbour Jane Roe has HIV"
    bad = {"moderation": {"examples": secret}}  # a str where the section wants a list: pydantic quotes it
    with SettingsStore(tmp_path / "s.db") as s:
        with pytest.raises(ConfigError, match="invalid settings section 'moderation'") as e:
            s.put("t", "alice", bad, expected_version=0, actor="test")
        assert "Jane Roe" not in str(e.value) and e.value.__cause__ is None and "pydantic.dev" not in str(e.value)
        assert s.get("t", "alice").version == 0


def test_an_old_database_opens_unversioned_when_the_role_may_not_create_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An app role with read/write rights on the existing tables but no CREATE (PostgreSQL 15+'s default on
    `public`) opened the store before the version table existed; refusing it now would break that upgrade. It opens
    unversioned with a warning (checked on PostgreSQL with a DML-only role; here the CREATE is made to fail)."""
    import sqlalchemy as sa

    from guardrails.store import schema

    path = tmp_path / "old.db"
    with SettingsStore(path) as s:
        s.put("t", "alice", {"guard": {"shadow": True}}, expected_version=0, actor="test")
    with sqlite3.connect(path) as c:
        c.execute("DROP TABLE railguard_schema")
        c.execute("DROP TABLE railguard_erasures")  # an older release's database has neither

    def refuse(self: Any, bind: Any, **kw: Any) -> None:
        raise sa.exc.ProgrammingError("CREATE TABLE railguard_schema", {}, PermissionError("permission denied"))

    monkeypatch.setattr(sa.Table, "create", refuse)
    with caplog.at_level("WARNING", logger="railguard.store"), SettingsStore(path) as s:
        assert s.get("t", "alice").version == 1
        s.put("t", "alice", {"guard": {"shadow": False}}, expected_version=1, actor="test")
        assert s.erase_user("t", "alice")["settings"] == 1  # erasure works without its log
    assert "using it unversioned" in caplog.text and "PermissionError" in caplog.text
    assert "railguard_erasures table" in caplog.text
    def broken(self: Any, bind: Any, **kw: Any) -> None:
        raise sa.exc.OperationalError("CREATE TABLE railguard_schema", {}, OSError("disk I/O error"))

    monkeypatch.setattr(sa.Table, "create", broken)  # any other failure is not "unversioned": it fails to open
    with pytest.raises(StoreError, match="disk I/O error"):
        SettingsStore(path)
    monkeypatch.undo()
    with SettingsStore(path):  # a role that may create tables stamps it
        pass
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT version FROM railguard_schema WHERE component = 'settings_store'"
                         ).fetchall() == [(schema.SCHEMA_VERSION,)]


def test_a_deleted_user_written_again_continues_its_versions(store: SettingsStore) -> None:
    # Versions restarting at 1 let a writer holding the deleted row's version overwrite the new row.
    store.put("default", "bo", {"guard": {"shadow": True}}, expected_version=0, actor="a")
    store.delete("default", "bo", actor="a")
    again = store.put("default", "bo", {"guard": {}}, expected_version=0, actor="b")
    assert again.version == 2
    with pytest.raises(VersionConflictError):
        store.put("default", "bo", {"guard": {"shadow": True}}, expected_version=1, actor="a")
    assert [h.version for h in store.history("default", "bo")] == [2, 1, 1]
    store.erase_user("default", "bo")  # erasure keeps nothing, not even the count: it starts again at 1
    assert store.put("default", "bo", {}, expected_version=0, actor="c").version == 1


# ---- review of session 33: what an erasure leaves on disk, file modes, typed errors --------------------------
def test_an_erased_users_text_is_gone_from_the_database_file_and_its_write_ahead_log(store: SettingsStore,
                                                                                      db: Path) -> None:
    """With the store still open: the WAL held 5 copies of the erased example until later writes overwrote it."""
    store.put("default", "u", {"moderation": {"examples": [SECRET]}}, expected_version=0, actor="t")
    store.put_state("default", "u", "s1", "k", {"x": SECRET})
    store.put("default", "other", {"moderation": {"examples": ["kept"]}}, expected_version=0, actor="t")
    assert store.erase_user("default", "u") == {"settings": 1, "session_state": 1, "audit": 1}
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
    assert {p.name for p in files} >= {db.name, f"{db.name}-wal"}
    assert all(SECRET.encode() not in p.read_bytes() for p in files)
    assert store.get("default", "other").settings["moderation"]["examples"] == ["kept"]


def test_a_new_database_and_its_folder_are_private(tmp_path: Path) -> None:
    db = tmp_path / "new" / "settings.db"
    with SettingsStore(db) as s:
        s.put("default", "u", {"moderation": {"examples": [SECRET]}}, expected_version=0, actor="t")
        modes = {p.name: p.stat().st_mode & 0o777 for p in db.parent.iterdir()}
    assert db.parent.stat().st_mode & 0o777 == 0o700
    assert modes[db.name] == 0o600 and modes.get(f"{db.name}-wal", 0o600) == 0o600
    mine = tmp_path / "mine.db"  # an existing file keeps the operator's mode
    mine.touch(mode=0o640)
    os.chmod(mine, 0o640)
    SettingsStore(mine).close()
    assert mine.stat().st_mode & 0o777 == 0o640


def test_a_link_to_a_database_not_yet_there_creates_a_private_target(tmp_path: Path) -> None:
    """A dangling symbolic link at the database path: its target was created by SQLite, world-readable."""
    target = tmp_path / "real" / "settings.db"
    link = tmp_path / "settings.db"
    link.symlink_to(target)
    with SettingsStore(link) as s:
        s.put("default", "u", {"moderation": {"examples": [SECRET]}}, expected_version=0, actor="t")
    assert link.is_symlink() and target.is_file()
    assert target.stat().st_mode & 0o777 == 0o600 and target.parent.stat().st_mode & 0o777 == 0o700
    with SettingsStore(link) as s:
        assert s.get("default", "u").settings["moderation"]["examples"] == [SECRET]


def _deep(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cur = out
    for _ in range(n):
        cur["a"] = {}
        cur = cur["a"]
    return out


@pytest.mark.parametrize("write", [
    lambda s: s.put("default", "v", {"guard": {"disabled_detectors": ["\udcff"]}}, expected_version=0, actor="t"),
    lambda s: s.put_state("default", "v", "s", "k", {"x": "\udcff"}),
    lambda s: s.put_state("default", "v", "s", "k", _deep(5000)),
    lambda s: s.put("default", "v", {}, expected_version=True, actor="t"),
    lambda s: s.put("default", "v", {}, expected_version=-1, actor="t"),
    lambda s: s.history("default", "v", limit=10**30),
    lambda s: s.put("default", "v\u202eevil", {}, expected_version=0, actor="t"),  # reads reversed in logs
    lambda s: s.put("default", "v\u2028w", {}, expected_version=0, actor="t"),
])
def test_values_the_store_cannot_hold_are_typed_errors_that_write_nothing(store: SettingsStore, write) -> None:
    """A lone surrogate was a UnicodeEncodeError (a 500 over HTTP), deep nesting a RecursionError, a huge history
    limit an OverflowError, `True` version 1."""
    with pytest.raises(InvalidInputError):
        write(store)
    assert store.list_users("default") == [] and store.get_state("default", "v", "s", "k") is None


def test_the_checkpoint_after_an_erasure_never_waits_for_a_reader(tmp_path: Path) -> None:
    """TRUNCATE waits for readers under busy_timeout: with another connection reading (a backup, another process),
    the erasure and every write behind it waited the whole timeout (30 s by default). Here the timeout is 10 minutes:
    a waiting checkpoint would hold the test that long; it waits 1 s at most, and is made after a later write."""
    db = tmp_path / "s.db"
    with SettingsStore(db, busy_timeout_ms=600_000) as store:
        store.put("default", "u", {"moderation": {"examples": [SECRET]}}, expected_version=0, actor="t")
        reader = sqlite3.connect(db)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM user_settings").fetchone()  # holds a read snapshot
            t0 = time.monotonic()
            assert store.erase_user("default", "u")["settings"] == 1
            assert time.monotonic() - t0 < 300  # far below the 600 s a waiting checkpoint would take
            store.put("default", "v", {"moderation": {"examples": ["x"]}}, expected_version=0, actor="t")
        finally:
            reader.close()
        assert store.get("default", "v").version == 1
        # the checkpoint the reader kept from completing is made after the next write: the log is empty again
        store.put("default", "w", {"moderation": {"examples": ["y"]}}, expected_version=0, actor="t")
        files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
        assert all(SECRET.encode() not in p.read_bytes() for p in files)
