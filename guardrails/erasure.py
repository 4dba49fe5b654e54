"""Erasing one user: what the detectors cache about them, then the store's rows (:func:`erase_user_data`), behind a
per-user admission gate (:class:`UserGate`) so that the erasure cannot race that user's checks in this process.

A check reads the user's settings and may write session state (the privacy guard's drift state, its sentinel's
KV cache). An erasure that ran while such a check was in flight would be undone by the check's last write. The
gate makes the two exclusive per (tenant, user): an erasure waits for that user's checks in flight to finish and
holds new ones until it is done; checks for the same user still run together, and other users never wait.

One gate serves every Guard over the same store object (the service's per-tenant views share one), so it
covers one process. Several processes over one database (Postgres) do not see each other's checks: stop the
user's traffic before erasing there. They do learn of each other's erasures: the store logs each one (naming
nobody, `guardrails.store.erasures`), and a gate asks at most every `POLL_S` seconds, before a check (and the
service on a timer), whether another process erased someone; then every Guard over its store drops every user's
in-memory data (`forget_all_users`), since it cannot tell whose.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .errors import DetectorError, ErasureBusyError, InvalidInputError, StoreError
from .guard_types import DetectorSlot
from .text import check_id

__all__ = ["FORGET_WAIT_S", "POLL_S", "DetectorForgetter", "ErasureMethods", "UserGate", "erase_user_data", "gate_for"]

warn_log = logging.getLogger("railguard.guard")

Key = tuple[str, str]  # (tenant_id, user_id)
#: at most this often a gate asks its store whether another process erased a user
POLL_S = 5.0
#: How long a check waits for another thread's listeners to drop what an erasure elsewhere left cached (they clear
#: caches: milliseconds). Bounded: a listener that itself waits for a check on another thread must not hang both.
FORGET_WAIT_S = 2.0


class _Strong:
    """A listener held as it is (a function, a lambda, a partial: nothing else holds those)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self) -> Callable[..., Any]:
        return self.fn


class UserGate:
    """Checks of one user run together; an erasure of that user runs alone (a per-key readers/writer lock)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active: dict[Key, int] = {}
        self._erasing: set[Key] = set()
        self._listeners: list[Callable[[], Any]] = []
        self._mark: int | None = None  # the newest erasure in the store's log this gate has accounted for
        self._next_poll = 0.0
        self._unsure = False  # a first look failed while checks went on: the first answer counts as news
        self._poll_lock = threading.Lock()
        self._forgetter: int | None = None  # the thread whose listeners drop an erasure elsewhere's caches now

    def add_listener(self, forget: Callable[[str | None, str | None], object]) -> Callable[[], None]:
        """Call ``forget(tenant_id, user_id)`` on every erasure through this gate, before the store's rows go:
        what wraps a Guard and keeps per-user memory of its own (the agent middleware's memos) forgets the user
        too. A bound method (and a Guard's own `DetectorForgetter`) is held weakly: registering keeps its object
        alive no longer. Any other callable (a function, a lambda, a partial) is held for the gate's lifetime: a
        weakly held lambda was collected at once and never called. Returns a function that removes it."""
        if not callable(forget):  # it would fail every erasure, long after the mistake
            raise InvalidInputError(f"an erasure listener must be callable, got {type(forget).__name__}")
        ref: Callable[[], Any]
        if isinstance(forget, DetectorForgetter):
            ref = weakref.ref(forget)
        else:
            try:
                ref = weakref.WeakMethod(forget) if hasattr(forget, "__self__") else _Strong(forget)  # type: ignore[arg-type]
            except TypeError:  # a builtin's bound method (print, dict.get) cannot be weakly referenced
                ref = _Strong(forget)
        with self._cond:
            self._listeners = [r for r in self._listeners if r() is not None] + [ref]

        def remove() -> None:
            with self._cond:
                self._listeners = [r for r in self._listeners if r is not ref]

        return remove

    def listeners(self) -> list[Callable[[str | None, str | None], object]]:
        with self._cond:
            self._listeners = [r for r in self._listeners if r() is not None]  # dead weak ones go here too
            return [fn for r in self._listeners if (fn := r()) is not None]

    def poll_soon(self) -> None:
        """Have the next check look at the store's erasure log (`SettingsStore.erase_user` called directly)."""
        self._next_poll = 0.0

    def poll_due(self) -> bool:
        return self._forgetter is not None or time.monotonic() >= self._next_poll

    def poll(self, store: Any) -> bool:
        """At most every `POLL_S` s: if another process (another store object) erased a user since the last
        poll, call every listener with ``(None, None)``: forget every user. Returns whether it did. A store
        without an erasure log, or one unreachable now, is asked again later."""
        since = getattr(store, "erasures_since", None)
        if not callable(since):
            self._next_poll = math.inf  # no erasure log to ask (no store, or another kind): never due
            return False
        # A check that comes while another thread's listeners forget waits for them (bounded), so it never reads a
        # cache they are about to drop (the poll once released its lock first and checks went on). The store is
        # read with no check waiting: a slow or hung read must not stall every check of the process.
        me = threading.get_ident()
        if self._forgetter == me:  # a listener's own check: never a second round of listeners inside the first
            return False
        if self._forgetter is not None:
            with self._cond:
                self._cond.wait_for(lambda: self._forgetter is None, timeout=FORGET_WAIT_S)
            return False
        if not self._poll_lock.acquire(blocking=False):
            return False  # another thread is reading the store now (or this one, from a listener)
        try:
            if time.monotonic() < self._next_poll:
                return False
            self._next_poll = time.monotonic() + POLL_S
            got = since(self._mark)
            if got is None:
                # checks go on meanwhile: once it answers, what they cached may be an erased user's
                self._unsure = self._unsure or self._mark is None
                return False
            self._mark, foreign = got
            foreign, self._unsure = foreign or self._unsure, False
            if not foreign:
                return False
            with self._cond:
                self._forgetter = me
        finally:
            self._poll_lock.release()
        try:
            tell_listeners(self.listeners(), None, None, set())  # a failure is logged; the next erasure tries again
        finally:
            with self._cond:
                self._forgetter = None
                self._cond.notify_all()
        return True

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
                hook = getattr(store, "on_direct_erasure", None)  # an erasure made on the store itself, not
                if callable(hook):  # through a Guard: the gate looks at the next check
                    hook(gate.poll_soon)
            return gate
        except TypeError:  # not weakly referenceable: this Guard's own gate
            warn_log.warning("store %s cannot be weakly referenced: erasures see only this Guard's checks",
                             type(store).__name__)
            return UserGate()


class DetectorForgetter:
    """A Guard's erasure listener (`UserGate.add_listener`) over its detectors: ``forget_user`` of one user erased
    by another Guard over the same store object (detectors it does not share with that Guard), or, with
    ``user_id`` None (an erasure in another process: whose is unknown), ``forget_all_users`` where a detector has
    it. Callable as a listener; returns the entries dropped."""

    def __init__(self, slots: Sequence[DetectorSlot]) -> None:
        self.slots = tuple(slots)

    def __call__(self, tenant_id: str | None, user_id: str | None) -> int:
        return self.forget(tenant_id, user_id, set())

    def forget(self, tenant_id: str | None, user_id: str | None, done: set[int]) -> int:
        """As a call, skipping detectors whose ids are in ``done`` (already told: another view shares them), and
        adding the ones it tells."""
        n = 0
        for slot in self.slots:
            if id(slot.detector) in done:
                continue
            done.add(id(slot.detector))
            if user_id is None:
                forget_all = getattr(slot.detector, "forget_all_users", None)
                n += int(forget_all() or 0) if callable(forget_all) else 0
            elif tenant_id is not None and callable(forget := getattr(slot.detector, "forget_user", None)):
                n += int(forget(tenant_id, user_id, None) or 0)
        return n


def tell_listeners(listeners: Sequence[Callable[[str | None, str | None], object]], tenant_id: str | None,
                   user_id: str | None, done: set[int]) -> list[str]:
    """Call each listener with ``(tenant_id, user_id)`` (None, None: everyone), a Guard's `DetectorForgetter`
    skipping the detectors in ``done`` (tenant views share them: each told once). Every listener is called; the
    names of those that raised are returned (and logged)."""
    failed = []
    for fn in listeners:
        name = getattr(fn, "__qualname__", type(fn).__name__)
        try:
            if isinstance(fn, DetectorForgetter):
                fn.forget(tenant_id, user_id, done)
            else:
                fn(tenant_id, user_id)
        except Exception as exc:
            warn_log.warning("erasure: listener %r failed to forget: %s", name, type(exc).__name__)
            failed.append(name)
    return failed


def erase_user_data(slots: Sequence[DetectorSlot], store: Any, tenant_id: str, user_id: str,
                    listeners: Sequence[Callable[[str | None, str | None], object]] = ()) -> dict[str, Any]:
    """Each detector's ``forget_user(tenant_id, user_id, settings)`` and each listener's ``(tenant_id, user_id)``
    (`UserGate.add_listener`), then ``store.erase_user`` (see ``Guard.erase_user``, which calls this inside the
    gate). A detector or listener that fails stops it before the store."""
    try:  # the detectors forget with the settings they may have cached from; an unreadable row must not stop erasure
        settings = store.get(tenant_id, user_id).settings if store is not None else {}
    except StoreError:
        settings = {}
    dropped: dict[str, int] = {}
    failed: list[str] = []
    done = {id(slot.detector) for slot in slots}  # other Guards' listeners skip the detectors told here
    for slot in slots:
        forget = getattr(slot.detector, "forget_user", None)
        if not callable(forget):
            continue
        try:
            dropped[slot.name] = int(forget(tenant_id, user_id, settings) or 0)
        except Exception as exc:
            warn_log.warning("erasure: detector %r failed to forget a user: %s", slot.name, type(exc).__name__)
            failed.append(slot.name)
    if not failed:
        failed = tell_listeners(listeners, tenant_id, user_id, done)
    if failed:
        raise DetectorError(f"erasure stopped before the store: detector(s) {failed} failed to forget the user "
                            "(retry; nothing was erased from the store)")
    erased: dict[str, Any] = {}
    if store is not None:  # told here already: a store with direct-erasure hooks (`gate_for`) logs its own row
        told = {"notified": True} if callable(getattr(store, "on_direct_erasure", None)) else {}
        erased = dict(store.erase_user(tenant_id, user_id, **told))
    erased["detectors"] = dropped
    return erased


class ErasureMethods:
    """`Guard`'s erasure methods (the Guard provides the attributes below)."""

    slots: tuple[DetectorSlot, ...]
    store: Any
    tenant_id: str
    erase_wait_s: float
    _gate: UserGate

    def erase_user(self, user_id: str) -> dict[str, Any]:
        """Forget one user of this Guard's tenant (a data-subject erasure request). First each detector's
        `forget_user(tenant_id, user_id, settings)` drops what it caches about them (the privacy sentinel's KV
        caches, the harm backend's embeddings of their examples; `settings` is what the store held for them),
        then the store erases their settings, every session's state and their audit trail in one transaction
        (`SettingsStore.erase_user`). A detector that fails stops it before the store is touched, with a
        DetectorError naming it: nothing is half-erased and a retry is safe (every step is idempotent).
        Returns {"settings", "session_state", "audit": rows removed, "detectors": {name: entries dropped}}.
        It first waits up to `erase_wait_s` for the user's checks in flight in this process (any Guard over the same
        store), holding their new checks until it is done (`guardrails.erasure`); ErasureBusyError if they do
        not finish, with nothing erased. Other processes over the same database are not seen: stop the user's
        traffic there first (they drop every user's cached data at their next look, within about twice `POLL_S`:
        `poll_erasures`). Listeners
        (`on_erase`) forget the user too. A detector call that `acheck` timed out (`timeout_s`) may still be
        running in a worker thread. Called on an event loop's thread, it blocks that loop while it waits: use
        `aerase_user` there."""
        check_id(user_id, "user_id")
        with self._gate.erasing((self.tenant_id, user_id), self.erase_wait_s):
            return erase_user_data(self.slots, self.store, self.tenant_id, user_id, self._gate.listeners())

    def poll_erasures(self) -> bool:
        """If another process erased a user over this Guard's store since the last look (at most every
        `guardrails.erasure.POLL_S` s; checks call it, `railguard serve` also on a timer), every Guard and listener
        over the store forgets every user's in-memory data. Returns whether they did."""
        return self._gate.poll(self.store)

    def on_erase(self, forget: Callable[[str | None, str | None], object]) -> Callable[[], None]:
        """Have ``forget(tenant_id, user_id)`` called on every erasure by this Guard, or any Guard over the same
        store in this process, before the store's rows go, and ``forget(None, None)`` (everyone) when another
        process erased a user (``GuardMiddleware`` registers its memos' `forget_user`). A bound method is held
        weakly, any other callable for as long as the store; an exception from it stops a local erasure before the
        store, like a detector's. Returns a function that removes it."""
        return self._gate.add_listener(forget)

    async def aerase_user(self, user_id: str) -> dict[str, Any]:
        """Async twin of `erase_user` (the database work in a worker thread)."""
        return await asyncio.to_thread(self.erase_user, user_id)
