"""The Guard's own types: what integrations need from a guard (`SupportsCheck`), a detector as the Guard runs it
(`DetectorSlot`), and `screen_history`'s result (`HistoryScreen`). Re-exported by `guardrails.pipeline`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .decision import Decision, FailMode, Stage
from .detector import Detector

__all__ = ["DetectorSlot", "HistoryScreen", "SupportsCheck"]


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
