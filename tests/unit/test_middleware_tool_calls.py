"""Tool calls are checked where the model produces them: a blocked call's arguments never enter the thread.

Agent plumbing with LangChain's GenericFakeChatModel (the point is the middleware, not the model)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from guardrails import Action, Decision, Guard, Stage
from guardrails.middleware.tool_calls import WITHHELD_ARGS_KEY, CheckedCalls, PendingCall
from guardrails.text import call_text

SECRET = "dropdb"  # the keyword the detector flags (decision records name it as the category)
PAYLOAD = "users_table_7731"  # what the blocked call carried: must appear nowhere afterwards


class RecordingFake(GenericFakeChatModel):
    """Fake chat model that records the messages each call was sent."""

    sent: list = []

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.sent.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


ran: list[str] = []


@tool
def lookup(query: str) -> str:
    """Look something up."""
    ran.append(query)
    return f"result for {query}"


@dataclass
class Ctx:
    user_id: str
    session_id: str | None = None


def _call(query, call_id="call-1", content=""):
    return AIMessage(content=content, tool_calls=[{"name": "lookup", "args": {"query": query}, "id": call_id}])


def _agent(replies, *, stages=None, checkpointer=None):
    ran.clear()
    det = _keyword_detector()
    seen: list[Decision] = []
    model = RecordingFake(messages=iter(replies), sent=[])
    kw = {} if stages is None else {"stages": frozenset(stages)}
    agent = create_agent(model, tools=[lookup], middleware=[Guard([det]).middleware(on_decision=seen.append, **kw)],
                         context_schema=Ctx, checkpointer=checkpointer)
    return agent, seen, model, det


def _keyword_detector():
    from tests.conftest import KeywordDetector

    return KeywordDetector(SECRET, stages={Stage.TOOL_CALL})


@pytest.mark.parametrize("use_async", [False, True])
async def test_blocked_call_arguments_never_enter_the_thread(use_async):
    agent, seen, model, det = _agent([_call(f"{SECRET} {PAYLOAD}"), "done"], checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t1"}}
    inp = {"messages": [HumanMessage("clean up")]}
    out = await agent.ainvoke(inp, cfg, context=Ctx("a")) if use_async else agent.invoke(inp, cfg, context=Ctx("a"))
    assert ran == []  # the tool never ran
    assert PAYLOAD not in repr(out["messages"])  # not in the AIMessage's tool call nor anywhere else
    ai = next(m for m in out["messages"] if isinstance(m, AIMessage) and m.tool_calls)
    assert ai.tool_calls[0]["id"] == "call-1" and set(ai.tool_calls[0]["args"]) == {WITHHELD_ARGS_KEY}
    tool_msg = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert tool_msg.status == "error" and "blocked" in tool_msg.content and tool_msg.tool_call_id == "call-1"
    calls = [d for d in seen if d.stage is Stage.TOOL_CALL]
    assert [d.action for d in calls] == [Action.BLOCK] and det.calls == 1  # checked once, not again at the tool
    assert tool_msg.response_metadata["railguard"] == calls[0].log_record()
    # The model's next call (same turn) and the checkpointed thread hold only the marker.
    assert PAYLOAD not in repr(model.sent[-1])
    state = agent.get_state(cfg).values["messages"]
    assert PAYLOAD not in repr(state)


def test_allowed_call_is_checked_once_and_runs():
    agent, seen, _, det = _agent([_call("weather"), "done"])
    out = agent.invoke({"messages": [HumanMessage("go")]}, context=Ctx("a"))
    assert ran == ["weather"]
    assert [d.action for d in seen if d.stage is Stage.TOOL_CALL] == [Action.ALLOW] and det.calls == 1
    assert out["messages"][-1].content == "done"


def test_without_the_tool_call_stage_nothing_is_checked_or_rewritten():
    agent, seen, _, det = _agent([_call(f"{SECRET} x"), "done"], stages={Stage.INPUT, Stage.OUTPUT})
    out = agent.invoke({"messages": [HumanMessage("go")]}, context=Ctx("a"))
    assert ran == [f"{SECRET} x"] and det.calls == 0
    assert not [d for d in seen if d.stage is Stage.TOOL_CALL]
    assert any(isinstance(m, AIMessage) and m.tool_calls and m.tool_calls[0]["args"] == {"query": f"{SECRET} x"}
               for m in out["messages"])


def test_only_the_blocked_call_of_a_parallel_pair_is_withheld():
    reply = AIMessage(content="", tool_calls=[{"name": "lookup", "args": {"query": "weather"}, "id": "c1"},
                                              {"name": "lookup", "args": {"query": f"{SECRET} {PAYLOAD}"}, "id": "c2"}])
    agent, seen, _, det = _agent([reply, "done"])
    out = agent.invoke({"messages": [HumanMessage("go")]}, context=Ctx("a"))
    assert ran == ["weather"] and det.calls == 2
    ai = next(m for m in out["messages"] if isinstance(m, AIMessage) and m.tool_calls)
    assert ai.tool_calls[0]["args"] == {"query": "weather"} and set(ai.tool_calls[1]["args"]) == {WITHHELD_ARGS_KEY}
    statuses = {m.tool_call_id: m.status for m in out["messages"] if isinstance(m, ToolMessage)}
    assert statuses == {"c1": "success", "c2": "error"}


def test_a_model_emitting_the_marker_itself_never_runs_the_tool():
    reply = AIMessage(content="", tool_calls=[{"name": "lookup", "args": {WITHHELD_ARGS_KEY: "x"}, "id": "c9"}])
    agent, seen, _, _ = _agent([reply, "done"])
    out = agent.invoke({"messages": [HumanMessage("go")]}, context=Ctx("a"))
    assert ran == []
    tool_msg = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert tool_msg.status == "error" and tool_msg.response_metadata["railguard"]["action"] == "block"


def test_invalid_tool_call_arguments_are_checked_and_withheld():
    raw_args = '{"query": "' + SECRET + " " + PAYLOAD + '"'  # truncated JSON: the call cannot be parsed
    reply = AIMessage(content="", invalid_tool_calls=[{"name": "lookup", "args": raw_args, "id": "bad-1",
                                                       "error": "unparseable"}])
    agent, seen, _, _ = _agent([reply, "done"])
    out = agent.invoke({"messages": [HumanMessage("go")]}, context=Ctx("a"))
    assert PAYLOAD not in repr(out["messages"]) and ran == []
    assert [d.action for d in seen if d.stage is Stage.TOOL_CALL] == [Action.BLOCK]


def test_checked_calls_memory_is_exact_and_single_use():
    memo = CheckedCalls(size=2)
    text = call_text("lookup", {"query": "weather"})
    ok = Decision(action=Action.ALLOW, stage=Stage.TOOL_CALL, user_id="a", session_id="s")
    memo.remember(PendingCall(0, "c1", text, False), ok)
    assert not memo.take_passed("b", "s", "c1", text)  # another user
    assert not memo.take_passed("a", "s", "c1", call_text("lookup", {"query": "edited"}))  # edited in between
    assert memo.take_passed("a", "s", "c1", text)
    assert not memo.take_passed("a", "s", "c1", text)  # once only
    for i in range(3):  # bounded: the oldest is forgotten (and would simply be checked again)
        memo.remember(PendingCall(0, f"k{i}", text, False), ok)
    assert not memo.take_passed("a", "s", "k0", text) and memo.take_passed("a", "s", "k2", text)
    # A withheld call whose decision was forgotten (process restart) still gets a blocking stand-in.
    stand_in = memo.blocked_decision("gone", "a", "s")
    assert stand_in.action is Action.BLOCK and stand_in.stage is Stage.TOOL_CALL and stand_in.user_id == "a"


# ---- guard.wrap: the wrapped model's tool calls are model output too --------------------------------------------
def _wrapped(*replies, detectors=None):
    from tests.conftest import KeywordDetector

    dets = detectors or [KeywordDetector(SECRET, stages={Stage.TOOL_CALL})]
    seen_model = RecordingFake(messages=iter(replies), sent=[])
    return Guard(dets).wrap(seen_model), dets


CFG = {"configurable": {"user_id": "a"}}


@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke", "astream"])
async def test_wrap_refuses_a_reply_whose_tool_call_is_blocked(mode):
    wrapped, (det,) = _wrapped(_call(f"{SECRET} {PAYLOAD}"))
    if mode == "invoke":
        outs = [wrapped.invoke("go", CFG)]
    elif mode == "stream":
        outs = list(wrapped.stream("go", CFG))
    elif mode == "ainvoke":
        outs = [await wrapped.ainvoke("go", CFG)]
    else:
        outs = [c async for c in wrapped.astream("go", CFG)]
    assert PAYLOAD not in repr(outs) and not any(getattr(o, "tool_calls", None) for o in outs)
    assert outs[-1].content.startswith("I'm sorry")
    assert outs[-1].response_metadata["railguard"]["stage"] == "tool_call" and det.calls == 1


@pytest.mark.parametrize("mode", ["invoke", "stream"])
def test_wrap_passes_allowed_tool_calls_and_keeps_them_through_a_redaction(mode):
    from tests.conftest import KeywordDetector

    dets = [KeywordDetector(SECRET, stages={Stage.TOOL_CALL}),
            KeywordDetector("token", Action.REDACT, name="t", stages={Stage.OUTPUT})]
    wrapped, _ = _wrapped(_call("weather", content="the token is here"), detectors=dets)
    outs = [wrapped.invoke("go", CFG)] if mode == "invoke" else list(wrapped.stream("go", CFG))
    calls = [c for o in outs for c in o.tool_calls]
    assert [c["args"] for c in calls] == [{"query": "weather"}] and dets[0].calls == 1
    assert "".join(o.content for o in outs) == "the [REDACTED] is here"


def test_wrap_still_refuses_to_check_an_output_it_cannot_read():
    """A Runnable answering a list (not a stream) is not a checkable output: a typed error, as before; the tool-call
    check must not read it as a stream's chunks."""
    from langchain_core.runnables import RunnableLambda

    from guardrails import InvalidInputError
    from tests.conftest import KeywordDetector

    wrapped = Guard([KeywordDetector(SECRET, Action.REDACT)]).wrap(RunnableLambda(lambda _: [AIMessage("a")]))
    with pytest.raises(InvalidInputError, match="cannot check output of type list"):
        wrapped.invoke("go", CFG)


def test_blocked_call_arguments_are_withheld_from_provider_content_blocks_too():
    """Anthropic-style replies carry each call's arguments in a `tool_use` content block as well as in
    `tool_calls`: both must lose them (the checkpointed thread, a UI)."""
    reply = AIMessage(content=[{"type": "text", "text": "on it"},
                               {"type": "tool_use", "id": "call-1", "name": "lookup",
                                "input": {"query": f"{SECRET} {PAYLOAD}"}},
                               {"type": "function_call", "call_id": "call-1", "name": "lookup",
                                "arguments": '{"query": "' + PAYLOAD + '"}'}],
                      tool_calls=[{"name": "lookup", "args": {"query": f"{SECRET} {PAYLOAD}"}, "id": "call-1"}])
    agent, seen, _, _ = _agent([reply, "done"], checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "blocks"}}
    out = agent.invoke({"messages": [HumanMessage("go")]}, cfg, context=Ctx("a"))
    assert ran == [] and PAYLOAD not in repr(out["messages"]) and PAYLOAD not in repr(agent.get_state(cfg).values)
    ai = next(m for m in out["messages"] if isinstance(m, AIMessage) and m.tool_calls)
    assert ai.content[0] == {"type": "text", "text": "on it"}  # other blocks untouched


def test_a_marker_shaped_call_from_the_model_is_still_checked():
    """A fresh reply's marker-shaped arguments are the model's own text: checked like any call (not skipped as if
    railguard had withheld them); guard.wrap refuses it when the check blocks."""
    marker_call = AIMessage(content="", tool_calls=[{"name": "lookup", "args": {WITHHELD_ARGS_KEY: f"{SECRET} x"},
                                                     "id": "m1"}])
    wrapped, (det,) = _wrapped(marker_call)
    out = wrapped.invoke("go", CFG)
    assert det.calls == 1 and not out.tool_calls and out.response_metadata["railguard"]["stage"] == "tool_call"


@pytest.mark.parametrize("use_async", [False, True])
async def test_a_tool_call_beside_a_structured_response_is_checked_where_the_model_makes_it(use_async):
    """ToolStrategy: the schema call is the output check's, but another call in the same reply still goes to the
    tool node. It used to skip the model-time check, so its arguments sat in the thread (wrap_tool_call still
    refused to run it). Now it is withheld like any blocked call, and the structured response is kept."""
    from langchain.agents.structured_output import ToolStrategy
    from pydantic import BaseModel

    class Answer(BaseModel):
        text: str

    ran.clear()
    det = _keyword_detector()
    seen: list[Decision] = []
    reply = AIMessage(content="", tool_calls=[{"name": "Answer", "args": {"text": "ok"}, "id": "s1"},
                                              {"name": "lookup", "args": {"query": f"{SECRET} {PAYLOAD}"}, "id": "c1"}])
    model = RecordingFake(messages=iter([reply, AIMessage(content="", tool_calls=[
        {"name": "Answer", "args": {"text": "ok"}, "id": "s2"}])]), sent=[])
    agent = create_agent(model, tools=[lookup], middleware=[Guard([det]).middleware(on_decision=seen.append)],
                         context_schema=Ctx, response_format=ToolStrategy(Answer), checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t-structured"}}
    inp = {"messages": [HumanMessage("go")]}
    out = await agent.ainvoke(inp, cfg, context=Ctx("a")) if use_async else agent.invoke(inp, cfg, context=Ctx("a"))
    assert ran == [] and PAYLOAD not in repr(out["messages"])
    assert PAYLOAD not in repr(agent.get_state(cfg).values["messages"])
    assert out["structured_response"] == Answer(text="ok")
    calls = [d for d in seen if d.stage is Stage.TOOL_CALL]
    assert [d.action for d in calls] == [Action.BLOCK] and det.calls == 1  # the schema call is not a tool call


@pytest.mark.parametrize("use_async", [False, True])
async def test_the_structured_output_retry_message_does_not_quote_withheld_arguments(use_async):
    """Review, session 31: with ToolStrategy, a schema call whose arguments fail validation is answered, in the
    same model step, by langchain's error tool message quoting them (pydantic ``input_value=...``); the call's
    arguments were withheld but that message kept them in state and sent them back to the model for the retry."""
    from langchain.agents.structured_output import ToolStrategy
    from pydantic import BaseModel

    class Answer(BaseModel):
        n: int

    bad = AIMessage(content="", tool_calls=[{"name": "Answer", "args": {"n": f"{SECRET} {PAYLOAD}"}, "id": "c1"}])
    good = AIMessage(content="", tool_calls=[{"name": "Answer", "args": {"n": 3}, "id": "c2"}])
    model = RecordingFake(messages=iter([bad, good]), sent=[])
    seen: list[Decision] = []
    agent = create_agent(model, middleware=[Guard([_keyword_detector()]).middleware(on_decision=seen.append)],
                         response_format=ToolStrategy(Answer), context_schema=Ctx)
    call = agent.ainvoke if use_async else agent.invoke
    out = call({"messages": [HumanMessage("give me a number")]}, context=Ctx("alice"))
    out = await out if use_async else out
    assert out["structured_response"].n == 3
    assert (Stage.TOOL_CALL, Action.BLOCK) in [(d.stage, d.action) for d in seen]
    assert len(model.sent) == 2 and PAYLOAD not in str([m.content for m in model.sent[1]])
    assert not any(PAYLOAD in str(m.content) or PAYLOAD in str(getattr(m, "tool_calls", "")) for m in out["messages"])


@pytest.mark.parametrize("use_async", [False, True])
async def test_reasoning_of_a_structured_reply_gets_its_own_check(use_async):
    """Review, session 31: the structured-response branch never read the reply's reasoning, so a reasoning text the
    output check would refuse on a plain reply stayed in state next to the structured response."""
    from langchain.agents.structured_output import ToolStrategy
    from pydantic import BaseModel

    from tests.conftest import KeywordDetector

    class Answer(BaseModel):
        n: int

    for action, want_response in ((Action.BLOCK, False), (Action.REDACT, True)):
        reply = AIMessage(content="", additional_kwargs={"reasoning_content": f"the {SECRET} is {PAYLOAD}"},
                          tool_calls=[{"name": "Answer", "args": {"n": 3}, "id": "c1"}])
        seen: list[Decision] = []
        guard = Guard([KeywordDetector(SECRET, action, stages={Stage.OUTPUT})])
        agent = create_agent(RecordingFake(messages=iter([reply]), sent=[]), context_schema=Ctx,
                             middleware=[guard.middleware(on_decision=seen.append)],
                             response_format=ToolStrategy(Answer))
        call = agent.ainvoke if use_async else agent.invoke
        out = call({"messages": [HumanMessage("give me a number")]}, context=Ctx("alice"))
        out = await out if use_async else out
        assert not any(PAYLOAD in str(m.additional_kwargs) or PAYLOAD in str(m.content) for m in out["messages"])
        assert (out.get("structured_response") is not None) is want_response, action
        assert action in [d.action for d in seen]
        if not want_response:
            assert out["messages"][-1].content.startswith("I'm sorry")


def test_a_tool_use_block_is_not_output_checked_as_made_up_text():
    """Review, session 31: an Anthropic-shaped reply (the call in a ``tool_use`` content block, no text) was
    output-checked as the rendering "call lookup({...})", so an output redaction wrote that text, which the model
    never produced, into the reply; an OpenAI-shaped reply of the same call got no output check. Both now get
    none: a call's arguments are the tool_call check's."""
    from tests.conftest import KeywordDetector

    args = {"query": f"{SECRET} {PAYLOAD}"}
    shapes = [AIMessage(content="", tool_calls=[{"name": "lookup", "args": args, "id": "c1"}]),
              AIMessage(content=[{"type": "tool_use", "id": "c1", "name": "lookup", "input": args}],
                        tool_calls=[{"name": "lookup", "args": args, "id": "c1"}])]
    for msg in shapes:
        det = KeywordDetector(SECRET, Action.REDACT, stages={Stage.OUTPUT})
        seen: list[Decision] = []
        agent = create_agent(RecordingFake(messages=iter([msg, AIMessage("done")]), sent=[]), tools=[lookup],
                             middleware=[Guard([det]).middleware(on_decision=seen.append)], context_schema=Ctx)
        out = agent.invoke({"messages": [HumanMessage("find it")]}, context=Ctx("u1"))
        assert out["messages"][1].content == msg.content  # not rewritten
        assert [d.action for d in seen if d.stage is Stage.OUTPUT] == [Action.ALLOW]  # "done" only


def test_a_redacted_reply_keeps_no_provider_copy_of_the_original():
    """Review, session 31: redaction rewrote the content but kept OpenAI's ``additional_kwargs["parsed"]`` and the
    per-token ``response_metadata["logprobs"]``, both copies of the original text."""
    from langchain.agents.structured_output import ProviderStrategy
    from pydantic import BaseModel

    from tests.conftest import KeywordDetector

    class Note(BaseModel):
        note: str

    det = KeywordDetector(PAYLOAD, Action.REDACT, stages={Stage.OUTPUT})
    plain = AIMessage(content=f"your card {PAYLOAD}", response_metadata={"logprobs": {"content": [
        {"token": PAYLOAD, "logprob": -0.1}]}, "model_name": "m"})
    out = create_agent(RecordingFake(messages=iter([plain]), sent=[]), middleware=[Guard([det]).middleware()],
                       context_schema=Ctx).invoke({"messages": [HumanMessage("card?")]}, context=Ctx("u1"))
    reply = out["messages"][-1]
    assert reply.content == "your card [REDACTED]" and "logprobs" not in reply.response_metadata
    assert reply.response_metadata["model_name"] == "m"  # other metadata kept

    parsed = AIMessage(content=f'{{"note": "card {PAYLOAD}"}}',
                       additional_kwargs={"parsed": {"note": f"card {PAYLOAD}"}, "refusal": None})
    out = create_agent(RecordingFake(messages=iter([parsed]), sent=[]), middleware=[Guard([det]).middleware()],
                       response_format=ProviderStrategy(Note), context_schema=Ctx
                       ).invoke({"messages": [HumanMessage("note?")]}, context=Ctx("u1"))
    assert out["structured_response"].note == "card [REDACTED]"
    assert not any(PAYLOAD in str(m.additional_kwargs) or PAYLOAD in str(m.content) for m in out["messages"])


def test_an_openai_refusal_beside_the_content_gets_an_output_check():
    """Review, session 31: OpenAI's ``additional_kwargs["refusal"]`` text reached the thread with no output check."""
    from tests.conftest import KeywordDetector

    for action, refused in ((Action.BLOCK, True), (Action.REDACT, False)):
        reply = AIMessage(content="", additional_kwargs={"refusal": f"I won't share {SECRET} {PAYLOAD}"})
        seen: list[Decision] = []
        guard = Guard([KeywordDetector(SECRET, action, stages={Stage.OUTPUT})])
        agent = create_agent(RecordingFake(messages=iter([reply]), sent=[]), context_schema=Ctx,
                             middleware=[guard.middleware(on_decision=seen.append)])
        out = agent.invoke({"messages": [HumanMessage("hi")]}, context=Ctx("u1"))
        assert not any(PAYLOAD in str(m.additional_kwargs) for m in out["messages"]), action
        assert action in [d.action for d in seen]
        assert out["messages"][-1].content.startswith("I'm sorry") is refused
    clean = AIMessage(content="", additional_kwargs={"refusal": None})  # the usual None: nothing to check
    out = create_agent(RecordingFake(messages=iter([clean]), sent=[]), context_schema=Ctx,
                       middleware=[Guard([_keyword_detector()]).middleware()]).invoke(
        {"messages": [HumanMessage("hi")]}, context=Ctx("u1"))
    assert out["messages"][-1].additional_kwargs == {"refusal": None}


class ToolFake(GenericFakeChatModel):
    def bind_tools(self, tools, **kwargs):
        return self


def test_an_erasure_reaches_the_middlewares_memos(tmp_path):
    """The middleware remembers tool calls checked at model time (a withheld call's decision holds its redacted
    arguments) and the replies it released, per user: `Guard.erase_user` left them all in memory until used or
    pushed out (review of session 34; an agent paused before its tools never uses them). It now reaches them
    (`Guard.on_erase`), for that user only, and a middleware dropped from use is not kept alive by it."""
    import gc
    import weakref

    from guardrails.store import SettingsStore
    from tests.conftest import KeywordDetector

    with SettingsStore(tmp_path / "m.db") as store:
        guard = Guard([KeywordDetector(SECRET, action=Action.REDACT, stages={Stage.TOOL_CALL})], store=store)
        mw = guard.middleware()

        def run(user: str, payload: str) -> None:
            reply = AIMessage(content="", tool_calls=[
                {"name": "lookup", "args": {"query": f"{SECRET} {payload}"}, "id": f"{user}-red"},
                {"name": "lookup", "args": {"query": f"plain {payload}"}, "id": f"{user}-ok"}])
            agent = create_agent(ToolFake(messages=iter([reply, AIMessage(content="done")])), tools=[lookup],
                                 middleware=[mw], context_schema=Ctx, checkpointer=InMemorySaver(),
                                 interrupt_before=["tools"])  # paused before the tools run: memos unused
            agent.invoke({"messages": [HumanMessage(f"hi {payload}")]}, {"configurable": {"thread_id": user}},
                         context=Ctx(user, f"{user}-s1"))

        run("carol", PAYLOAD)
        run("dave", "dave_rows_99")

        def held(user: str) -> int:
            return (sum(k[0] == user for k in mw._calls._passed) + sum(k[0] == user for k in mw._released._seen)
                    + sum(d.user_id == user for d in mw._calls._blocked.values()))

        assert held("carol") >= 3 and held("dave") >= 3
        assert any(PAYLOAD in (d.redacted_text or "") for d in mw._calls._blocked.values())
        guard.erase_user("carol")
        assert held("carol") == 0 and held("dave") >= 3
        assert all(PAYLOAD not in repr(d) for d in mw._calls._blocked.values())
        other_tenant = Guard([KeywordDetector(SECRET)], store=store, tenant_id="acme")
        other_tenant.erase_user("dave")  # the same store's gate, another tenant: not this middleware's dave
        assert held("dave") >= 3
        ref = weakref.ref(guard.middleware())
        gc.collect()
        assert ref() is None  # registering with the Guard keeps nothing alive
        assert guard.erase_user("dave")["settings"] == 0  # and a dead listener is skipped
        assert held("dave") == 0
