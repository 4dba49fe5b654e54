"""What the service does around its requests: build the Guard, warm it up before `/readyz` says ready, check the
store is really there, and prune idle session state."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, cast

import sqlalchemy as sa

from ..decision import FailMode, Stage
from ..erasure import POLL_S, gate_for
from ..errors import StoreError
from ..pipeline import Guard
from .deps import ServiceState, log
from .env import ServiceEnv


async def _warm_up(st: ServiceState) -> None:
    """Run one throwaway check per stage through every detector (forces lazy model loads), ping the store and,
    when configured, load the local chat model; `/readyz` turns 200 only afterwards."""
    st.ready_error = None  # this attempt's outcome, not the last one's
    try:
        probe = Guard(st.guard.slots, store=None, tenant_id="__readyz__")
        failed: dict[str, str] = {}
        for stage in Stage:
            d = await probe.acheck("readiness probe", user_id="__readyz__", stage=stage)
            for part in (d.error or "").split("; ") if d.error else ():
                name, _, why = part.partition(":")
                failed.setdefault(name, f"warm-up check failed:{why}"[:300])
        for name in st.warmup_failed:  # a retry: forget what the last attempt reported
            st.unavailable_detectors.pop(name, None)
        st.warmup_failed = failed
        if failed:
            log.error("detector warm-up failed", extra={"fields": {"event": "detector_warmup_failed",
                                                                   "detectors": sorted(failed)}})
            for name, why in failed.items():
                st.unavailable_detectors.setdefault(name, why)
            if st.strict_detectors:  # not ready: a detector that cannot check would block or allow every request
                raise RuntimeError(f"detector(s) failed the warm-up check: {', '.join(sorted(failed))} (retried; "
                                   "RAILGUARD_STRICT_DETECTORS=0 reports ready anyway, their fail mode then applies)")
        await asyncio.to_thread(_ping, st.store)
        if st.chat.upstream_url is None and st.chat.warm_local_model:
            from .chat import local_model

            await asyncio.to_thread(lambda: local_model(st).lm)
        st.ready, st.ready_error = True, None
    except Exception as exc:  # readiness reports it; the process stays up for /healthz and diagnosis
        st.ready_error = f"{type(exc).__name__}: {exc}"[:300]
        log.error("warm-up failed", extra={"fields": {"event": "warmup_failed", "type": type(exc).__name__}})


async def _retry_warm_up(st: ServiceState, first_s: float = 2.0, most_s: float = 60.0) -> None:
    """Warm up again, with backoff, until ready: a backend down for a moment at start-up must not leave the
    worker unready for good (a liveness probe would never restart it: /healthz is fine)."""
    delay = first_s
    while not st.ready and not (st.ready_error or "").startswith("ConfigError"):  # a config error stays one
        await asyncio.sleep(delay)
        delay = min(max(delay * 2, 2.0), most_s)
        await _warm_up(st)


def _ping(store: Any) -> None:
    """A real read of the store's schema table: `SELECT 1` never touches an SQLite file, so a corrupted or
    deleted database still answered it while every request failed (or wrote to an unlinked file)."""
    path = store.engine.url.database if store.engine.url.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not path.startswith("file:") and not os.path.exists(path):
        raise StoreError("the SQLite database file is gone")
    with store.engine.connect() as conn:
        conn.execute(sa.text("SELECT version FROM railguard_schema LIMIT 1"))


def _build_guard(names: list[str] | None, store: Any, strict: bool | None = None,
                 fail_modes: Mapping[str, str] | None = None) -> tuple[Guard, dict[str, str]]:
    """Every detector must build (a privacy guard that silently is not there fails open), except one whose
    on-disk data this install lacks (MovieLens for the rec `commands` detector): it is logged and listed under
    `/readyz` details, as `Guard.from_registry` does. Set RAILGUARD_STRICT_DETECTORS=0 to start without plugins
    that fail to import or build for any reason too (`strict` None: from the environment). `fail_modes`
    (default: RAILGUARD_FAIL_MODES) overrides detectors' fail modes; naming a detector this guard lacks is a
    ConfigError, except one left out as unavailable."""
    if strict is None or fail_modes is None:
        env = ServiceEnv.from_environ(only={"strict_detectors", "fail_modes"})
        strict = env.strict_detectors if strict is None else strict
        fail_modes = env.fail_modes if fail_modes is None else fail_modes
    modes = cast("dict[str, FailMode]", dict(fail_modes or {}))
    if names is not None or strict:
        guard = Guard.from_registry(names, store=store, fail_modes=modes)
        return guard, dict(guard.unavailable)
    from importlib.metadata import entry_points

    from ..detector import PluginContext, build_registered_detectors, discover

    factories = discover("railguard.detectors")
    failed = {ep.name: "plugin failed to import" for ep in entry_points(group="railguard.detectors")
              if ep.name not in factories}
    built, errors = build_registered_detectors(PluginContext(store=store), skip=(Exception,))
    for name, exc in errors.items():
        failed[name] = f"{type(exc).__name__}: {exc}"[:300]
        log.error("detector unavailable", extra={"fields": {"event": "detector_unavailable", "detector": name,
                                                            "type": type(exc).__name__}})
    return Guard(built, store=store, fail_modes={k: v for k, v in modes.items() if k not in failed}), failed


PRUNE_EVERY_S = 3600.0


async def _prune_state(store: Any, ttl: timedelta, every_s: float = PRUNE_EVERY_S) -> None:
    """Delete per-session state older than `ttl` now and then every `every_s` (each worker does it; deletes
    are idempotent). A failure is logged and retried on the next round: it must never stop the service."""
    if not hasattr(store, "prune_state"):
        return
    while True:
        try:
            n = await asyncio.to_thread(store.prune_state, ttl)
            if n:
                log.info("pruned %d session state row(s) idle for more than %s", n, ttl)
        except Exception as exc:  # noqa: BLE001 - e.g. the database briefly unavailable
            log.warning("session state pruning failed (%s); retrying in %.0f s", type(exc).__name__, every_s)
        await asyncio.sleep(every_s)


async def _watch_erasures(store: Any, every_s: float | None = None) -> None:
    """Every `every_s` (default `POLL_S`), whether another worker erased a user (`UserGate.poll` of the store's
    gate, where every tenant view's detectors listen: the base Guard may have no store of its own): an idle
    worker's caches would otherwise hold the user's data until its next check. A failure is logged and retried."""
    every_s = POLL_S if every_s is None else every_s
    gate = gate_for(store)
    while True:
        try:
            await asyncio.to_thread(gate.poll, store)
        except Exception as exc:  # noqa: BLE001 - e.g. the database briefly unavailable
            log.warning("looking for other workers' erasures failed (%s)", type(exc).__name__)
        await asyncio.sleep(every_s)
