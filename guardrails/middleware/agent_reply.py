"""The agent middleware's checks of a model reply (`wrap_model_call`): the reply's text, its reasoning, a structured
response and the text beside it, and its tool calls; a mixin of `GuardMiddleware`, which supplies the checks."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from langchain.agents.middleware import ModelResponse
from langchain_core.messages import AIMessage
from langchain_core.runnables.config import ensure_config, var_child_runnable_config
from langgraph.constants import TAG_NOSTREAM

from ..decision import Action, Decision, Stage, keyed_sha256
from ..errors import InvalidInputError
from ..text import message_role
from .identity import Identity
from .runnable import annotated, invalid_decision
from .structured import message_text as _text
from .structured import rebuild_redacted, replies_with_text, side_texts, structured_json, with_redacted
from .tool_calls import PendingCall, calls_to_check, reasoning_parts, settle_reasoning


class ReleasedReplies:
    """The model replies this middleware released, each as a digest of the conversation it ends (the messages the
    model answered, then the reply) under (user, session, reply id), most recent `MAX_RELEASED`. A trailing
    assistant message found here is the model's answer (a middleware jumped back to the model after it); any other
    is a caller's prefill. A released reply replayed after another user turn, or by another user, is not matched:
    the conversation before it differs, or the key does."""

    MAX_RELEASED = 50_000

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[str, str | None, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, who: Identity, asked: Sequence[Any], result: list[Any]) -> list[Any]:
        """``result`` with an id on each reply (one is given where the model set none), each remembered with the
        conversation it ends (``asked``, the model's request messages, then ``result`` up to it)."""
        out = [m.model_copy(update={"id": f"lc_run-{uuid.uuid4().hex}"}) if isinstance(m, AIMessage) and not m.id
               else m for m in result]
        found = []
        for i, m in enumerate(out):
            if isinstance(m, AIMessage) and m.id and (digest := _conversation_digest([*asked, *out[: i + 1]])):
                found.append(((who.user_id, who.session_id, m.id), digest))
        with self._lock:
            for key, digest in found:
                self._seen[key] = digest
                self._seen.move_to_end(key)
            while len(self._seen) > self.MAX_RELEASED:
                self._seen.popitem(last=False)
        return out

    def forget_user(self, user_id: str | None) -> int:
        """Drop every reply remembered for one user (None: for everyone; an erasure). Returns how many went."""
        with self._lock:
            keys = [k for k in self._seen if user_id is None or k[0] == user_id]
            for k in keys:
                del self._seen[k]
        return len(keys)

    def holds(self, who: Identity, messages: Sequence[Any]) -> bool:
        """Whether ``messages`` end with a reply released to this user and session after exactly these messages."""
        mid = getattr(messages[-1], "id", None) if messages else None
        digest = _conversation_digest(messages) if mid else None
        if digest is None:
            return False
        with self._lock:
            return self._seen.get((who.user_id, who.session_id, str(mid))) == digest


def _conversation_digest(messages: Sequence[Any]) -> str | None:
    """A keyed digest of roles and texts (length-prefixed); None when a message's text cannot be read."""
    h = keyed_sha256()
    try:
        for m in messages:
            text = _text(m)
            h.update(f"{message_role(m)}\x00{len(text)}\x00{text}\x00".encode("utf-8", "surrogatepass"))
    except InvalidInputError:
        return None
    return str(h.hexdigest())


class ReplyChecks:
    """How a model reply is checked and settled; `GuardMiddleware` provides the members declared here."""

    stages: frozenset[Stage]
    _released: ReleasedReplies

    def _emit(self, d: Decision) -> Decision:
        raise NotImplementedError

    def _refusal(self, d: Decision) -> AIMessage:
        raise NotImplementedError

    def _check(self, content: Any, who: Identity, stage: Stage, *, emit: bool = True, unread: int = 0) -> Decision:
        raise NotImplementedError

    async def _acheck(self, content: Any, who: Identity, stage: Stage, *, emit: bool = True,
                      unread: int = 0) -> Decision:
        raise NotImplementedError

    def _withhold_calls(self, checked: list[tuple[PendingCall, Decision]], result: list[Any]) -> list[Any]:
        raise NotImplementedError

    def _unreadable_reply(self, who: Identity, exc: InvalidInputError) -> ModelResponse:
        """A reply the checks cannot read (a content part whose text is not a string): refused, as an unreadable
        user turn is, instead of the error escaping the agent (review, session 31)."""
        return ModelResponse(result=[self._refusal(self._emit(invalid_decision(who, Stage.OUTPUT, exc)))],
                             structured_response=None)

    def _settle_reply(self, response: ModelResponse, who: Identity, asked: Sequence[Any]) -> ModelResponse:
        try:
            settled = self._settle_reply_checked(response, who)
        except InvalidInputError as exc:
            settled = self._unreadable_reply(who, exc)
        return self._released_as(settled, who, asked)

    async def _asettle_reply(self, response: ModelResponse, who: Identity, asked: Sequence[Any]) -> ModelResponse:
        try:
            settled = await self._asettle_reply_checked(response, who)
        except InvalidInputError as exc:
            settled = self._unreadable_reply(who, exc)
        return self._released_as(settled, who, asked)

    def _released_as(self, response: ModelResponse, who: Identity, asked: Sequence[Any]) -> ModelResponse:
        return ModelResponse(result=self._released.remember(who, asked, list(response.result)),
                             structured_response=response.structured_response)

    def _settle_reply_checked(self, response: ModelResponse, who: Identity) -> ModelResponse:
        structured = self._structured_text(response)
        result = list(response.result)
        if Stage.OUTPUT in self.stages and structured is not None:
            side = [(i, self._check(_text(result[i]), who, Stage.OUTPUT)) for i in side_texts(response.result)]
            response = self._with_side_text(side, response)
            if response.structured_response is None:  # the side text blocked the turn
                return response
            response = self._structured_result(self._check(structured, who, Stage.OUTPUT, emit=False), response)
            result = list(response.result)
            if response.structured_response is not None:  # its reasoning gets a check of its own too
                thoughts = [(i, self._check(t, who, Stage.OUTPUT)) for i, t in reasoning_parts(result)]
                response, result = self._settled(thoughts, response)
        elif Stage.OUTPUT in self.stages:
            replies = [(i, self._check(_text(result[i]), who, Stage.OUTPUT)) for i in replies_with_text(result)]
            result = self._with_outputs(replies, result)
            thoughts = [(i, self._check(t, who, Stage.OUTPUT)) for i, t in reasoning_parts(result)]
            result = settle_reasoning(thoughts, result, self._refusal)
        if Stage.TOOL_CALL in self.stages:
            calls = calls_to_check(result, structured=response.structured_response is not None)
            checked = [(c, self._check(c.text, who, Stage.TOOL_CALL)) for c in calls]
            result = self._withhold_calls(checked, result)
        return ModelResponse(result=result, structured_response=response.structured_response)

    async def _asettle_reply_checked(self, response: ModelResponse, who: Identity) -> ModelResponse:
        structured = self._structured_text(response)
        result = list(response.result)
        if Stage.OUTPUT in self.stages and structured is not None:
            side = [(i, await self._acheck(_text(result[i]), who, Stage.OUTPUT)) for i in side_texts(response.result)]
            response = self._with_side_text(side, response)
            if response.structured_response is None:
                return response
            response = self._structured_result(await self._acheck(structured, who, Stage.OUTPUT, emit=False),
                                               response)
            result = list(response.result)
            if response.structured_response is not None:
                thoughts = [(i, await self._acheck(t, who, Stage.OUTPUT)) for i, t in reasoning_parts(result)]
                response, result = self._settled(thoughts, response)
        elif Stage.OUTPUT in self.stages:
            replies = [(i, await self._acheck(_text(result[i]), who, Stage.OUTPUT)) for i in replies_with_text(result)]
            result = self._with_outputs(replies, result)
            thoughts = [(i, await self._acheck(t, who, Stage.OUTPUT)) for i, t in reasoning_parts(result)]
            result = settle_reasoning(thoughts, result, self._refusal)
        if Stage.TOOL_CALL in self.stages:
            checked = [(c, await self._acheck(c.text, who, Stage.TOOL_CALL))
                       for c in calls_to_check(result, structured=response.structured_response is not None)]
            result = self._withhold_calls(checked, result)
        return ModelResponse(result=result, structured_response=response.structured_response)

    def _output_result(self, d: Decision | None, msg: AIMessage) -> AIMessage:
        if d is None:
            return msg
        if d.enforced_action is Action.BLOCK:
            return self._refusal(d)
        if d.enforced_action is Action.REDACT and d.redacted_text is not None:
            return annotated(msg, d, content=d.redacted_text)
        return annotated(msg, d) if d.enforced_action is Action.WARN else msg

    def _with_outputs(self, checked: list[tuple[int, Decision]], result: list[Any]) -> list[Any]:
        """`result` with each checked reply's decision applied (refused, redacted or kept)."""
        out = list(result)
        for i, d in checked:
            out[i] = self._output_result(d, out[i])
        return out

    def _structured_text(self, response: ModelResponse) -> str | None:
        """The text the output check reads when the model answered with a structured response, else None."""
        if response.structured_response is None:
            return None
        return structured_json(response.structured_response)

    def _with_side_text(self, checked: list[tuple[int, Decision]], response: ModelResponse) -> ModelResponse:
        """`response` with its side texts' decisions applied: a block refuses the whole turn (structured
        response dropped), a redaction rewrites that reply's content."""
        result = list(response.result)
        for i, d in checked:
            if d.enforced_action is Action.BLOCK:
                return ModelResponse(result=[self._refusal(d)], structured_response=None)
            result[i] = self._output_result(d, result[i])  # type: ignore[arg-type]  # AIMessages (side_texts)
        return ModelResponse(result=result, structured_response=response.structured_response)

    def _structured_result(self, d: Decision, response: ModelResponse) -> ModelResponse:
        """Apply one output decision on a structured response to the object and to every message carrying it: the
        model's reply (ProviderStrategy: JSON content; ToolStrategy: the schema tool call's arguments) and the
        tool message langchain adds. Structured-output tool calls never reach `wrap_tool_call`, so this is their
        only check. Block drops the object; a redaction that cannot be mapped back onto the schema blocks too.
        `d` is not emitted yet: exactly one decision is reported, the one enforced."""
        obj = response.structured_response
        if d.enforced_action is Action.BLOCK:
            return ModelResponse(result=[self._refusal(self._emit(d))], structured_response=None)
        if d.enforced_action is not Action.REDACT or d.redacted_text is None:
            self._emit(d)
            return response
        try:
            data, new_obj = rebuild_redacted(obj, d.redacted_text)
        except (ValueError, TypeError):
            blocked = d.model_copy(update={"action": Action.BLOCK, "error": "structured response could not be "
                                                                            "redacted in place; blocked"})
            return ModelResponse(result=[self._refusal(self._emit(blocked))], structured_response=None)
        result = with_redacted(list(response.result), data, new_obj)
        self._emit(d)
        return ModelResponse(result=result, structured_response=new_obj)

    def _settled(self, thoughts: list[tuple[int, Decision]], response: ModelResponse
                 ) -> tuple[ModelResponse, list[Any]]:
        """A structured reply with its reasoning's verdicts applied: dropped when flagged; a block refuses the turn
        and drops the structured response with it."""
        blocked = next((d for _, d in thoughts if d.blocked), None)
        if blocked is not None:  # as a blocked structured response: the whole step is the refusal
            refused: list[Any] = [self._refusal(blocked)]
            return ModelResponse(result=refused, structured_response=None), refused
        result = settle_reasoning(thoughts, list(response.result), self._refusal)
        return ModelResponse(result=result, structured_response=response.structured_response), result


def nostream_runs() -> Any:
    """Tag every run started inside the model call `nostream` (a context token to reset): a middleware listed after
    the guard may swap the model the guard tagged (ModelFallbackMiddleware, a router), and the swapped-in model's raw
    tokens then reached `stream_mode="messages"` consumers before the output check (review, session 31). Runs inherit
    tags from the config in this context variable."""
    config = ensure_config()
    tags = list(config.get("tags") or [])
    return var_child_runnable_config.set({**config, "tags": [*tags, TAG_NOSTREAM] if TAG_NOSTREAM not in tags
                                          else tags})
