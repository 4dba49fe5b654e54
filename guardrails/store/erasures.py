"""Telling other processes that an erasure happened.

An erasure drops what detectors hold in memory about the user (`guardrails.erasure`), but only in the process
that runs it: another worker over the same database kept the user's cached example embeddings and the privacy
sentinel's KV caches of their sessions until they were evicted (review of session 34). So `erase_user` also
appends a row to ``railguard_erasures`` (an id and a time, naming nobody: the erased user leaves no trace), and
each process asks now and then (`erasures_since`) whether a row it did not write appeared; if one did, it drops
every user's in-memory data (`UserGate.poll`), since it cannot tell whose. Rows older than `KEEP` are pruned.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from ..errors import StoreError
from .schema import erasure_log

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

log = logging.getLogger("railguard.store")

#: how long an erasure's row stays (a process that asks less often than this drops everything to be safe)
KEEP = timedelta(days=7)
_OWN_MAX = 10_000


class ErasureLogMixin:
    """The erasure-log half of `SettingsStore` (which provides `_tx`)."""

    location: str

    if TYPE_CHECKING:
        def _tx(self, *, write: bool) -> AbstractContextManager[sa.Connection]: ...

    def _init_erasure_log(self) -> None:
        self._own_erasures: set[int] = set()
        self._own_lock = threading.Lock()
        self._log_warned: set[str] = set()

    def _log_erasure(self, conn: sa.Connection) -> int | None:
        """Inside `erase_user`'s transaction: one row for this erasure; its id, to be remembered as this store's
        own (`_own_erasure`) once the transaction has committed (a rolled-back id may be another's next)."""
        now = datetime.now(UTC)
        try:
            with conn.begin_nested():
                mark = conn.execute(erasure_log.insert().values(at=now)).inserted_primary_key
                conn.execute(sa.delete(erasure_log).where(erasure_log.c.at < now - KEEP))
        except SQLAlchemyError as exc:  # no such table (a role that could not create it): the erasure goes on
            self._warn_once("write", exc)
            return None
        return int(mark[0]) if mark else None

    def _own_erasure(self, mark: int | None) -> None:
        if mark is None:
            return
        with self._own_lock:
            if len(self._own_erasures) >= _OWN_MAX:
                self._own_erasures.clear()  # forgetting our own marks only makes us drop caches once more
            self._own_erasures.add(mark)

    def erasures_since(self, last: int | None) -> tuple[int, bool] | None:
        """(the newest erasure's id, whether an erasure this store object did not make happened after `last`).
        `last` None: just the newest id. None when it cannot be read now (no erasure log in this database, or the
        database is unreachable: ask again later). An id lower than `last` (the log was reset) or rows missing
        after it (pruned, or ids skipped) count as another's erasure: when unsure, the caller drops its caches."""
        c = erasure_log.c
        try:
            with self._tx(write=False) as conn:
                newest = int(conn.execute(sa.select(sa.func.max(c.id))).scalar() or 0)
                if last is None or newest <= last:
                    return newest, last is not None and newest < last
                ids = [int(i) for i in conn.execute(sa.select(c.id).where(c.id > last).order_by(c.id)).scalars()]
        except (SQLAlchemyError, StoreError) as exc:
            self._warn_once("read", exc)
            return None
        with self._own_lock:
            foreign = any(i not in self._own_erasures for i in ids)
        # every id from last + 1 to newest, each our own: anything missing may be another's not yet committed
        # (PostgreSQL hands out ids at insert time) or pruned, so counts as another's
        return newest, foreign or ids != list(range(last + 1, newest + 1))

    def _warn_once(self, what: str, exc: Exception) -> None:
        if what not in self._log_warned:
            self._log_warned.add(what)
            log.warning("settings database at %r: cannot %s the erasure log (%s); erasures may not reach other "
                        "processes' caches", self.location, what, type(getattr(exc, "__cause__", None) or exc).__name__)
