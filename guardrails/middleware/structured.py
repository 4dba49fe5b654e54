"""Structured responses (`response_format`) under an output decision: the object as the JSON text the check reads,
and a redaction mapped back onto the object and onto every message that carries it."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from pydantic import BaseModel

from ..text import content_text
from .runnable import without_text_copies

STRUCTURED_PREFIX = "Returning structured response: "  # langchain's default ToolStrategy tool-message text


def message_text(msg: BaseMessage) -> str:
    """The text a message's content carries (content parts read as `content_text` reads them). Never its tool
    calls rendered as text, as a model's prompt gets them: those are the tool_call check's, and an output
    redaction of such a rendering wrote text the model never produced into the reply (review, session 31)."""
    return msg.content if isinstance(msg.content, str) else str(content_text(msg.content))


def replies_with_text(result: list[Any]) -> list[int]:
    """The model's replies with text: each gets an output check."""
    return [i for i, m in enumerate(result) if isinstance(m, AIMessage) and message_text(m).strip()]


def side_texts(result: list[Any]) -> list[int]:
    """Replies with text *beside* a structured-output tool call (ProviderStrategy's JSON content is the
    structured response itself, checked as such): that text reaches the thread too, so it is checked too."""
    return [i for i, m in enumerate(result) if isinstance(m, AIMessage) and m.tool_calls and message_text(m).strip()]


def payload(obj: Any) -> Any:
    """A structured response as JSON-able data (pydantic model, dataclass, or the dict a JSON schema gives)."""
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return obj


def structured_json(obj: Any) -> str:
    """The text the output check reads for a structured response."""
    return json.dumps(payload(obj), ensure_ascii=False, default=str)


def _same_shape(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_shape(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same_shape(x, y) for x, y in zip(a, b, strict=True))
    return isinstance(b, str) if isinstance(a, str) else a == b


def rebuild_redacted(obj: Any, redacted_text: str) -> tuple[Any, Any]:
    """(data, object of ``obj``'s type) from the redacted JSON text. Raises ValueError or TypeError when the
    redaction broke the shape (not JSON, other keys, a non-string leaf changed, the schema refuses it): the
    caller blocks."""
    data = json.loads(redacted_text)
    if not _same_shape(payload(obj), data):
        raise ValueError("redaction changed the structured response's shape")
    if isinstance(obj, BaseModel):
        return data, type(obj).model_validate(data)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return data, type(obj)(**data)
    if not isinstance(data, type(obj)):
        raise TypeError("redaction changed the structured response's shape")
    return data, data


def with_redacted(result: list[BaseMessage], data: Any, new_obj: Any) -> list[BaseMessage]:
    """``result`` with the redacted structured response written into every message that carries it: the
    schema tool call's arguments (ToolStrategy), the JSON content (ProviderStrategy) and langchain's tool
    message."""
    tool_ids = {m.tool_call_id for m in result if isinstance(m, ToolMessage)}
    redacted_json = json.dumps(data, ensure_ascii=False)
    out: list[BaseMessage] = []
    for msg in result:
        if isinstance(msg, AIMessage) and msg.tool_calls:
            calls = [{**c, "args": data} if c.get("id") in tool_ids else c for c in msg.tool_calls]
            msg = msg.model_copy(update={"tool_calls": calls, "additional_kwargs": {}, "invalid_tool_calls": []})
        elif isinstance(msg, AIMessage) and message_text(msg).strip():  # ProviderStrategy: the JSON is the content
            msg = without_text_copies(msg).model_copy(update={"content": redacted_json})  # `parsed` held the old
        elif isinstance(msg, ToolMessage) and msg.tool_call_id in tool_ids and \
                message_text(msg).startswith(STRUCTURED_PREFIX):
            msg = msg.model_copy(update={"content": f"{STRUCTURED_PREFIX}{new_obj}"})
        out.append(msg)
    return out
