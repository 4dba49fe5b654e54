"""A real agent: create_agent + the local SmolLM2 chat model + the Guard middleware, invoke and ainvoke."""

from __future__ import annotations

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from guardrails import Action, Decision, Finding, Guard, Stage
from guardrails.models import LocalChatModel, PrefillBlocked

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def chat():
    return LocalChatModel(max_new_tokens=16)


def test_real_agent_invoke_and_ainvoke(chat, keyword):
    import asyncio

    seen: list[Decision] = []
    guard = Guard([keyword("4111", Action.REDACT, name="card")])
    agent = create_agent(chat, middleware=[guard.middleware(on_decision=seen.append)])
    out = agent.invoke({"messages": [HumanMessage("Name one primary color.")]},
                       config={"configurable": {"user_id": "alice"}})
    assert out["messages"][-1].type == "ai" and out["messages"][-1].content.strip()
    assert [d.stage for d in seen] == [Stage.INPUT, Stage.OUTPUT]
    out = asyncio.run(agent.ainvoke({"messages": [HumanMessage("my card is 4111")]},
                                    config={"configurable": {"user_id": "alice"}}))
    assert out["messages"][0].content == "my card is [REDACTED]"  # the model saw the redacted text
    assert seen[2].action is Action.REDACT


class BlockAtPrefill:
    """A prefill observer that reads the serving model's last-token state and blocks during the forward pass."""

    def __init__(self):
        self.seen_shapes = []

    def attach(self, lm, input_ids, messages):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            self.seen_shapes.append(tuple(hidden.shape))
            decision = Decision(action=Action.BLOCK, stage=Stage.INPUT, user_id="u", findings=(
                Finding(detector="probe", category="privacy", score=9.0, threshold=1.0),))
            raise PrefillBlocked(decision)

        handle = lm.model.model.layers[10].register_forward_hook(hook)
        return handle.remove


def test_prefill_block_stops_generation_before_any_token(keyword):
    obs = BlockAtPrefill()
    chat = LocalChatModel(max_new_tokens=16, prefill_observers=[obs])
    agent = create_agent(chat, middleware=[Guard([keyword("zzz")]).middleware(default_user_id="u")])
    streamed = [c.content for c, _ in agent.stream({"messages": [HumanMessage("Tell me a story.")]},
                                                   stream_mode="messages")]
    assert streamed == ["I'm sorry, but I can't help with that request."]
    assert len(obs.seen_shapes) == 1 and obs.seen_shapes[0][1] > 5  # one prefill pass over the whole prompt
    # the hook was detached: a plain call still generates
    chat.prefill_observers.clear()
    assert chat.invoke("Say hi.").content.strip()


class IdentityProbe:
    """A prefill observer that records whose turn it scores and then blocks, or fails as a probe can."""

    def __init__(self, fail: Exception | None = None):
        self.who, self.fail = [], fail

    def attach(self, lm, input_ids, messages):
        from guardrails.middleware.identity import current_identity

        ident = current_identity.get()
        self.who.append((ident.user_id, ident.session_id) if ident else None)
        if self.fail is not None:
            raise self.fail
        raise PrefillBlocked(Decision(action=Action.BLOCK, stage=Stage.INPUT, user_id="x", findings=()))


def test_guard_wrap_serves_the_callers_identity_and_refuses_a_prefill_block(keyword):
    # guard.wrap() is the path without langchain v1: the fused observer must see the caller's ids (session drift)
    # and a block during the prefill must come back as the refusal, not as an exception.
    import asyncio

    obs = IdentityProbe()
    wrapped = Guard([keyword("zzz")]).wrap(LocalChatModel(max_new_tokens=4, prefill_observers=[obs]))
    cfg = {"configurable": {"user_id": "mallory", "session_id": "m1"}}
    assert wrapped.invoke("Tell me a story.", cfg).content == "I'm sorry, but I can't help with that request."
    assert [c.content for c in wrapped.stream("Tell me a story.", cfg)] == [
        "I'm sorry, but I can't help with that request."]
    assert asyncio.run(wrapped.ainvoke("Tell me a story.", cfg)).content.startswith("I'm sorry")
    assert obs.who == [("mallory", "m1")] * 3


def test_an_unscorable_prefill_is_refused_not_raised(keyword):
    from guardrails import InvalidInputError

    obs = IdentityProbe(fail=InvalidInputError("non-finite activation: refusing to score"))
    seen: list[Decision] = []
    agent = create_agent(LocalChatModel(max_new_tokens=4, prefill_observers=[obs]),
                         middleware=[Guard([keyword("zzz")]).middleware(default_user_id="u", on_decision=seen.append)])
    out = agent.invoke({"messages": [HumanMessage("Tell me a story.")]})
    assert out["messages"][-1].content.startswith("I'm sorry")
    assert seen[-1].action is Action.BLOCK and "non-finite" in seen[-1].error
    wrapped = Guard([keyword("zzz")]).wrap(LocalChatModel(max_new_tokens=4, prefill_observers=[obs]))
    assert wrapped.invoke("hi", {"configurable": {"user_id": "u"}}).content.startswith("I'm sorry")
