"""The Guard's own types: what integrations need from a guard (`SupportsCheck`), a detector as the Guard runs it
(`DetectorSlot`), and `screen_history`'s result (`HistoryScreen`). Re-exported by `guardrails.pipeline`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .decision import Action, Decision, FailMode, Stage
from .detector import Detector

__all__ = ["DetectorSlot", "HistoryScreen", "SupportsCheck", "history_checks"]


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
