"""`GuardedRunnable`: the Guard around any langchain-core Runnable or chat model, no `langchain` needed.

Identity comes from the call's RunnableConfig (`configurable` or `metadata`: user_id, session_id).
Input: the last message gets the full check; earlier ones (a caller resending its history) pass the Guard's
text-level detectors (`Guard.screen_history`), so a turn redacted or blocked when it was new stays so.
Output: the reply's text at the output stage, its reasoning parts on their own (a block refuses the reply, a
redaction or warning drops them), and each tool call it asks for at the tool_call stage (a blocked or redacted
call refuses the whole reply: no tool executor downstream ever gets it).
Streaming is buffered: the inner stream is collected, the whole output is checked, and only then released,
so a blocked output never reaches the consumer (the price: no token-by-token latency benefit). A chat model
`inner` also runs with token streaming disabled, so callback handlers (`astream_events`, tracing) get no raw
token events either; a composite Runnable's inner chat models are the caller's to configure. Each call is this
Runnable's own run: its end event carries the checked output (the inner model's own end event, nested under it,
is the unchecked reply a tracer of that model records).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, convert_to_messages
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict

from ..decision import DEFAULT_REFUSAL, Action, Decision, Finding, Stage
from ..errors import InvalidInputError
from ..guard_types import SupportsCheck
from ..models.chat import PrefillBlocked, to_chat_dicts
from ..text import last_unread_parts, unanswered_user_turns, unread_metadata
from .identity import Identity, current_identity, for_serving, from_sources
from .tool_calls import pending_calls, reasoning_text, without_reasoning


def _as_messages(value: Any) -> list[BaseMessage]:
    if isinstance(value, str):
        return [HumanMessage(content=value)]
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, BaseMessage):
        return [value]
    if isinstance(value, list) and all(isinstance(m, BaseMessage) for m in value):
        return list(value)
    if isinstance(value, list | tuple) and value:
        # what chat models accept too: {"role", "content"} dicts, ("user", "hi") pairs, plain strings
        try:
            return convert_to_messages(value)
        except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
            # langchain's message quotes the offending item (user text): keep it out of errors and logs
            raise InvalidInputError(f"guarded input is not a list of chat messages ({type(exc).__name__}); use "
                                    "role/content dicts, (role, content) pairs or BaseMessages") from None
    raise InvalidInputError("guarded input must be a str, a PromptValue, a message or a list of messages "
                            "(BaseMessages, role/content dicts or (role, content) pairs)")


def _output_text(value: Any) -> str:
    if isinstance(value, BaseMessage):
        return to_chat_dicts([value])[0]["content"]
    if isinstance(value, str):
        return value
    raise InvalidInputError(f"cannot check output of type {type(value).__name__}")


#: Where a provider keeps a second copy of a reply's text: OpenAI's parsed structured output and its per-token
#: logprobs. A redaction that rewrites the content drops them, or the original would stay in the message.
TEXT_COPY_KWARGS = ("parsed",)
TEXT_COPY_METADATA = ("logprobs",)


def without_text_copies(message: BaseMessage) -> BaseMessage:
    """``message`` without the provider fields that copy its text (`TEXT_COPY_KWARGS`, `TEXT_COPY_METADATA`)."""
    kwargs = {k: v for k, v in message.additional_kwargs.items() if k not in TEXT_COPY_KWARGS}
    meta = {k: v for k, v in message.response_metadata.items() if k not in TEXT_COPY_METADATA}
    if len(kwargs) == len(message.additional_kwargs) and len(meta) == len(message.response_metadata):
        return message
    return message.model_copy(update={"additional_kwargs": kwargs, "response_metadata": meta})


def annotated(message: Any, d: Decision, **update: Any) -> Any:
    """A message carrying the decision that changed or flagged it in ``response_metadata["railguard"]``, as a
    refusal does (a str output has nowhere to carry it: `on_decision` sees it). A new ``content`` (a redaction)
    drops the provider's copies of the old text."""
    if not isinstance(message, BaseMessage):
        return message
    if "content" in update:
        message = without_text_copies(message)
    meta = {**message.response_metadata, "railguard": d.log_record()}
    return message.model_copy(update={**update, "response_metadata": meta})


def _merged(chunks: list[Any]) -> Any:
    """A stream's chunks as one message (tool calls assembled from their chunks), or None for text streams."""
    if chunks and all(isinstance(c, AIMessageChunk) for c in chunks):
        return add_ai_message_chunks(chunks[0], *chunks[1:])  # one merge, not one per chunk
    return None


def invalid_decision(identity: Identity, stage: Stage, exc: InvalidInputError) -> Decision:
    """Malformed or unscorable input inside a guarded call: refuse (fail closed) with the reason, never crash."""
    finding = Finding(detector="railguard", category="invalid_input", score=1.0, threshold=0.0,
                      action=Action.BLOCK, explanation=str(exc)[:200])
    return Decision(action=Action.BLOCK, stage=stage, findings=(finding,), user_id=identity.user_id,
                    session_id=identity.session_id, error=str(exc)[:500])


@contextmanager
def serving_as(who: Identity) -> Iterator[None]:
    """The guarded model call runs with `current_identity` set, so prefill observers (the fused privacy probe)
    score this user's session rather than an anonymous one."""
    token = current_identity.set(who)
    try:
        yield
    finally:
        current_identity.reset(token)


def _as_chunk(item: Any) -> Any:
    """An unstreamed chat model's `stream` yields one whole AIMessage; stream consumers expect chunks."""
    if isinstance(item, AIMessage) and not isinstance(item, AIMessageChunk):
        return AIMessageChunk(content=item.content, additional_kwargs=item.additional_kwargs,
                              response_metadata=item.response_metadata, id=item.id, tool_calls=item.tool_calls,
                              usage_metadata=item.usage_metadata)
    return item


#: What a guarded call's own run records as its input (see GuardedRunnable.invoke).
TRACED_INPUT = "[input withheld by railguard until checked; see the nested model run]"
#: langgraph's tag (langgraph.constants.TAG_NOSTREAM): a tagged model's messages are not emitted to
#: stream_mode="messages" consumers. Spelled out here: this module needs langchain-core only.
NOSTREAM_TAG = "nostream"


def without_token_streaming(model: Any) -> Any:
    """A copy of a langchain-core chat model that generates in one piece (no per-token callback events) and is
    tagged `nostream`, so a LangGraph `stream_mode="messages"` consumer does not get its unchecked reply either
    (a wrapped model called inside a graph node)."""
    if not hasattr(model, "model_copy") or not hasattr(model, "disable_streaming"):
        return model  # not a chat model: left as it is (a composite's models are the caller's to configure)
    tags = list(getattr(model, "tags", None) or [])
    if model.disable_streaming is True and NOSTREAM_TAG in tags:
        return model
    return model.model_copy(update={"disable_streaming": True, "tags": [*dict.fromkeys([*tags, NOSTREAM_TAG])]})



def _unread_of(messages: list[BaseMessage], at: int) -> dict[str, int] | None:
    """The check metadata saying how many media parts the judged turn has (the check reads its text only): the
    judged message and the user messages sent with it."""
    return unread_metadata(last_unread_parts(messages[: at + 1])) if 0 <= at < len(messages) else None


class GuardedRunnable(RunnableSerializable[Any, Any]):
    """Check input (last human message) before `inner` runs and its output after; block → refusal message."""

    # a misspelt option ("default_user=") is an error here, not a silently ignored field
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    guard: SupportsCheck
    inner: Any
    refusal: str = DEFAULT_REFUSAL
    default_user_id: str | None = None
    #: Called with every Decision this wrapper gets (input, screened history, output, reasoning, tool calls), as
    #: the agent middleware's `on_decision`: the place to see warnings and redactions as well as blocks.
    on_decision: Callable[[Decision], None] | None = None

    def _emit(self, d: Decision) -> Decision:
        if self.on_decision is not None:
            self.on_decision(d)
        return d

    def _who(self, config: RunnableConfig | None) -> Identity:
        return from_sources(None, config or {}, self.default_user_id)

    def _refuse(self, d: Decision, like: Any) -> Any:
        """The refusal in the shape the caller gets from `inner`: a str (e.g. `model | StrOutputParser()`), a
        message chunk from a stream, else an AIMessage carrying the decision in its response_metadata."""
        meta = {"railguard": d.log_record()}
        if isinstance(like, str):
            return self.refusal
        if isinstance(like, AIMessageChunk):
            return AIMessageChunk(content=self.refusal, response_metadata=meta)
        return AIMessage(content=self.refusal, response_metadata=meta)

    def _like(self, chunk: bool) -> Any:
        """An empty value of `inner`'s output type, for refusals issued before it produced anything."""
        try:
            text_out = self.inner.OutputType is str
        except Exception:  # noqa: BLE001 - a Runnable that cannot say: messages, as for chat models
            text_out = False
        if text_out:
            return ""
        return AIMessageChunk(content="") if chunk else AIMessage(content="")

    def _apply_input(self, d: Decision, messages: list[BaseMessage], at: int) -> list[BaseMessage] | None:
        if d.enforced_action is Action.BLOCK:
            return None
        if d.enforced_action is Action.REDACT and d.redacted_text is not None:
            return [*messages[:at], messages[at].model_copy(update={"content": d.redacted_text}), *messages[at + 1:]]
        return messages

    @staticmethod
    def _checked_turn(chat: list[dict[str, str]]) -> int:
        """Which message the input check judges (with the conversation up to it as context): the user turn the
        model is to answer when an assistant prefill or a system message follows it (the chat proxy's rule), else
        the last message. Judging the last message alone let a user turn followed by "Sure," or a system message
        reach the model with only the text-level history screen (review, session 30)."""
        roles = [m["role"] for m in chat]
        if roles and roles[-1] in ("assistant", "system"):
            turns = unanswered_user_turns(roles[:-1] if roles[-1] == "assistant" else roles)
            if turns:
                return turns[-1]
        return len(chat) - 1

    def _apply_output(self, d: Decision | None, out: Any, drop_reasoning: bool = False) -> Any:
        out = without_reasoning(out) if drop_reasoning else out
        if d is None:
            return out
        if d.stage is Stage.TOOL_CALL or d.enforced_action is Action.BLOCK:
            return self._refuse(d, out)
        if d.enforced_action is Action.REDACT and d.redacted_text is not None:
            return d.redacted_text if isinstance(out, str) else annotated(out, d, content=d.redacted_text)
        return annotated(out, d) if d.enforced_action is Action.WARN else out

    @staticmethod
    def _output_parts(out: Any, streamed: bool) -> tuple[str, str, list[str]]:
        """What the output check reads of `inner`'s output (a message or a str; with `streamed`, the list of a
        stream's chunks): its text, its reasoning parts' text (checked on their own: a thread keeps them, but
        they are not the reply's text) and the text of each tool call it asks for."""
        chunks = out if streamed else [out]
        message = _merged(chunks) if streamed else out
        if not isinstance(message, AIMessage):
            return "".join(_output_text(c) for c in chunks), "", []
        # a stream's pieces of one thought are joined as they came ("FORB" + "IDDEN"), not on new lines
        thought = "".join(reasoning_text(c, sep="") for c in chunks) if streamed else reasoning_text(message)
        calls = [c.text for c in pending_calls([message])]
        return "".join(_output_text(c) for c in chunks), thought, calls

    def _output_decision(self, out: Any, who: Identity, streamed: bool = False) -> tuple[Decision | None, bool]:
        """The decision to apply to the output: the text check's, unless it does not block and the reasoning
        check blocks, or a tool call is blocked or redacted (that tool_call-stage decision refuses the whole
        reply); and whether the reply's reasoning is dropped (its own check flagged it without blocking)."""
        text, thought, calls = self._output_parts(out, streamed)
        def check(text: str, stage: Stage) -> Decision:
            return self._emit(self.guard.check(text, user_id=who.user_id, session_id=who.session_id, stage=stage))
        d = check(text, stage=Stage.OUTPUT) if text.strip() else None
        if d is not None and d.enforced_action is Action.BLOCK:
            return d, False
        td = check(thought, stage=Stage.OUTPUT) if thought.strip() else None
        if td is not None and td.enforced_action is Action.BLOCK:
            return td, False
        drop = td is not None and td.enforced_action is not Action.ALLOW
        for call in calls:
            call_d = check(call, stage=Stage.TOOL_CALL)
            if call_d.stops_tool_call:
                return call_d, drop
        return d, drop

    async def _aoutput_decision(self, out: Any, who: Identity,
                                streamed: bool = False) -> tuple[Decision | None, bool]:
        text, thought, calls = self._output_parts(out, streamed)
        async def check(text: str, stage: Stage) -> Decision:
            return self._emit(await self.guard.acheck(text, user_id=who.user_id, session_id=who.session_id,
                                                      stage=stage))
        d = await check(text, stage=Stage.OUTPUT) if text.strip() else None
        if d is not None and d.enforced_action is Action.BLOCK:
            return d, False
        td = await check(thought, stage=Stage.OUTPUT) if thought.strip() else None
        if td is not None and td.enforced_action is Action.BLOCK:
            return td, False
        drop = td is not None and td.enforced_action is not Action.ALLOW
        for call in calls:
            call_d = await check(call, stage=Stage.TOOL_CALL)
            if call_d.stops_tool_call:
                return call_d, drop
        return d, drop

    # ---- sync --------------------------------------------------------------------------------
    def _screened(self, messages: list[BaseMessage], screen: Any, offset: int = 0,
                  include_last: bool = False) -> list[BaseMessage]:
        """``messages`` with the screen's redactions applied; the screen covers ``messages[offset:]``, all but its
        last message unless ``include_last``."""
        out = list(messages)
        for j, m in enumerate(screen.messages if include_last else screen.messages[:-1]):
            i = offset + j
            if m["content"] != to_chat_dicts([out[i]])[0]["content"]:  # redacted by a text-level detector
                out[i] = out[i].model_copy(update={"content": m["content"]})
        return out

    def _guard_in(self, input: Any, who: Identity) -> tuple[list[BaseMessage] | None, Decision]:
        messages = _as_messages(input)
        chat = to_chat_dicts(messages)
        if len(chat) > 1 and hasattr(self.guard, "screen_history"):  # earlier turns reach the model too
            screen = self.guard.screen_history(chat, user_id=who.user_id, session_id=who.session_id)
            if screen.blocked is not None:
                return None, self._emit(screen.blocked)
            messages = self._screened(messages, screen)
        at = self._checked_turn(chat)
        d = self._emit(self.guard.check(to_chat_dicts(messages[: at + 1]), user_id=who.user_id,
                                        session_id=who.session_id, stage=Stage.INPUT,
                                        metadata=_unread_of(messages, at)))
        out = self._apply_input(d, messages, at)
        if out is not None and at != len(out) - 1 and hasattr(self.guard, "screen_history"):
            # the prefill or system message after the checked turn: the text-level screen (as the proxy does)
            tail = self.guard.screen_history(to_chat_dicts(out[-1:]), user_id=who.user_id,
                                             session_id=who.session_id, include_last=True)
            if tail.blocked is not None:
                return None, self._emit(tail.blocked)
            out = self._screened(out, tail, offset=len(out) - 1, include_last=True)
        return out, d

    # Each public call runs as this Runnable's own run (`_call_with_config` & co.): tracing and `astream_events`
    # see a chain run whose end event carries the *checked* output, with the inner model's run nested under it.
    # The run's recorded input is a placeholder, never the caller's raw input: callbacks see it before the input
    # check redacts or blocks it (the nested model run records what the model really received).
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        def run(_: Any, run_manager: Any, config: RunnableConfig) -> Any:  # child config: nests the model
            return self._invoke(input, config, **kwargs)

        return self._call_with_config(run, TRACED_INPUT, config)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        async def run(_: Any, run_manager: Any, config: RunnableConfig) -> Any:
            return await self._ainvoke(input, config, **kwargs)

        return await self._acall_with_config(run, TRACED_INPUT, config)

    def stream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Iterator[Any]:
        def run(_: Iterator[Any], run_manager: Any, config: RunnableConfig) -> Iterator[Any]:
            return self._stream(input, config, **kwargs)

        yield from self._transform_stream_with_config(iter([TRACED_INPUT]), run, config)

    async def astream(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AsyncIterator[Any]:
        async def placeholder() -> AsyncIterator[Any]:
            yield TRACED_INPUT

        def run(_: AsyncIterator[Any], run_manager: Any, config: RunnableConfig) -> AsyncIterator[Any]:
            return self._astream(input, config, **kwargs)

        async for chunk in self._atransform_stream_with_config(placeholder(), run, config):
            yield chunk

    def _invoke(self, input: Any, config: RunnableConfig, **kwargs: Any) -> Any:
        who = self._who(config)
        messages, d = self._guard_in(input, who)
        if messages is None:
            return self._refuse(d, self._like(chunk=False))
        out, refused = self._run(who, lambda: without_token_streaming(self.inner).invoke(messages, config, **kwargs))
        if refused is not None:
            return self._refuse(self._emit(refused), self._like(chunk=False))
        out_d, drop_reasoning = self._output_decision(out, who)
        return self._apply_output(out_d, out, drop_reasoning)

    def _run(self, who: Identity, call: Callable[[], Any]) -> tuple[Any, Decision | None]:
        """(output, None), or (None, the Decision that stopped the model inside its own call)."""
        with serving_as(for_serving(self.guard, who)):
            try:
                return call(), None
            except PrefillBlocked as blocked:  # the fused probe blocked during the prefill: no token exists
                return None, blocked.decision
            except InvalidInputError as exc:  # e.g. a non-finite activation: the privacy guard fails closed
                return None, invalid_decision(who, Stage.INPUT, exc)

    async def _arun(self, who: Identity, call: Callable[[], Any]) -> tuple[Any, Decision | None]:
        with serving_as(for_serving(self.guard, who)):
            try:
                return await call(), None
            except PrefillBlocked as blocked:
                return None, blocked.decision
            except InvalidInputError as exc:
                return None, invalid_decision(who, Stage.INPUT, exc)

    def _stream(self, input: Any, config: RunnableConfig, **kwargs: Any) -> Iterator[Any]:
        who = self._who(config)
        messages, d = self._guard_in(input, who)
        if messages is None:
            yield self._refuse(d, self._like(chunk=True))
            return
        inner = without_token_streaming(self.inner)
        chunks, refused = self._run(who, lambda: [_as_chunk(c) for c in inner.stream(messages, config, **kwargs)])
        if refused is not None:
            yield self._refuse(self._emit(refused), self._like(chunk=True))
            return
        # buffered: only checked output is released
        checked = self._output_decision(chunks, who, streamed=True) if chunks else (None, False)
        yield from self._release(chunks, *checked)

    def _release(self, chunks: list[Any], d: Decision | None, drop_reasoning: bool = False) -> Iterator[Any]:
        """The checked stream: the chunks as they came (less their reasoning parts when those were flagged), the
        refusal, or one redacted chunk (tool calls kept)."""
        chunks = [without_reasoning(c) for c in chunks] if drop_reasoning else chunks
        if d is None or d.enforced_action is Action.ALLOW:
            yield from chunks
        elif d.enforced_action is Action.WARN:  # the last chunk carries the warning (merged, the message does)
            yield from chunks[:-1]
            yield annotated(chunks[-1], d)
        elif d.stage is Stage.TOOL_CALL or d.enforced_action is Action.BLOCK:
            yield self._refuse(d, chunks[0] if isinstance(chunks[0], str) else AIMessageChunk(content=""))
        else:
            redacted = d.redacted_text or ""
            merged = _merged(chunks)
            yield redacted if isinstance(chunks[0], str) else annotated(
                AIMessageChunk(content=redacted) if merged is None else merged, d, content=redacted)

    # ---- async -------------------------------------------------------------------------------
    async def _aguard_in(self, input: Any, who: Identity) -> tuple[list[BaseMessage] | None, Decision]:
        messages = _as_messages(input)
        chat = to_chat_dicts(messages)
        if len(chat) > 1 and hasattr(self.guard, "ascreen_history"):
            screen = await self.guard.ascreen_history(chat, user_id=who.user_id, session_id=who.session_id)
            if screen.blocked is not None:
                return None, self._emit(screen.blocked)
            messages = self._screened(messages, screen)
        at = self._checked_turn(chat)
        d = self._emit(await self.guard.acheck(to_chat_dicts(messages[: at + 1]), user_id=who.user_id,
                                               session_id=who.session_id, stage=Stage.INPUT,
                                               metadata=_unread_of(messages, at)))
        out = self._apply_input(d, messages, at)
        if out is not None and at != len(out) - 1 and hasattr(self.guard, "ascreen_history"):
            tail = await self.guard.ascreen_history(to_chat_dicts(out[-1:]), user_id=who.user_id,
                                                    session_id=who.session_id, include_last=True)
            if tail.blocked is not None:
                return None, self._emit(tail.blocked)
            out = self._screened(out, tail, offset=len(out) - 1, include_last=True)
        return out, d

    async def _ainvoke(self, input: Any, config: RunnableConfig, **kwargs: Any) -> Any:
        who = self._who(config)
        messages, d = await self._aguard_in(input, who)
        if messages is None:
            return self._refuse(d, self._like(chunk=False))
        out, refused = await self._arun(who, lambda: without_token_streaming(self.inner).ainvoke(messages, config,
                                                                                                 **kwargs))
        if refused is not None:
            return self._refuse(self._emit(refused), self._like(chunk=False))
        out_d, drop_reasoning = await self._aoutput_decision(out, who)
        return self._apply_output(out_d, out, drop_reasoning)

    async def _astream(self, input: Any, config: RunnableConfig, **kwargs: Any) -> AsyncIterator[Any]:
        who = self._who(config)
        messages, d = await self._aguard_in(input, who)
        if messages is None:
            yield self._refuse(d, self._like(chunk=True))
            return
        inner = without_token_streaming(self.inner)

        async def collect() -> list[Any]:
            return [_as_chunk(c) async for c in inner.astream(messages, config, **kwargs)]

        chunks, refused = await self._arun(who, collect)
        if refused is not None:
            yield self._refuse(self._emit(refused), self._like(chunk=True))
            return
        checked = await self._aoutput_decision(chunks, who, streamed=True) if chunks else (None, False)
        for c in self._release(chunks, *checked):
            yield c
