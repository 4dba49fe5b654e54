"""Erasing one user: what the detectors cache about them, then the store's rows (:func:`erase_user_data`), behind a
per-user admission gate (:class:`UserGate`) so that the erasure cannot race that user's checks in this process.

A check reads the user's settings and may write session state (the privacy guard's drift state, its sentinel's
KV cache). An erasure that ran while such a check was in flight would be undone by the check's last write. The
gate makes the two exclusive per (tenant, user): an erasure waits for that user's checks in flight to finish and
holds new ones until it is done; checks for the same user still run together, and other users never wait.

One gate serves every Guard over the same store object (the service's per-tenant views share one), so it
covers one process. Several processes over one database (Postgres) do not see each other's checks: stop the
user's traffic before erasing there.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .errors import DetectorError, ErasureBusyError, StoreError
from .guard_types import DetectorSlot

__all__ = ["UserGate", "erase_user_data", "gate_for"]

warn_log = logging.getLogger("railguard.guard")

Key = tuple[str, str]  # (tenant_id, user_id)


class UserGate:
    """Checks of one user run together; an erasure of that user runs alone (a per-key readers/writer lock)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active: dict[Key, int] = {}
        self._erasing: set[Key] = set()

    def in_flight(self, key: Key) -> int:
        """How many checks of this user are running now."""
        with self._cond:
            return self._active.get(key, 0)

    def try_enter(self, key: Key) -> bool:
        """Admit a check without waiting; False while the user is being erased (then call :meth:`enter`)."""
        with self._cond:
            if key in self._erasing:
                return False
            self._active[key] = self._active.get(key, 0) + 1
            return True

    def enter(self, key: Key) -> None:
        """Admit a check, waiting for an erasure of the user to finish first."""
        with self._cond:
            self._cond.wait_for(lambda: key not in self._erasing)
            self._active[key] = self._active.get(key, 0) + 1

    def leave(self, key: Key) -> None:
        with self._cond:
            left = self._active.get(key, 0) - 1
            if left > 0:
                self._active[key] = left
            else:
                self._active.pop(key, None)
                self._cond.notify_all()

    @contextmanager
    def checking(self, key: Key) -> Iterator[None]:
        self.enter(key)
        try:
            yield
        finally:
            self.leave(key)

    @contextmanager
    def erasing(self, key: Key, timeout_s: float) -> Iterator[None]:
        """Hold the user's new checks and wait for those in flight, then run the body alone. ``timeout_s`` bounds
        the whole wait (another erasure of the same user included): ErasureBusyError then, and the body does not
        run."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            # one erasure of a user at a time
            if not self._cond.wait_for(lambda: key not in self._erasing, max(0.0, deadline - time.monotonic())):
                raise ErasureBusyError(f"another erasure of the user did not finish within {timeout_s:g} s; "
                                       "nothing was erased by this one (retry)")
            self._erasing.add(key)
            if not self._cond.wait_for(lambda: key not in self._active, max(0.0, deadline - time.monotonic())):
                self._erasing.discard(key)
                self._cond.notify_all()
                raise ErasureBusyError(f"the user's checks in flight did not finish within {timeout_s:g} s; "
                                       "nothing was erased (retry, or stop their traffic first)")
        try:
            yield
        finally:
            with self._cond:
                self._erasing.discard(key)
                self._cond.notify_all()


_by_store: weakref.WeakKeyDictionary[Any, UserGate] = weakref.WeakKeyDictionary()
_by_store_lock = threading.Lock()


def gate_for(store: Any) -> UserGate:
    """The gate shared by every Guard over ``store`` (a fresh one when there is none, or it cannot be weakly
    referenced: that Guard's own)."""
    if store is None:
        return UserGate()
    with _by_store_lock:
        try:
            gate = _by_store.get(store)
            if gate is None:
                gate = _by_store[store] = UserGate()
            return gate
        except TypeError:  # not weakly referenceable: this Guard's own gate
            warn_log.warning("store %s cannot be weakly referenced: erasures see only this Guard's checks",
                             type(store).__name__)
            return UserGate()


def erase_user_data(slots: Sequence[DetectorSlot], store: Any, tenant_id: str, user_id: str) -> dict[str, Any]:
    """Each detector's ``forget_user(tenant_id, user_id, settings)``, then ``store.erase_user`` (see
    ``Guard.erase_user``, which calls this inside the gate). A detector that fails stops it before the store."""
    try:  # the detectors forget with the settings they may have cached from; an unreadable row must not stop erasure
        settings = store.get(tenant_id, user_id).settings if store is not None else {}
    except StoreError:
        settings = {}
    dropped: dict[str, int] = {}
    failed: list[str] = []
    for slot in slots:
        forget = getattr(slot.detector, "forget_user", None)
        if not callable(forget):
            continue
        try:
            dropped[slot.name] = int(forget(tenant_id, user_id, settings) or 0)
        except Exception as exc:
            warn_log.warning("erasure: detector %r failed to forget a user: %s", slot.name, type(exc).__name__)
            failed.append(slot.name)
    if failed:
        raise DetectorError(f"erasure stopped before the store: detector(s) {failed} failed to forget the user "
                            "(retry; nothing was erased from the store)")
    erased: dict[str, Any] = dict(store.erase_user(tenant_id, user_id)) if store is not None else {}
    erased["detectors"] = dropped
    return erased
