"""The chat proxy's time and lifetime bounds: an overall upstream deadline, cancellation when the client goes away
(upstream and local generation, which keeps `chat_lock` until its thread has ended), and a fresh upstream client
per app lifespan. Stub upstreams and clients talk to 127.0.0.1 only."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from guardrails import Guard
from guardrails.service import ChatConfig, create_app
from guardrails.store import SettingsStore
from tests.raw_http import RawServer, read_request, wait_until
from tests.service.conftest import ThreadServer, Upstream, stub_upstream

STUB_LIMIT_S = 30.0  # a stub connection never lives longer than this, whatever the proxy does


class RawUpstream(RawServer):
    """A raw-socket HTTP stub: `behaviour(stub, conn)` runs per connection (own thread) once the request was read.
    Records when a connection ended because the peer (the proxy) went away."""

    def __init__(self, behaviour: Callable[[RawUpstream, socket.socket], None]) -> None:
        self.behaviour = behaviour
        self.requests = 0
        self.peer_gone: list[float] = []  # monotonic times a send found the proxy's connection closed
        self.stopped = False
        super().__init__("/v1")

    def serve(self, conn: socket.socket) -> None:
        if not read_request(conn):
            return
        self.requests += 1
        try:
            self.behaviour(self, conn)
        except OSError:
            self.peer_gone.append(time.monotonic())

    def trickle(self, conn: socket.socket, data: bytes, every_s: float = 0.05) -> None:
        started = time.monotonic()
        for i in range(len(data)):
            if self.stopped or time.monotonic() - started > STUB_LIMIT_S:
                return
            conn.sendall(data[i:i + 1])
            time.sleep(every_s)

    def close(self) -> None:
        self.stopped = True
        super().close()


def silent(stub: RawUpstream, conn: socket.socket) -> None:
    conn.settimeout(STUB_LIMIT_S)
    while not stub.stopped and conn.recv(1024):
        pass


def trickle_headers(stub: RawUpstream, conn: socket.socket) -> None:
    stub.trickle(conn, b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 10_000)


def trickle_body(stub: RawUpstream, conn: socket.socket) -> None:
    body = b" " * 10_000
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    stub.trickle(conn, body)


def endless_sse(stub: RawUpstream, conn: socket.socket) -> None:
    """A streamed completion whose content deltas never end (one every 50 ms, until the proxy goes away)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    started = time.monotonic()
    while not stub.stopped and time.monotonic() - started < STUB_LIMIT_S:
        data = b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "tok "}}]}).encode() + b"\n\n"
        conn.sendall(b"%x\r\n%s\r\n" % (len(data), data))
        time.sleep(0.05)


@contextmanager
def proxy(tmp_path: Path, **chat: Any) -> Iterator[tuple[ThreadServer, str, Any]]:
    """The service (no detectors: these tests are about the proxy's plumbing) with a tenant key."""
    store = SettingsStore(tmp_path / "proxy.db")
    app = create_app(Guard([], store=store), store, chat=ChatConfig(**chat))
    _, key = app.state.rg.keys.create_tenant("t")
    try:
        with ThreadServer(app) as srv:
            yield srv, key, app
    finally:
        store.close()


def raw_request(port: int, key: str, stream: bool) -> socket.socket:
    """Send a chat request over a plain socket (so the test can hang up mid-request)."""
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "user": "u1", "stream": stream}).encode()
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    return conn


# ---- 1. total_timeout_s bounds the whole upstream call ----------------------------------------------------------
@pytest.mark.parametrize(("behaviour", "stream", "keepalive"), [
    (silent, False, None), (trickle_body, False, None), (trickle_headers, True, None), (endless_sse, True, None),
    (endless_sse, True, 0.2),
], ids=["silent", "trickle-body", "trickle-headers", "endless-sse", "endless-sse-keepalive"])
def test_total_timeout_s_bounds_the_whole_upstream_call(tmp_path, behaviour, stream, keepalive):
    """httpx's timeouts are per read: an upstream trickling bytes, or a stream that never ends, used to hold the
    request open indefinitely. `total_timeout_s` is a deadline on the whole call: a 504 `upstream_timeout`
    (in-stream once the keep-alive committed the 200), while the per-read `timeout_s` is far longer."""
    stub = RawUpstream(behaviour)
    try:
        with proxy(tmp_path, upstream_url=stub.url, timeout_s=30.0, total_timeout_s=1.0,
                   sse_keepalive_s=keepalive) as (srv, key, _):
            started = time.monotonic()
            r = httpx.post(f"{srv.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json={
                "messages": [{"role": "user", "content": "hi"}], "user": "u1", "stream": stream}, timeout=20)
            assert time.monotonic() - started < 10
    finally:
        stub.close()
    if keepalive:
        assert r.status_code == 200 and r.text.startswith(": keepalive")
        errors = [json.loads(ln[5:])["error"] for ln in r.text.splitlines() if ln.startswith("data: {")]
        assert [(e["code"], e["status"]) for e in errors] == [("upstream_timeout", 504)]
        assert r.text.rstrip().endswith("data: [DONE]")
    else:
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "upstream_timeout"
        assert r.json()["error"]["details"] == {"total_timeout_s": 1.0}


def test_a_healthy_stream_longer_than_the_per_read_timeout_is_not_cut(tmp_path):
    """The total bound is separate from httpx's per-read `timeout_s`: a steady 1.5 s stream passes with a 1 s
    per-read timeout (review: making timeout_s the total cut such streams, with no setting to raise it)."""
    stub = RawUpstream(endless_sse)
    try:
        with proxy(tmp_path, upstream_url=stub.url, timeout_s=1.0, total_timeout_s=1.5) as (srv, key, _):
            r = httpx.post(f"{srv.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json={
                "messages": [{"role": "user", "content": "hi"}], "user": "u1", "stream": True}, timeout=20)
    finally:
        stub.close()
    assert r.status_code == 504 and r.json()["error"]["details"] == {"total_timeout_s": 1.5}  # the total, not a read


def test_upstream_timeouts_from_the_environment(monkeypatch, tmp_path):
    from guardrails.errors import ConfigError
    from guardrails.service.server import app_from_env

    monkeypatch.setenv("RAILGUARD_DB_URL", str(tmp_path / "env.db"))
    monkeypatch.setenv("RAILGUARD_DETECTORS", "validator")
    monkeypatch.setenv("RAILGUARD_UPSTREAM_TIMEOUT_S", "7")
    monkeypatch.setenv("RAILGUARD_UPSTREAM_TOTAL_TIMEOUT_S", "0")
    chat = app_from_env().state.rg.chat
    assert (chat.timeout_s, chat.total_timeout_s) == (7.0, None)
    monkeypatch.setenv("RAILGUARD_UPSTREAM_TOTAL_TIMEOUT_S", "  ")  # blank: the default
    assert app_from_env().state.rg.chat.total_timeout_s == 600.0
    for name, bad in (("RAILGUARD_UPSTREAM_TOTAL_TIMEOUT_S", "soon"), ("RAILGUARD_UPSTREAM_TOTAL_TIMEOUT_S", "-1"),
                      ("RAILGUARD_UPSTREAM_TIMEOUT_S", "0"), ("RAILGUARD_UPSTREAM_TIMEOUT_S", "nan")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ConfigError, match=name):
            app_from_env()
        monkeypatch.delenv(name)
    # the same meaning in code: 0 is no bound, a non-positive per-operation timeout is an error
    assert ChatConfig(total_timeout_s=0).total_timeout_s is None
    for kwargs in ({"total_timeout_s": -1.0}, {"timeout_s": 0}, {"timeout_s": float("inf")}):
        with pytest.raises(ConfigError):
            ChatConfig(**kwargs)


# ---- 2. a client that goes away cancels the upstream call -------------------------------------------------------
@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_cancels_the_upstream_call(tmp_path, stream):
    """Without SSE keep-alive the handler awaited its work without watching the connection: the proxy kept
    reading the upstream for a client that was gone. Now the disconnect cancels it and the upstream connection
    closes."""
    stub = RawUpstream(endless_sse)
    try:
        with proxy(tmp_path, upstream_url=stub.url, timeout_s=60.0) as (srv, key, app):
            client = raw_request(srv.port, key, stream)
            assert wait_until(lambda: stub.requests == 1, 10)
            time.sleep(0.3)  # the proxy is reading the stream now
            client.close()
            gone = time.monotonic()
            assert wait_until(lambda: bool(stub.peer_gone), 10), "the proxy kept reading the upstream"
            assert stub.peer_gone[0] - gone < 10
            # recorded as 499 (client closed request): nothing else could be answered
            assert wait_until(lambda: 'status="499"' in app.state.rg.metrics.render().decode(), 10)
    finally:
        stub.close()


# ---- 3. a cancelled local generation keeps chat_lock until its thread ended, and stops early --------------------
class FakeLocalModel:
    """Stands in for LocalChatModel: 200 chunks, 50 ms apart (10 s); records concurrency and chunks consumed."""

    model_name = "fake"

    def __init__(self) -> None:
        self.active = self.peak = self.started = 0
        self.consumed: list[int] = []
        self.lock = threading.Lock()

    def stream(self, messages: Any) -> Iterator[Any]:
        with self.lock:
            self.active += 1
            self.started += 1
            self.peak = max(self.peak, self.active)
        n = 0
        try:
            for _ in range(200):
                time.sleep(0.05)
                n += 1
                yield type("Chunk", (), {"content": "tok "})()
        finally:
            with self.lock:
                self.active -= 1
                self.consumed.append(n)


@pytest.mark.parametrize("keepalive", [0.2, None], ids=["sse-keepalive", "default"])
def test_cancelled_local_generation_holds_the_lock_until_it_ends(tmp_path, keepalive):
    """Cancelling `await asyncio.to_thread(run)` released `chat_lock` while the thread generated on: each client
    that disconnected let one more generation run at once. Now the lock is held until the thread has ended, and
    a cancelled request tells its generation to stop at the next chunk."""
    fake = FakeLocalModel()
    with proxy(tmp_path, sse_keepalive_s=keepalive) as (srv, key, app):
        app.state.rg.chat_model = fake
        for i in range(3):
            client = raw_request(srv.port, key, stream=True)
            assert wait_until(lambda i=i: fake.started == i + 1, 15), f"generation {i + 1} never started"
            time.sleep(0.2)
            client.close()
        assert wait_until(lambda: len(fake.consumed) == 3 and fake.active == 0, 15)
    assert fake.peak == 1  # never two generations at once
    assert all(n < 200 for n in fake.consumed), fake.consumed  # each stopped early, not run to its end


# ---- 4. the upstream client belongs to one lifespan --------------------------------------------------------------
def test_each_lifespan_gets_a_fresh_upstream_client(tmp_path):
    """The upstream httpx client was created on the first lifespan's loop and never closed: a second lifespan
    (TestClient twice, an embedding host restarting the app) reused its pooled connections and answered 500."""
    from fastapi.testclient import TestClient

    seen = Upstream()
    store = SettingsStore(tmp_path / "life.db")
    try:
        with ThreadServer(stub_upstream(seen)) as upstream:
            app = create_app(Guard([], store=store), store, chat=ChatConfig(upstream_url=f"{upstream.url}/v1"))
            _, key = app.state.rg.keys.create_tenant("t")
            body = {"messages": [{"role": "user", "content": "hello"}], "user": "u1"}
            for _ in range(2):
                with TestClient(app, raise_server_exceptions=False) as tc:
                    for _ in range(2):
                        r = tc.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body)
                        assert r.status_code == 200, r.text
                        assert r.json()["choices"][0]["message"]["content"] == "echo: hello"
            assert app.state.rg.http_client is None  # closed with its lifespan
    finally:
        store.close()
    assert len(seen.bodies) == 4


def test_the_lifespan_closes_the_detectors_and_a_restart_still_checks(tmp_path):
    """At shutdown the service closes its Guard (detectors' pooled connections and threads); a second lifespan of
    the same app checks again with the same detector objects."""
    from fastapi.testclient import TestClient

    from tests.unit.test_guard_lifecycle import Holding

    det = Holding("holding")
    store = SettingsStore(tmp_path / "close.db")
    try:
        app = create_app(Guard([det], store=store), store)
        _, key = app.state.rg.keys.create_tenant("t")
        for round_ in (1, 2):
            with TestClient(app) as tc:
                r = tc.post("/v1/check/input", headers={"Authorization": f"Bearer {key}"},
                            json={"user_id": "u", "text": "hello"})
                assert r.status_code == 200 and r.json()["action"] == "allow", r.text
                assert det.aclosed == round_ - 1
            assert det.aclosed == round_
    finally:
        store.close()
