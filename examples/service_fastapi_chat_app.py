"""A chat product that embeds the railguard client (it never imports a detector or a model itself).

Run the guard service and this app side by side:

    RAILGUARD_ADMIN_KEY=admin railguard serve --port 8080 &
    python -c "from guardrails.client import RailguardClient as C; \
print(C('http://127.0.0.1:8080', admin_key='admin').create_tenant('acme')['api_key'])"   # → rgk_...
    RAILGUARD_API_KEY=rgk_... uvicorn examples.service_fastapi_chat_app:app --port 9000

    curl -s localhost:9000/chat -H 'content-type: application/json' \
         -d '{"user_id": "alice", "session_id": "s1", "message": "mail me at alice@example.com"}'

Two integration styles, both shown:
- `/chat`: the app owns generation (here a trivial echo bot) and calls `check` before and after it.
- `/chat/proxy`: the app lets the service's OpenAI-compatible proxy do both checks around the model.
Users tune their own guard through `/me/guard` (stored per user, per tenant, versioned, audited).
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from guardrails import DEFAULT_REFUSAL, Action
from guardrails.client import AsyncRailguardClient, ServiceError

rg: AsyncRailguardClient | None = None


@asynccontextmanager
async def lifespan(_: FastAPI) -> Any:
    global rg
    rg = AsyncRailguardClient(os.environ.get("RAILGUARD_URL", "http://127.0.0.1:8080"),
                              api_key=os.environ.get("RAILGUARD_API_KEY"), timeout=5.0, max_retries=2)
    yield
    await rg.aclose()


app = FastAPI(title="example chat app", lifespan=lifespan)


class ChatIn(BaseModel):
    user_id: str
    session_id: str | None = None
    message: str


def bot(text: str) -> str:
    """Stand-in for the product's own model call."""
    return f"You said: {text}"


@app.post("/chat")
async def chat(body: ChatIn) -> dict[str, Any]:
    assert rg is not None
    try:
        d_in = await rg.check(body.message, user_id=body.user_id, session_id=body.session_id, stage="input")
    except ServiceError as exc:  # choose your fail mode: this app fails closed when the guard is unreachable
        raise HTTPException(503, f"guard unavailable: {exc.code or exc}") from None
    if d_in.blocked:
        return {"reply": DEFAULT_REFUSAL, "input": d_in.action}
    text = d_in.redacted_text if d_in.enforced_action is Action.REDACT and d_in.redacted_text else body.message
    reply = bot(text)
    d_out = await rg.check([{"role": "user", "content": text}, {"role": "assistant", "content": reply}],
                           user_id=body.user_id, session_id=body.session_id, stage="output")
    if d_out.blocked:
        reply = DEFAULT_REFUSAL
    elif d_out.enforced_action is Action.REDACT and d_out.redacted_text:
        reply = d_out.redacted_text
    return {"reply": reply, "input": d_in.action, "output": d_out.action}


@app.post("/chat/proxy")
async def chat_proxy(body: ChatIn) -> dict[str, Any]:
    assert rg is not None
    resp = await rg.chat([{"role": "user", "content": body.message}], user_id=body.user_id,
                         session_id=body.session_id, max_tokens=64)
    return {"reply": resp["choices"][0]["message"]["content"], "railguard": resp["railguard"]}


class GuardPrefs(BaseModel):
    shadow: bool | None = None
    disabled_detectors: list[str] | None = None


@app.put("/me/{user_id}/guard")
async def set_guard(user_id: str, prefs: GuardPrefs) -> dict[str, Any]:
    """Read-modify-write of the user's `guard` section; the client retries on version conflicts."""
    assert rg is not None
    changes = prefs.model_dump(exclude_none=True)
    saved = await rg.update_section(user_id, "guard", lambda g: {**g, **changes})
    return {"version": saved.version, "guard": saved.settings.get("guard", {})}
