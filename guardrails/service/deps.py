"""Shared service state and the FastAPI dependencies every router uses (auth, state, typed API errors)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import ConfigError, InvalidInputError
from ..pipeline import Guard
from ..text import check_id
from .auth import KeyRing, Principal, admin_ok
from .observability import Metrics

log = logging.getLogger("railguard.service")
bearer = HTTPBearer(auto_error=False, description="Tenant API key (rgk_...) or, for /v1/admin, the admin key")


class ApiError(HTTPException):
    """An HTTP error with a stable machine-readable `code` (rendered as `{"error": {...}}`)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.code = code
        self.details = details


@dataclass
class ChatConfig:
    """Where `/v1/chat/completions` sends guarded requests: an OpenAI-compatible URL, else the local model."""

    upstream_url: str | None = None  # e.g. http://127.0.0.1:9000/v1 (".../chat/completions" is appended)
    upstream_api_key: str | None = None  # sent upstream; the caller's tenant key never is
    timeout_s: float = 120.0  # httpx's limit per network operation (connect, each read, each write) → 504
    # wall-clock bound on one whole upstream call (headers, then the body or the stream to its end) → 504; it also
    # stops upstreams that trickle bytes or stream forever, which per-read timeouts never catch. None: no bound.
    total_timeout_s: float | None = 600.0  # 0 or None: no bound

    def __post_init__(self) -> None:
        if not (0 < self.timeout_s < float("inf")):
            raise ConfigError(f"timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        total = self.total_timeout_s
        if total is not None and not total >= 0:  # negative or NaN
            raise ConfigError(f"total_timeout_s must be seconds >= 0 (0: no bound), got {total!r}")
        if total in (0, float("inf")):  # as the environment variable: 0 means no bound
            self.total_timeout_s = None
    local_model: str | None = None  # model name for LocalChatModel (default: the embedded SmolLM2)
    max_new_tokens: int = 128
    warm_local_model: bool = False  # load the local model during startup so /readyz covers it
    # Streaming only: send an SSE comment this often while the (buffered) answer is generated and checked, so
    # proxies with idle timeouts keep the connection. None = off: errors stay proper HTTP statuses.
    sse_keepalive_s: float | None = None


@dataclass
class ServiceState:
    """Everything the routes share. Per-tenant Guards are light views over one set of detector objects."""

    guard: Guard
    store: Any
    keys: KeyRing
    metrics: Metrics
    admin_key: str | None
    chat: ChatConfig
    unavailable_detectors: dict[str, str] = field(default_factory=dict)  # plugin name -> why it is not loaded
    ready: bool = False
    ready_error: str | None = None
    strict_detectors: bool = True  # a detector failing its warm-up check keeps /readyz at 503
    warmup_failed: dict[str, str] = field(default_factory=dict)  # the last warm-up's failed detectors -> why
    inflight: set[asyncio.Task[Any]] = field(default_factory=set)  # requests running (HygieneMiddleware)
    _tenant_guards: dict[str, Guard] = field(default_factory=dict)
    chat_model: Any = None
    http_client: Any = None  # httpx.AsyncClient for the upstream: created on first use, closed by the lifespan
    chat_lock: asyncio.Lock | None = None  # created in the app's lifespan (bound to the serving loop)

    def guard_for(self, tenant_id: str) -> Guard:
        """The Guard for one tenant: same detector slots (models loaded once), tenant-scoped store reads."""
        g = self._tenant_guards.get(tenant_id)
        if g is None:
            g = self.guard.view(tenant_id=tenant_id, store=self.store)
            self._tenant_guards[tenant_id] = g
        return g


def state(request: Request) -> ServiceState:
    return request.app.state.rg


def user_id_param(user_id: str, request: Request) -> str:
    """Path user ids follow the same rule as everywhere else (1-256 printable characters), and are UTF-8: the path
    decoder turns bytes that are not into U+FFFD, so "%FF" and "%FE" were one user (a write as one was read, and
    erased, as the other). A U+FFFD sent as UTF-8 ("%EF%BF%BD") is a character like any other."""
    from urllib.parse import unquote_to_bytes

    if "\ufffd" in user_id:  # a replacement character: sent as such, or put there by the decoder?
        raw = bytes(request.scope.get("raw_path") or b"")
        segment = raw.split(b"/v1/users/", 1)[-1].split(b"/", 1)[0]  # the user id's own (percent-encoded) segment
        try:
            unquote_to_bytes(segment).decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(422, "invalid_user_id", "user_id must be UTF-8 text (the path holds bytes that are not)"
                           ) from None
    try:
        check_id(user_id, "user_id")
    except InvalidInputError as exc:
        raise ApiError(422, "invalid_user_id", str(exc)) from None
    return user_id


async def require_tenant(request: Request,
                         creds: HTTPAuthorizationCredentials | None = Security(bearer)) -> Principal:
    """Resolve the bearer key to its tenant; 401 for a missing, malformed, unknown or revoked key."""
    if creds is None:
        raise ApiError(401, "missing_api_key", "send 'Authorization: Bearer <tenant key>'",
                       headers={"WWW-Authenticate": "Bearer"})
    keys = state(request).keys
    principal = keys.verify_cached(creds.credentials)  # the common case: no thread hop, no I/O
    if principal is False:
        principal = await asyncio.to_thread(keys.verify, creds.credentials)
    assert principal is not False
    if principal is None:
        raise ApiError(401, "invalid_api_key", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
    request.state.tenant_id = principal.tenant_id
    return principal


async def require_admin(request: Request, creds: HTTPAuthorizationCredentials | None = Security(bearer)) -> str:
    """Admin endpoints: 403 unless the bearer equals the configured admin key (disabled when none is set)."""
    st = state(request)
    if not st.admin_key:
        raise ApiError(403, "admin_disabled", "no admin key is configured (set RAILGUARD_ADMIN_KEY)")
    if creds is None:
        raise ApiError(401, "missing_api_key", "send 'Authorization: Bearer <admin key>'",
                       headers={"WWW-Authenticate": "Bearer"})
    if not admin_ok(creds.credentials, st.admin_key):
        raise ApiError(403, "forbidden", "this key may not manage tenants")
    return "admin"
