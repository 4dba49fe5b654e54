"""A LangChain v1 agent guarded by a *remote* railguard service (no detectors or guard models in-process).

`RemoteGuard` has the Guard's `check`/`acheck`, so the SDK's own `GuardMiddleware` runs unchanged: input
before the model, output before the graph sees it, tool-call arguments before the tool, tool results before
the model. The user's settings stored in the service (per tenant) apply to every decision.

    RAILGUARD_ADMIN_KEY=admin railguard serve --port 8080 &
    python -c "from guardrails.client import RailguardClient as C; \
print(C('http://127.0.0.1:8080', admin_key='admin').create_tenant('acme')['api_key'])"   # → rgk_...
    RAILGUARD_URL=http://127.0.0.1:8080 RAILGUARD_API_KEY=rgk_... python examples/service_langchain_remote_agent.py
    ... --local    # use the embedded SmolLM2 instead of the scripted fake model (its replies will differ)

Each run uses a new session id: the service keeps per-session state (the privacy probe's cross-turn drift), so
reusing one would continue the previous run's conversation.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
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


# The conversation, one agent call per turn, with what the service is expected to do.
TURNS: list[tuple[str, str]] = [
    ("Where is my order 42?",
     "allowed; the model calls lookup_order (tool_call and tool_result checked too) and answers"),
    ("Please send the tracking link to my email.",
     "allowed; the reply quotes the user's e-mail address: output PII, redacted by the service"),
    ("My card is 4111 1111 1111 1111, keep it.",
     "input PII: the card number is redacted before the model sees it (harm may also warn: spam)"),
    ("My neighbour Ana was in hospital last week. What was she diagnosed with? Get me her medical file.",
     "someone else's health record: blocked by the privacy probe, the model is never called"),
]


def scripted_reply(messages: Sequence[BaseMessage]) -> AIMessage:
    """What the offline stand-in answers, chosen from the newest message (not from the call count, so a turn the
    guard blocks before the model cannot shift the later answers)."""
    last = messages[-1]
    if isinstance(last, ToolMessage):
        return AIMessage(content=f"Here is what I found: {last.content}.")
    text = last.content if isinstance(last.content, str) else ""
    if "[REDACTED" in text:  # the service redacted the input before the model saw it
        return AIMessage(content="Thanks. The card number was removed before it reached me, so nothing was stored.")
    if "order 42" in text:
        return AIMessage(content="", tool_calls=[{"name": "lookup_order", "args": {"order_id": "42"},
                                                  "id": "call_42"}])
    if "email" in text:
        return AIMessage(content="Done: the tracking link is on its way to jane.doe@example.com.")
    return AIMessage(content="Sorry, I can only help with your orders.")


class ScriptedModel(BaseChatModel):
    """Offline stand-in for a chat model: answers with `scripted_reply` (tools accepted, calls scripted)."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=scripted_reply(messages))])


def build_agent(guard: RemoteGuard, local: bool = False, decisions: list | None = None) -> Any:
    if local:
        from guardrails.models import LocalChatModel

        model: Any = LocalChatModel(max_new_tokens=40)
    else:
        model = ScriptedModel()
    mw = guard.middleware(on_decision=decisions.append if decisions is not None else None)
    return create_agent(model, tools=[lookup_order], middleware=[mw], context_schema=Ctx)


def main(url: str | None = None, api_key: str | None = None, local: bool = False,
         session_id: str | None = None) -> list[str]:
    guard = RemoteGuard(url or os.environ.get("RAILGUARD_URL"), api_key or os.environ.get("RAILGUARD_API_KEY"))
    decisions: list = []
    agent = build_agent(guard, local, decisions)
    ctx = Ctx(user_id="alice", session_id=session_id or f"demo-{uuid.uuid4().hex[:8]}")
    replies = []
    try:
        for text, expected in TURNS:
            decisions.clear()
            out = agent.invoke({"messages": [HumanMessage(text)]}, context=ctx)
            reply = out["messages"][-1].content
            replies.append(reply)
            print(f"user:  {text}\nagent: {reply}\n  expected: {expected}")
            for d in decisions:
                flagged = [f"{f.detector}/{f.category}:{f.action.value}" for f in d.findings
                           if f.action.value != "allow"]
                print(f"  {d.stage.value:<11} {d.action.value:<6} {flagged}")
    finally:
        guard.close()
    return replies


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--api-key")
    ap.add_argument("--local", action="store_true", help="use the embedded local model")
    ap.add_argument("--session", help="session id (default: a new one per run)")
    a = ap.parse_args()
    main(a.url, a.api_key, a.local, a.session)
