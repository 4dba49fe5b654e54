"""`railguard demo`: a scripted multi-user, multi-turn conversation through a real `create_agent` agent on the
local chat model, with every registered guard on. Plugins add their own users and turns (`railguard.demo`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from .decision import Action, Decision
from .detector import PluginContext, build_registered_detectors, discover
from .errors import DataNotAvailableError

log = logging.getLogger("railguard.demo")


class DemoTurn(BaseModel):
    """One scripted user turn; `expect` is the action the script expects (checked and reported)."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    session_id: str
    text: str
    expect: Action | None = None
    note: str = ""
    # The guarded agent's system prompt for this session (a deployment's role and norms); None = the demo's
    # generic assistant. Turns of one session must agree on it.
    system_prompt: str | None = None


@dataclass
class DemoContext:
    """Handed to plugin demo hooks so they can set up their users (profiles, policies) before the run."""

    store: Any
    tenant_id: str = "default"
    guard: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


DEFAULT_SYSTEM_PROMPT = "You are a concise, helpful assistant. Answer in one or two sentences."


def spine_turns() -> list[DemoTurn]:
    return [
        DemoTurn(user_id="alice", session_id="alice-1", text="What is a good way to start learning Python?",
                 expect=Action.ALLOW, note="ordinary question"),
        DemoTurn(user_id="alice", session_id="alice-1",
                 text="Please remember my card for later: my card is 4111 1111 1111 1111.",
                 expect=Action.REDACT, note="PII: card number redacted before the model sees it"),
        DemoTurn(user_id="bob", session_id="bob-1",
                 text="Summarize this:\x00\x00 " + "A" * 40_000, expect=Action.BLOCK,
                 note="validator: NUL bytes and 40k characters never reach the model"),
    ]


def plugin_turns(ctx: DemoContext) -> list[DemoTurn]:
    turns: list[DemoTurn] = []
    for name, hook in sorted(discover("railguard.demo").items()):
        try:
            for t in hook(ctx) or []:
                turns.append(t if isinstance(t, DemoTurn) else DemoTurn.model_validate(t))
        except DataNotAvailableError as exc:
            log.warning("demo runs without the %r turns: %s", name, exc)
        except Exception as exc:  # one plugin's demo must not hide the others'
            log.warning("demo hook %s failed: %s", name, exc)
    return turns


@dataclass
class TurnResult:
    turn: DemoTurn
    decisions: list[Decision]
    reply: str

    @property
    def action(self) -> Action:
        acts = [d.enforced_action for d in self.decisions] or [Action.ALLOW]
        return max(acts, key=lambda a: a.severity)

    @property
    def as_expected(self) -> bool | None:
        if self.turn.expect is None:
            return None
        if self.turn.expect is Action.ALLOW:  # a warning annotates but lets the message through
            return self.action in (Action.ALLOW, Action.WARN)
        return self.action is self.turn.expect


def _demo_detectors(store: Any) -> list[Any]:
    """Every registered detector that can run here (`build_registered_detectors`: without MovieLens, the rec
    `commands` detector is left out with a warning, and its plugin's demo turns are skipped by their own hook)."""
    detectors, missing = build_registered_detectors(PluginContext(store=store))
    for name, exc in missing.items():
        log.warning("demo runs without detector %r: %s", name, exc)
    return detectors


def run_demo(*, db_url: str | None = None, max_new_tokens: int = 40, turns: Iterable[DemoTurn] | None = None,
             on_result: Callable[[TurnResult], None] | None = None) -> list[TurnResult]:
    """Run the scripted conversation; returns one TurnResult per turn (decisions of every stage)."""
    from langchain.agents import create_agent
    from langgraph.checkpoint.memory import InMemorySaver

    from .models.chat import LocalChatModel
    from .pipeline import Guard
    from .store import SettingsStore

    tmp = None
    if db_url is None:
        tmp = tempfile.TemporaryDirectory(prefix="railguard-demo-")
        db_url = f"sqlite:///{Path(tmp.name) / 'demo.db'}"
    store = SettingsStore(db_url)
    try:
        guard = Guard(_demo_detectors(store), store=store)
        ctx = DemoContext(store=store, guard=guard)
        script = list(turns) if turns is not None else [*spine_turns(), *plugin_turns(ctx)]
        decisions: list[Decision] = []
        model = LocalChatModel(max_new_tokens=max_new_tokens, repetition_penalty=1.15)  # a 135M greedy model loops
        for obs in ctx.extras.get("prefill_observers", []):
            model.prefill_observers.append(obs)
        checkpointer = InMemorySaver()
        agents: dict[str, Any] = {}

        def agent_for(system_prompt: str) -> Any:  # one agent per system prompt, all on the same model and guard
            if system_prompt not in agents:
                agents[system_prompt] = create_agent(
                    model, middleware=[guard.middleware(on_decision=decisions.append, system_prompt=system_prompt)],
                    checkpointer=checkpointer, system_prompt=system_prompt)
            return agents[system_prompt]

        prompts: dict[tuple[str, str], str | None] = {}
        for turn in script:
            if prompts.setdefault((turn.user_id, turn.session_id), turn.system_prompt) != turn.system_prompt:
                raise ValueError(f"demo session {turn.user_id}/{turn.session_id} changes its system prompt")
        results = []
        for turn in script:
            decisions.clear()
            agent = agent_for(turn.system_prompt or DEFAULT_SYSTEM_PROMPT)
            state = agent.invoke({"messages": [{"role": "user", "content": turn.text}]},
                                 config={"configurable": {"thread_id": f"{turn.user_id}/{turn.session_id}",
                                                          "user_id": turn.user_id,
                                                          "session_id": turn.session_id}})
            reply = state["messages"][-1].content if state["messages"] else ""
            res = TurnResult(turn=turn, decisions=list(decisions), reply=str(reply))
            results.append(res)
            if on_result:
                on_result(res)
        return results
    finally:
        store.close()
        if tmp is not None:
            tmp.cleanup()
