"""Typed client for the railguard HTTP service: `RailguardClient` (sync) and `AsyncRailguardClient` (async).

One core, two shells (the httpx pattern): `guardrails.service.wire.Core` builds every request as an `Op`
(method, path, body, parser) and owns the retry policy; this module maps errors and only sends. So both twins
behave identically and a new endpoint is one `Core` method plus two one-line wrappers.

Results are the SDK's own models (`Decision`, `StoredSettings`, `AuditEntry`), so code written against a local
`Guard` works against the service. Errors are the SDK's typed errors with the HTTP status attached:

    with RailguardClient("http://127.0.0.1:8080", api_key=key) as rg:
        d = rg.check("hi", user_id="alice", session_id="s1")          # Decision
        s = rg.put_settings("alice", {"guard": {"shadow": True}}, expected_version=0)

Retries: connection failures (nothing reached the server) and 5xx answers, with jittered exponential
backoff; 4xx answers are never retried (they would fail the same way).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from .decision import Decision, Stage
from .errors import InvalidInputError, RailguardError, UnknownUserError, VersionConflictError
from .pipeline import HistoryScreen
from .service.wire import ENV_KEY, ENV_URL, Core, Op, sse_line
from .store.settings import AuditEntry, StoredSettings

__all__ = ["ENV_KEY", "ENV_URL", "AsyncRailguardClient", "AuthenticationError", "NotFoundError", "RailguardClient",
           "RemoteGuard",
           "ServiceError", "ServiceInvalidInputError", "ServiceUnavailableError", "ServiceUnknownUserError",
           "ServiceVersionConflictError"]


class ServiceError(RailguardError):
    """The service answered with an error (or could not be reached). `status_code` is None for the latter."""

    status_code: int | None = None
    code: str | None = None
    details: dict[str, Any] | None = None


class AuthenticationError(ServiceError, PermissionError):
    """401/403: missing, invalid or revoked key, or a tenant key on an admin endpoint."""


class NotFoundError(ServiceError, LookupError):
    """404 other than an unknown user (unknown section, tenant or key)."""


class ServiceInvalidInputError(ServiceError, InvalidInputError):
    """400/413/415/422/428: the request was rejected as malformed; nothing was recorded."""


class ServiceUnknownUserError(ServiceError, UnknownUserError):
    """404 for a user with no stored settings (in the caller's tenant)."""


class ServiceVersionConflictError(ServiceError, VersionConflictError):
    """409 on a versioned write: re-read and retry (see `update_section`)."""


class ServiceUnavailableError(ServiceError):
    """5xx after all retries, or the server could not be reached."""


def _error_from(resp: httpx.Response) -> ServiceError:
    try:
        err = resp.json().get("error") or {}
    except (ValueError, AttributeError):
        err = {}
    status, code = resp.status_code, err.get("code")
    message = f"HTTP {status} {code or ''}: {err.get('message') or resp.reason_phrase}".strip()
    details = err.get("details")
    exc: ServiceError
    if status == 409 and code == "version_conflict" and isinstance(details, dict):
        exc = ServiceVersionConflictError("settings", int(details.get("expected", -1)), int(details.get("actual", -1)))
    elif status == 404 and code == "unknown_user":
        exc = ServiceUnknownUserError(message)
    else:
        kind = {401: AuthenticationError, 403: AuthenticationError, 404: NotFoundError}.get(status) or (
            ServiceInvalidInputError if status in (400, 413, 415, 422, 428)
            else ServiceUnavailableError if status >= 500 else ServiceError)
        exc = kind(message)
    exc.status_code, exc.code, exc.details = status, code, details
    return exc


def _result(op: Op, resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        raise _error_from(resp)
    return op.parse(resp)


def _unreachable(exc: Exception) -> ServiceUnavailableError:
    return ServiceUnavailableError(f"railguard service unreachable: {type(exc).__name__}: {exc}")


class RailguardClient:
    """Synchronous client. Thread-safe (one pooled httpx.Client). Use as a context manager or call close()."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, admin_key: str | None = None,
                 timeout: float | httpx.Timeout = 10.0, max_retries: int = 3, backoff_s: float = 0.2,
                 backoff_max_s: float = 5.0, transport: httpx.BaseTransport | None = None,
                 http_client: httpx.Client | None = None) -> None:
        self._core = Core(base_url, api_key, admin_key, max_retries, backoff_s, backoff_max_s)
        self._http = http_client or httpx.Client(base_url=self._core.base_url, timeout=timeout, transport=transport)
        self._owns = http_client is None

    def _send(self, op: Op) -> Any:
        attempt = 0
        while True:
            resp, error = None, None
            try:
                resp = self._http.request(op.method, op.path, json=op.json, params=op.params,
                                          headers=self._core.headers(op),
                                          timeout=op.timeout if op.timeout is not None else httpx.USE_CLIENT_DEFAULT)
            except httpx.TransportError as exc:
                error = exc
            if not self._core.should_retry(op, attempt, resp, error):
                if error is not None:
                    raise _unreachable(error) from error
                return _result(op, resp)  # type: ignore[arg-type]
            time.sleep(self._core.delay(attempt))
            attempt += 1

    def check(self, content: str | Sequence[Mapping[str, str]], *, user_id: str, session_id: str | None = None,
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

    def get_section(self, user_id: str, section: str) -> dict[str, Any]:
        return self._send(self._core.get_section(user_id, section))["data"]

    def put_section(self, user_id: str, section: str, data: Mapping[str, Any], *,
                    expected_version: int | None = None) -> StoredSettings:
        return self._send(self._core.put_section(user_id, section, data, expected_version))

    def delete_section(self, user_id: str, section: str) -> StoredSettings:
        return self._send(self._core.delete_section(user_id, section))

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
        with self._http.stream("POST", op.path, json=body, headers=self._core.headers(op),
                               timeout=timeout) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise _error_from(resp)
            for line in resp.iter_lines():
                if (chunk := sse_line(line)) is False:
                    return
                if chunk:
                    yield chunk  # type: ignore[misc]

    def close(self) -> None:
        if self._owns:
            self._http.close()

    def __enter__(self) -> RailguardClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncRailguardClient:
    """Async twin of RailguardClient (same methods, awaited). Safe to share across tasks."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, admin_key: str | None = None,
                 timeout: float | httpx.Timeout = 10.0, max_retries: int = 3, backoff_s: float = 0.2,
                 backoff_max_s: float = 5.0, transport: httpx.AsyncBaseTransport | None = None,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self._core = Core(base_url, api_key, admin_key, max_retries, backoff_s, backoff_max_s)
        self._http = http_client or httpx.AsyncClient(base_url=self._core.base_url, timeout=timeout,
                                                      transport=transport)
        self._owns = http_client is None

    async def _send(self, op: Op) -> Any:
        attempt = 0
        while True:
            resp, error = None, None
            try:
                timeout = op.timeout if op.timeout is not None else httpx.USE_CLIENT_DEFAULT
                resp = await self._http.request(op.method, op.path, json=op.json, params=op.params,
                                                headers=self._core.headers(op), timeout=timeout)
            except httpx.TransportError as exc:
                error = exc
            if not self._core.should_retry(op, attempt, resp, error):
                if error is not None:
                    raise _unreachable(error) from error
                return _result(op, resp)  # type: ignore[arg-type]
            await asyncio.sleep(self._core.delay(attempt))
            attempt += 1

    async def check(self, content: str | Sequence[Mapping[str, str]], *, user_id: str,
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

    async def get_section(self, user_id: str, section: str) -> dict[str, Any]:
        return (await self._send(self._core.get_section(user_id, section)))["data"]

    async def put_section(self, user_id: str, section: str, data: Mapping[str, Any], *,
                          expected_version: int | None = None) -> StoredSettings:
        return await self._send(self._core.put_section(user_id, section, data, expected_version))

    async def delete_section(self, user_id: str, section: str) -> StoredSettings:
        return await self._send(self._core.delete_section(user_id, section))

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
        async with self._http.stream("POST", op.path, json=body, headers=self._core.headers(op),
                                     timeout=timeout) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                raise _error_from(resp)
            async for line in resp.aiter_lines():
                if (chunk := sse_line(line)) is False:
                    return
                if chunk:
                    yield chunk  # type: ignore[misc]

    async def aclose(self) -> None:
        if self._owns:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncRailguardClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


class RemoteGuard:
    """A `Guard` look-alike backed by the service: `check`/`acheck` return the same Decision, so the existing
    integrations run unchanged against a remote guard, e.g.
    `create_agent(model, tools, middleware=[RemoteGuard(url, api_key=key).middleware()])`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, **client_kw: Any) -> None:
        self.client = RailguardClient(base_url, api_key, **client_kw)
        self.aclient = AsyncRailguardClient(base_url, api_key, **client_kw)

    def check(self, content: Any, *, user_id: str, session_id: str | None = None,
              stage: Stage | str = Stage.INPUT, metadata: Mapping[str, Any] | None = None) -> Decision:
        return self.client.check(_plain(content), user_id=user_id, session_id=session_id, stage=stage,
                                 metadata=metadata)

    async def acheck(self, content: Any, *, user_id: str, session_id: str | None = None,
                     stage: Stage | str = Stage.INPUT, metadata: Mapping[str, Any] | None = None) -> Decision:
        return await self.aclient.check(_plain(content), user_id=user_id, session_id=session_id, stage=stage,
                                        metadata=metadata)

    def screen_history(self, messages: Sequence[Mapping[str, Any]], *, user_id: str,
                       session_id: str | None = None) -> HistoryScreen:
        """Same contract as `Guard.screen_history`: the messages before the last one are screened by the service
        (the last is `check`'s), and the whole conversation comes back with them redacted."""
        earlier = [dict(m) for m in messages[:-1]]
        if not earlier:
            return HistoryScreen([dict(m) for m in messages], [], None)
        return _with_last(self.client.screen_history(earlier, user_id=user_id, session_id=session_id), messages)

    async def ascreen_history(self, messages: Sequence[Mapping[str, Any]], *, user_id: str,
                              session_id: str | None = None) -> HistoryScreen:
        earlier = [dict(m) for m in messages[:-1]]
        if not earlier:
            return HistoryScreen([dict(m) for m in messages], [], None)
        screen = await self.aclient.screen_history(earlier, user_id=user_id, session_id=session_id)
        return _with_last(screen, messages)

    def middleware(self, **kwargs: Any) -> Any:
        """A langchain v1 AgentMiddleware running this remote guard at every stage (see GuardMiddleware)."""
        from .middleware.agent import GuardMiddleware

        return GuardMiddleware(self, **kwargs)

    def wrap(self, runnable: Any, **kwargs: Any) -> Any:
        """Guard a langchain-core Runnable with this remote guard (see GuardedRunnable)."""
        from .middleware.runnable import GuardedRunnable

        return GuardedRunnable(guard=self, inner=runnable, **kwargs)

    def close(self) -> None:
        self.client.close()


def _with_last(screen: HistoryScreen, messages: Sequence[Mapping[str, Any]]) -> HistoryScreen:
    """The service's screen of the earlier messages, with the (unscreened) last message appended."""
    return HistoryScreen([*screen.messages, dict(messages[-1])], screen.decisions, screen.blocked)


def _plain(content: Any) -> str | list[dict[str, str]]:
    """Guard accepts str, UTF-8 bytes or Message objects; the wire takes str or role/content dicts."""
    if isinstance(content, bytes | bytearray):
        return bytes(content).decode("utf-8")
    if isinstance(content, str):
        return content
    return [m.model_dump() if hasattr(m, "model_dump") else dict(m) for m in content]
