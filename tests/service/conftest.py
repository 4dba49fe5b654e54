"""Service fixtures: a real uvicorn server on 127.0.0.1 (in a thread) over a temporary SQLite file, with the
fast spine detectors (`pii`, `validator`) plus an output keyword blocker, and a stub OpenAI-compatible
upstream for the chat proxy. Started once per session: every test gets its own tenant, so tests stay isolated
without paying for a server per test."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from guardrails import Action, BaseDetector, CheckRequest, Finding, Guard, Stage
from guardrails.client import RailguardClient
from guardrails.service import ChatConfig, create_app
from guardrails.store import SettingsStore

ADMIN_KEY = "test-admin-key-3f9c2a"


class OutputBlocker(BaseDetector):
    """Blocks assistant output containing FORBIDDEN (a stand-in for the model-based output detectors)."""

    name = "output_blocker"
    stages = frozenset({Stage.OUTPUT})

    def predict(self, request: CheckRequest) -> list[Finding]:
        hit = "FORBIDDEN" in request.text
        return [Finding(detector=self.name, category="forbidden", score=float(hit), threshold=0.5,
                        action=Action.BLOCK if hit else Action.ALLOW)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """uvicorn.Server in a daemon thread; `url` once started."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                   access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class Upstream:
    """What the stub upstream saw (to assert redaction happened and our tenant key was not forwarded)."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    fail: bool = False


def stub_upstream(seen: Upstream) -> FastAPI:
    """Answers "echo: <last user message>"; streams it in 4-character chunks when asked."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        seen.bodies.append(body)
        seen.auth_headers.append(request.headers.get("authorization"))
        if seen.fail:
            return JSONResponse({"error": "boom"}, status_code=500)
        text = "echo: " + body["messages"][-1]["content"]
        if "PARTS" in text:  # a reply whose content is a list of parts, not a string
            piece: Any = [{"type": "text", "text": text}]
            if body.get("stream"):
                chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                return StreamingResponse(iter([f"data: {json.dumps(chunk)}\n\n", "data: [DONE]\n\n"]),
                                         media_type="text/event-stream")
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": piece}}]}
        if "CALLTOOL " in text:  # asks for a tool call: lookup(query=<the rest>), streamed as OpenAI deltas; the
            # upstream itself puts an e-mail address where the request says LEAK (output the input check never saw)
            query = text.split("CALLTOOL ", 1)[1].replace("LEAK", "carol.secret@example.com")
            return _tool_call_answer(query, bool(body.get("stream")))
        if "SLOW" in text:  # lets tests see keep-alives while the proxy buffers
            await asyncio.sleep(0.5)
        if not body.get("stream"):
            return {"id": "x", "object": "chat.completion", "model": "stub-1",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}

        async def events() -> Any:
            for i in range(0, len(text), 4):
                chunk = {"id": "x", "object": "chat.completion.chunk", "model": "stub-1",
                         "choices": [{"index": 0, "delta": {"content": text[i:i + 4]}, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _tool_call_answer(query: str, stream: bool) -> Any:
    args = json.dumps({"query": query})
    if not stream:
        call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": args}}
        return {"id": "x", "object": "chat.completion", "model": "stub-1",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                             "finish_reason": "tool_calls"}]}
    deltas = [{"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ""}}]}]
    deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 5]}}]}
               for i in range(0, len(args), 5)]
    chunks = [{"id": "x", "object": "chat.completion.chunk", "model": "stub-1",
               "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    chunks.append({"id": "x", "object": "chat.completion.chunk", "model": "stub-1",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    return StreamingResponse(iter([*(f"data: {json.dumps(c)}\n\n" for c in chunks), "data: [DONE]\n\n"]),
                             media_type="text/event-stream")


@dataclass
class Service:
    url: str
    db_path: Path
    store: SettingsStore
    upstream: Upstream
    app: Any

    def admin(self) -> RailguardClient:
        return RailguardClient(self.url, admin_key=ADMIN_KEY, max_retries=0)

    def new_tenant(self) -> tuple[str, str]:
        """A fresh tenant id and its API key."""
        tenant = f"t-{uuid.uuid4().hex[:10]}"
        with self.admin() as admin:
            return tenant, admin.create_tenant(tenant)["api_key"]

    def client(self, key: str | None = None, **kw: Any) -> RailguardClient:
        if key is None:
            key = self.new_tenant()[1]
        return RailguardClient(self.url, api_key=key, max_retries=0, **kw)


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    db_path = tmp_path_factory.mktemp("svc") / "service.db"
    store = SettingsStore(f"sqlite:///{db_path}")
    seen = Upstream()
    with ThreadServer(stub_upstream(seen)) as upstream:
        guard = Guard.from_registry(["pii", "validator"], store=store)
        guard = Guard([*guard.slots, OutputBlocker()], store=store)
        app = create_app(guard, store, admin_key=ADMIN_KEY,
                         chat=ChatConfig(upstream_url=f"{upstream.url}/v1", upstream_api_key="upstream-secret"))
        with ThreadServer(app) as srv:
            with RailguardClient(srv.url) as c:
                deadline = time.monotonic() + 30
                while not c.ready():
                    assert time.monotonic() < deadline, "service never became ready"
                    time.sleep(0.05)
            yield Service(url=srv.url, db_path=db_path, store=store, upstream=seen, app=app)
    store.close()
