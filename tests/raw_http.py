"""Raw-socket HTTP stubs on 127.0.0.1 for the deadline tests (client, HTTP adapter, chat proxy): servers that answer
at once, drip their answer one byte at a time (so that no single read ever times out), or say nothing, and
record the connections they accepted and when each ended. Plus `bounded` / `wait_until` for tests that must not
wait on the code under test longer than a limit."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any


def read_request(conn: socket.socket) -> bool:
    """Read one HTTP/1.1 request (headers and a Content-Length body); False when the peer closed first."""
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


class RawServer:
    """Accepts connections on 127.0.0.1 and runs `serve(conn)` for each in its own thread; counts them and records
    when each ended. `url` is the base URL (with `suffix`, e.g. "/v1")."""

    def __init__(self, suffix: str = "") -> None:
        self.accepted, self.ended = 0, list[float]()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}{suffix}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            with conn:
                self.serve(conn)
        except OSError:
            pass
        finally:
            self.ended.append(time.monotonic())

    def serve(self, conn: socket.socket) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()


class DripServer(RawServer):
    """`mode`: "json" (answer `body` at once, keep-alive), "trickle_headers" / "trickle_body" (one byte per 0.2 s
    for up to 60 s, until the client hangs up) or "silent" (read the request, answer nothing)."""

    def __init__(self, body: bytes, suffix: str = "") -> None:
        self.mode, self.body = "json", body
        super().__init__(suffix)

    def serve(self, conn: socket.socket) -> None:
        while read_request(conn):
            if self.mode != "json":
                return self._stall(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(self.body)).encode() + b"\r\n\r\n" + self.body)

    def _stall(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        stop = time.monotonic() + 60
        if self.mode == "trickle_body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        drip = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 100000 if self.mode == "trickle_headers" else b" " * 100000
        for byte in drip:
            if time.monotonic() > stop:
                return
            if self.mode != "silent":
                conn.sendall(bytes([byte]))
            try:
                if conn.recv(1) == b"":  # the client hung up
                    return
            except TimeoutError:
                pass


def bounded(fn: Callable[[], Any], limit: float = 10.0) -> tuple[Any, float]:
    """Run `fn` in a thread, waiting at most `limit` s (the old code read a 60 s drip to its end): its result or
    exception, and how long it took."""
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
    assert not worker.is_alive(), f"still running after {limit} s"
    return out["value"], out["took"]


def wait_until(cond: Callable[[], bool], limit: float = 5.0) -> bool:
    stop = time.monotonic() + limit
    while not cond():
        if time.monotonic() > stop:
            return False
        time.sleep(0.05)
    return True
