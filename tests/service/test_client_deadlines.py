"""The client's total time limit and RemoteGuard's per-event-loop async clients, against a raw HTTP stub on
127.0.0.1 that answers at once (keep-alive) or drips its answer one byte per 0.2 s (status line and headers, or
body), so that no single read ever times out."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from guardrails import Action, Decision
from guardrails.client import AsyncRailguardClient, RailguardClient, RemoteGuard, ServiceUnavailableError

DECISION = {"action": "warn", "stage": "input", "findings": [], "user_id": "u", "session_id": None,
            "latency_ms": 1.0, "shadow": False, "error": None}


class Stub:
    """`mode`: "json" (answer `body` at once, keep-alive), "trickle_headers" or "trickle_body" (one byte per 0.2 s,
    for up to 60 s, until the client hangs up). Records the connections accepted and when each ended."""

    def __init__(self) -> None:
        self.mode, self.body = "json", json.dumps(DECISION).encode()
        self.accepted, self.ended = 0, list[float]()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                while _read_request(conn):
                    if self.mode == "json":
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                     + str(len(self.body)).encode() + b"\r\n\r\n" + self.body)
                    else:
                        self._trickle(conn)
                        return
        except OSError:
            pass
        finally:
            self.ended.append(time.monotonic())

    def _trickle(self, conn: socket.socket) -> None:
        if self.mode == "trickle_body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            drip = b" " * 100000
        else:
            drip = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 100000
        conn.settimeout(0.2)
        stop = time.monotonic() + 60
        for byte in drip:
            if time.monotonic() > stop:
                return
            conn.sendall(bytes([byte]))
            try:
                if conn.recv(1) == b"":  # the client hung up
                    return
            except TimeoutError:
                pass


def _read_request(conn: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        body += chunk
    return True


@pytest.fixture(scope="module")
def server():
    stub = Stub()
    yield stub
    stub.sock.close()


@pytest.fixture()
def stub(server: Stub) -> Stub:
    server.mode, server.body = "json", json.dumps(DECISION).encode()
    return server


def bounded(fn: Callable[[], Any], limit: float = 10.0) -> tuple[Any, float]:
    """Run `fn` in a thread, waiting at most `limit` s (the old code waited for the whole 60 s drip): its result
    or exception, and how long it took."""
    out: dict[str, Any] = {}

    def go() -> None:
        started = time.monotonic()
        try:
            out["value"] = fn()
        except Exception as exc:  # handed to the test
            out["value"] = exc
        out["took"] = time.monotonic() - started

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(limit)
    assert not worker.is_alive(), f"still waiting after {limit} s"
    return out["value"], out["took"]


def wait_until(cond: Callable[[], bool], limit: float = 5.0) -> bool:
    stop = time.monotonic() + limit
    while not cond():
        if time.monotonic() > stop:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("mode", ["trickle_headers", "trickle_body"])
def test_total_timeout_bounds_a_trickled_answer_in_both_twins(stub: Stub, mode: str):
    """timeout=1.0 bounds each read; an answer dripped one byte per 0.2 s never trips it. The default total
    (timeout x attempts = 2 s here) bounds the call, in both twins, with the same typed error and text, and the
    cut-short connection is closed (the stub sees the client hang up)."""
    stub.mode = mode
    kw: dict[str, Any] = {"api_key": "rgk_a.b", "timeout": 1.0, "max_retries": 1, "backoff_s": 0.01}

    def sync() -> Any:
        with RailguardClient(stub.url, **kw) as c:
            return c.check("hi", user_id="u")

    async def asyn() -> Any:
        async with AsyncRailguardClient(stub.url, **kw) as c:
            return await c.check("hi", user_id="u")

    errors = []
    for call in (sync, lambda: asyncio.run(asyn())):
        ended = len(stub.ended)
        err, took = bounded(call)
        assert isinstance(err, ServiceUnavailableError) and err.status_code is None, err
        assert 1.5 < took < 8, took
        assert wait_until(lambda n=ended: len(stub.ended) > n), "the trickled connection was left open"
        errors.append(str(err))
    assert errors[0] == errors[1] == "railguard service: no complete answer within the 2 s total_timeout"


def test_explicit_total_timeout_is_independent_of_the_per_read_timeout(stub: Stub):
    stub.mode = "trickle_headers"
    with RailguardClient(stub.url, api_key="k", timeout=30.0, total_timeout=1.5) as c:
        err, took = bounded(lambda: c.check("hi", user_id="u"))
    assert isinstance(err, ServiceUnavailableError) and "1.5 s total_timeout" in str(err) and took < 8


def test_total_timeout_leaves_healthy_calls_and_pooled_connections_alone(stub: Stub):
    accepted = stub.accepted
    with RailguardClient(stub.url, api_key="k", timeout=1.0, total_timeout=5.0) as c:
        for _ in range(3):
            assert c.check("hi", user_id="u").action is Action.WARN
    assert stub.accepted == accepted + 1  # one keep-alive connection served all three


def test_remote_guard_acheck_from_several_event_loops(stub: Stub):
    """One AsyncRailguardClient built at construction and reused from a second `asyncio.run` failed with
    RuntimeError('Event loop is closed') (not a ServiceError: retries and the middleware's fail mode skipped)."""
    rg = RemoteGuard(stub.url, api_key="k", max_retries=0)
    seen = []

    async def once() -> Decision:
        client = rg.aclient
        assert rg.aclient is client  # one client per loop, shared by the calls on it
        seen.append(client)
        return await rg.acheck("hello", user_id="u")

    for _ in range(3):
        assert asyncio.run(once()).action is Action.WARN
    assert len({id(c) for c in seen}) == 3
    assert all(c.is_closed for c in seen)  # each closed when its loop shut down
    assert rg.check("hello", user_id="u").action is Action.WARN  # the sync twin is untouched
    rg.close()


def test_remote_guard_aclose_and_close(stub: Stub):
    rg = RemoteGuard(stub.url, api_key="k", max_retries=0)

    async def run() -> AsyncRailguardClient:
        await rg.acheck("hello", user_id="u")
        client = rg.aclient
        await rg.aclose()
        assert client.is_closed and rg.client._http.is_closed
        return client

    asyncio.run(run())
    rg = RemoteGuard(stub.url, api_key="k", max_retries=0)

    async def run_then_close_sync() -> None:
        await rg.acheck("hello", user_id="u")
        client = rg.aclient
        rg.close()  # sync close from code running on the loop: scheduled on it
        for _ in range(100):
            if client.is_closed:
                break
            await asyncio.sleep(0.01)
        assert client.is_closed and rg.client._http.is_closed
        assert (await rg.acheck("again", user_id="u")).action is Action.WARN  # a later use builds a new one

    asyncio.run(run_then_close_sync())
