"""A LangChain v1 agent guarded by a *remote* railguard service (no detectors or guard models in-process).

`RemoteGuard` has the Guard's `check`/`acheck`, so the SDK's own `GuardMiddleware` runs unchanged: input
before the model, output before the graph sees it, tool-call arguments before the tool, tool results before
the model. The user's settings stored in the service (per tenant) apply to every decision.

    RAILGUARD_URL=http://127.0.0.1:8080 RAILGUARD_API_KEY=rgk_... python examples/service_langchain_remote_agent.py
    ... --local    # use the embedded SmolLM2 instead of the scripted fake model
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

from guardrails.client import RemoteGuard


@dataclass
class Ctx:
    """The agent's runtime context: the middleware reads user and session from here."""

    user_id: str
    session_id: str | None = None


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order's status."""
    return f"order {order_id}: shipped"


class ScriptedModel(GenericFakeChatModel):
    """Offline stand-in for a chat model (replies in order; tools accepted but not called)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self


def build_agent(guard: RemoteGuard, local: bool = False, decisions: list | None = None) -> Any:
    if local:
        from guardrails.models import LocalChatModel

        model: Any = LocalChatModel(max_new_tokens=40)
    else:
        model = ScriptedModel(messages=iter([AIMessage(content=t) for t in (
            "Sure, happy to help with your order.",
            "Your contact on file is jane.doe@example.com.",  # output PII: redacted by the service
            "That is all I know.")]))
    mw = guard.middleware(on_decision=decisions.append if decisions is not None else None)
    return create_agent(model, tools=[lookup_order], middleware=[mw], context_schema=Ctx)


def main(url: str | None = None, api_key: str | None = None, local: bool = False) -> list[str]:
    guard = RemoteGuard(url or os.environ.get("RAILGUARD_URL"), api_key or os.environ.get("RAILGUARD_API_KEY"))
    decisions: list = []
    agent = build_agent(guard, local, decisions)
    replies = []
    for text in ("Where is my order 42?", "What email do you have for me?",
                 "My card is 4111 1111 1111 1111, keep it."):
        out = agent.invoke({"messages": [HumanMessage(text)]}, context=Ctx(user_id="alice", session_id="demo"))
        reply = out["messages"][-1].content
        replies.append(reply)
        print(f"user: {text}\nagent: {reply}")
    for d in decisions:
        print(f"  {d.stage.value:<11} {d.action.value:<6} {[f.detector + '/' + f.category for f in d.findings]}")
    guard.close()
    return replies


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--api-key")
    ap.add_argument("--local", action="store_true", help="use the embedded local model")
    a = ap.parse_args()
    main(a.url, a.api_key, a.local)
