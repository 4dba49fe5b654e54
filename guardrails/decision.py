"""The Decision and Finding value objects: the same frozen pydantic models in Python, logs and HTTP."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Action(StrEnum):
    """What to do with a message. Ordered by severity: allow < warn < redact < block."""

    ALLOW = "allow"
    WARN = "warn"
    REDACT = "redact"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.ALLOW: 0, Action.WARN: 1, Action.REDACT: 2, Action.BLOCK: 3}


class Stage(StrEnum):
    INPUT = "input"
    OUTPUT = "output"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"


#: What a detector's failure (exception, timeout) means for the turn: "open" lets it through (an allow finding in
#: category "error", `Decision.error` set), "closed" blocks it. Per detector: its `default_fail_mode` (the privacy
#: probe: "closed"), else "open"; `Guard(fail_modes={...})` overrides.
FailMode = Literal["open", "closed"]


#: The environment variable `railguard check` and `railguard serve` read fail modes from (`parse_fail_modes`).
FAIL_MODES_ENV = "RAILGUARD_FAIL_MODES"


def parse_fail_modes(raw: str) -> dict[str, FailMode]:
    """``"harm=closed,commands=open"`` -> ``{"harm": "closed", "commands": "open"}`` (what ``Guard(fail_modes=...)``
    takes; `RAILGUARD_FAIL_MODES` and ``--fail-mode``). A malformed entry is a ValueError naming it."""
    out: dict[str, FailMode] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        name, sep, mode = (x.strip() for x in part.partition("="))
        if not sep or not name or mode not in ("open", "closed") or name in out:
            raise ValueError(f"expected name=open|closed, each name once, got {part[:60]!r}")
        out[name] = "open" if mode == "open" else "closed"
    return out


class Finding(BaseModel):
    """One detector's verdict on one category. `action` is what the finding asks for."""

    model_config = ConfigDict(frozen=True)

    detector: str
    category: str
    score: float
    threshold: float
    explanation: str = ""
    action: Action = Action.BLOCK
    # For the caller only: may quote the checked text (e.g. which words a command applied). Returned with the
    # Decision, never logged: `Decision.log_record` drops it. `explanation` must never quote the text.
    detail: str = ""
    # The category is one the user named (a moderation category made from "block posts about my ex"): its name may
    # carry their words, so `log_name` (logs, the audit trail, agent metadata) shows its keyed hash instead.
    user_category: bool = False

    @property
    def log_name(self) -> str:
        """The category as logs may show it: the name, or `name_hash` of a user-named one."""
        return name_hash(self.category) if self.user_category else self.category


class Decision(BaseModel):
    """Aggregated verdict for one check. Most severe finding wins; `shadow` decisions never enforce."""

    model_config = ConfigDict(frozen=True)

    action: Action
    stage: Stage
    findings: tuple[Finding, ...] = ()
    user_id: str
    session_id: str | None = None
    latency_ms: float = 0.0
    shadow: bool = False
    error: str | None = None
    # Extensions (CONTRACT allows additions): the text to use instead of the original when action is redact,
    # and a hash of the checked text so logs can correlate without holding it.
    redacted_text: str | None = Field(default=None, repr=False)
    text_sha256: str | None = None

    @property
    def enforced_action(self) -> Action:
        """The action a caller must apply: shadow decisions are alert-only and always allow."""
        return Action.ALLOW if self.shadow else self.action

    @property
    def blocked(self) -> bool:
        return self.enforced_action is Action.BLOCK

    @property
    def stops_tool_call(self) -> bool:
        """A tool_call-stage verdict that stops the call: block, or redact (other arguments would be another call)."""
        return self.enforced_action in (Action.BLOCK, Action.REDACT)

    def log_record(self) -> dict[str, object]:
        """What goes to logs and the audit trail: decisions and hashes, never raw or redacted text, and a user-named
        category only as its hash (`Finding.log_name`)."""
        record = self.model_dump(mode="json", exclude={"redacted_text": True, "findings": {"__all__": {"detail"}}})
        record["findings"] = [{**f, "category": fo.log_name} for f, fo in zip(record["findings"], self.findings,
                                                                              strict=True)]
        return record


def most_severe(findings: tuple[Finding, ...] | list[Finding]) -> Action:
    return max((f.action for f in findings), key=lambda a: a.severity, default=Action.ALLOW)


#: A deployment secret: when set, text hashes are HMAC-SHA256 under it. A plain SHA-256 of a short or templated
#: text ("my SSN is 123-45-6789") is recovered by trying candidates; a keyed one is not, without the key. Keep it
#: stable (session drift state matches resent conversations by these digests) and out of the logs.
HASH_KEY_ENV = "RAILGUARD_HASH_KEY"


@functools.cache
def _hash_key() -> bytes | None:
    key = os.environ.get(HASH_KEY_ENV, "")
    return key.encode("utf-8") if key else None


def keyed_sha256() -> Any:
    """A hash object (``update`` / ``hexdigest``) for digests of user text: HMAC-SHA256 under $RAILGUARD_HASH_KEY
    when it is set, else SHA-256."""
    key = _hash_key()
    return hmac.new(key, digestmod="sha256") if key is not None else hashlib.sha256()


def text_hash(text: str) -> str:
    """The hex digest of `text` (UTF-8, lone surrogates via surrogatepass; `keyed_sha256`): `Decision.text_sha256`,
    which logs and the audit trail carry instead of the text so records can be correlated without holding it."""
    h = keyed_sha256()
    h.update(text.encode("utf-8", "surrogatepass"))
    return str(h.hexdigest())


def name_hash(name: str) -> str:
    """A name that may be user text, as logs and the audit trail show it: ``#`` and 12 hex digits of `text_hash`
    (keyed under $RAILGUARD_HASH_KEY when set), stable across processes so records can be correlated."""
    return "#" + text_hash(name)[:12]


#: The assistant message that replaces a blocked turn unless the integration is given another.
DEFAULT_REFUSAL = "I'm sorry, but I can't help with that request."
#: What a blocked user message becomes in an agent's stored history, so that later turns never replay it.
WITHHELD_MESSAGE = "[message withheld by railguard]"
