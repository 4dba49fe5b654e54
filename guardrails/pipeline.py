"""The Guard: runs detectors per stage and folds their findings into one Decision (most severe wins).

One core, two shells (the httpx pattern): `_prepare` validates input and loads the user's settings,
`_finish` aggregates; `check` runs detectors in order, `acheck` runs independent detectors concurrently.
Gates (cheap validators, `gate = True`) run first; when a gate blocks, the expensive detectors are skipped.
Detectors with `side_effects = True` (they apply the user's command) run last, only if the message is not blocked.
One that claims a blocked message as the user's own command lifting exactly what blocks it (`lifts`) runs, and the
detectors that blocked are run again under the settings it left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from .decision import Action, Decision, FailMode, Finding, Stage, most_severe, text_hash
from .detector import (
    CheckRequest,
    Detector,
    Message,
    PluginContext,
    Redactor,
    build_detectors,
    build_registered_detectors,
)
from .erasure import DetectorForgetter, ErasureMethods, gate_for
from .errors import ConfigError, InvalidInputError
from .guard_types import (
    DetectorSlot,
    HistoryScreen,
    LifecycleMethods,
    SupportsCheck,
    after_command,
    apply_redactors,
    apply_user_thresholds,
    failure_findings,
    gate_blocked,
    history_checks,
    lets_through,
    lifting,
    waive,
)
from .store.settings import check_key, named_detectors, safe_segment
from .text import UNREAD_PARTS_KEY, check_id, coerce_messages, coerce_text, last_unread_parts

if TYPE_CHECKING:
    from .middleware.agent import GuardMiddleware
    from .middleware.runnable import GuardedRunnable

__all__ = ["DetectorSlot", "Guard", "HistoryScreen", "SupportsCheck"]

log = logging.getLogger("railguard.decision")  # one JSON decision record per line
warn_log = logging.getLogger("railguard.guard")

_ROLE_FOR_STAGE = {Stage.INPUT: "user", Stage.OUTPUT: "assistant", Stage.TOOL_CALL: "assistant",
                   Stage.TOOL_RESULT: "tool"}


def _count(value: object) -> int:
    """A caller's ``unread_parts`` metadata as a count (anything but a non-negative int counts as none)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class Guard(ErasureMethods, LifecycleMethods):
    """Run detectors on one message and return a Decision.

    Args:
        detectors: Detector objects or DetectorSlots. Fail mode defaults to the detector's
            `default_fail_mode` attribute (privacy: closed), else `"open"`.
        store: a SettingsStore; the user's settings are loaded once per check and handed to detectors.
        tenant_id: the tenant whose users this Guard serves.
        shadow: alert-only mode for every decision (never enforced, still logged).
        fail_modes: per-detector override, e.g. {"harm": "closed"}.
        timeout_s: per-call time limit, in seconds, for each detector given as a Detector (a DetectorSlot keeps
            its own). A detector that overruns counts as failed (TimeoutError), so its fail mode decides: the
            privacy probe (closed) blocks the turn, an open one allows it with `Decision.error` set. Enforced by
            `acheck` only (`asyncio.wait_for`; a detector run in a worker thread finishes there unobserved); the
            sync `check` cannot interrupt a running detector. None (the default): no limit.
        erase_wait_s: how long `erase_user` waits for the user's checks in flight before it gives up
            (ErasureBusyError, nothing erased).
    """

    def __init__(
        self,
        detectors: Sequence[Detector | DetectorSlot] = (),
        *,
        store: Any = None,
        tenant_id: str = "default",
        shadow: bool = False,
        fail_modes: Mapping[str, FailMode] | None = None,
        timeout_s: float | None = None,
        erase_wait_s: float = 30.0,
    ) -> None:
        if isinstance(erase_wait_s, bool) or not (isinstance(erase_wait_s, int | float)
                                                  and 0 <= erase_wait_s <= 3600):  # NaN fails too
            raise ConfigError(f"erase_wait_s must be a number of seconds from 0 to 3600, got {erase_wait_s!r}")
        try:  # it keys the user's settings and session state: refused here, not at a first check
            check_key("tenant_id", tenant_id)
        except InvalidInputError as exc:
            raise ConfigError(str(exc)) from None
        fail_modes = dict(fail_modes or {})
        slots: list[DetectorSlot] = []
        for d in detectors:
            if isinstance(d, DetectorSlot):
                slots.append(d)
                continue
            if not isinstance(d, Detector):
                raise ConfigError(f"{type(d).__name__} does not implement the Detector protocol")
            mode = fail_modes.pop(d.name, getattr(d, "default_fail_mode", "open"))
            if mode not in ("open", "closed"):
                raise ConfigError(f"fail mode for {d.name!r} must be 'open' or 'closed', got {mode!r}")
            slots.append(DetectorSlot(d, fail_mode=cast(FailMode, mode), timeout_s=timeout_s))
        if fail_modes:
            raise ConfigError(f"fail_modes names unknown detector(s): {sorted(fail_modes)}")
        names = [s.name for s in slots]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate detector names: {names}")
        self.slots = tuple(sorted(slots, key=lambda s: not s.gate))  # gates first, stable otherwise
        self.store = store
        self.tenant_id = tenant_id
        self.shadow = shadow
        self.unavailable: dict[str, str] = {}  # registered detectors left out by from_registry: {name: why}
        self.erase_wait_s = float(erase_wait_s)
        self._gate = gate_for(store)  # erasure vs checks of the same user, shared by Guards over this store
        for slot in self.slots:  # a detector writing user state outside `check` (a fused prefill) is admitted here too
            bind = getattr(slot.detector, "bind_erasure_gate", None)
            if callable(bind):
                bind(self._gate)
        self._forget = DetectorForgetter(self.slots)  # erasures by other Guards and processes
        self._gate.add_listener(self._forget)
        self._admitted: set[asyncio.Future[Decision]] = set()  # acheck bodies, held until they end (see acheck)
        self._warned: set[str] = set()  # unknown detector names in user settings, already logged
        self._runs_elsewhere: set[str] = set()  # detectors of the Guard this one is a view of (see `view`)

    @classmethod
    def from_registry(
        cls, names: Iterable[str] | None = None, *, store: Any = None, config: Mapping[str, Any] | None = None,
        device: str | None = None, **kwargs: Any,
    ) -> Guard:
        """Build a Guard from registered detector plugins. `names` given: exactly those, each must build. None:
        every registered detector that can run on this install; one whose on-disk data is missing (the rec
        `commands` detector without MovieLens) is left out with a warning and listed in `guard.unavailable`
        (see `build_registered_detectors`)."""
        ctx = PluginContext(store=store, config=dict(config or {}), device=device)
        if names is not None:
            return cls(build_detectors(names, ctx), store=store, **kwargs)
        detectors, missing = build_registered_detectors(ctx)
        for name, exc in missing.items():
            warn_log.warning("detector %r is not available on this install: %s", name, exc)
        if kwargs.get("fail_modes"):  # a fail mode for a detector left out is moot, not a typo
            kwargs["fail_modes"] = {k: v for k, v in kwargs["fail_modes"].items() if k not in missing}
        guard = cls(detectors, store=store, **kwargs)
        guard.unavailable = {name: str(exc) for name, exc in missing.items()}
        return guard

    @property
    def detector_names(self) -> list[str]:
        return [s.name for s in self.slots]

    # ---- shared core -------------------------------------------------------------------------
    def _prepare(self, content: Any, user_id: str, session_id: str | None, stage: Stage | str,
                 metadata: Mapping[str, Any] | None) -> CheckRequest:
        try:
            stage = Stage(stage)
        except ValueError:
            raise InvalidInputError(f"unknown stage {stage!r}; expected one of {[s.value for s in Stage]}") from None
        if isinstance(content, str | bytes | bytearray | memoryview):
            text = coerce_text(content)
            messages: tuple[Message, ...] = (Message.model_validate({"role": _ROLE_FOR_STAGE[stage], "content": text}),)
        else:
            messages = coerce_messages(content)
            text = coerce_text(messages[-1].content)
        check_id(user_id, "user_id")
        check_id(session_id, "session_id", optional=True)
        settings: Mapping[str, Any] = {}
        if self.store is not None:
            settings = self.store.get(self.tenant_id, user_id).settings
        meta = dict(metadata or {})
        unread = max(last_unread_parts(content), _count(meta.get(UNREAD_PARTS_KEY)))
        if unread:  # media the model may read and no detector does: the validator says so (its `non_text` action)
            meta[UNREAD_PARTS_KEY] = unread
        else:
            meta.pop(UNREAD_PARTS_KEY, None)
        return CheckRequest(stage=stage, user_id=user_id, session_id=session_id, tenant_id=self.tenant_id,
                            text=text, messages=messages, settings=settings, metadata=meta)

    def _active(self, request: CheckRequest) -> tuple[list[DetectorSlot], list[DetectorSlot], list[DetectorSlot]]:
        """The detectors to run, in three rounds: gates; the rest unless a gate blocked; then those with side effects
        unless the message is blocked."""
        guard = request.settings.get("guard", {})
        disabled = set(guard.get("disabled_detectors", []))
        self._warn_unknown(named_detectors(guard))
        active = [s for s in self.slots if request.stage in s.detector.stages and s.name not in disabled]
        return ([s for s in active if s.gate], [s for s in active if not s.gate and not s.side_effects],
                [s for s in active if s.side_effects and not s.gate])

    def _shadow(self, request: CheckRequest) -> bool:
        """Whether this check's decision is alert-only: the Guard's shadow flag or the user's own."""
        return self.shadow or bool(request.settings.get("guard", {}).get("shadow", False))

    def _warn_unknown(self, named: set[str]) -> None:
        """A user's settings naming a detector this Guard does not run change nothing: say so once per name (the
        store cannot refuse them, it does not know which detectors a deployment runs)."""
        if not named:
            return
        unknown = named - set(self.detector_names) - set(self.unavailable) - self._runs_elsewhere - self._warned
        if unknown and len(self._warned) < 1024:
            self._warned |= unknown
            shown = sorted(safe_segment(n) for n in unknown)  # identifiers as is, free text hashed
            warn_log.warning("user settings name detector(s) this guard does not run, so they change nothing: %s",
                             shown)

    def _finish(self, request: CheckRequest, results: list[tuple[DetectorSlot, list[Finding], str | None]],
                started: float) -> Decision:
        findings: list[Finding] = []
        counted: list[Finding] = []
        errors: list[str] = []
        redactors: list[DetectorSlot] = []
        for slot, fs, err in results:
            if err:
                errors.append(err)
            fs = apply_user_thresholds(fs, request)
            if slot.shadow:
                fs = [f.model_copy(update={"explanation": f"[shadow] {f.explanation}"}) for f in fs]
            else:
                counted.extend(fs)
                if any(f.action is Action.REDACT for f in fs) and isinstance(slot.detector, Redactor):
                    redactors.append(slot)
            findings.extend(fs)
        action = most_severe(counted)
        redacted = None
        if action is Action.REDACT:
            redacted, counted, findings = apply_redactors(request.text, redactors, counted, findings, errors)
            action = most_severe(counted)
            redacted = redacted if action is Action.REDACT else None
        decision = Decision(
            action=action, stage=request.stage, findings=tuple(findings), user_id=request.user_id,
            session_id=request.session_id, latency_ms=round((time.perf_counter() - started) * 1000, 3),
            shadow=self._shadow(request), error="; ".join(errors) or None, redacted_text=redacted,
            text_sha256=text_hash(request.text),
        )
        if log.isEnabledFor(logging.INFO):
            log.info(json.dumps(decision.log_record(), sort_keys=True))
        return decision

    # ---- sync shell --------------------------------------------------------------------------
    def _run_sync(self, slot: DetectorSlot, request: CheckRequest) -> tuple[DetectorSlot, list[Finding], str | None]:
        try:
            return slot, list(slot.detector.predict(request)), None
        except Exception as exc:  # the fail mode decides, not the exception
            return (slot, *failure_findings(slot, exc))

    def check(self, content: Any, *, user_id: str, session_id: str | None = None,
              stage: Stage | str = Stage.INPUT, metadata: Mapping[str, Any] | None = None) -> Decision:
        """Check one text (str/UTF-8 bytes) or a message list whose last message is the turn under check."""
        started = time.perf_counter()
        check_id(user_id, "user_id")
        if self._gate.poll_due():  # another process erased a user: forget every user's cached data first
            self.poll_erasures()
        with self._gate.checking((self.tenant_id, user_id)):
            request = self._prepare(content, user_id, session_id, stage, metadata)
            gates, rest, acting = self._active(request)
            results = [self._run_sync(s, request) for s in gates]
            if not gate_blocked(results, request):
                results += [self._run_sync(s, request) for s in rest]
                if acting and lets_through(results, request, self._shadow(request)):
                    results += [self._run_sync(s, request) for s in acting]
                elif acting and self.store is not None and (lifters := lifting(acting, results, request)):
                    results += [self._run_sync(s, request) for s in lifters]
                    request, rerun = after_command(self.store, self.tenant_id, request, results)
                    results = waive([self._run_sync(r[0], request) if r[0] in rerun else r for r in results],
                                    lifters.waived)
            return self._finish(request, results, started)

    # ---- async shell -------------------------------------------------------------------------
    async def _run_async(self, slot: DetectorSlot, request: CheckRequest
                         ) -> tuple[DetectorSlot, list[Finding], str | None]:
        try:
            coro = slot.detector.apredict(request)
            found = await (asyncio.wait_for(coro, slot.timeout_s) if slot.timeout_s else coro)
            return slot, list(found), None
        except Exception as exc:
            return (slot, *failure_findings(slot, exc))

    async def acheck(self, content: Any, *, user_id: str, session_id: str | None = None,
                     stage: Stage | str = Stage.INPUT, metadata: Mapping[str, Any] | None = None) -> Decision:
        """Async twin of `check`: independent detectors run concurrently."""
        started = time.perf_counter()
        check_id(user_id, "user_id")
        if self._gate.poll_due():
            await asyncio.to_thread(self.poll_erasures)
        key = (self.tenant_id, user_id)
        while not self._gate.try_enter(key):  # the user is being erased (rare): wait without blocking the loop
            await asyncio.sleep(0.01)
        try:
            inner = asyncio.ensure_future(self._acheck_admitted(content, user_id, session_id, stage, metadata,
                                                                started))
        except BaseException:
            self._gate.leave(key)
            raise
        # Cancelling this call (a client that went away) does not stop detectors already running in worker
        # threads, so the user stays admitted until the check itself ends: an erasure cannot slip in before their
        # last state write.
        def release(task: asyncio.Future[Decision]) -> None:
            self._admitted.discard(task)
            self._gate.leave(key)
            if not task.cancelled():
                task.exception()  # retrieved here: a caller that was cancelled never awaits it

        self._admitted.add(inner)  # a strong reference: the loop keeps only weak ones to a task nobody awaits
        inner.add_done_callback(release)
        return await asyncio.shield(inner)

    async def _acheck_admitted(self, content: Any, user_id: str, session_id: str | None, stage: Stage | str,
                               metadata: Mapping[str, Any] | None, started: float) -> Decision:
        if self.store is not None:
            request = await asyncio.to_thread(self._prepare, content, user_id, session_id, stage, metadata)
        else:
            request = self._prepare(content, user_id, session_id, stage, metadata)
        gates, rest, acting = self._active(request)
        results = [await self._run_async(s, request) for s in gates]
        if not gate_blocked(results, request):
            results += await asyncio.gather(*(self._run_async(s, request) for s in rest))
            if acting and lets_through(results, request, self._shadow(request)):
                results += [await self._run_async(s, request) for s in acting]
            elif acting and self.store is not None and (lifters := lifting(acting, results, request)):
                results += [await self._run_async(s, request) for s in lifters]
                request, rerun = await asyncio.to_thread(after_command, self.store, self.tenant_id, request, results)
                results = waive([await self._run_async(r[0], request) if r[0] in rerun else r for r in results],
                                lifters.waived)
        return self._finish(request, results, started)

    # ---- earlier messages of a resent conversation ------------------------------------------------
    def _text_only(self) -> Guard | None:
        """This Guard's detectors that judge a text on its own (gates such as the validator, and redactors such as
        pii), sharing store and modes; None when there are none. Context or session detectors are left out."""
        if not hasattr(self, "_text_only_guard"):
            slots = [s for s in self.slots if s.gate or isinstance(s.detector, Redactor)]
            self._text_only_guard = self.view(slots) if slots else None
        return self._text_only_guard

    def view(self, slots: Sequence[DetectorSlot] | None = None, *, tenant_id: str | None = None,
             store: Any = None) -> Guard:
        """A Guard over ``slots`` (default: these; models are not reloaded) for ``tenant_id`` and ``store`` (each
        default: this Guard's), with this Guard's shadow flag, ``erase_wait_s`` and ``unavailable``: the service's
        per-tenant views and the text-only screen of a resent history. User settings naming a detector this Guard
        runs are not reported as unknown by a view that leaves it out. Guards over one store share its erasure
        gate."""
        view = Guard(self.slots if slots is None else slots, store=self.store if store is None else store,
                     tenant_id=self.tenant_id if tenant_id is None else tenant_id, shadow=self.shadow,
                     erase_wait_s=self.erase_wait_s)
        view.unavailable = dict(self.unavailable)
        view._runs_elsewhere = self._runs_elsewhere | set(self.detector_names)  # a subset view: not unknown
        return view

    def screen_history(self, messages: Sequence[Mapping[str, Any]], *, user_id: str,
                       session_id: str | None = None, include_last: bool = False) -> HistoryScreen:
        """Check the messages *before* the last one of a conversation a client resends (an HTTP proxy, a wrapped
        model called with the whole history) with the detectors that judge a text on its own, so an earlier turn
        that was redacted or blocked when it was new never reaches the model in the clear. The last message is
        `check`'s job (with the conversation as context), unless `include_last` (a caller that sends only the
        earlier messages, as the service's /v1/screen/history does)."""
        guard = self._text_only()
        found = [] if guard is None else [
            (i, guard.check(text, user_id=user_id, session_id=session_id, stage=stage))
            for i, text, stage in history_checks(messages, include_last)]
        return HistoryScreen.of(messages, found)

    async def ascreen_history(self, messages: Sequence[Mapping[str, Any]], *, user_id: str,
                              session_id: str | None = None, include_last: bool = False) -> HistoryScreen:
        """Async twin of `screen_history`."""
        guard = self._text_only()
        found = [] if guard is None else [
            (i, await guard.acheck(text, user_id=user_id, session_id=session_id, stage=stage))
            for i, text, stage in history_checks(messages, include_last)]
        return HistoryScreen.of(messages, found)

    # ---- integrations ------------------------------------------------------------------------
    def wrap(self, runnable: Any, **kwargs: Any) -> GuardedRunnable:
        """Guard any langchain-core Runnable / chat model (input before, output after). See GuardedRunnable."""
        from .middleware.runnable import GuardedRunnable

        return GuardedRunnable(guard=self, inner=runnable, **kwargs)

    def middleware(self, **kwargs: Any) -> GuardMiddleware:
        """A langchain v1 AgentMiddleware for `create_agent(..., middleware=[guard.middleware()])`."""
        from .middleware.agent import GuardMiddleware

        return GuardMiddleware(self, **kwargs)
