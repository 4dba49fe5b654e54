"""Media content parts (images, audio, files) reach the model but no detector reads them: the Guard counts them and
the validator says so (warn by default, block or allow by choice) instead of passing the turn with no notice."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage

from guardrails import Action, Guard, Stage
from guardrails.detectors.validation import InputValidator
from guardrails.errors import ConfigError
from guardrails.text import last_unread_parts, unread_parts

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
TURN = [{"type": "text", "text": "what does this say?"}, IMAGE]


def _categories(d):
    return [(f.detector, f.category, f.action) for f in d.findings]


def test_counts_media_parts_and_nothing_else():
    assert unread_parts("a str has no parts") == 0
    assert unread_parts([{"type": "text", "text": "a"}, "plain", {"type": "text", "text": ""}]) == 0
    assert unread_parts([IMAGE, {"type": "input_audio", "input_audio": {}}, {"type": "file", "file": {}},
                         {"type": "image", "source": {"type": "base64", "data": "AA"}}]) == 4
    # a binary document is unread; a text-source document is read (content_text reads its data)
    assert unread_parts([{"type": "document", "source": {"type": "base64", "data": "JVBER"}}]) == 1
    assert unread_parts([{"type": "document", "source": {"type": "text", "data": "terms"}}]) == 0
    # nested in a tool result; a type that merely contains a media word inside another word is not media
    assert unread_parts([{"type": "tool_result", "content": [{"type": "image", "source": {}}]}]) == 1
    assert unread_parts([{"type": "profile"}, {"type": "filename_hint"}, {"type": "file_search_call"}]) == 0
    assert last_unread_parts([("user", "hi"), ("assistant", "yes"), ("user", TURN)]) == 1
    assert last_unread_parts([("user", TURN), ("assistant", "yes"), ("user", "hi")]) == 0  # only the judged turn
    # ...which is every user message sent since the model last spoke (the model reads them all)
    assert last_unread_parts([("user", TURN), ("human", TURN), ("user", "what do these say?")]) == 2
    assert last_unread_parts(HumanMessage(content=TURN)) == 1


def test_the_validator_warns_by_default_and_the_mode_is_configurable():
    msgs = [{"role": "user", "content": TURN}]
    d = Guard([InputValidator()]).check(msgs, user_id="u")
    assert d.action is Action.WARN
    assert _categories(d) == [("validator", "unread_content", Action.WARN)]
    assert "1 media content part" in d.findings[0].explanation
    assert Guard([InputValidator(non_text="block")]).check(msgs, user_id="u").action is Action.BLOCK
    allowed = Guard([InputValidator(non_text="allow")]).check(msgs, user_id="u")
    assert allowed.action is Action.ALLOW and not allowed.findings
    # the same text without the image: no finding
    assert not Guard([InputValidator()]).check([{"role": "user", "content": TURN[:1]}], user_id="u").findings
    with pytest.raises(ConfigError):
        InputValidator(non_text="ignore").predict(Guard([])._prepare("hi", "u", None, "input", None))


def test_caller_counts_are_read_and_malformed_ones_ignored():
    guard = Guard([InputValidator()])
    assert guard.check("the text part", user_id="u", metadata={"unread_parts": 2}).action is Action.WARN
    for bad in (True, -1, "3", 0, None):
        assert guard.check("the text part", user_id="u", metadata={"unread_parts": bad}).action is Action.ALLOW


@dataclass
class Ctx:
    user_id: str


class _Fake(GenericFakeChatModel):
    def bind_tools(self, tools, **kwargs):
        return self


def test_agent_middleware_reports_the_image_of_the_user_turn():
    seen = []
    guard = Guard([InputValidator()])
    agent = create_agent(_Fake(messages=iter([AIMessage("it says hello")])), tools=[],
                         middleware=[guard.middleware(on_decision=seen.append)], context_schema=Ctx)
    out = agent.invoke({"messages": [HumanMessage(content=TURN)]}, context=Ctx("alice"))
    assert out["messages"][-1].content == "it says hello"  # warn annotates, the turn goes on
    first = seen[0]
    assert first.stage is Stage.INPUT and first.action is Action.WARN
    assert _categories(first) == [("validator", "unread_content", Action.WARN)]

    seen.clear()
    strict = Guard([InputValidator(non_text="block")])
    agent = create_agent(_Fake(messages=iter([AIMessage("never")])), tools=[],
                         middleware=[strict.middleware(on_decision=seen.append)], context_schema=Ctx)
    out = agent.invoke({"messages": [HumanMessage(content=TURN)]}, context=Ctx("alice"))
    assert out["messages"][-1].content.startswith("I'm sorry") and seen[0].blocked

    seen.clear()  # the image in an earlier message of the same turn counts too
    agent = create_agent(_Fake(messages=iter([AIMessage("never")])), tools=[],
                         middleware=[strict.middleware(on_decision=seen.append)], context_schema=Ctx)
    agent.invoke({"messages": [HumanMessage(content=[IMAGE]), HumanMessage("what does it say?")]},
                 context=Ctx("alice"))
    assert seen[0].blocked and "unread_content" in [f.category for f in seen[0].findings]


@pytest.mark.parametrize("call", ["invoke", "ainvoke"])
async def test_wrapped_model_reports_the_image_of_the_user_turn(call):
    seen = []
    guard = Guard([InputValidator(non_text="block")])
    wrapped = guard.wrap(_Fake(messages=iter([AIMessage("never")])), on_decision=seen.append)
    cfg = {"configurable": {"user_id": "a"}}
    msgs = [HumanMessage(content=TURN)]
    out = wrapped.invoke(msgs, cfg) if call == "invoke" else await wrapped.ainvoke(msgs, cfg)
    assert out.content.startswith("I'm sorry")
    assert _categories(seen[0]) == [("validator", "unread_content", Action.BLOCK)]
