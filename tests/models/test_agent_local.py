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
