"""Per-session detector state (multi-turn velocity and the like) in the settings database.

State is scratch data keyed by (tenant, user, session, key): not versioned, not audited. Two guarantees matter:
- a detector that advances state from what is stored (turn t -> t+1) does it atomically with `update_state`, so
  two requests of one session at once (a double submit, two tabs) never lose a turn;
- abandoned sessions go away: rows not written for `state_ttl` (default $RAILGUARD_STATE_TTL_DAYS, 30 days) are
  deleted by the store itself, at most once per `PRUNE_EVERY_S` and only when state is written, so an SDK
  embedding the store without `railguard serve` (whose lifespan also prunes hourly) does not grow forever.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..errors import ConfigError, InvalidInputError
from .schema import session_state
from .settings import check_key

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

STATE_TTL_ENV = "RAILGUARD_STATE_TTL_DAYS"
PRUNE_EVERY_S = 3600.0
StateFn = Callable[[dict[str, Any] | None], Mapping[str, Any] | None]
log = logging.getLogger("railguard.store")


def state_ttl_from_env() -> timedelta | None:
    """$RAILGUARD_STATE_TTL_DAYS (default 30; 0 = keep state forever, None returned)."""
    raw = (os.environ.get(STATE_TTL_ENV) or "").strip() or "30"
    try:
        days = float(raw)
    except ValueError:
        days = -1.0
    if not 0 <= days <= 36_500:
        raise ConfigError(f"{STATE_TTL_ENV} must be a number of days from 0 (keep forever) to 36500, "
                          f"got {raw[:60]!r}")
    return timedelta(days=days) if days > 0 else None


def _lock_key(*parts: str) -> int:
    """A signed 64-bit key for PostgreSQL's advisory locks, from the state row's identity."""
    digest = hashlib.sha256("\x00".join(("railguard-state", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class SessionStateMixin:
    """The session-state half of `SettingsStore` (which provides `_tx`, `_keys` and `_json`)."""

    state_ttl: timedelta | None
    _last_prune: float
    _prune_lock: threading.Lock

    if TYPE_CHECKING:
        def _tx(self, *, write: bool) -> AbstractContextManager[sa.Connection]: ...
        def _keys(self, tenant_id: str, user_id: str) -> tuple[str, str]: ...
        def _json(self, value: Any) -> str: ...

    def _init_state(self, state_ttl: timedelta | None) -> None:
        if not state_ttl:  # None, 0, timedelta(0): keep forever
            state_ttl = None
        elif not isinstance(state_ttl, timedelta) or state_ttl < timedelta(0):
            raise ConfigError(f"state_ttl must be a timedelta >= 0 (None or 0 keeps state forever), got {state_ttl!r}")
        self.state_ttl = state_ttl
        self._last_prune, self._prune_lock = float("-inf"), threading.Lock()

    def _state_keys(self, tenant_id: str, user_id: str, session_id: str, key: str | None) -> tuple[Any, ...]:
        c, (t, u) = session_state.c, self._keys(tenant_id, user_id)
        cond = (c.tenant_id == t, c.user_id == u, c.session_id == check_key("session_id", session_id))
        return cond if key is None else (*cond, c.key == check_key("key", key))

    def get_state(self, tenant_id: str, user_id: str, session_id: str, key: str) -> dict[str, Any] | None:
        """Per-session detector state (e.g. multi-turn velocity), or None when never written."""
        cond = self._state_keys(tenant_id, user_id, session_id, key)
        with self._tx(write=False) as conn:
            raw = conn.execute(sa.select(session_state.c.value).where(*cond)).scalar()
        return _stored_state(raw)

    def _write_state(self, conn: sa.Connection, cond: tuple[Any, ...], ids: tuple[str, str, str, str],
                     value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            raise InvalidInputError(f"session state value must be a dict, got {type(value).__name__}")
        row = {"value": self._json(dict(value)), "updated_at": datetime.now(UTC)}
        if conn.execute(sa.update(session_state).where(*cond).values(**row)).rowcount:
            return
        tenant_id, user_id, session_id, key = ids
        try:  # a concurrent first insert can only win off SQLite: then our write is the later one
            with conn.begin_nested():
                conn.execute(sa.insert(session_state).values(
                    tenant_id=tenant_id, user_id=user_id, session_id=session_id, key=key, **row))
        except IntegrityError:
            conn.execute(sa.update(session_state).where(*cond).values(**row))

    def put_state(self, tenant_id: str, user_id: str, session_id: str, key: str, value: Mapping[str, Any]) -> None:
        """Upsert one state value. Last writer wins: use `update_state` to advance state from what is stored."""
        cond = self._state_keys(tenant_id, user_id, session_id, key)
        if not isinstance(value, Mapping):
            raise InvalidInputError(f"session state value must be a dict, got {type(value).__name__}")
        with self._tx(write=True) as conn:
            self._write_state(conn, cond, (tenant_id, user_id, session_id, key), value)
        self._maybe_prune()

    def update_state(self, tenant_id: str, user_id: str, session_id: str, key: str,
                     fn: StateFn) -> dict[str, Any] | None:
        """Atomic read-modify-write of one state value: `fn` gets the stored dict (or None) and returns the new
        one, or None to leave it as it is. It runs inside one write transaction (SQLite: the write lock taken up
        front; PostgreSQL: a transaction-scoped advisory lock on this row's identity, which also covers a first
        write), so concurrent updates of one session queue instead of losing one. Returns what is stored."""
        cond = self._state_keys(tenant_id, user_id, session_id, key)
        with self._tx(write=True) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_lock_key(tenant_id, user_id, session_id,
                                                                                key))))
            raw = conn.execute(sa.select(session_state.c.value).where(*cond)).scalar()
            current = _stored_state(raw)
            new = fn(None if current is None else dict(current))
            if new is None:
                return current
            self._write_state(conn, cond, (tenant_id, user_id, session_id, key), new)
        self._maybe_prune()
        return dict(new)

    def delete_session(self, tenant_id: str, user_id: str, session_id: str) -> int:
        """Drop all state of one session; returns the number of keys removed."""
        cond = self._state_keys(tenant_id, user_id, session_id, None)
        with self._tx(write=True) as conn:
            return int(conn.execute(sa.delete(session_state).where(*cond)).rowcount)

    def prune_state(self, older_than: timedelta) -> int:
        """Drop session state not written for ``older_than`` (the store also does this itself, see `state_ttl`)."""
        cutoff = datetime.now(UTC) - older_than
        with self._tx(write=True) as conn:
            return int(conn.execute(sa.delete(session_state).where(session_state.c.updated_at < cutoff)).rowcount)

    def _maybe_prune(self) -> None:
        """After a state write: prune rows idle past `state_ttl`, at most once per PRUNE_EVERY_S per store, in a
        background thread (a full-table DELETE must not sit on a check's path, where a detector's timeout runs)."""
        if self.state_ttl is None or time.monotonic() - self._last_prune < PRUNE_EVERY_S:
            return
        if not self._prune_lock.acquire(blocking=False):
            return  # another thread is pruning
        self._last_prune = time.monotonic()
        try:
            threading.Thread(target=self._prune_now, args=(self.state_ttl,), name="railguard-state-prune",
                             daemon=True).start()
        except RuntimeError:  # no threads left (interpreter shutting down): next time
            self._prune_lock.release()

    def _prune_now(self, ttl: timedelta) -> None:
        try:
            n = self.prune_state(ttl)
            if n:
                log.info("pruned %d session state row(s) idle for more than %s", n, ttl)
        except Exception as exc:  # noqa: BLE001 - e.g. the database briefly locked, or the store closed
            log.warning("session state pruning failed (%s); retried after the next interval", type(exc).__name__)
        finally:
            self._prune_lock.release()


def _stored_state(raw: str | None) -> dict[str, Any] | None:
    """A stored state value, or None when there is none or it is unreadable (a corrupt row: the detector starts
    that session over, as after a restart, and its next write replaces the row)."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        log.warning("unreadable session state row ignored (it is replaced on the next write)")
        return None
    return value
