"""Typed client for the railguard HTTP service: `RailguardClient` (sync) and `AsyncRailguardClient` (async).

One core, two shells (the httpx pattern): `guardrails.service.wire.Core` builds every request as an `Op`
(method, path, body, parser) and owns the retry policy; `guardrails.client_transport` sends it (sync and async
twins of one loop: retries, time limits, typed errors). So both twins behave identically and a new endpoint is one
`Core` method plus two one-line wrappers.

Results are the SDK's own models (`Decision`, `StoredSettings`, `AuditEntry`), so code written against a local
`Guard` works against the service. Errors are the SDK's typed errors with the HTTP status attached:

    with RailguardClient("http://127.0.0.1:8080", api_key=key) as rg:
        d = rg.check("hi", user_id="alice", session_id="s1")          # Decision
        s = rg.put_settings("alice", {"guard": {"shadow": True}}, expected_version=0)

Retries: connection failures (nothing reached the server) and 5xx answers, with jittered exponential
backoff; 4xx answers are never retried (they would fail the same way).

Time limits: `timeout` is httpx's, per network operation (connect, each read, each write, pool wait);
`total_timeout` bounds a whole call, every attempt and backoff pause included, even when the service or a proxy
in front of it sends its answer slowly (default: the longest per-operation timeout x attempts). Running out of
either raises `ServiceUnavailableError` with `status_code` None. See `guardrails.client_transport`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from .client_transport import (
    SYNC_TRACE,
    AuthenticationError,
    NotFoundError,
    ServiceErasureBusyError,
    ServiceError,
    ServiceInvalidInputError,
    ServiceInvalidSettingsError,
    ServiceNameTakenError,
    ServiceUnavailableError,
    ServiceUnknownNameError,
    ServiceUnknownUserError,
    ServiceVersionConflictError,
    asend,
    default_total,
    error_from,
    send,
    stream_chunk,
    unreachable,
)
from .decision import Decision, Stage
from .guard_types import HistoryScreen
from .service.wire import ENV_KEY, ENV_URL, Core, Op
from .store.settings import AuditEntry, StoredSettings

__all__ = ["ENV_KEY", "ENV_URL", "AsyncRailguardClient", "AuthenticationError", "NotFoundError", "RailguardClient",
           "RemoteGuard",
           "ServiceErasureBusyError", "ServiceError", "ServiceInvalidInputError", "ServiceInvalidSettingsError",
           "ServiceNameTakenError", "ServiceUnavailableError", "ServiceUnknownNameError", "ServiceUnknownUserError",
           "ServiceVersionConflictError"]


class _Limits:
    """The time limits of one call (both twins): the per-operation timeout and the total."""

    _core: Core
    _timeout: httpx.Timeout
    _total: float | None

    def _limits(self, op: Op) -> tuple[httpx.Timeout, float | None]:
        if op.timeout is None:
            return self._timeout, self._total
        timeout = httpx.Timeout(op.timeout)
        return timeout, default_total(timeout, self._core.max_retries + 1)


class RailguardClient(_Limits):
    """Synchronous client. Thread-safe (one pooled httpx.Client). Use as a context manager or call close().

    `timeout`: httpx's per-operation limit (float or httpx.Timeout; None: unbounded), as before.
    `total_timeout`: wall-clock limit (s) of one call, all attempts and backoff pauses included, enforced even
    while bytes keep arriving; None: the longest per-operation timeout x (max_retries + 1) (no limit when
    `timeout` leaves reads unbounded); `math.inf`: no total limit. A retry it leaves no room for is not made.
    A call with its own `timeout` (`chat`) gets its own total the same way; `chat_stream` is bounded per read
    only (its chunks reach the caller as they come). Expiry raises `ServiceUnavailableError`, like the others.
    With `http_client`, that client's timeout is the per-operation one."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, admin_key: str | None = None,
                 timeout: float | httpx.Timeout | None = 10.0, max_retries: int = 3, backoff_s: float = 0.2,
                 backoff_max_s: float = 5.0, transport: httpx.BaseTransport | None = None,
                 http_client: httpx.Client | None = None, total_timeout: float | None = None) -> None:
        self._core = Core(base_url, api_key, admin_key, max_retries, backoff_s, backoff_max_s)
        self._http = http_client or httpx.Client(base_url=self._core.base_url, timeout=timeout, transport=transport)
        self._owns = http_client is None
        self._timeout = self._http.timeout
        self._total = total_timeout if total_timeout is not None else default_total(self._timeout, max_retries + 1)

    def _send(self, op: Op) -> Any:
        return send(self._http, self._core, op, *self._limits(op))

    def check(self, content: Any, *, user_id: str, session_id: str | None = None,
              stage: Stage | str = Stage.INPUT, metadata: Mapping[str, Any] | None = None) -> Decision:
        """Same signature and result as `Guard.check`, evaluated by the service for this key's tenant."""
        return self._send(self._core.check(content, user_id, session_id, stage, metadata))

    def screen_history(self, messages: Sequence[Mapping[str, Any]], *, user_id: str,
                       session_id: str | None = None) -> HistoryScreen:
        """The earlier messages of a conversation (send them without its newest one), every one screened by the
        service's text-level detectors. `RemoteGuard.screen_history` takes a whole conversation instead, like
        `Guard.screen_history`."""
        return self._send(self._core.screen_history(messages, user_id, session_id))

    def get_settings(self, user_id: str) -> StoredSettings:
        return self._send(self._core.get_settings(user_id))

    def put_settings(self, user_id: str, settings: Mapping[str, Any], *, expected_version: int) -> StoredSettings:
        return self._send(self._core.put_settings(user_id, settings, expected_version))

    def delete_settings(self, user_id: str) -> None:
        self._send(self._core.delete_settings(user_id))

    def erase_user(self, user_id: str) -> dict[str, Any]:
        """Erase everything the service holds about this user (settings, session state, audit trail)."""
        return self._send(self._core.erase_user(user_id))

    def get_section(self, user_id: str, section: str) -> dict[str, Any]:
        return self._send(self._core.get_section(user_id, section))["data"]

    def put_section(self, user_id: str, section: str, data: Mapping[str, Any], *,
                    expected_version: int | None = None) -> StoredSettings:
        return self._send(self._core.put_section(user_id, section, data, expected_version))

    def delete_section(self, user_id: str, section: str) -> StoredSettings:
        return self._send(self._core.delete_section(user_id, section))

    def apply_operation(self, user_id: str, section: str, operation: str, **body: Any) -> StoredSettings:
        """A section's registered operation, e.g. ``apply_operation("alice", "moderation", "block", name="crypto",
        examples=["Buy $DOGEX now"])`` (`GET /v1/settings/operations` lists them); one atomic write."""
        return self._send(self._core.apply_operation(user_id, section, operation, body))

    def update_section(self, user_id: str, section: str, fn: Callable[[dict[str, Any]], Mapping[str, Any]], *,
                       max_retries: int = 10) -> StoredSettings:
        """Client-side read-modify-write of one section (like `SettingsStore.update_section`), retried on 409."""
        steps, value, error = self._core.update_section(user_id, section, fn, max_retries), None, None
        while True:
            try:
                step = steps.throw(error) if error else steps.send(value)
            except StopIteration as done:
                return done.value
            value, error = None, None
            if isinstance(step, float):
                time.sleep(step)
                continue
            try:
                value = self._send(step)
            except ServiceError as exc:
                error = exc

    def audit(self, user_id: str, *, limit: int = 100) -> list[AuditEntry]:
        return self._send(self._core.audit(user_id, limit))

    def health(self) -> dict[str, Any]:
        return self._send(self._core.get("/healthz"))

    def ready(self) -> bool:
        try:
            return self._send(self._core.get("/readyz")).get("status") == "ok"
        except ServiceError:
            return False

    def create_tenant(self, tenant_id: str) -> dict[str, str]:
        """Admin: create a tenant; returns {tenant_id, key_id, api_key} (the key is shown only once)."""
        return self._send(self._core.create_tenant(tenant_id))

    def chat(self, messages: Sequence[Mapping[str, Any]], *, user_id: str, session_id: str | None = None,
             timeout: float | None = 120.0, **params: Any) -> dict[str, Any]:
        """Guarded `/v1/chat/completions` (non-streaming); the OpenAI response plus `railguard` decisions."""
        return self._send(self._core.chat(messages, user_id, session_id, params, timeout))

    def chat_stream(self, messages: Sequence[Mapping[str, Any]], *, user_id: str, session_id: str | None = None,
                    timeout: float | None = 120.0, **params: Any) -> Iterator[dict[str, Any]]:
        """Streaming twin of `chat`: yields the SSE chunk objects (released only after the output check)."""
        op = self._core.chat(messages, user_id, session_id, {**params}, timeout)
        body = {**op.json, "stream": True}
        try:
            with self._http.stream("POST", op.path, json=body, headers=self._core.headers(op), timeout=timeout,
                                   extensions=SYNC_TRACE) as resp:  # its pooled connection serves bounded calls later
                if resp.status_code >= 400:
                    resp.read()
                    raise error_from(resp)
                for line in resp.iter_lines():
                    if (chunk := stream_chunk(line)) is False:
                        return
                    if chunk:
                        yield chunk  # type: ignore[misc]
        except httpx.TransportError as exc:  # as `chat` reports it
            raise unreachable(exc) from None

    def close(self) -> None:
        if self._owns:
            self._http.close()

    def __enter__(self) -> RailguardClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncRailguardClient(_Limits):
    """Async twin of RailguardClient (same methods and limits, awaited). Safe to share across tasks of one event
    loop (its connections belong to that loop: `RemoteGuard` keeps one per loop)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, admin_key: str | None = None,
                 timeout: float | httpx.Timeout | None = 10.0, max_retries: int = 3, backoff_s: float = 0.2,
                 backoff_max_s: float = 5.0, transport: httpx.AsyncBaseTransport | None = None,
                 http_client: httpx.AsyncClient | None = None, total_timeout: float | None = None) -> None:
        self._core = Core(base_url, api_key, admin_key, max_retries, backoff_s, backoff_max_s)
        self._http = http_client or httpx.AsyncClient(base_url=self._core.base_url, timeout=timeout,
                                                      transport=transport)
        self._owns = http_client is None
        self._timeout = self._http.timeout
        self._total = total_timeout if total_timeout is not None else default_total(self._timeout, max_retries + 1)

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    async def _send(self, op: Op) -> Any:
        return await asend(self._http, self._core, op, *self._limits(op))

    async def check(self, content: Any, *, user_id: str,
                    session_id: str | None = None, stage: Stage | str = Stage.INPUT,
                    metadata: Mapping[str, Any] | None = None) -> Decision:
        return await self._send(self._core.check(content, user_id, session_id, stage, metadata))

    async def screen_history(self, messages: Sequence[Mapping[str, Any]], *, user_id: str,
                             session_id: str | None = None) -> HistoryScreen:
        return await self._send(self._core.screen_history(messages, user_id, session_id))

    async def get_settings(self, user_id: str) -> StoredSettings:
        return await self._send(self._core.get_settings(user_id))

    async def put_settings(self, user_id: str, settings: Mapping[str, Any], *,
                           expected_version: int) -> StoredSettings:
        return await self._send(self._core.put_settings(user_id, settings, expected_version))

    async def delete_settings(self, user_id: str) -> None:
        await self._send(self._core.delete_settings(user_id))

    async def erase_user(self, user_id: str) -> dict[str, Any]:
        return await self._send(self._core.erase_user(user_id))

    async def get_section(self, user_id: str, section: str) -> dict[str, Any]:
        return (await self._send(self._core.get_section(user_id, section)))["data"]

    async def put_section(self, user_id: str, section: str, data: Mapping[str, Any], *,
                          expected_version: int | None = None) -> StoredSettings:
        return await self._send(self._core.put_section(user_id, section, data, expected_version))

    async def delete_section(self, user_id: str, section: str) -> StoredSettings:
        return await self._send(self._core.delete_section(user_id, section))

    async def apply_operation(self, user_id: str, section: str, operation: str, **body: Any) -> StoredSettings:
        return await self._send(self._core.apply_operation(user_id, section, operation, body))

    async def update_section(self, user_id: str, section: str, fn: Callable[[dict[str, Any]], Mapping[str, Any]],
                             *, max_retries: int = 10) -> StoredSettings:
        steps, value, error = self._core.update_section(user_id, section, fn, max_retries), None, None
        while True:
            try:
                step = steps.throw(error) if error else steps.send(value)
            except StopIteration as done:
                return done.value
            value, error = None, None
            if isinstance(step, float):
                await asyncio.sleep(step)
                continue
            try:
                value = await self._send(step)
            except ServiceError as exc:
                error = exc

    async def audit(self, user_id: str, *, limit: int = 100) -> list[AuditEntry]:
        return await self._send(self._core.audit(user_id, limit))

    async def health(self) -> dict[str, Any]:
        return await self._send(self._core.get("/healthz"))

    async def ready(self) -> bool:
        try:
            return (await self._send(self._core.get("/readyz"))).get("status") == "ok"
        except ServiceError:
            return False

    async def create_tenant(self, tenant_id: str) -> dict[str, str]:
        return await self._send(self._core.create_tenant(tenant_id))

    async def chat(self, messages: Sequence[Mapping[str, Any]], *, user_id: str, session_id: str | None = None,
                   timeout: float | None = 120.0, **params: Any) -> dict[str, Any]:
        return await self._send(self._core.chat(messages, user_id, session_id, params, timeout))

    async def chat_stream(self, messages: Sequence[Mapping[str, Any]], *, user_id: str,
                          session_id: str | None = None, timeout: float | None = 120.0,
                          **params: Any) -> AsyncIterator[dict[str, Any]]:
        op = self._core.chat(messages, user_id, session_id, {**params}, timeout)
        body = {**op.json, "stream": True}
        try:
            async with self._http.stream("POST", op.path, json=body, headers=self._core.headers(op),
                                         timeout=timeout) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise error_from(resp)
                async for line in resp.aiter_lines():
                    if (chunk := stream_chunk(line)) is False:
                        return
                    if chunk:
                        yield chunk  # type: ignore[misc]
        except httpx.TransportError as exc:
            raise unreachable(exc) from None

    async def aclose(self) -> None:
        if self._owns:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncRailguardClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


from .remote_guard import RemoteGuard  # noqa: E402  (re-exported here, where it was first; it builds on the clients)
