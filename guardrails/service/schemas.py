"""Wire models of the HTTP service. The Decision, StoredSettings and AuditEntry models are reused as-is, so
Python callers, logs and HTTP clients all see one shape (CONTRACT.md: "the same object in Python, logs, HTTP")."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..decision import Decision
from ..detector import Role
from ..errors import safe_segment
from ..text import MAX_MESSAGES, message_content

#: What the chat proxy passes between the client and the upstream as an identifier (tool names and call ids; a
#: model name may also hold "/"): free text there would go unscreened (OpenAI names match ^[a-zA-Z0-9_-]{1,64}$).
IDENTIFIER = re.compile(r"[A-Za-z0-9_.:\-]{1,256}")
MODEL_NAME = re.compile(r"[A-Za-z0-9_.:/@\-]{1,256}")  # "org/name", "claude-3-5-sonnet@20240620"


class FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=256)
    arguments: str = ""


class ToolCallIn(BaseModel):
    """An assistant turn's tool call as a client resends it (OpenAI shape; only these fields are forwarded)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(BaseModel):
    """One conversation message as a caller sends it (OpenAI shape; other keys are ignored)."""

    model_config = ConfigDict(extra="ignore")

    role: Role
    content: str
    # Tool-use turns, forwarded upstream by the chat proxy after the text-level detectors screened them like the
    # content: an assistant turn's `tool_calls` (their arguments), a tool turn's `tool_call_id`, a `name`.
    tool_calls: list[ToolCallIn] | None = Field(default=None, max_length=128)
    tool_call_id: str | None = Field(default=None, max_length=256)
    name: str | None = Field(default=None, max_length=256)

    @field_validator("role", mode="before")
    @classmethod
    def _developer_is_system(cls, v: Any) -> Any:
        return "system" if v == "developer" else v  # OpenAI's newer name for the system role

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, v: Any) -> Any:
        """Content-part lists are checked (and forwarded) as `content_text` joins them: the same reading as the
        Python Guard; `null` (tool-call turns) as ""."""
        return message_content(v)


class ChatTurnIn(ChatMessageIn):
    """A message of a chat completions request: tool fields only where the upstream accepts them (else the client
    would see the upstream's refusal as a 502, and a stray id would ride upstream unchecked)."""

    @model_validator(mode="after")
    def _tool_fields_where_they_belong(self) -> ChatTurnIn:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if self.tool_call_id and self.role != "tool":
            raise ValueError("tool_call_id belongs on a tool message only")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("tool_calls belong on an assistant message only")
        ids = [self.tool_call_id or ""] + [t for c in self.tool_calls or () for t in (c.id, c.function.name)]
        if not all(IDENTIFIER.fullmatch(t) for t in ids if t):
            raise ValueError("tool names and call ids must be identifiers (letters, digits, _ . : -)")
        return self


class CheckBody(BaseModel):
    """Body of `POST /v1/check/{stage}`: exactly one of `text` or `messages`.

    `extra="forbid"` so a misspelt field ("txt") is a 422, not a silent check of nothing.
    """

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    session_id: str | None = Field(default=None, min_length=1, max_length=256)
    text: str | None = None
    messages: list[ChatMessageIn] | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_content(self) -> CheckBody:
        if (self.text is None) == (self.messages is None):
            raise ValueError("give exactly one of 'text' or 'messages'")
        return self


class ScreenBody(BaseModel):
    """Body of `POST /v1/screen/history`: the earlier messages of a conversation a client resends, without its
    newest message (that one is `/v1/check/input`'s job). Every message sent is screened, by the text-level
    detectors only (gates and redactors, as `Guard.screen_history`), so screening writes no per-session state."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    session_id: str | None = Field(default=None, min_length=1, max_length=256)
    # bounded before any detector runs: 25,000 short messages had taken 39 s of screening
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    # Always true: states the meaning (every message sent is screened), so a service from before this field
    # existed, which skipped the last message sent, refuses such a body (422) instead of leaving one unscreened.
    include_last: Literal[True] = True


class ScreenedDecision(BaseModel):
    index: int
    decision: Decision


class ScreenOut(BaseModel):
    """The messages to forward (redacted where a detector said so), the non-allow decisions by message index,
    and the first blocking decision (then forward nothing)."""

    messages: list[dict[str, Any]]
    decisions: list[ScreenedDecision]
    blocked: Decision | None = None


class SettingsPut(BaseModel):
    """Replace all of a user's settings. `expected_version` (or an If-Match header) is required: 0 = create."""

    model_config = ConfigDict(extra="forbid")

    settings: dict[str, dict[str, Any]]
    expected_version: int | None = Field(default=None, ge=0, strict=True)  # strict: `true` is not version 1


class SectionPut(BaseModel):
    """Replace one section. Without a version the server does an atomic read-modify-write of that section only,
    so concurrent writers of *other* sections never lose updates; with one it is a compare-and-set."""

    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any]
    expected_version: int | None = Field(default=None, ge=0, strict=True)  # strict: `true` is not version 1


class SectionOut(BaseModel):
    section: str
    data: dict[str, Any]
    version: int


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.\-:]+$")


class ApiKeyOut(BaseModel):
    """Returned exactly once, at creation: only a salted hash of `api_key` is kept."""

    tenant_id: str
    key_id: str
    api_key: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    status: int
    details: dict[str, Any] | None = None


class ErrorOut(BaseModel):
    """Every 4xx/5xx body: OpenAI-compatible `{"error": {...}}` so OpenAI SDKs surface the message too."""

    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok", "starting", "unavailable"]
    detectors: list[str] = Field(default_factory=list)
    version: str = ""
    details: dict[str, Any] | None = None


# ---- OpenAI-compatible chat completions ---------------------------------------------------------------------
#: Request parameters forwarded upstream as given: generation settings (OpenAI's, and the sampling knobs local
#: servers take), and the application's own `tools`, `tool_choice` and `response_format` (written by the developer,
#: not the end user: not screened). A field carrying conversation text (`prediction`, `audio`) is refused.
PASS_THROUGH = frozenset({
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_completion_tokens", "parallel_tool_calls",
    "presence_penalty", "response_format", "seed", "stop", "stream_options", "temperature", "tool_choice", "tools",
    "top_p", "top_k", "min_p", "repetition_penalty", "reasoning_effort", "service_tier"})

class ChatCompletionRequest(BaseModel):
    """The subset of the OpenAI request the proxy reads; the parameters in `PASS_THROUGH` go upstream as given, any
    other field is refused.

    The end user is `user` (OpenAI's own field) or the `X-Railguard-User-Id` header.
    """

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(default=None, pattern=rf"^{MODEL_NAME.pattern}$")  # forwarded, and echoed back
    # One less than the guard's limit: the output check judges the conversation plus the answer, so a request at
    # the limit was answered upstream (paid) and then refused as a 502. Bounded before any screening, too.
    messages: list[ChatTurnIn] = Field(min_length=1, max_length=MAX_MESSAGES - 1)
    stream: bool = Field(default=False, strict=True)
    user: str | None = Field(default=None, min_length=1, max_length=256)
    max_tokens: int | None = Field(default=None, ge=1, le=4096, strict=True)
    n: int | None = Field(default=None, ge=1, le=1, strict=True)  # one answer: the one that is checked

    @model_validator(mode="before")
    @classmethod
    def _known_parameters(cls, data: Any) -> Any:
        """Other fields pass through upstream only if they are generation parameters: a field carrying text (a
        `prediction`, `audio`, a field we do not know) would reach the upstream without any check."""
        if isinstance(data, dict):
            unknown = sorted(k for k in data if k not in cls.model_fields and k not in PASS_THROUGH)
            if unknown:
                raise ValueError(f"unsupported field(s) {[safe_segment(k) for k in unknown[:5]]}: the proxy "
                                 f"forwards {sorted(PASS_THROUGH)} besides its own")
            try:  # a lone surrogate in a pass-through value (`stop`, a tool's description) cannot be sent as JSON:
                # refused here, it had failed in the upstream call and been reported as the upstream's fault (502)
                json.dumps({k: v for k, v in data.items() if k in PASS_THROUGH}, ensure_ascii=False).encode()
            except UnicodeEncodeError as exc:
                raise ValueError(f"a generation parameter contains an unpaired surrogate ({exc.reason})") from None
            except (TypeError, ValueError, RecursionError):
                pass  # not JSON at all: the field's own validation (or the upstream body) reports it
        return data
