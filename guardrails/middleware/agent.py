"""`GuardMiddleware`: the Guard inside a langchain v1 agent (`create_agent(..., middleware=[...])`).

- input: `before_model` checks the user messages since the model last spoke (by role, whatever their message
  type): the last with the conversation, any sent with it through the text-level screen (`Guard.screen_history`),
  before the model sees them (block ends the agent with
  the refusal and replaces the blocked message in state by a placeholder, so a checkpointed thread never sends
  it to the model on a later turn; redact rewrites the message in state).
- output: `wrap_model_call` checks the model's reply before the graph sees it. The model runs tagged
  `nostream` and with token streaming disabled, so neither `stream_mode="messages"` consumers nor callback /
  `astream_events` consumers receive raw tokens (the bypass of langchain#35011, where `after_model` runs after
  tokens were already streamed). The model run's own `on_chat_model_end` event (what a tracer of that call
  records) still carries the unchecked reply: a UI should render the agent's messages (`stream_mode="messages"`
  or `"values"`, `on_chain_end`), never chat-model events.
- reasoning parts of a reply (`reasoning`, `thinking`) stay in the thread: they get an output check of their own
  (a block refuses the reply, a redaction or warning drops them); they are never read as the reply's text.
- structured output (`response_format`): the structured response is checked at the output stage as JSON; block
  drops it, redact rewrites it (and the schema tool call / tool message that carry it), and a redaction that no
  longer fits the schema blocks. Other tool calls in the same reply are checked as tool calls (below).
- tools: each tool call is checked at the `tool_call` stage where the model produces it (`wrap_model_call`), so a
  blocked call's arguments are withheld from the thread (see `tool_calls`) and the tool never runs;
  `wrap_tool_call` checks calls that did not come through that check and the tool's result before the model sees it
  (a ToolMessage, or the messages of a `Command` state update; a redacted result loses its artifact).
Sync and async twins share one core (`_decide_*`), as langchain raises if only one flavour is implemented.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse, hook_config
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables.config import var_child_runnable_config
from langgraph.constants import TAG_NOSTREAM

from ..decision import DEFAULT_REFUSAL, WITHHELD_MESSAGE, Action, Decision, Stage
from ..errors import InvalidInputError
from ..guard_types import SupportsCheck
from ..models.chat import PrefillBlocked, to_chat_dicts
from ..text import call_text, last_unread_parts, message_role, unanswered_user_turns, unread_metadata, unread_parts
from .agent_reply import ReleasedReplies, ReplyChecks, nostream_runs
from .identity import Identity, current_identity, for_serving, from_runtime
from .runnable import invalid_decision, without_token_streaming
from .structured import message_text as _text
from .tool_calls import (
    CheckedCalls,
    PendingCall,
    is_withheld,
    result_messages,
    settle_results,
    withhold,
)


class GuardMiddleware(ReplyChecks, AgentMiddleware[AgentState[Any], Any, Any]):
    """Run a Guard at every stage of a langchain v1 agent.

    Args:
        guard: the Guard to run.
        refusal: the assistant message that ends a blocked turn.
        default_user_id: used when neither the runtime context nor the config carries a user_id
            (None: such calls raise InvalidInputError).
        on_decision: called with every Decision (e.g. to print or export it); exceptions propagate.
        stages: which stages to check (default all four).
        system_prompt: the agent's system prompt, if any. LangChain keeps it out of the message state that
            `before_model` sees; passing it here lets context-aware detectors (the privacy sentinel renders the
            conversation as the serving model would) check the input under the same norms the model gets.
    """

    def __init__(self, guard: SupportsCheck, *, refusal: str = DEFAULT_REFUSAL, default_user_id: str | None = None,
                 on_decision: Callable[[Decision], None] | None = None,
                 stages: frozenset[Stage] = frozenset(Stage), system_prompt: str | None = None) -> None:
        super().__init__()
        self.system_prompt = system_prompt
        self.guard = guard
        self.refusal = refusal
        self.default_user_id = default_user_id
        self.on_decision = on_decision
        self.stages = frozenset(Stage(s) for s in stages)
        self._calls = CheckedCalls()
        self._released = ReleasedReplies()
        on_erase = getattr(guard, "on_erase", None)
        if callable(on_erase):  # a Guard's erasure of a user reaches these memos too (a RemoteGuard's cannot)
            on_erase(self.forget_user)

    def forget_user(self, tenant_id: str | None, user_id: str | None) -> int:
        """Drop this middleware's memory of one user (tool calls checked at model time, with the decisions that
        withheld some: their redacted arguments; the replies it released): called by the Guard's `erase_user`
        (`Guard.on_erase`). An erasure in another tenant leaves it; ``user_id`` None (an erasure in another process,
        whose is unknown) drops every user's. Returns how many entries went."""
        if user_id is not None and getattr(self.guard, "tenant_id", tenant_id) != tenant_id:
            return 0
        return self._calls.forget_user(user_id) + self._released.forget_user(user_id)

    @property
    def name(self) -> str:
        return "railguard"

    # ---- shared core ---------------------------------------------------------------------------
    def _emit(self, d: Decision) -> Decision:
        if self.on_decision is not None:
            self.on_decision(d)
        return d

    def _conversation(self, messages: list[BaseMessage]) -> list[dict[str, str]]:
        chat = to_chat_dicts(messages)
        if self.system_prompt and not (chat and chat[0]["role"] == "system"):
            chat.insert(0, {"role": "system", "content": self.system_prompt})
        return chat

    def _refusal(self, d: Decision) -> AIMessage:
        return AIMessage(content=self.refusal, response_metadata={"railguard": d.log_record()})

    def _unanswered_user_turns(self, messages: list[BaseMessage], who: Identity) -> list[int]:
        """The user messages (by role, as the Guard reads it) since the model last spoke, never checked; none: an
        agent step, whose tool results the tool stage checks. A trailing assistant message without tool calls is
        not the model having spoken but a prefill the caller wrote ("Sure, here is"): the model is to continue it,
        so the user turns before it are the ones to check (guard.wrap's and the chat proxy's rule; counting the
        prefill as an answer skipped the input check). A reply this middleware released (`ReleasedReplies`: a
        middleware that jumps back to the model after it) is the model's answer: its user turn is not checked
        again."""
        roles = [message_role(m) for m in messages]
        if roles and roles[-1] == "assistant" and not getattr(messages[-1], "tool_calls", None) \
                and not self._released.holds(who, messages):
            return unanswered_user_turns(roles[:-1])
        return unanswered_user_turns(roles)

    def _tail_screen(self, screen: Any, tail: list[BaseMessage]) -> tuple[Decision | None, list[BaseMessage]]:
        """The text-level screen of the messages after the checked turn (a prefill, a system message): its
        decisions emitted, then its block, or None and the messages it redacted, rewritten in state (same id)."""
        for _, d in screen.decisions:
            self._emit(d)
        if screen.blocked is not None:
            return screen.blocked, []
        return None, [m.model_copy(update={"content": new["content"]}) for m, new in zip(tail, screen.messages,
                                                                                         strict=True)
                      if new["content"] != to_chat_dicts([m])[0]["content"]]

    def _with_tail(self, update: dict[str, Any] | None, tail: list[BaseMessage], turns: list[BaseMessage],
                   blocked: Decision | None, rewritten: list[BaseMessage]) -> dict[str, Any] | None:
        """The input update with the tail's verdict: its block withholds the turns and the tail and refuses; its
        redactions join the update (unless the checked turn was blocked already)."""
        if blocked is not None:
            return self._input_update(blocked, [*turns, *tail])
        if update is not None and update.get("jump_to") == "end" or not rewritten:
            return update
        return {"messages": [*(update or {}).get("messages", []), *rewritten]}

    def _screened(self, screen: Any, turns: list[BaseMessage]) -> tuple[Decision | None, list[BaseMessage]]:
        """The history screen of the unanswered user messages before the last: its decisions emitted, then its
        block, or None and those messages a text-level detector redacted, rewritten in state (same id)."""
        for _, d in screen.decisions:
            self._emit(d)
        if screen.blocked is not None:
            return screen.blocked, []
        screened = screen.messages[:-1]  # the last is the turn checked next, as it was sent
        return None, [HumanMessage(content=new["content"], id=m.id) for m, new in zip(turns[:-1], screened,
                                                                                        strict=True)
                      if new["content"] != to_chat_dicts([m])[0]["content"]]

    def _input_update(self, d: Decision, turns: list[BaseMessage],
                      rewritten: Sequence[BaseMessage] = ()) -> dict[str, Any] | None:
        """State update for the checked turn (the last of ``turns``, the unanswered user messages) and the earlier
        ones ``rewritten`` by the history screen."""
        if d.enforced_action is Action.BLOCK:
            # The blocked text must not stay in the thread: with a checkpointer, the next turn would send it to
            # the model. Same id = replaced in place by langgraph's add_messages reducer. Every unanswered user
            # message goes: after the refusal they would count as answered, never to be checked again.
            withheld = [HumanMessage(content=WITHHELD_MESSAGE, id=m.id) for m in turns if m.id is not None]
            return {"messages": [*withheld, self._refusal(d)], "jump_to": "end"}
        update = list(rewritten)
        if d.enforced_action is Action.REDACT and d.redacted_text is not None:
            update.append(HumanMessage(content=d.redacted_text, id=turns[-1].id))
        return {"messages": update} if update else None

    def _blocked_in_model(self, d: Decision, request: ModelRequest) -> ModelResponse:
        """A verdict raised inside the model call (fused mode: the serving model's prefill): the refusal, and the
        user turn it judged withheld in state as `before_model` does, so a checkpointed thread never resends it."""
        last = next((m for m in reversed(request.messages) if message_role(m) == "user"), None)
        withheld = [HumanMessage(content=WITHHELD_MESSAGE, id=last.id)] if last is not None and last.id else []
        return ModelResponse(result=[*withheld, self._refusal(self._emit(d))])

    def _tool_call_text(self, request: Any) -> str:
        call = request.tool_call
        return call_text(call["name"], call.get("args"))

    def _withhold_calls(self, checked: list[tuple[PendingCall, Decision]], result: list[Any]) -> list[Any]:
        for call, d in checked:
            self._calls.remember(call, d)
        blocked = [(c, d) for c, d in checked if d.stops_tool_call]
        return withhold(result, blocked) if blocked else result

    def _precheck_skips(self, request: Any, who: Identity) -> bool:
        """True when this exact call passed its check where the model produced it (not checked twice)."""
        call_id = request.tool_call.get("id")
        return bool(call_id) and self._calls.take_passed(who.user_id, who.session_id, call_id,
                                                         self._tool_call_text(request))

    def _withheld_call(self, request: Any, who: Identity) -> ToolMessage | None:
        """The blocked tool message for a call whose arguments were withheld at model time (never run)."""
        if not is_withheld(request.tool_call.get("args")):
            return None
        call_id = request.tool_call.get("id") or ""
        return self._blocked_tool(self._calls.blocked_decision(call_id, who.user_id, who.session_id), call_id)

    def _blocked_tool(self, d: Decision, call_id: str) -> ToolMessage:
        return ToolMessage(content=f"Tool call blocked by railguard: {self.refusal}", tool_call_id=call_id,
                           status="error", response_metadata={"railguard": d.log_record()})

    @staticmethod
    def _nostream(request: ModelRequest) -> ModelRequest:
        """The model call as the output check needs it: no raw token reaches any consumer before the check.

        `nostream` keeps tokens out of `stream_mode="messages"`; `disable_streaming` makes the chat model
        generate in one piece, so callback handlers (`astream_events`, tracing UIs) get no token events either.
        """
        model = request.model
        if not hasattr(model, "model_copy"):
            return request
        tags = list(getattr(model, "tags", None) or [])
        if TAG_NOSTREAM not in tags:
            model = model.model_copy(update={"tags": [*tags, TAG_NOSTREAM]})
        return request.override(model=without_token_streaming(model))

    # ---- sync hooks ----------------------------------------------------------------------------
    def _check(self, content: Any, who: Identity, stage: Stage, *, emit: bool = True, unread: int = 0) -> Decision:
        try:
            d = self.guard.check(content, user_id=who.user_id, session_id=who.session_id, stage=stage,
                                 metadata=unread_metadata(unread))
        except InvalidInputError as exc:
            d = invalid_decision(who, stage, exc)
        return self._emit(d) if emit else d

    async def _acheck(self, content: Any, who: Identity, stage: Stage, *, emit: bool = True,
                      unread: int = 0) -> Decision:
        try:
            d = await self.guard.acheck(content, user_id=who.user_id, session_id=who.session_id, stage=stage,
                                        metadata=unread_metadata(unread))
        except InvalidInputError as exc:
            d = invalid_decision(who, stage, exc)
        return self._emit(d) if emit else d

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        messages = state["messages"]
        who = from_runtime(runtime, self.default_user_id)
        users = self._unanswered_user_turns(messages, who) if Stage.INPUT in self.stages else []
        if not users:
            return None
        turns = [messages[i] for i in users]
        rewritten: list[BaseMessage] = []
        try:
            conversation = self._conversation(messages[: users[-1] + 1])
            if len(turns) > 1 and hasattr(self.guard, "screen_history"):  # sent together with the checked turn
                # the earlier ones, as Guard.screen_history and RemoteGuard's screen a conversation: all but its last
                blocked, rewritten = self._screened(self.guard.screen_history(
                    to_chat_dicts(turns), user_id=who.user_id, session_id=who.session_id), turns)
                if blocked is not None:
                    return self._input_update(blocked, turns)
        except InvalidInputError as exc:  # an unreadable message: refused, as the check itself would
            return self._input_update(self._emit(invalid_decision(who, Stage.INPUT, exc)), turns)
        unread = last_unread_parts(messages[: users[-1] + 1])
        update = self._input_update(self._check(conversation, who, Stage.INPUT, unread=unread), turns, rewritten)
        tail = messages[users[-1] + 1:]
        if not tail or not hasattr(self.guard, "screen_history") or (update or {}).get("jump_to") == "end":
            return update
        try:
            blocked, fixed = self._tail_screen(self.guard.screen_history(
                to_chat_dicts(tail), user_id=who.user_id, session_id=who.session_id, include_last=True), tail)
        except InvalidInputError as exc:
            blocked, fixed = self._emit(invalid_decision(who, Stage.INPUT, exc)), []
        return self._with_tail(update, tail, turns, blocked, fixed)

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        messages = state["messages"]
        who = from_runtime(runtime, self.default_user_id)
        users = self._unanswered_user_turns(messages, who) if Stage.INPUT in self.stages else []
        if not users:
            return None
        turns = [messages[i] for i in users]
        rewritten: list[BaseMessage] = []
        try:
            conversation = self._conversation(messages[: users[-1] + 1])
            if len(turns) > 1 and hasattr(self.guard, "ascreen_history"):
                blocked, rewritten = self._screened(await self.guard.ascreen_history(
                    to_chat_dicts(turns), user_id=who.user_id, session_id=who.session_id), turns)
                if blocked is not None:
                    return self._input_update(blocked, turns)
        except InvalidInputError as exc:
            return self._input_update(self._emit(invalid_decision(who, Stage.INPUT, exc)), turns)
        unread = last_unread_parts(messages[: users[-1] + 1])
        update = self._input_update(await self._acheck(conversation, who, Stage.INPUT, unread=unread), turns,
                                    rewritten)
        tail = messages[users[-1] + 1:]
        if not tail or not hasattr(self.guard, "ascreen_history") or (update or {}).get("jump_to") == "end":
            return update
        try:
            blocked, fixed = self._tail_screen(await self.guard.ascreen_history(
                to_chat_dicts(tail), user_id=who.user_id, session_id=who.session_id, include_last=True), tail)
        except InvalidInputError as exc:
            blocked, fixed = self._emit(invalid_decision(who, Stage.INPUT, exc)), []
        return self._with_tail(update, tail, turns, blocked, fixed)

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> Any:
        who = from_runtime(request.runtime, self.default_user_id)
        token = current_identity.set(for_serving(self.guard, who))
        quiet = nostream_runs()
        try:
            response = handler(self._nostream(request))
        except PrefillBlocked as blocked:
            return self._blocked_in_model(blocked.decision, request)
        except InvalidInputError as exc:  # raised inside the model call (a fused probe's unscorable prefill)
            return self._blocked_in_model(invalid_decision(who, Stage.INPUT, exc), request)
        finally:
            current_identity.reset(token)
            var_child_runnable_config.reset(quiet)
        return self._settle_reply(response, who, request.messages)

    async def awrap_model_call(self, request: ModelRequest,
                               handler: Callable[[ModelRequest], Awaitable[ModelResponse]]) -> Any:
        who = from_runtime(request.runtime, self.default_user_id)
        token = current_identity.set(for_serving(self.guard, who))
        quiet = nostream_runs()
        try:
            response = await handler(self._nostream(request))
        except PrefillBlocked as blocked:
            return self._blocked_in_model(blocked.decision, request)
        except InvalidInputError as exc:
            return self._blocked_in_model(invalid_decision(who, Stage.INPUT, exc), request)
        finally:
            current_identity.reset(token)
            var_child_runnable_config.reset(quiet)
        return await self._asettle_reply(response, who, request.messages)

    def _tool_result(self, checked: list[tuple[BaseMessage, Decision]], out: Any, call_id: str) -> Any:
        return settle_results(checked, out, lambda d, cid: self._blocked_tool(d, cid or call_id))

    def _unreadable_result(self, who: Identity, call_id: str) -> ToolMessage:
        exc = InvalidInputError("the tool returned a state update whose messages cannot be checked")
        return self._blocked_tool(self._emit(invalid_decision(who, Stage.TOOL_RESULT, exc)), call_id)

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        who = from_runtime(request.runtime, self.default_user_id)
        call_id = request.tool_call.get("id") or ""
        if (withheld := self._withheld_call(request, who)) is not None:
            return withheld
        if Stage.TOOL_CALL in self.stages and not self._precheck_skips(request, who):
            d = self._check(self._tool_call_text(request), who, Stage.TOOL_CALL)
            if d.stops_tool_call:
                return self._blocked_tool(d, call_id)
        out = handler(request)
        if Stage.TOOL_RESULT not in self.stages:
            return out
        if (added := result_messages(out)) is None:
            return self._unreadable_result(who, call_id)
        checked = [(m, self._check(_text(m), who, Stage.TOOL_RESULT, unread=unread_parts(m.content)))
                   for m in added if _text(m).strip()]
        return self._tool_result(checked, out, call_id)

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        who = from_runtime(request.runtime, self.default_user_id)
        call_id = request.tool_call.get("id") or ""
        if (withheld := self._withheld_call(request, who)) is not None:
            return withheld
        if Stage.TOOL_CALL in self.stages and not self._precheck_skips(request, who):
            d = await self._acheck(self._tool_call_text(request), who, Stage.TOOL_CALL)
            if d.stops_tool_call:
                return self._blocked_tool(d, call_id)
        out = await handler(request)
        if Stage.TOOL_RESULT not in self.stages:
            return out
        if (added := result_messages(out)) is None:
            return self._unreadable_result(who, call_id)
        checked = [(m, await self._acheck(_text(m), who, Stage.TOOL_RESULT, unread=unread_parts(m.content)))
                   for m in added if _text(m).strip()]
        return self._tool_result(checked, out, call_id)
