"""Tool calls checked where the model produces them, so a blocked call's arguments never enter the thread; and the
other parts of a model turn the thread keeps besides its text (tool results, reasoning parts), as they are checked.

`GuardMiddleware.wrap_model_call` checks each tool call of the model's reply at the `tool_call` stage. A blocked
(or redacted: rewritten arguments would change the call) call keeps its id and name but its arguments become a
marker, ``{"railguard_withheld": "<sha256 of the checked text>"}``, so neither a checkpointed thread, a
human-in-the-loop reviewer, a later model turn nor a UI ever holds them; `wrap_tool_call` answers a marked call
with the blocked tool message and never runs the tool. Calls that pass are remembered (bounded, per process) so
`wrap_tool_call` does not check the same call twice; a call edited in between (its text no longer matches), or
one the process no longer remembers, is checked again there.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langgraph.types import Command

from ..decision import WITHHELD_MESSAGE, Action, Decision, Stage, text_hash
from ..text import call_text

WITHHELD_ARGS_KEY = "railguard_withheld"
_MEMO_SIZE = 4096


def is_withheld(args: Any) -> bool:
    return isinstance(args, dict) and set(args) == {WITHHELD_ARGS_KEY}


@dataclass(frozen=True)
class PendingCall:
    """One tool call of the model's reply still to check: where it sits and the text it is checked as."""

    message_index: int
    call_id: str | None
    text: str
    invalid: bool  # an unparseable call (`invalid_tool_calls`): never run, but its raw arguments are model output


def calls_to_check(result: list[Any], *, structured: bool) -> list[PendingCall]:
    """The reply's tool calls for the `tool_call` check. With a structured response, the schema call (the one
    langchain answered with its own tool message in this reply) is the output check's (`_structured_result`);
    any other call in the same reply still goes to the tool node and is checked here like any call."""
    if not structured:
        return pending_calls(result)
    answered = {m.tool_call_id for m in result if isinstance(m, ToolMessage)}
    return [c for c in pending_calls(result) if c.call_id not in answered]


def pending_calls(result: Sequence[BaseMessage]) -> list[PendingCall]:
    pending: list[PendingCall] = []
    for i, msg in enumerate(result):
        if not isinstance(msg, AIMessage):
            continue
        # every call, marker-shaped ones too: a fresh reply's marker is the model's own text (never run either)
        pending += [PendingCall(i, c.get("id"), call_text(c["name"], c.get("args")), False) for c in msg.tool_calls]
        pending += [PendingCall(i, c.get("id"), call_text(c.get("name"), c.get("args")), True)
                    for c in msg.invalid_tool_calls]
    return pending


def _marker(d: Decision) -> dict[str, str]:
    return {WITHHELD_ARGS_KEY: d.text_sha256 or ""}


def withhold(result: Sequence[BaseMessage], blocked: list[tuple[PendingCall, Decision]]) -> list[BaseMessage]:
    """``result`` with each blocked call's arguments replaced by the marker (ids, names and order kept)."""
    out = list(result)
    by_message: dict[int, dict[tuple[bool, str | None], Decision]] = {}  # message -> (invalid, call id) -> verdict
    for call, d in blocked:
        by_message.setdefault(call.message_index, {})[(call.invalid, call.call_id)] = d
    for i, calls in by_message.items():
        msg = out[i]
        assert isinstance(msg, AIMessage)
        tool_calls = [{**c, "args": _marker(calls[(False, c.get("id"))])} if (False, c.get("id")) in calls else c
                      for c in msg.tool_calls]
        invalid = [{**c, "args": json.dumps(_marker(calls[(True, c.get("id"))])), "error": None}
                   if (True, c.get("id")) in calls else c for c in msg.invalid_tool_calls]
        # The provider's raw copies of the calls (OpenAI-style `additional_kwargs`) would still hold the arguments;
        # langchain reads `tool_calls` when it sends the message again, so the raw copies are dropped.
        extra = {k: v for k, v in msg.additional_kwargs.items() if k not in ("tool_calls", "function_call")}
        update: dict[str, Any] = {"tool_calls": tool_calls, "invalid_tool_calls": invalid, "additional_kwargs": extra,
                                  "content": _withhold_blocks(msg.content, {cid: d for (_, cid), d in calls.items()})}
        if isinstance(msg, AIMessageChunk):
            update["tool_call_chunks"] = []
        out[i] = msg.model_copy(update=update)
    # A tool message produced in the same model step answers a call there (langchain's structured-output error,
    # "Failed to parse ... input_value=<the arguments>", sent back to the model for a retry): it quotes what was
    # withheld, so it is withheld too.
    ids = {call.call_id for call, _ in blocked if call.call_id}
    for j, m in enumerate(out):
        if isinstance(m, ToolMessage) and m.tool_call_id in ids:
            out[j] = m.model_copy(update={"content": WITHHELD_MESSAGE, "artifact": None})
    return out


# Content blocks that carry a tool call's arguments (Anthropic `tool_use`, LangChain v1 `tool_call`, OpenAI Responses
# `function_call`, server tools), by the key holding them.
_CALL_BLOCKS = {"tool_use": "input", "server_tool_use": "input", "tool_call": "args", "function_call": "arguments"}


def _withhold_blocks(content: Any, withheld: dict[str | None, Decision]) -> Any:
    """`content` with the arguments of withheld calls replaced by the marker in provider content blocks too."""
    if not isinstance(content, list):
        return content
    out = []
    for block in content:
        if isinstance(block, dict) and block.get("type") in _CALL_BLOCKS:
            d = withheld.get(block.get("id")) or withheld.get(block.get("call_id"))
            if d is not None:
                key = _CALL_BLOCKS[block["type"]]
                marker: Any = json.dumps(_marker(d)) if isinstance(block.get(key), str) else _marker(d)
                block = {**{k: v for k, v in block.items() if k != "partial_json"}, key: marker}
        out.append(block)
    return out


class CheckedCalls:
    """Per-process memory of tool calls checked at model time (bounded; thread-safe)."""

    def __init__(self, size: int = _MEMO_SIZE) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._passed: OrderedDict[tuple[str, str | None, str, str], None] = OrderedDict()
        self._blocked: OrderedDict[str, Decision] = OrderedDict()

    @staticmethod
    def _key(user_id: str, session_id: str | None, call_id: str, text: str) -> tuple[str, str | None, str, str]:
        return user_id, session_id, call_id, text_hash(text)

    def remember(self, call: PendingCall, d: Decision) -> None:
        if not call.call_id or call.invalid:
            return
        with self._lock:
            if d.stops_tool_call:
                self._blocked[call.call_id] = d
                self._trim(self._blocked)
            else:
                self._passed[self._key(d.user_id, d.session_id, call.call_id, call.text)] = None
                self._trim(self._passed)

    def take_passed(self, user_id: str, session_id: str | None, call_id: str, text: str) -> bool:
        """True once if this exact call (same user, session, id and text) passed at model time."""
        key = self._key(user_id, session_id, call_id, text)
        with self._lock:
            if key not in self._passed:
                return False
            del self._passed[key]
            return True

    def blocked_decision(self, call_id: str, user_id: str, session_id: str | None) -> Decision:
        """The decision that withheld a call, or (process restarted) a stand-in naming what happened."""
        with self._lock:
            d = self._blocked.pop(call_id, None)
        if d is not None and d.user_id == user_id:
            return d
        return Decision(action=Action.BLOCK, stage=Stage.TOOL_CALL, user_id=user_id, session_id=session_id,
                        error="tool call withheld by railguard when the model produced it")

    def forget_user(self, user_id: str | None) -> int:
        """Drop every entry of one user (None: of everyone; an erasure). Returns how many went."""
        with self._lock:
            passed = [k for k in self._passed if user_id is None or k[0] == user_id]
            blocked = [k for k, d in self._blocked.items() if user_id is None or d.user_id == user_id]
            for k in passed:
                del self._passed[k]
            for c in blocked:
                del self._blocked[c]
        return len(passed) + len(blocked)

    def _trim(self, memo: OrderedDict[Any, Any]) -> None:
        while len(memo) > self._size:
            memo.popitem(last=False)


def result_messages(out: Any) -> list[BaseMessage] | None:
    """The messages a tool's output adds to the thread (what the tool-result stage checks): a ToolMessage, or
    those of a `Command`'s state update; None for an update the middleware cannot read (refused: it would reach
    the model unchecked)."""
    if isinstance(out, ToolMessage):
        return [out]
    if not isinstance(out, Command) or out.update is None:
        return []
    msgs = out.update.get("messages", []) if isinstance(out.update, dict) else None
    if not isinstance(msgs, list) or not all(isinstance(m, BaseMessage) for m in msgs):
        return None
    return msgs


def settle_results(checked: Sequence[tuple[BaseMessage, Decision]], out: Any,
                   blocked_tool: Callable[[Decision, str | None], ToolMessage]) -> Any:
    """``out`` (a ToolMessage or a `Command`) with each checked message blocked (a tool message becomes
    ``blocked_tool``'s refusal, any other the withheld marker) or redacted; a redacted tool message loses its
    artifact (a `content_and_artifact` tool keeps the raw result there)."""
    def settled(m: BaseMessage, d: Decision) -> BaseMessage:
        if d.enforced_action is Action.BLOCK:
            if isinstance(m, ToolMessage):
                return blocked_tool(d, m.tool_call_id)
            return m.model_copy(update={"content": WITHHELD_MESSAGE})
        if d.enforced_action is Action.REDACT and d.redacted_text is not None:
            extra = {"artifact": None} if isinstance(m, ToolMessage) else {}
            return m.model_copy(update={"content": d.redacted_text, **extra})
        return m

    done = {id(m): settled(m, d) for m, d in checked}
    if isinstance(out, ToolMessage):
        return done.get(id(out), out)
    messages = [done.get(id(m), m) for m in out.update["messages"]]
    return dataclasses.replace(out, update={**out.update, "messages": messages})


_REASONING = ("reasoning", "thinking")  # part types whose text sits under the key of the same name
#: additional_kwargs keys holding reasoning: OpenAI-compatible reasoning models' text ("reasoning_content") and older
#: Responses output / some routers ("reasoning": a str, or a reasoning item with a "summary")
#: ... and OpenAI's ``refusal`` text, model output beside the content that nothing else reads (session 31 review).
_REASONING_KWARGS = ("reasoning_content", "reasoning", "refusal")


def _texts_of(item: Any) -> list[str]:
    """The text of a reasoning item: a str, or a dict's own text under its type's key, "text" or "summary"."""
    if isinstance(item, str):
        return [item]
    if not isinstance(item, dict):
        return []
    out = [item[k] for k in ("reasoning", "thinking", "text") if isinstance(item.get(k), str)]
    summary = item.get("summary") or ()
    return out + [p["text"] for p in summary if isinstance(p, dict) and isinstance(p.get("text"), str)]


def reasoning_text(message: Any, sep: str = "\n") -> str:
    """The reasoning a reply carries: its ``reasoning`` / ``thinking`` parts (LangChain standard, Anthropic), an
    OpenAI Responses reasoning part's ``summary`` texts, and ``additional_kwargs`` "reasoning_content" / "reasoning"
    (a str or a reasoning item) and an OpenAI "refusal" str: text the thread keeps beside the answer."""
    if not isinstance(message, AIMessage):
        return ""
    texts = []
    for p in message.content if isinstance(message.content, list) else ():
        if isinstance(p, dict) and p.get("type") in _REASONING:
            texts += _texts_of(p)
    for key in _REASONING_KWARGS:
        texts += _texts_of(message.additional_kwargs.get(key))
    return sep.join(texts)


def reasoning_parts(result: Sequence[Any]) -> list[tuple[int, str]]:
    """(index, text) of each AI message in ``result`` that carries reasoning (`reasoning_text`): a thread keeps it,
    so it gets an output check of its own."""
    return [(i, text) for i, m in enumerate(result) if (text := reasoning_text(m)).strip()]


def settle_reasoning(checked: Sequence[tuple[int, Decision]], result: list[Any],
                     refusal: Callable[[Decision], AIMessage]) -> list[Any]:
    """``result`` after the output check of its replies' reasoning parts (`reasoning_parts`): a blocked one refuses
    the reply; a redacted or warned-about one is dropped (it is not the answer, so it is not rewritten). A shadow
    decision changes nothing."""
    out = list(result)
    for i, d in checked:
        if d.enforced_action is Action.BLOCK:
            out[i] = refusal(d)
        elif d.enforced_action is not Action.ALLOW:
            out[i] = without_reasoning(out[i])
    return out


def without_reasoning(message: Any) -> Any:
    """``message`` without its reasoning (`reasoning_text`'s sources; anything else as it is)."""
    if not isinstance(message, AIMessage):
        return message
    update: dict[str, Any] = {}
    if isinstance(message.content, list):
        update["content"] = [p for p in message.content if not (isinstance(p, dict) and p.get("type") in _REASONING)]
    if any(k in message.additional_kwargs for k in _REASONING_KWARGS):
        update["additional_kwargs"] = {k: v for k, v in message.additional_kwargs.items() if k not in _REASONING_KWARGS}
    return message.model_copy(update=update) if update else message
