"""The chat proxy reads an upstream answer within a byte bound: a non-streamed body, or one stream line, larger
than `MAX_RAW_BYTES` is refused (502 `upstream_too_large`) without being read to its end. Before, the whole body
(or a line without end) was read into memory first, whatever its size. Stubs talk to 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import time

import httpx
import pytest

from guardrails.service import upstream
from tests.service.test_service_chat_deadlines import STUB_LIMIT_S, RawUpstream, proxy

LIMIT = 20_000  # the bound under test, lowered so that the stub's "huge" answer stays small


def _send_chunked_forever(stub: RawUpstream, conn: socket.socket, head: bytes, piece: bytes) -> None:
    """Send `head`, then `piece` as chunks until the proxy hangs up (or STUB_LIMIT_S): a body without end."""
    conn.sendall(b"HTTP/1.1 200 OK\r\n" + head + b"Transfer-Encoding: chunked\r\n\r\n")
    started = time.monotonic()
    while not stub.stopped and time.monotonic() - started < STUB_LIMIT_S:
        conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        stub.sent = getattr(stub, "sent", 0) + len(piece)
        time.sleep(0.001)


def endless_json(stub: RawUpstream, conn: socket.socket) -> None:
    _send_chunked_forever(stub, conn, b"Content-Type: application/json\r\n",
                          b'{"choices": [{"index": 0, "message": {"content": "' + b"a" * 4000)


def endless_line(stub: RawUpstream, conn: socket.socket) -> None:
    _send_chunked_forever(stub, conn, b"Content-Type: text/event-stream\r\n", b"data: " + b"a" * 4000)


def sse(body: bytes):
    def behaviour(stub: RawUpstream, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
    return behaviour


def _ask(srv, key: str, stream: bool) -> httpx.Response:
    return httpx.post(f"{srv.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                      json={"messages": [{"role": "user", "content": "hi"}], "user": "u1", "stream": stream})


def _ask_through(tmp_path, stub: RawUpstream, stream: bool) -> httpx.Response:
    """One chat request through a proxy in front of `stub`, which is closed afterwards."""
    try:
        with proxy(tmp_path, upstream_url=stub.url, timeout_s=10.0) as (srv, key, _):
            return _ask(srv, key, stream)
    finally:
        stub.close()


@pytest.mark.parametrize(("behaviour", "stream"), [(endless_json, False), (endless_line, True)],
                         ids=["body", "stream-line"])
def test_an_answer_past_the_byte_bound_is_refused_unread(tmp_path, monkeypatch, behaviour, stream):
    monkeypatch.setattr(upstream, "MAX_RAW_BYTES", LIMIT)
    stub = RawUpstream(behaviour)
    try:
        with proxy(tmp_path, upstream_url=stub.url, timeout_s=30.0, total_timeout_s=25.0) as (srv, key, _):
            started = time.monotonic()
            r = _ask(srv, key, stream)
            assert time.monotonic() - started < 15  # refused, not read until the stub's own limit
    finally:
        stub.close()
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "upstream_too_large"


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_stream_lines_end_at_any_sse_line_break(tmp_path, eol):
    chunks = [{"choices": [{"index": 0, "delta": {"content": part}, "finish_reason": None}]}
              for part in ("hel", "lo ", "there")]
    body = b"".join(b"data: " + json.dumps(c).encode() + eol + eol for c in chunks) + b"data: [DONE]" + eol + eol
    r = _ask_through(tmp_path, RawUpstream(sse(body)), True)
    assert r.status_code == 200, r.text
    text = "".join(json.loads(ln[5:])["choices"][0]["delta"].get("content") or ""
                   for ln in r.text.splitlines() if ln.startswith("data: {"))
    assert text == "hello there"


def test_a_stream_line_that_is_not_utf8_is_an_unexpected_answer(tmp_path):
    r = _ask_through(tmp_path, RawUpstream(sse(b'data: {"choices": [{"index": 0, "delta": {"content": "\xff\xfe"}}]}'
                                                b'\n\ndata: [DONE]\n\n')), True)
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "upstream_invalid"


def _lines(chunks: list[bytes], headers: dict[str, str] | None = None) -> list[str]:
    class Stream(httpx.AsyncByteStream):
        async def __aiter__(self):
            for c in chunks:
                yield c

    async def run() -> list[str]:
        resp = httpx.Response(200, headers=headers or {}, stream=Stream())
        return [line async for line in upstream._bounded_lines(resp)]

    return asyncio.run(run())


def test_line_ends_and_characters_split_across_chunks():
    """Review: a CRLF, or a UTF-8 character, split between two chunks is read as sent; each chunk is scanned once
    (the first version re-split the whole pending line per chunk: 66 s of CPU for a 13 MB line in 4 kB chunks)."""
    e = "é".encode()
    assert _lines([b"a\r", b"\nb\r", b"c\n", b"d\r\n\r\n", e[:1], e[1:] + b"\n"]) == ["a", "b", "c", "d", "", "é"]
    assert _lines([b"a\r\n", b"\r\n", b"b"]) == ["a", "", "b"]
    assert _lines([b"x" * 100] * 1000 + [b"\n"]) == ["x" * 100_000]


def test_a_line_past_the_bound_in_one_chunk_is_refused(monkeypatch):
    monkeypatch.setattr(upstream, "MAX_RAW_BYTES", LIMIT)
    with pytest.raises(upstream.ApiError, match="buffer limit"):
        _lines([b"data: " + b"a" * (LIMIT + 1) + b"\n"])


def test_a_compressed_body_is_refused_not_inflated():
    """Review: httpx inflates a gzip body chunk by chunk, a 39 kB chunk into 40 MB, before any bound applies.
    The proxy asks for identity and refuses anything else."""
    with pytest.raises(upstream.ApiError, match="compressed"):
        _lines([gzip.compress(b"data: x\n")], {"content-encoding": "gzip"})


def test_the_proxy_asks_the_upstream_for_an_uncompressed_answer(tmp_path):
    seen: list[bytes] = []

    def behaviour(stub: RawUpstream, conn: socket.socket) -> None:
        body = json.dumps({"choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}]})
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body.encode()))

    class Recording(RawUpstream):
        def serve(self, conn: socket.socket) -> None:
            conn.settimeout(10)
            seen.append(conn.recv(65536))
            self.behaviour(self, conn)

    r = _ask_through(tmp_path, Recording(behaviour), False)
    assert r.status_code == 200, r.text
    assert b"accept-encoding: identity" in seen[0].lower()
