"""The Guard's own types: what integrations need from a guard (`SupportsCheck`), a detector as the Guard runs it
(`DetectorSlot`), and `screen_history`'s result (`HistoryScreen`), re-exported by `guardrails.pipeline`; and the
rules the Guard folds results with (a failed detector's finding, per-user threshold overrides, redaction, gate
blocking, and whether a message is let through to the detectors with side effects)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, runtime_checkable

from .decision import Action, Decision, FailMode, Finding, Stage, most_severe, text_hash
from .detector import CheckRequest, Detector, aclose_detectors, close_detectors
from .errors import RailguardError

__all__ = ["DetectorSlot", "HistoryScreen", "SupportsCheck", "apply_redactors", "apply_user_thresholds",
           "failure_findings", "gate_blocked", "history_checks", "lets_through"]


@runtime_checkable
class SupportsCheck(Protocol):
    """What integrations need from a guard: the local `Guard` and the service-backed `RemoteGuard` both fit."""

    def check(self, content: Any, *, user_id: str, session_id: str | None = None,
              stage: Stage | str = Stage.INPUT, metadata: Mapping[str, Any] | None = None) -> Decision: ...

    async def acheck(self, content: Any, *, user_id: str, session_id: str | None = None,
                     stage: Stage | str = Stage.INPUT, metadata: Mapping[str, Any] | None = None) -> Decision: ...


@dataclass(frozen=True)
class DetectorSlot:
    """A detector as the Guard runs it: with its fail mode, shadow flag and (optional) per-call timeout."""

    detector: Detector
    fail_mode: FailMode = "open"
    shadow: bool = False
    timeout_s: float | None = None

    @property
    def name(self) -> str:
        return self.detector.name

    @property
    def gate(self) -> bool:
        return bool(getattr(self.detector, "gate", False))

    @property
    def side_effects(self) -> bool:
        """The detector changes state as it checks (it applies the user's command): it runs after the others, and
        only when they let the message through (`lets_through`)."""
        return bool(getattr(self.detector, "side_effects", False))


@dataclass
class HistoryScreen:
    """`Guard.screen_history`'s result: the messages to forward (earlier turns redacted where a detector said so),
    the decisions that are not a clean allow (redact, block, warn, or a detector error) by message index, and the
    first blocking one (then forward nothing)."""

    messages: list[dict[str, Any]]
    decisions: list[tuple[int, Decision]]
    blocked: Decision | None

    @classmethod
    def of(cls, messages: Sequence[Mapping[str, Any]], found: list[tuple[int, Decision]]) -> HistoryScreen:
        """From the decisions on some of ``messages`` (by index): redactions applied, clean allows dropped."""
        out = [dict(m) for m in messages]
        for i, d in found:
            if d.enforced_action is Action.REDACT and d.redacted_text is not None:
                out[i]["content"] = d.redacted_text
        blocked = next((d for _, d in found if d.blocked), None)
        kept = [(i, d) for i, d in found if d.action is not Action.ALLOW or d.error]  # a fail-open allow too
        return cls(out, kept, blocked)


def history_checks(messages: Sequence[Mapping[str, Any]], include_last: bool = False) -> list[tuple[int, str, Stage]]:
    """The (index, text, stage) checks of a resent conversation's messages (all but the last unless
    ``include_last``): each non-empty string content, at its role's stage."""
    roles = {"user": Stage.INPUT, "system": Stage.INPUT, "assistant": Stage.OUTPUT, "tool": Stage.TOOL_RESULT}
    scope = messages if include_last else messages[:-1]
    return [(i, m["content"], roles.get(str(m.get("role")), Stage.INPUT)) for i, m in enumerate(scope)
            if isinstance(m.get("content"), str) and m["content"].strip()]


def failure_findings(slot: DetectorSlot, exc: BaseException) -> tuple[list[Finding], str]:
    """A failed detector's finding (block when it fails closed, else allow) and its Decision.error line."""
    action = Action.BLOCK if slot.fail_mode == "closed" else Action.ALLOW
    finding = Finding(detector=slot.name, category="error", score=1.0, threshold=0.0, action=action,
                      explanation=f"detector failed ({type(exc).__name__}); fail-{slot.fail_mode}")
    return [finding], f"{slot.name}: {type(exc).__name__}: {_safe_message(exc)}"[:500]


def apply_user_thresholds(findings: list[Finding], request: CheckRequest) -> list[Finding]:
    """Per-user overrides from the `guard` settings section, key "detector" or "detector.category".

    An override only ever relaxes: a triggered finding whose score is below the user's threshold becomes
    allow. It never escalates an allow, because the detector may have masked that finding on purpose
    (an unblocked category); detectors that support a lower per-user bar read the setting themselves.
    """
    overrides = request.settings.get("guard", {}).get("thresholds", {})
    if not overrides:
        return findings
    out = []
    for f in findings:
        t = overrides.get(f"{f.detector}.{f.category}", overrides.get(f.detector))
        if t is None or f.category == "error" or f.action is Action.ALLOW or f.score >= t:
            out.append(f)
        else:
            out.append(f.model_copy(update={"threshold": t, "action": Action.ALLOW}))
    return out


# Exceptions whose messages describe the environment or are railguard's own (written without user text); any
# other type's message may quote its input (pydantic's "input_value=...", a KeyError's key) and is withheld.
_MESSAGE_SAFE: tuple[type[BaseException], ...] = (RailguardError, ImportError, OSError, MemoryError, TimeoutError)


def _safe_message(exc: BaseException) -> str:
    """A detector failure's message as Decision.error (which is logged) may hold it."""
    text = str(exc)
    if isinstance(exc, _MESSAGE_SAFE) or not text:
        return text
    return f"message withheld, sha256 {text_hash(text)[:12]}"  # keyed under $RAILGUARD_HASH_KEY when set


def apply_redactors(text: str, redactors: Sequence[DetectorSlot], counted: list[Finding], findings: list[Finding],
                    errors: list[str]) -> tuple[str, list[Finding], list[Finding]]:
    """``text`` through each redactor in turn, with the counted findings and all findings after it. A redactor that
    fails is like a failed check: its fail mode decides (``failure_findings``, its error appended to ``errors``),
    and its redaction, never made, is not claimed (its other findings, a warn for instance, stand)."""
    for slot in redactors:
        try:
            text = slot.detector.redact(text)  # type: ignore[attr-defined]  # a Redactor
        except Exception as exc:
            failed, err = failure_findings(slot, exc)
            errors.append(err)

            def unclaimed(f: Finding, name: str = slot.name) -> bool:
                return not (f.detector == name and f.action is Action.REDACT)

            counted = [f for f in counted if unclaimed(f)] + failed
            findings = [f for f in findings if unclaimed(f)] + failed
    return text, counted, findings


def gate_blocked(results: list[tuple[DetectorSlot, list[Finding], str | None]], request: CheckRequest) -> bool:
    """Whether an enforcing (non-shadow) detector among ``results`` blocked, under the user's thresholds (a gate
    finding the user relaxed must not skip the other detectors: the decision would then be a bare allow)."""
    return any(not slot.shadow and most_severe(apply_user_thresholds(fs, request)) is Action.BLOCK
               for slot, fs, _ in results)


def blocking_findings(results: list[tuple[DetectorSlot, list[Finding], str | None]],
                      request: CheckRequest) -> list[Finding]:
    """The findings of enforcing (non-shadow) detectors that block, under the user's thresholds."""
    return [f for slot, fs, _ in results if not slot.shadow
            for f in apply_user_thresholds(fs, request) if f.action is Action.BLOCK]


class Lifted(list[DetectorSlot]):
    """`lifting`'s claimants, and the (detector, category) findings they vouch for on this one message (`waived`)."""

    waived: frozenset[tuple[str, str]] = frozenset()


def lifting(acting: Sequence[DetectorSlot], results: list[tuple[DetectorSlot, list[Finding], str | None]],
            request: CheckRequest) -> Lifted:
    """The side-effect detectors that claim a blocked message as the user's own command (optional
    ``lifts(request, blocking)``). True: it lifts exactly what blocks it ("unblock crypto spam" is about crypto spam,
    so a category made from that topic blocked every command that named it, and the user could never unblock it by
    chat), the detectors that blocked are judged again under the settings it leaves. A set of (detector, category)
    pairs naming every blocking finding: the same, and those findings are then waived on this message ("unblock
    spam", nothing but base categories' words, blocked by a category the user made about crypto posts). A claim
    that raises, answers anything else, or meets a detector that failed closed lifts nothing."""
    blocking = blocking_findings(results, request)
    # a detector that failed closed blocks with a finding of category "error": no command lifts that (a user's own
    # category named "error" made it look like theirs, review of session 33)
    if any(err is not None and not slot.shadow and any(f.action is Action.BLOCK for f in fs)
           for slot, fs, err in results):
        return Lifted()
    blocked = {(f.detector, f.category) for f in blocking}
    claimed = Lifted()
    for slot in acting:
        claim = getattr(slot.detector, "lifts", None)
        try:
            said = claim(request, blocking) if blocking and callable(claim) else None
        except Exception:  # noqa: BLE001 - a broken claim is no claim: the message stays blocked
            continue
        if said is True:
            claimed.append(slot)
        elif isinstance(said, frozenset) and blocked <= said and all(
                isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in said):
            # it vouches for every block on this message (else its command would run on a message that stays
            # blocked); only those are waived, not other pairs it named
            claimed.append(slot)
            claimed.waived |= blocked
    return claimed


def waive(results: list[tuple[DetectorSlot, list[Finding], str | None]], waived: frozenset[tuple[str, str]]
          ) -> list[tuple[DetectorSlot, list[Finding], str | None]]:
    """``results`` with the blocking findings a lifting command vouched for (`Lifted.waived`) let through: scored
    and shown, not enforced, on this message only."""
    if not waived:
        return results
    note = "; lifted: this message is the user's own command naming their categories"
    return [(slot, [f.model_copy(update={"action": Action.ALLOW, "explanation": f.explanation + note})
                    if f.action is Action.BLOCK and (f.detector, f.category) in waived else f for f in fs], err)
            if err is None else (slot, fs, err) for slot, fs, err in results]  # a failure is never waived


def after_command(store: Any, tenant_id: str, request: CheckRequest,
                  results: list[tuple[DetectorSlot, list[Finding], str | None]]
                  ) -> tuple[CheckRequest, set[DetectorSlot]]:
    """A blocked message ran as the user's own command (`lifting`): the request with the settings the command left,
    and the detectors that blocked it, to be judged again under them. A command that was refused changed nothing,
    so they block again; one that applied lifted exactly what it named."""
    settings = store.get(tenant_id, request.user_id).settings
    blockers = {slot for slot, fs, _ in results if not slot.shadow and not slot.side_effects
                and most_severe(apply_user_thresholds(fs, request)) is Action.BLOCK}
    return request.model_copy(update={"settings": settings}), blockers


def lets_through(results: list[tuple[DetectorSlot, list[Finding], str | None]], request: CheckRequest,
                 shadow: bool) -> bool:
    """Whether the message goes on to the agent given ``results`` so far: no enforcing detector blocks it under the
    user's thresholds, or the decision is a shadow one (never enforced). A blocked message's command is not applied:
    "stop blocking insults, you idiot" is blocked as toxic and must not unblock insults on the way."""
    return shadow or not gate_blocked(results, request)


class LifecycleMethods:
    """`Guard.close` / `aclose` and the context managers: what the detectors hold is released, the store is not."""

    slots: tuple[DetectorSlot, ...]

    def close(self) -> None:
        """Release what the detectors hold: pooled HTTP connections (each detector's `close()`, if it has one)
        and their worker threads. Detectors stay usable (they re-acquire on the next check), so closing one of
        several Guards that share detector objects (the service's per-tenant views) is safe; call it when no check
        is running. A detector whose close fails is logged and the others are still closed. The store is the
        caller's to close. Also `with Guard(...) as guard:`."""
        close_detectors(((slot.name, slot.detector) for slot in self.slots), logging.getLogger("railguard.guard"))

    async def aclose(self) -> None:
        """Async twin of `close`: a detector's `aclose()` (its clients of this event loop) if it has one."""
        await aclose_detectors(((slot.name, slot.detector) for slot in self.slots),
                               logging.getLogger("railguard.guard"))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
