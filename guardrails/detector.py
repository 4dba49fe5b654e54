"""The Detector protocol every plugin implements, and the registry that discovers plugins by entry point.

Naming follows scikit-learn: `decision_function`-style raw scores live inside Findings (`score`, `threshold`);
`predict(request)` returns the findings for one check and `apredict` is its async twin. A detector that can
repair text instead of blocking it also implements `redact(text) -> str`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from .decision import Finding, Stage
from .errors import ConfigError, DataNotAvailableError

log = logging.getLogger("railguard.detector")

Role = Literal["system", "user", "assistant", "tool"]
R = TypeVar("R")


class Message(BaseModel):
    """One chat message in the wire format of CONTRACT.md."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    role: Role
    content: str


class CheckRequest(BaseModel):
    """Everything a detector may look at for one check. Built and validated by the Guard."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    stage: Stage
    user_id: str
    session_id: str | None = None
    tenant_id: str = "default"
    text: str
    messages: tuple[Message, ...] = ()
    # The user's stored settings, by section name (e.g. "moderation", "guard"), as plain JSON-able dicts.
    settings: Mapping[str, Any] = Field(default_factory=dict)
    metadata: Mapping[str, Any] = Field(default_factory=dict)


@runtime_checkable
class Detector(Protocol):
    """What the Guard needs from a detector. Implement `predict`; `apredict` may run it in a thread."""

    name: str
    stages: frozenset[Stage]

    def predict(self, request: CheckRequest) -> list[Finding]: ...

    async def apredict(self, request: CheckRequest) -> list[Finding]: ...


@runtime_checkable
class Redactor(Protocol):
    def redact(self, text: str) -> str: ...


_EXECUTORS_LOCK = threading.RLock()
# id(owner) -> (pid, pool). Kept here, not on the owner, so a detector stays picklable and deep-copyable (a pool
# holds locks and threads); an entry goes when its owner is garbage-collected (weakref.finalize).
_EXECUTORS: dict[int, tuple[int, ThreadPoolExecutor]] = {}
_FINALIZED: set[int] = set()  # owners (by id) with a finalizer registered


def _after_fork_in_child() -> None:
    """A child of fork() inherits the pools without their threads, and the lock possibly held by a thread that no
    longer exists: start afresh (the pid check in `_executor_of` covers the pools; this covers the lock)."""
    global _EXECUTORS_LOCK
    _EXECUTORS_LOCK = threading.RLock()
    _EXECUTORS.clear()  # (finalizers registered in the parent still run here: _FINALIZED stays)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _forget(key: int) -> None:
    """The owner was garbage-collected: its pool goes, and its id may be reused by a new object."""
    with _EXECUTORS_LOCK:
        _FINALIZED.discard(key)
    _drop_executor(key)


def release_all_offload() -> None:
    """Shut every pool down (not waited for): at process exit, so idle pool threads do not hold it."""
    with _EXECUTORS_LOCK:
        held = list(_EXECUTORS.values())
        _EXECUTORS.clear()
    for _, pool in held:
        pool.shutdown(wait=False, cancel_futures=True)


def _drop_executor(key: int) -> None:
    with _EXECUTORS_LOCK:
        held = _EXECUTORS.pop(key, None)
    if held is not None:
        held[1].shutdown(wait=False)


def _executor_of(owner: object) -> ThreadPoolExecutor:
    """`owner`'s own bounded thread pool, created on first use in this process (a pool inherited through fork has
    no threads), or a shared one if the object cannot be weakly referenced."""
    key, pid = id(owner), os.getpid()
    with _EXECUTORS_LOCK:
        held = _EXECUTORS.get(key)
        if held is not None and held[0] == pid:
            return held[1]
        if key not in _FINALIZED:  # once per owner: a pool re-created after `release_offload` reuses it
            try:
                weakref.finalize(owner, _forget, key)
            except TypeError:  # no __weakref__ slot: the shared pool
                return _executor_of(_SHARED)  # (_SHARED itself is weak-referenceable: no recursion)
            _FINALIZED.add(key)
        name = str(getattr(owner, "name", type(owner).__name__))[:32]
        pool = ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4),  # asyncio's default size
                                  thread_name_prefix=f"railguard-{name}")
        _EXECUTORS[key] = (pid, pool)
        return pool


def release_offload(owner: object) -> None:
    """Shut `owner`'s pool down (threads end after their current call; not waited for). A later `offload` for it
    starts a new pool, so this releases resources without retiring the owner."""
    _drop_executor(id(owner))


def close_resources(obj: object) -> None:
    """`obj.close()` if it has one: how a detector hands the close on to what it holds (backend, adapter)."""
    closer = getattr(obj, "close", None)
    if callable(closer):
        closer()


async def aclose_resources(obj: object) -> None:
    """`await obj.aclose()` if it has one (closes clients bound to this event loop), else `close_resources`."""
    closer = getattr(obj, "aclose", None)
    if callable(closer):
        await closer()
    else:
        close_resources(obj)


def close_detectors(named: Iterable[tuple[str, object]], logger: logging.Logger = log) -> None:
    """`close_resources` and `release_offload` for each (name, detector); a failed close is logged to `logger` (by
    name and error type) and the others are still closed."""
    for name, det in named:
        try:
            close_resources(det)
        except Exception as exc:
            logger.warning("closing detector %r failed: %s", name, type(exc).__name__)
        release_offload(det)


async def aclose_detectors(named: Iterable[tuple[str, object]], logger: logging.Logger = log) -> None:
    """Async twin of `close_detectors` (`aclose_resources`)."""
    for name, det in named:
        try:
            await aclose_resources(det)
        except Exception as exc:
            logger.warning("closing detector %r failed: %s", name, type(exc).__name__)
        release_offload(det)


class _Shared:
    name = "shared"


_SHARED = _Shared()


async def offload(owner: object, fn: Callable[..., R], /, *args: Any) -> R:
    """Run blocking `fn(*args)` in `owner`'s own thread pool (with the caller's contextvars), not asyncio's
    default executor. A Guard's `timeout_s` stops the *wait*, not the work: calls of a hung detector (a stuck
    upstream, a wedged lock) kept their threads, and 6 of them filled the shared default pool, so every other
    detector, the store reads and the service's key lookups queued behind them, timed out and fell to their fail
    modes (a fail-open PII check let an e-mail through). Now a hung detector only exhausts its own pool.

    There is deliberately no shared limit across detectors: any shared limit lets the calls of one hung detector
    hold it until their timeouts and starve the others again (tried: a per-loop FIFO semaphore let 3 of 8
    concurrent PII checks time out beside a hung detector). Measured with the load test: ~10 % less throughput
    than one shared pool; in exchange store writes no longer queue behind detector work (p50 1.8 s -> 15 ms)."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    pool = _executor_of(owner)
    try:
        future = loop.run_in_executor(pool, call)
    except RuntimeError:
        if not getattr(pool, "_shutdown", False):  # e.g. "can't start new thread": the item may be queued already
            raise
        # its pool was released in between (`release_offload` from another Guard sharing the owner): nothing
        # was queued on it, so submit once to a fresh one
        future = loop.run_in_executor(_executor_of(owner), call)
    return await future


class BaseDetector:
    """Convenience base: subclasses implement `predict`; `apredict` runs it off the event loop, in the detector's
    own thread pool (`offload`)."""

    name: str = "detector"
    stages: frozenset[Stage] = frozenset(Stage)

    def predict(self, request: CheckRequest) -> list[Finding]:  # pragma: no cover - abstract
        raise NotImplementedError

    async def apredict(self, request: CheckRequest) -> list[Finding]:
        return await offload(self, self.predict, request)


@dataclass
class PluginContext:
    """What a plugin factory receives: shared services it may use instead of building its own."""

    store: Any = None  # guardrails.store.SettingsStore
    config: Mapping[str, Any] = field(default_factory=dict)
    device: str | None = None


DetectorFactory = Callable[[PluginContext], Detector]

_GROUPS = ("railguard.detectors", "railguard.cli", "railguard.settings", "railguard.settings_operations",
           "railguard.bench", "railguard.demo")
_local: dict[str, dict[str, Any]] = {g: {} for g in _GROUPS}


def register(group: str, name: str, obj: Any) -> None:
    """Register a plugin object in-process (tests, notebooks); entry points do the same for installed code."""
    if group not in _local:
        raise ConfigError(f"unknown plugin group {group!r}; expected one of {_GROUPS}")
    _local[group][name] = obj


_installed: dict[str, dict[str, Any]] = {}


def discover(group: str, *, refresh: bool = False) -> dict[str, Any]:
    """All plugins of a group: installed entry points first, then in-process registrations (which win).

    The entry-point scan reads every installed distribution's metadata (~15 ms), so it runs once per group and
    process; `refresh=True` scans again (after installing a plugin at run time).
    """
    if group not in _local:
        raise ConfigError(f"unknown plugin group {group!r}; expected one of {_GROUPS}")
    if refresh or group not in _installed:
        loaded: dict[str, Any] = {}
        for ep in entry_points(group=group):
            try:
                loaded[ep.name] = ep.load()
            except Exception as exc:  # a broken plugin must not take the spine down; say which one
                log.warning("plugin %s:%s failed to load: %s", group, ep.name, exc)
        _installed[group] = loaded
    return {**_installed[group], **_local[group]}


def build_registered_detectors(ctx: PluginContext, *, skip: tuple[type[Exception], ...] = (DataNotAvailableError,)
                               ) -> tuple[list[Detector], dict[str, Exception]]:
    """Every registered detector that builds, and {name: exception} for those whose build raised one of `skip`
    (default: `DataNotAvailableError`, data this install lacks: MovieLens is read from ../shared/data and never
    redistributed, so a pip install has no rec `commands` detector). Callers say what was left out (a warning,
    `/readyz`); never hidden. Any other build failure raises as in `build_detectors`. Asking for a detector by
    name (`build_detectors`) is strict: it builds or raises."""
    built: list[Detector] = []
    missing: dict[str, Exception] = {}
    for name in discover("railguard.detectors"):
        try:
            built += build_detectors([name], ctx)
        except skip as exc:
            missing[name] = exc
    return built, missing


def build_detectors(names: Iterable[str] | None, ctx: PluginContext) -> list[Detector]:
    """Instantiate detectors by registered name (all registered ones when `names` is None)."""
    factories = discover("railguard.detectors")
    wanted = list(factories) if names is None else list(names)
    unknown = [n for n in wanted if n not in factories]
    if unknown:
        raise ConfigError(f"unknown detector(s) {unknown}; registered: {sorted(factories)}")
    out: list[Detector] = []
    for n in wanted:
        try:
            det = factories[n](ctx)
        except ConfigError:
            raise
        except Exception as exc:  # a guard silently missing a detector is worse than no guard: fail loudly
            raise ConfigError(f"detector plugin {n!r} failed to build: {type(exc).__name__}: {exc}") from exc
        if not isinstance(det, Detector):
            raise ConfigError(f"plugin {n!r} did not build a Detector (got {type(det).__name__})")
        out.append(det)
    return out
