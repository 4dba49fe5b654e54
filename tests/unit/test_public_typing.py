"""A user's type checker accepts the documented public API (py.typed markers, typed lazy exports)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

USER_SCRIPT = '''
from __future__ import annotations
from dataclasses import dataclass
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from guardrails import Action, Decision, Finding, Guard, SettingsStore
from guardrails.client import RailguardClient, RemoteGuard
from guardrails.middleware import GuardedRunnable, GuardMiddleware
from personalization import EmbeddingBackend, ProfileService


@dataclass
class Ctx:
    user_id: str
    session_id: str | None = None


def main() -> None:
    store = SettingsStore("sqlite:///x.db")
    guard: Guard = Guard.from_registry(["pii", "validator"], store=store)
    d: Decision = guard.check("hello", user_id="alice", session_id="s1", stage="input")
    act: Action = d.action
    first: Finding | None = d.findings[0] if d.findings else None
    mw: GuardMiddleware = guard.middleware(refusal="no")
    model = GenericFakeChatModel(messages=iter([AIMessage(content="x")]))
    agent = create_agent(model, [], middleware=[mw], context_schema=Ctx)
    agent.invoke({"messages": [{"role": "user", "content": "hi"}]}, context=Ctx(user_id="alice"))
    wrapped: GuardedRunnable = guard.wrap(model)
    store.update_section("default", "alice", "guard", lambda s: {**s, "shadow": True}, actor="me")
    ProfileService(store).block_new("alice", "crypto", examples=["buy $DOGEX now"])
    backend: EmbeddingBackend = EmbeddingBackend()
    remote: Decision = RemoteGuard("http://127.0.0.1:8080", api_key="k").check("hi", user_id="u")
    print(act, first, wrapped, backend, remote, RailguardClient)
'''


def test_user_code_type_checks_against_the_public_api(tmp_path):
    """Run from outside the repository, so the packages are found as installed (py.typed decides whether mypy
    reads them at all: without it every import is `import-untyped`)."""
    script = tmp_path / "user_app.py"
    script.write_text(textwrap.dedent(USER_SCRIPT))
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir",
                        str(tmp_path / ".mypy_cache"), str(script)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
