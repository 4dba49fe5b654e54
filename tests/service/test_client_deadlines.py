"""The client's total time limit and RemoteGuard's per-event-loop async clients, against a raw HTTP stub on
127.0.0.1 that answers at once (keep-alive) or drips its answer one byte per 0.2 s (status line and headers, or
body), so that no single read ever times out."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from guardrails import Action, Decision
from guardrails.client import AsyncRailguardClient, RailguardClient, RemoteGuard, ServiceUnavailableError
from tests.raw_http import DripServer, bounded, wait_until

DECISION = {"action": "warn", "stage": "input", "findings": [], "user_id": "u", "session_id": None,
            "latency_ms": 1.0, "shadow": False, "error": None}


@pytest.fixture(scope="module")
def server():
    stub = DripServer(json.dumps(DECISION).encode())
    yield stub
    stub.close()


@pytest.fixture()
def stub(server: DripServer) -> DripServer:
    server.mode, server.body = "json", json.dumps(DECISION).encode()
    return server


@pytest.mark.parametrize("mode", ["trickle_headers", "trickle_body"])
def test_total_timeout_bounds_a_trickled_answer_in_both_twins(stub: DripServer, mode: str):
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


def test_explicit_total_timeout_is_independent_of_the_per_read_timeout(stub: DripServer):
    stub.mode = "trickle_headers"
    with RailguardClient(stub.url, api_key="k", timeout=30.0, total_timeout=1.5) as c:
        err, took = bounded(lambda: c.check("hi", user_id="u"))
    assert isinstance(err, ServiceUnavailableError) and "1.5 s total_timeout" in str(err) and took < 8


def test_total_timeout_leaves_healthy_calls_and_pooled_connections_alone(stub: DripServer):
    accepted = stub.accepted
    with RailguardClient(stub.url, api_key="k", timeout=1.0, total_timeout=5.0) as c:
        for _ in range(3):
            assert c.check("hi", user_id="u").action is Action.WARN
    assert stub.accepted == accepted + 1  # one keep-alive connection served all three


def test_remote_guard_acheck_from_several_event_loops(stub: DripServer):
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


def test_remote_guard_aclose_and_close(stub: DripServer):
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
