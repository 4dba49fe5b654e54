"""The sending half of the service client, and the time and event-loop care every httpx caller in the SDK shares.

- Typed errors: the service's HTTP answers mapped to `ServiceError` subclasses (re-exported by `guardrails.client`).
- `send` / `asend`: one request under `Core`'s retry policy and one total time limit, the sync and async twins.
- `Deadline`: a wall-clock limit for a whole call (every attempt and backoff pause) that holds even when the
  peer keeps sending bytes. httpx's timeouts bound each network operation, so a server or proxy that drips its
  status line, headers or body one byte per second never trips a 1 s read timeout. The twins enforce it so:
  * async: `asyncio.timeout(left)` around each attempt; cancellation reaches every await inside httpx, and httpx
    closes the cut-short connection on its way out.
  * sync: there is no cancellation, so the limit is applied where the thread blocks. Every request carries
    `SYNC_TRACE` (httpcore's documented `trace` extension), which hands over each new connection's network
    stream; its `read`/`write` then clip their socket timeout to what is left of the deadline of the call
    running in this thread (a context variable set by `Deadline.bounding_io`) and fail once it has passed.
    The request therefore fails at the deadline in the thread that owns the connection, and httpcore closes
    that connection itself (an unfinished response is never put back in the pool). Pooled connections keep
    working: the bound travels with the stream, and only a call with a deadline is clipped.
    Why not a worker thread the caller stops waiting for, or a watchdog timer: the worker bounds the caller
    but the abandoned request trickles on, holding a thread and a connection, unless something closes that
    connection; and the socket of a reused pooled connection is not reachable before its headers arrive, while
    closing a socket from another thread races with the thread using it (descriptor reuse, TLS state).
    Limits: name resolution is not bounded (the resolver has no timeout), and a custom transport that is not
    httpcore's is bounded by its own timeouts and between the chunks it delivers only.
- `PerLoop`: one async client per running event loop. An httpx.AsyncClient's pooled connections belong to the loop
  that opened them, so one client reused from a second `asyncio.run` fails with "Event loop is closed". Each
  loop's client is closed on that loop when the loop shuts down (asyncio's async-generator shutdown hook), by
  `aclose()`, or (best effort) by `close()`.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Generic, Protocol, TypeVar

import httpcore
import httpx

from .errors import (
    ConfigError,
    ErasureBusyError,
    InvalidInputError,
    NameTakenError,
    RailguardError,
    UnknownNameError,
    UnknownUserError,
    VersionConflictError,
)
from .service.wire import Core, Op, sse_line


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


class ServiceInvalidSettingsError(ServiceInvalidInputError, ConfigError):
    """422 ``invalid_settings``: settings a section's model refused (a local store raises ConfigError for them)."""


class ServiceErasureBusyError(ServiceError, ErasureBusyError):
    """409 ``erasure_busy``: the user is being erased; retry (a local Guard raises ErasureBusyError)."""


class ServiceUnknownUserError(ServiceError, UnknownUserError):
    """404 for a user with no stored settings (in the caller's tenant)."""


class ServiceUnknownNameError(ServiceError, UnknownNameError):
    """404 ``unknown_<kind>``: the operation names a category, preference ... the user's settings do not hold (a
    local store raises UnknownNameError)."""


class ServiceNameTakenError(ServiceError, NameTakenError):
    """409 ``<kind>_exists``: the operation would create an item under a name already taken (a local store raises
    NameTakenError)."""


class ServiceVersionConflictError(ServiceError, VersionConflictError):
    """409 on a versioned write: re-read and retry (see `update_section`)."""


class ServiceUnavailableError(ServiceError):
    """5xx after all retries, the server could not be reached, or no complete answer came in time."""


def error_from(resp: httpx.Response) -> ServiceError:
    try:
        err = resp.json().get("error") or {}
    except (ValueError, AttributeError, RecursionError):
        err = {}
    return _error(resp.status_code, err, resp.reason_phrase)


def stream_chunk(line: str) -> dict[str, Any] | None | bool:
    """`sse_line` for a client: the service's in-stream error event (sent once a stream has begun) raises as the
    same typed error its status would have, and a line that is not JSON is a ServiceUnavailableError."""
    try:
        chunk = sse_line(line)
    except (ValueError, RecursionError):
        raise ServiceUnavailableError("railguard service: malformed stream event") from None
    if isinstance(chunk, dict) and "error" in chunk:
        err = chunk["error"] if isinstance(chunk["error"], dict) else {}
        status = err.get("status")
        raise _error(status if type(status) is int and 400 <= status < 600 else 502, err, "error in stream")
    return chunk


#: 404 codes that name a route, a section or a key, not an item inside a user's settings
_NOT_NAMES = frozenset({"unknown_user", "unknown_section", "unknown_operation", "unknown_tenant", "unknown_key"})


def _error(status: int, err: Any, reason: str) -> ServiceError:
    if not isinstance(err, dict):  # a proxy's {"error": "boom"}: not ours, described by its status only
        err = {}
    code = err.get("code")
    message = f"HTTP {status} {code or ''}: {err.get('message') or reason}".strip()
    details = err.get("details")
    exc: ServiceError
    if status == 409 and code == "version_conflict" and isinstance(details, dict):
        exc = ServiceVersionConflictError("settings", int(details.get("expected", -1)), int(details.get("actual", -1)))
    elif status == 404 and code == "unknown_user":
        exc = ServiceUnknownUserError(message)
    elif status == 409 and code == "erasure_busy":
        exc = ServiceErasureBusyError(message)
    elif status == 422 and code == "invalid_settings":
        exc = ServiceInvalidSettingsError(message)
    elif status == 404 and isinstance(code, str) and code.startswith("unknown_") and code not in _NOT_NAMES:
        exc = ServiceUnknownNameError(message, kind=code.removeprefix("unknown_"))
    elif status == 409 and isinstance(code, str) and code.endswith("_exists") and code != "tenant_exists":
        exc = ServiceNameTakenError(message, kind=code.removesuffix("_exists"))
    else:
        kind = {401: AuthenticationError, 403: AuthenticationError, 404: NotFoundError}.get(status) or (
            ServiceInvalidInputError if status in (400, 413, 415, 422, 428)
            else ServiceUnavailableError if status >= 500 else ServiceError)
        exc = kind(message)
    exc.status_code, exc.code, exc.details = status, code, details
    return exc


def describe(exc: BaseException) -> str:
    """A transport failure as one line, the same from both twins (httpx's sync timeouts say "timed out", its async
    ones nothing): a timeout is named by its type only."""
    # a LocalProtocolError quotes the header value it refused: the Authorization header is the API key
    text = "" if isinstance(exc, httpx.TimeoutException | httpx.LocalProtocolError) else str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def unreachable(exc: Exception) -> ServiceUnavailableError:
    return ServiceUnavailableError(f"railguard service unreachable: {describe(exc)}")


def _out_of_time(limit: float | None) -> ServiceUnavailableError:
    return ServiceUnavailableError(f"railguard service: no complete answer within the {limit:g} s total_timeout")


# ---- deadlines ----------------------------------------------------------------------------------------------
_SLACK = 1e-3  # a socket timeout clipped to the deadline may wake a hair before it: that is the deadline too
_UNTIL: ContextVar[float | None] = ContextVar("railguard_http_until", default=None)


def default_total(timeout: httpx.Timeout, attempts: int) -> float | None:
    """The default total limit of a call: its longest per-operation timeout times its attempts; None (no total
    limit) when reads are unbounded (`timeout=None`)."""
    if timeout.read is None:
        return None
    return max(t for t in (timeout.connect, timeout.read, timeout.write, timeout.pool) if t is not None) * attempts


class Deadline:
    """A wall-clock limit for one call, all its attempts and pauses included; `seconds` None or inf: no limit."""

    __slots__ = ("seconds", "until")

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds if seconds is not None and math.isfinite(seconds) else None
        self.until = None if self.seconds is None else time.monotonic() + self.seconds

    def left(self) -> float | None:
        return None if self.until is None else self.until - time.monotonic()

    @property
    def expired(self) -> bool:
        left = self.left()
        return left is not None and left <= _SLACK

    def room_for(self, pause: float) -> bool:
        """Whether a backoff pause of `pause` s still leaves time for another attempt."""
        left = self.left()
        return left is None or pause < left

    def clip(self, timeout: httpx.Timeout) -> httpx.Timeout:
        """The per-operation timeouts, none longer than what is left (connect and pool waits stop in time too)."""
        left = self.left()
        if left is None:
            return timeout
        left = max(left, _SLACK)

        def cut(t: float | None) -> float:
            return left if t is None else min(t, left)

        return httpx.Timeout(connect=cut(timeout.connect), read=cut(timeout.read), write=cut(timeout.write),
                             pool=cut(timeout.pool))

    @contextmanager
    def bounding_io(self) -> Iterator[None]:
        """Sync: the socket reads and writes of requests sent with `SYNC_TRACE` in this block (this thread or
        context) stop at the deadline."""
        token = _UNTIL.set(self.until)
        try:
            yield
        finally:
            _UNTIL.reset(token)

    def atimeout(self) -> asyncio.Timeout:
        """Async: `async with deadline.atimeout():` around one attempt."""
        left = self.left()
        return asyncio.timeout(None if left is None else max(left, 0.0))


def _io_timeout(timeout: float | None, error: type[Exception]) -> float | None:
    until = _UNTIL.get()
    if until is None:
        return timeout
    left = until - time.monotonic()
    if left <= 0:
        raise error("the call's deadline has passed")
    return left if timeout is None else min(timeout, left)


def _bound(stream: Any) -> None:
    if stream is None or getattr(stream, "_railguard_bounded", False):
        return
    read, write = stream.read, stream.write

    def bounded_read(max_bytes: int, timeout: float | None = None) -> bytes:
        return read(max_bytes, _io_timeout(timeout, httpcore.ReadTimeout))

    def bounded_write(buffer: bytes, timeout: float | None = None) -> None:
        write(buffer, _io_timeout(timeout, httpcore.WriteTimeout))

    try:
        stream.read, stream.write, stream._railguard_bounded = bounded_read, bounded_write, True
    except AttributeError:  # a stream type that takes no attributes: bounded by its own timeouts only
        pass


def _trace(event: str, info: dict[str, Any]) -> None:
    if event.endswith((".connect_tcp.complete", ".connect_unix_socket.complete", ".start_tls.complete")):
        _bound(info.get("return_value"))


SYNC_TRACE: dict[str, Any] = {"trace": _trace}
"""Request extensions for every sync request of a client that uses `Deadline.bounding_io` (see the module doc)."""


# ---- sending: one policy, two shells --------------------------------------------------------------------------
def _after(core: Core, op: Op, attempt: int, resp: httpx.Response | None, error: Exception | None,
           deadline: Deadline) -> float | tuple[Any]:
    """One attempt's outcome, for both twins: a pause (s) before the next attempt, or `(result,)`; raises the
    typed error otherwise. A retry that the deadline leaves no room for is not made."""
    if error is not None and deadline.expired:
        raise _out_of_time(deadline.seconds) from error
    if core.should_retry(op, attempt, resp, error):
        pause = core.delay(attempt)
        if deadline.room_for(pause):
            return pause
    if error is not None:
        raise unreachable(error) from error
    assert resp is not None
    if resp.status_code >= 400:
        raise error_from(resp)
    return (op.parse(resp),)


def send(http: httpx.Client, core: Core, op: Op, timeout: httpx.Timeout, total: float | None) -> Any:
    deadline, attempt = Deadline(total), 0
    with deadline.bounding_io():
        while True:
            resp, error = None, None
            try:
                resp = http.request(op.method, op.path, json=op.json, params=op.params, headers=core.headers(op),
                                    timeout=deadline.clip(timeout), extensions=SYNC_TRACE)
            except httpx.TransportError as exc:
                error = exc
            step = _after(core, op, attempt, resp, error, deadline)
            if isinstance(step, tuple):
                return step[0]
            time.sleep(step)
            attempt += 1


async def asend(http: httpx.AsyncClient, core: Core, op: Op, timeout: httpx.Timeout, total: float | None) -> Any:
    deadline, attempt = Deadline(total), 0
    while True:
        resp, error = None, None
        limit = deadline.atimeout()
        try:
            async with limit:
                resp = await http.request(op.method, op.path, json=op.json, params=op.params,
                                          headers=core.headers(op), timeout=deadline.clip(timeout))
        except httpx.TransportError as exc:
            error = exc
        except TimeoutError as exc:
            if not limit.expired():
                raise
            raise _out_of_time(deadline.seconds) from exc
        step = _after(core, op, attempt, resp, error, deadline)
        if isinstance(step, tuple):
            return step[0]
        await asyncio.sleep(step)
        attempt += 1


# ---- one async client per event loop ------------------------------------------------------------------------
class AsyncClosable(Protocol):
    @property
    def is_closed(self) -> bool: ...

    async def aclose(self) -> None: ...


C = TypeVar("C", bound=AsyncClosable)


class PerLoop(Generic[C]):
    """`get()` returns the client of the running event loop, built by `factory` on first use there.

    Each client is closed on its own loop: when that loop shuts down (a started async generator holds it, and
    asyncio closes those in `shutdown_asyncgens`, as `asyncio.run` and pytest-asyncio do), by `aclose()`, or by
    `close()` where its loop is still running. A loop closed without that shutdown takes its sockets with it."""

    def __init__(self, factory: Callable[[], C]) -> None:
        self._factory = factory
        self._clients: dict[asyncio.AbstractEventLoop, tuple[C, AsyncGenerator[None, None]]] = {}
        self._lock = threading.Lock()

    def get(self) -> C:
        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [lp for lp in self._clients if lp.is_closed()]:
                del self._clients[old]
            entry = self._clients.get(loop)
            if entry is not None and not entry[0].is_closed:
                return entry[0]
            client = self._factory()
            keeper = self._keeper(loop, client)
            self._clients[loop] = (client, keeper)
        try:  # run it to its `yield` now: that registers it with the loop's async-generator shutdown
            keeper.asend(None).send(None)
        except StopIteration:
            pass
        return client

    async def _keeper(self, loop: asyncio.AbstractEventLoop, client: C) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                if self._clients.get(loop, (None,))[0] is client:
                    del self._clients[loop]
            await client.aclose()

    def _take_all(self) -> dict[asyncio.AbstractEventLoop, tuple[C, AsyncGenerator[None, None]]]:
        with self._lock:
            entries, self._clients = self._clients, {}
        return entries

    async def aclose(self) -> None:
        """Close every loop's client: this loop's now, those of other running loops on their loops."""
        current = asyncio.get_running_loop()
        for loop, (_, keeper) in self._take_all().items():
            if loop is current:
                await keeper.aclose()
            else:
                _close_on(loop, keeper)

    def close(self) -> None:
        """Sync, best effort: clients of loops still running are closed on them (not waited for); the others are
        let go (the loop's shutdown, or the loop's own end, closes them)."""
        for loop, (_, keeper) in self._take_all().items():
            _close_on(loop, keeper)


async def _finish(keeper: AsyncGenerator[None, None]) -> None:
    await keeper.aclose()


def _close_on(loop: asyncio.AbstractEventLoop, keeper: AsyncGenerator[None, None]) -> None:
    if loop.is_running() and not loop.is_closed():
        try:
            asyncio.run_coroutine_threadsafe(_finish(keeper), loop)
        except RuntimeError:  # closed meanwhile
            pass
