"""SQLAlchemy-backed store: versioned per-user settings, an append-only audit trail, per-session state.

- One sync implementation; async twins run it via ``asyncio.to_thread`` (one copy of the concurrency logic).
- SQLite is the zero-config default and several workers often share one file. Stock pysqlite fails there with
  "database is locked"; we use WAL + busy_timeout + synchronous=NORMAL and open write transactions with
  ``BEGIN IMMEDIATE``, so writers queue on the file lock and a read-modify-write reads under its own lock.
- Writes are compare-and-set on ``version``, which keeps Postgres / multi-instance deployments safe too.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import os
import random
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import platformdirs
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from ..errors import ConfigError, InvalidInputError, StoreError, UnknownUserError, VersionConflictError
from .audit_paths import changed_paths
from .audit_scrub import AuditScrubMixin
from .erasures import ErasureLogMixin
from .schema import ensure_schema, session_state, settings_audit, user_settings
from .settings import (
    DEFAULT_TENANT,
    AuditEntry,
    StoredSettings,
    canonical_json,
    check_key,
    digest,
    section_models,
    validate_sections,
)
from .sqlite_files import checkpoint, install_sqlite_hooks, private_file
from .state import SessionStateMixin, state_ttl_from_env

ENV_URL = "RAILGUARD_DB_URL"
P = ParamSpec("P")
R = TypeVar("R")
DictFn = Callable[[dict[str, Any]], Mapping[str, Any]]  # settings (or one section's data) -> its new value


def default_url() -> str:
    """``sqlite:///<user data dir>/settings.db``: per-user, writable, survives restarts, no server needed."""
    return f"sqlite:///{Path(platformdirs.user_data_dir('railguard')) / 'settings.db'}"


def resolve_url(url: str | Path | None) -> URL:
    raw: str | Path = url if url is not None else (os.environ.get(ENV_URL) or default_url())
    if isinstance(raw, Path) or "://" not in raw:  # a bare filesystem path means a SQLite file
        raw = f"sqlite:///{Path(raw).expanduser().absolute()}"
    try:
        return make_url(raw)
    except (SQLAlchemyError, ValueError):  # a bad port is a ValueError; the URL may hold a password: not quoted
        scheme = str(raw).partition("://")[0][:40] if "://" in str(raw) else "?"
        raise ConfigError(f"invalid database URL (scheme {scheme!r}): expected dialect+driver://user:password"
                          "@host:port/database or a SQLite file path") from None


def _twin(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Async twin of a sync method: runs it via ``asyncio.to_thread`` (one implementation of the logic)."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(fn, *args, **kwargs)

    return run



class _Written:
    rowcount = 1


_ONE_ROW = _Written()


class SettingsStore(SessionStateMixin, ErasureLogMixin, AuditScrubMixin):
    """Versioned per-user settings + audit trail + per-session detector state, on any SQLAlchemy URL."""

    def __init__(self, url: str | Path | None = None, *, busy_timeout_ms: int = 30_000,
                 max_value_bytes: int = 1_000_000, echo: bool = False,
                 state_ttl: timedelta | None | Literal["env"] = "env") -> None:
        """Open (creating if needed) the database; fails fast with StoreError if it cannot be used. `state_ttl`:
        session state idle for longer is deleted by the store (default $RAILGUARD_STATE_TTL_DAYS, 30 days;
        None or 0 keeps it forever; see `guardrails.store.state`)."""
        self._init_state(state_ttl_from_env() if state_ttl == "env" else state_ttl)
        self._init_erasure_log()
        self.url, self.max_value_bytes, self._closed = resolve_url(url), max_value_bytes, False
        self._models: dict[str, type[BaseModel]] | None = None
        self._checkpoint_due = False  # an erasure's log checkpoint is still to be made (see `_checkpoint`)
        sqlite, db = self.url.get_backend_name() == "sqlite", self.url.database or ""
        memory = sqlite and (db in ("", ":memory:") or self.url.query.get("mode") == "memory")
        self.location = db if sqlite and not memory else self.url.render_as_string(hide_password=True)
        # An in-memory SQLite database lives in one connection: share it and serialise access to it.
        self._lock: contextlib.AbstractContextManager[Any] = threading.RLock() if memory else contextlib.nullcontext()
        kwargs: dict[str, Any] = (
            {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}} if memory
            else {} if sqlite else {"pool_pre_ping": True}
        )
        try:
            if sqlite and not memory and not db.startswith("file:"):
                private_file(Path(db))
            # hide_parameters: bound values (settings may hold user-written text) never reach logs or errors
            self.engine = sa.create_engine(self.url, echo=echo, hide_parameters=True, **kwargs)
            if sqlite:
                install_sqlite_hooks(self.engine, busy_timeout_ms)
            with self._tx(write=True) as conn:  # eager: a bad path fails here, not on the first request
                ensure_schema(conn, self.location)
        except Exception as exc:  # any failure to open becomes one clear error naming the location
            with contextlib.suppress(Exception):
                self.engine.dispose()
            cause = exc.__cause__ if isinstance(exc, StoreError) and exc.__cause__ else exc
            raise StoreError(
                f"cannot open settings database at {self.location!r}: {getattr(cause, 'orig', None) or cause}. "
                "Expected a SQLite database file (or a new file) in a writable directory, or a reachable "
                f"database URL (set {ENV_URL} or pass url=...)."
            ) from exc
        self._scrub_at_open()  # old audit paths named as writes name them now (`audit_rows_renamed`)

    @contextlib.contextmanager
    def _tx(self, *, write: bool) -> Iterator[sa.Connection]:
        """One transaction; ``write`` takes the SQLite write lock up front. Driver errors become StoreError."""
        if self._closed:
            raise StoreError(f"settings store {self.location!r} is closed")
        try:
            with self._lock, self.engine.connect() as conn:
                if write:
                    conn.execution_options(railguard_write=True)
                with conn.begin():
                    yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"settings store {self.location!r}: {getattr(exc, 'orig', None) or exc}") from exc

    def _validate(self, settings: Mapping[str, Any],
                  previous: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """Validate against a cached copy of the plugin registry: scanning entry points costs ~10 ms, too much
        per write (under the write lock for ``update``); it is re-read only when a section is not in the copy."""
        if self._models is None or (isinstance(settings, Mapping) and not set(settings) <= set(self._models)):
            self._models = section_models()
        return validate_sections(settings, self._models, previous)

    @staticmethod
    def _keys(tenant_id: str, user_id: str) -> tuple[str, str]:
        return check_key("tenant_id", tenant_id), check_key("user_id", user_id)

    def _json(self, value: Any) -> str:
        text = canonical_json(value)
        if len(text.encode("utf-8")) > self.max_value_bytes:
            raise InvalidInputError(f"value is larger than {self.max_value_bytes} bytes")
        return text

    @staticmethod
    def _read(conn: sa.Connection, tenant_id: str, user_id: str, *, lock: bool = False) -> StoredSettings:
        q = sa.select(user_settings).where(user_settings.c.tenant_id == tenant_id, user_settings.c.user_id == user_id)
        row = conn.execute(q.with_for_update() if lock else q).mappings().first()
        if row is None:
            return StoredSettings(tenant_id=tenant_id, user_id=user_id, version=0)
        try:
            return StoredSettings(tenant_id=tenant_id, user_id=user_id, version=row["version"],
                                  settings=json.loads(row["settings"]), updated_at=row["updated_at"])
        except (ValueError, RecursionError):  # a row written around the store: never quote it (user text)
            raise StoreError(f"the stored settings of user {user_id!r} in tenant {tenant_id!r} are unreadable "
                             "(a corrupt row); erasing the user removes it") from None

    def _cas(self, conn: sa.Connection, old: StoredSettings, new: dict[str, Any] | None, op: str,
             actor: str) -> StoredSettings:
        """Write ``new`` (None = delete) iff the row is still at ``old.version``; audit row in the same txn."""
        t, u, now = old.tenant_id, old.user_id, datetime.now(UTC)
        pk = (user_settings.c.tenant_id == t, user_settings.c.user_id == u)
        res: Any
        if new is None:
            res = conn.execute(sa.delete(user_settings).where(*pk, user_settings.c.version == old.version))
            version = old.version
        elif old.version == 0:
            # A user deleted and written again continues from the last version the audit trail holds: restarting at
            # 1 let a client holding the deleted row's version 1 overwrite the new row (a lost update, a reused
            # ETag). Erasure removes the audit too, so an erased user starts again at 1.
            last = conn.execute(sa.select(sa.func.max(settings_audit.c.version)).where(
                settings_audit.c.tenant_id == t, settings_audit.c.user_id == u)).scalar()
            version, text = int(last or 0) + 1, self._json(new)
            try:  # the savepoint keeps the txn usable if a concurrent insert won (only possible off SQLite)
                with conn.begin_nested():
                    conn.execute(sa.insert(user_settings).values(
                        tenant_id=t, user_id=u, version=version, settings=text, updated_at=now))
                # An INSERT that did not raise wrote exactly one row; psycopg reports rowcount -1 for it.
                res = _ONE_ROW
            except IntegrityError:  # lost an insert race (the row exists now), or a real constraint error
                if self._read(conn, t, u).version == 0:
                    raise
                res = None
        else:
            version = old.version + 1
            res = conn.execute(sa.update(user_settings).where(*pk, user_settings.c.version == old.version).values(
                version=version, settings=self._json(new), updated_at=now))
        if res is None or res.rowcount != 1:
            raise VersionConflictError(f"{t}/{u}", old.version, self._read(conn, t, u).version)
        conn.execute(sa.insert(settings_audit).values(
            tenant_id=t, user_id=u, version=version, actor=actor, at=now, op=op,
            changed=json.dumps(changed_paths(old.settings, new or {}, self._models)),
            digest=None if new is None else digest(new)))
        if new is None:
            return StoredSettings(tenant_id=t, user_id=u, version=0)
        return StoredSettings(tenant_id=t, user_id=u, version=version, settings=new, updated_at=now)

    def _write(self, tenant_id: str, user_id: str, op: str, actor: str,
               compute: Callable[[StoredSettings], dict[str, Any] | None], *,
               expected_version: int | None, max_retries: int = 0, create: bool = True) -> StoredSettings:
        """Read (under the write lock), compute, compare-and-set; retry conflicts when no version was pinned.
        ``create=False``: a user with nothing stored is left so (no row, no audit; the version-0 read returned)."""
        t, u = self._keys(tenant_id, user_id)
        check_key("actor", actor)
        if expected_version is not None and (isinstance(expected_version, bool) or not isinstance(expected_version, int)
                                             or expected_version < 0):
            raise InvalidInputError("expected_version must be an integer >= 0 (0: the user must not exist yet)")
        if self._models is None:  # the audit paths are named by the section models: never scan under the lock
            self._models = section_models()
        for attempt in range(max(0, max_retries) + 1):
            try:
                with self._tx(write=True) as conn:
                    old = self._read(conn, t, u, lock=True)
                    if expected_version is not None and old.version != expected_version:
                        raise VersionConflictError(f"{t}/{u}", expected_version, old.version)
                    if op == "delete" and old.version == 0:
                        raise UnknownUserError(f"no settings stored for user {u!r} in tenant {t!r}")
                    if not create and old.version == 0:
                        return old
                    new = compute(old)
                    if new is not None and old.version > 0 and new == old.settings:
                        return old  # a no-op write (unblocking what is already unblocked): no version, no audit row
                    written = self._cas(conn, old, new, op, actor)
                if self._checkpoint_due:  # an erasure's checkpoint met a reader: try again after this write
                    self._checkpoint()
                return written
            except VersionConflictError:
                if expected_version is not None or attempt >= max_retries:
                    raise
                time.sleep(random.random() * min(0.05, 0.001 * 2**attempt))  # jittered backoff
        raise AssertionError("unreachable")  # pragma: no cover

    # -- settings API --------------------------------------------------------------------------------------

    def get(self, tenant_id: str, user_id: str) -> StoredSettings:
        """Current settings; an unknown user reads as version 0 with no sections (no row is created)."""
        t, u = self._keys(tenant_id, user_id)
        with self._tx(write=False) as conn:
            return self._read(conn, t, u)

    def require(self, tenant_id: str, user_id: str) -> StoredSettings:
        """Like get, but an unknown user is an error (for APIs where absence is a 404, not defaults)."""
        found = self.get(tenant_id, user_id)
        if found.version == 0:
            raise UnknownUserError(f"no settings stored for user {user_id!r} in tenant {tenant_id!r}")
        return found

    def exists(self, tenant_id: str, user_id: str) -> bool:
        return self.get(tenant_id, user_id).version > 0

    def list_users(self, tenant_id: str = DEFAULT_TENANT) -> list[str]:
        """User ids with stored settings in one tenant, sorted."""
        c = user_settings.c
        q = sa.select(c.user_id).where(c.tenant_id == check_key("tenant_id", tenant_id)).order_by(c.user_id)
        with self._tx(write=False) as conn:
            return list(conn.execute(q).scalars())

    def put(self, tenant_id: str, user_id: str, settings: Mapping[str, Any], *, expected_version: int,
            actor: str) -> StoredSettings:
        """Replace all settings iff the stored version equals ``expected_version`` (0: must not exist yet)."""
        self._validate(settings)  # before any write (fails fast; nothing is stored on a validation error) ...
        return self._write(tenant_id, user_id, "put", actor,  # ... and against what it replaces (growth rules)
                           lambda old: self._validate(settings, old.settings), expected_version=expected_version)

    def update(self, tenant_id: str, user_id: str, fn: DictFn, *, actor: str,
               max_retries: int = 50, create: bool = True) -> StoredSettings:
        """Read-modify-write: ``fn`` gets a copy of the settings and returns the new dict. It runs inside the
        write transaction and may run again after a conflict: keep it fast and free of side effects.
        ``create=False``: a user with no stored settings is not created (nothing written, version 0 returned),
        for changes that mean nothing there, such as a reset to the defaults an unknown user reads anyway."""

        def compute(old: StoredSettings) -> dict[str, Any]:
            new = fn(copy.deepcopy(old.settings))
            if not isinstance(new, Mapping):
                raise ConfigError(f"update function must return the new settings dict, got {type(new).__name__}")
            return self._validate(new, old.settings)

        return self._write(tenant_id, user_id, "update", actor, compute, expected_version=None,
                           max_retries=max_retries, create=create)

    def update_section(self, tenant_id: str, user_id: str, section: str, fn: DictFn, *, actor: str,
                       max_retries: int = 50, create: bool = True) -> StoredSettings:
        """Read-modify-write of one section; ``fn`` gets that section's data (or {}) and returns the new data
        (``create`` as in `update`)."""

        def apply(settings: dict[str, Any]) -> dict[str, Any]:
            settings[section] = fn(settings.get(section, {}))
            return settings

        return self.update(tenant_id, user_id, apply, actor=actor, max_retries=max_retries, create=create)

    def delete(self, tenant_id: str, user_id: str, *, actor: str) -> None:
        """Remove a user's settings (audited). Session state is separate: see ``delete_session``."""
        self._write(tenant_id, user_id, "delete", actor, lambda _old: None, expected_version=None, max_retries=50)

    def erase_user(self, tenant_id: str, user_id: str, *, notified: bool = False) -> dict[str, int]:
        """Erase everything stored about one user (a data-subject erasure request): settings, every session's
        state and the audit trail, in one transaction. Unlike ``delete`` nothing is kept, not even an audit
        row naming the user: the caller records the erasure where its policy says (the service logs it with the
        user id hashed). Returns the number of rows removed per table; erasing an unknown user removes nothing.

        Prefer `Guard.erase_user`: it waits for the user's checks in flight and has every detector over this store
        forget that one user before the rows go (and passes ``notified=True``). Called directly, the erasure counts
        as news to this process's Guards over this store, as one from another process does: each drops every
        user's in-memory data at its next check (`guardrails.store.erasures`)."""
        t, u = self._keys(tenant_id, user_id)
        with self._tx(write=True) as conn:
            removed = {name: int(conn.execute(sa.delete(table).where(table.c.tenant_id == t,
                                                                     table.c.user_id == u)).rowcount)
                       for name, table in (("settings", user_settings), ("session_state", session_state),
                                           ("audit", settings_audit))}
            mark = self._log_erasure(conn)  # other processes drop their caches too (`guardrails.store.erasures`)
        if notified:
            self._own_erasure(mark)
        else:
            self._direct_erasure()
        if self.engine.dialect.name == "sqlite" and any(removed.values()):
            self._checkpoint()
        return removed

    def _checkpoint(self) -> None:
        """An erasure's write-ahead log checkpoint (`sqlite_files.checkpoint`); tried again after the next write
        and at `close` while a reader keeps it from completing."""
        self._checkpoint_due = not checkpoint(self.engine, self._lock)

    def history(self, tenant_id: str, user_id: str, limit: int = 100) -> list[AuditEntry]:
        """Audit entries for one user, newest first. Survives ``delete``."""
        t, u = self._keys(tenant_id, user_id)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1_000_000:
            raise InvalidInputError("limit must be an integer from 1 to 1000000")
        a = settings_audit.c
        q = sa.select(settings_audit).where(a.tenant_id == t, a.user_id == u).order_by(a.id.desc()).limit(limit)
        with self._tx(write=False) as conn:
            rows = conn.execute(q).mappings().all()
        return [AuditEntry(**{**r, "changed": tuple(json.loads(r["changed"]))}) for r in rows]

    # -- async twins: the same logic in a worker thread, so the event loop never blocks on the database -----

    aget = _twin(get)
    arequire = _twin(require)
    aexists = _twin(exists)
    alist_users = _twin(list_users)
    aput = _twin(put)
    aupdate = _twin(update)
    aupdate_section = _twin(update_section)
    adelete = _twin(delete)
    aerase_user = _twin(erase_user)
    ahistory = _twin(history)
    aget_state = _twin(SessionStateMixin.get_state)
    aput_state = _twin(SessionStateMixin.put_state)
    aupdate_state = _twin(SessionStateMixin.update_state)
    adelete_session = _twin(SessionStateMixin.delete_session)

    # -- lifecycle -----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release pooled connections (and file handles); further calls raise StoreError. A background prune
        still running is waited for (up to 10 s), so no connection is opened after this returns."""
        if self._checkpoint_due and not self._closed:
            self._checkpoint()  # an erasure's log pages a reader kept from the last checkpoint
        self._closed = True
        waited = self._prune_lock.acquire(timeout=10)
        try:
            self.engine.dispose()
        finally:
            if waited:
                self._prune_lock.release()

    def __enter__(self) -> SettingsStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SettingsStore({self.location!r})"

