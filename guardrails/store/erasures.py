"""Telling other processes that an erasure happened.

An erasure drops what detectors hold in memory about the user (`guardrails.erasure`), but only in the process
that runs it: another worker over the same database kept the user's cached example embeddings and the privacy
sentinel's KV caches of their sessions until they were evicted (review of session 34). So `erase_user` also
appends a row to ``railguard_erasures`` (an id and a time, naming nobody: the erased user leaves no trace), and
each process asks now and then (`erasures_since`) whether a row it did not write appeared; if one did, it drops
every user's in-memory data (`UserGate.poll`), since it cannot tell whose. Rows older than `KEEP` are pruned.

`SettingsStore.erase_user` called directly (not through `Guard.erase_user`, which tells this process's Guards
itself and marks the row as the store's own) counts as another process's erasure for the Guards over the same store
object, and their gates look at their next check instead of up to `POLL_S` later (`on_direct_erasure`): until
session 39 such an erasure was never news to them. Not covered: a log emptied by hand with its id sequence reset may
hide erasures until its ids pass the old ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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
#: how long an id missing from the log is watched for (an erasure whose transaction had not committed yet)
PENDING_S = 600.0
_PENDING_MAX = 100


class ErasureLogMixin:
    """The erasure-log half of `SettingsStore` (which provides `_tx`)."""

    location: str

    if TYPE_CHECKING:
        def _tx(self, *, write: bool) -> AbstractContextManager[sa.Connection]: ...

    def _init_erasure_log(self) -> None:
        self._own_erasures: set[int] = set()
        self._pending: dict[int, float] = {}  # ids missing at a look (an erasure not yet committed?): when seen
        self._own_lock = threading.Lock()
        self._log_warned: set[str] = set()
        self._direct_hooks: list[Callable[[], object]] = []

    def on_direct_erasure(self, hook: Callable[[], object]) -> None:
        """Call ``hook()`` after each erasure made directly on this store object (not through a Guard): a Guard
        gate's "look at the erasure log at the next check" (`guardrails.erasure.gate_for`)."""
        with self._own_lock:
            self._direct_hooks.append(hook)

    def _direct_erasure(self) -> None:
        with self._own_lock:
            hooks = list(self._direct_hooks)
        for hook in hooks:
            try:
                hook()
            except Exception as exc:  # a hook only speeds up a poll: the erasure itself stands
                log.warning("settings database at %r: an erasure hook failed (%s)", self.location,
                            type(exc).__name__)

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
        after it (pruned, or ids skipped) count as another's erasure: when unsure, the caller drops its caches.
        A missing id is also remembered for `PENDING_S`: PostgreSQL hands out ids at insert time, so an erasure
        still in its transaction leaves a gap that fills once it commits, and then it counts again (the caller
        may have cached the user anew in between)."""
        c = erasure_log.c
        now = time.monotonic()
        try:
            with self._tx(write=False) as conn:
                newest = int(conn.execute(sa.select(sa.func.max(c.id))).scalar() or 0)
                ids = [] if last is None or newest <= last else \
                    [int(i) for i in conn.execute(sa.select(c.id).where(c.id > last).order_by(c.id)).scalars()]
                with self._own_lock:
                    self._pending = {i: t for i, t in self._pending.items() if now - t < PENDING_S}
                    waiting = sorted(self._pending)
                filled = [int(i) for i in conn.execute(sa.select(c.id).where(c.id.in_(waiting))).scalars()] \
                    if waiting else []
        except (SQLAlchemyError, StoreError) as exc:
            self._warn_once("read", exc)
            return None
        with self._own_lock:
            for i in filled:
                self._pending.pop(i, None)
            filled = [i for i in filled if i not in self._own_erasures]  # our own, committed meanwhile: no news
            if last is None:
                return newest, False
            if newest <= last:
                return newest, newest < last or bool(filled)
            n_missing = newest - last - len(ids)  # ids are distinct and in (last, newest]
            if 0 < n_missing <= _PENDING_MAX:  # a pruned stretch is not waited for (nor queried every poll, nor
                # built as a set of every id it lacks)
                self._pending.update(dict.fromkeys(set(range(last + 1, newest + 1)) - set(ids), now))
            foreign = any(i not in self._own_erasures for i in ids)
        return newest, foreign or n_missing > 0 or bool(filled)

    def _warn_once(self, what: str, exc: Exception) -> None:
        if what not in self._log_warned:
            self._log_warned.add(what)
            log.warning("settings database at %r: cannot %s the erasure log (%s); erasures may not reach other "
                        "processes' caches", self.location, what, type(getattr(exc, "__cause__", None) or exc).__name__)
