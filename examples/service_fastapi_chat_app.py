"""A chat product that embeds the railguard client (it never imports a detector or a model itself).

Run the guard service and this app side by side:

    RAILGUARD_ADMIN_KEY=admin railguard serve --port 8080 &
    python -c "from guardrails.client import RailguardClient as C; \
print(C('http://127.0.0.1:8080', admin_key='admin').create_tenant('acme')['api_key'])"   # → rgk_...
    RAILGUARD_API_KEY=rgk_... uvicorn examples.service_fastapi_chat_app:app --port 9000

    curl -s localhost:9000/chat -H 'x-user-id: alice' -H 'content-type: application/json' \
         -d '{"session_id": "s1", "message": "mail me at alice@example.com"}'
    curl -s -X PUT localhost:9000/me/guard -H 'x-user-id: alice' -H 'content-type: application/json' \
         -d '{"disabled_detectors": ["harm"]}'

The end user comes from `current_user`, a stand-in for the app's own session auth (here an `X-User-Id` header,
which anyone can set: replace it before copying this anywhere). Never take the user id from the request body
or path: whoever sends it could read or change another user's guard.

Two integration styles, both shown:
- `/chat`: the app owns generation (here a trivial echo bot) and calls `check` before and after it.
- `/chat/proxy`: the app lets the service's OpenAI-compatible proxy do both checks around the model.
Users tune their own guard through `PUT /me/guard` (stored per user, per tenant, versioned, audited): only what
`USER_MAY_DISABLE` allows; shadow mode and the protective detectors stay the operator's call.

Service errors become HTTP answers of this app (`guard_error`): a request the service refuses as malformed is
the caller's 4xx, an unreachable guard a 503 (this app fails closed), the app's own misconfiguration a 502.
"""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, get_args

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from guardrails import DEFAULT_REFUSAL, Action
from guardrails.client import (
    AsyncRailguardClient,
    AuthenticationError,
    NotFoundError,
    ServiceError,
    ServiceInvalidInputError,
    ServiceUnavailableError,
    ServiceUnknownUserError,
    ServiceVersionConflictError,
)

log = logging.getLogger("example.chat_app")
rg: AsyncRailguardClient | None = None


@asynccontextmanager
async def lifespan(_: FastAPI) -> Any:
    global rg
    rg = AsyncRailguardClient(os.environ.get("RAILGUARD_URL", "http://127.0.0.1:8080"),
                              api_key=os.environ.get("RAILGUARD_API_KEY"), timeout=5.0, max_retries=2)
    yield
    await rg.aclose()


app = FastAPI(title="example chat app", lifespan=lifespan)


async def current_user(x_user_id: Annotated[str | None, Header()] = None) -> str:
    """STAND-IN for the app's session auth: REPLACE with your login/session check (cookie, OAuth token, ...).

    A bare header is trusted here only to keep the example short; anyone can send any `X-User-Id`.
    """
    if not x_user_id:
        raise HTTPException(401, "not signed in (this example reads the user from the X-User-Id header)")
    return x_user_id


User = Annotated[str, Depends(current_user)]


@app.exception_handler(ServiceError)
async def guard_error(_: Request, exc: ServiceError) -> JSONResponse:
    """Map the client's typed errors to this app's HTTP answers (otherwise every one is a 500)."""
    status = 502  # default: the app's own setup is wrong (its API key, the service URL): not the caller's fault
    if isinstance(exc, ServiceInvalidInputError):  # 400/413/415/422/428: the service refused what the caller sent
        status = exc.status_code or 422
    elif isinstance(exc, ServiceUnknownUserError):
        status = 404
    elif isinstance(exc, ServiceVersionConflictError):  # still conflicting after the client's retries
        status = 409
    elif isinstance(exc, ServiceUnavailableError):  # fail closed: no answer without a guard verdict
        status = 503
    elif isinstance(exc, AuthenticationError | NotFoundError):
        log.error("guard service refused this app: %s", exc)
    if status < 500:
        code, message = exc.code or "invalid_input", str(exc)
    else:  # the details are for this app's logs, not for its users
        code = "guard_unavailable" if status == 503 else "guard_error"
        message = "the guard service is unavailable" if status == 503 else "the guard service refused this app"
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class ChatIn(BaseModel):
    session_id: str | None = None
    message: str


def bot(text: str) -> str:
    """Stand-in for the product's own model call."""
    return f"You said: {text}"


@app.post("/chat")
async def chat(body: ChatIn, user_id: User) -> dict[str, Any]:
    assert rg is not None
    d_in = await rg.check(body.message, user_id=user_id, session_id=body.session_id, stage="input")
    if d_in.blocked:
        return {"reply": DEFAULT_REFUSAL, "input": d_in.action}
    text = d_in.redacted_text if d_in.enforced_action is Action.REDACT and d_in.redacted_text else body.message
    reply = bot(text)
    d_out = await rg.check([{"role": "user", "content": text}, {"role": "assistant", "content": reply}],
                           user_id=user_id, session_id=body.session_id, stage="output")
    if d_out.blocked:
        reply = DEFAULT_REFUSAL
    elif d_out.enforced_action is Action.REDACT and d_out.redacted_text:
        reply = d_out.redacted_text
    return {"reply": reply, "input": d_in.action, "output": d_out.action}


@app.post("/chat/proxy")
async def chat_proxy(body: ChatIn, user_id: User) -> dict[str, Any]:
    assert rg is not None
    resp = await rg.chat([{"role": "user", "content": body.message}], user_id=user_id,
                         session_id=body.session_id, max_tokens=64)
    return {"reply": resp["choices"][0]["message"]["content"], "railguard": resp["railguard"]}


# What an end user may switch off for themselves: content preferences. The privacy probe (fail-closed), PII
# redaction and the input validator protect people other than the user, and `shadow` (alert-only: nothing is
# enforced) is a rollout tool; an operator sets those with the tenant key (`rg.update_section(user, "guard",
# ...)` from admin tooling), never through an end-user route. Widen this only if that is what your product wants.
UserDetector = Literal["harm", "commands"]
USER_MAY_DISABLE: tuple[str, ...] = get_args(UserDetector)


class GuardPrefs(BaseModel):
    model_config = ConfigDict(extra="forbid")  # {"shadow": true} is refused (422), not silently dropped

    disabled_detectors: list[UserDetector]  # any other name (privacy, pii, a typo) is this app's 422


@app.put("/me/guard")
async def set_guard(prefs: GuardPrefs, user_id: User) -> dict[str, Any]:
    """Read-modify-write of the signed-in user's `guard` section; the client retries on version conflicts.
    Only the user-switchable detectors change; whatever the operator disabled or set (shadow) is kept."""
    assert rg is not None
    mine = list(dict.fromkeys(prefs.disabled_detectors))

    def apply(g: dict[str, Any]) -> dict[str, Any]:
        kept = [n for n in g.get("disabled_detectors", []) if n not in USER_MAY_DISABLE]
        return {**g, "disabled_detectors": kept + mine}

    saved = await rg.update_section(user_id, "guard", apply)
    return {"version": saved.version, "guard": saved.settings.get("guard", {})}
