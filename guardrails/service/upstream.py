"""The chat proxy's upstream call: one OpenAI-compatible request, parsed and buffered, bounded in size and time.

`ChatConfig.timeout_s` is httpx's per-operation limit (connect, each read); `ChatConfig.total_timeout_s` bounds
the *whole* call (status line and headers, then the body or the stream to its `[DONE]`): per-read timeouts alone
let an upstream that trickles its headers or body, or a stream that never ends, hold the guarded request open
indefinitely. Either running out is a 504 `upstream_timeout` (an in-stream error once an SSE keep-alive has
committed the 200). `MAX_BUFFER_BYTES` bounds what is kept (text and tool-call arguments).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx

from .deps import ApiError, ServiceState
from .schemas import IDENTIFIER, MODEL_NAME, ChatCompletionRequest

MAX_BUFFER_BYTES = 4_000_000  # a larger upstream answer is refused, not buffered without bound (<= MAX_TEXT_CHARS)
#: What is read of one upstream body (non-streamed) or one stream line before the buffer cap can be checked: the
#: answer's JSON, whose escapes (\uXXXX) can triple its text, and the metadata around it. Past it: a 502, read no
#: further (the whole body used to be read into memory first, whatever its size).
MAX_RAW_BYTES = 3 * MAX_BUFFER_BYTES + 1_000_000
_EOL = re.compile(rb"\r\n|\r|\n")
# What of an upstream answer besides its text and tool calls reaches the client: free text in `model`, `usage` or
# `finish_reason` would bypass the output check, so only these shapes are released (else replaced or dropped).
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def released_meta(meta: dict[str, Any], requested_model: str | None) -> dict[str, Any]:
    """The upstream's metadata as the client may see it: a model name that is an identifier (else the requested
    one), integer token counts only, a known finish reason (else none: the proxy picks one)."""
    model = meta.get("model")
    usage = meta.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    counts = {k: usage[k] for k in _USAGE_KEYS if type(usage.get(k)) is int and usage[k] >= 0}
    finish = meta.get("finish_reason")
    return {**meta, "model": model if isinstance(model, str) and MODEL_NAME.fullmatch(model) else requested_model,
            "usage": counts or None, "finish_reason": finish if finish in FINISH_REASONS else None}


def upstream_body(body: ChatCompletionRequest, messages: list[dict[str, str]], stream: bool) -> dict[str, Any]:
    # The end-user id is ours (tenant-scoped); it is not forwarded upstream.
    out = body.model_dump(exclude_none=True, exclude={"user"})
    out.update(messages=messages, stream=stream)
    return out


async def from_upstream(st: ServiceState, body: ChatCompletionRequest,
                        messages: list[dict[str, str]]) -> tuple[list[str], dict[str, Any]]:
    """Call the upstream and return (content pieces, metadata), within `total_timeout_s` overall (else a 504)."""
    limit = st.chat.total_timeout_s
    try:
        async with asyncio.timeout(limit) as deadline:
            return await _call(st, body, messages)
    except TimeoutError:  # httpx's own timeouts are httpx.TimeoutException, handled in _call
        if not deadline.expired():
            raise
        raise ApiError(504, "upstream_timeout", f"upstream did not finish its answer within {limit:g} s",
                       {"total_timeout_s": limit}) from None


async def _call(st: ServiceState, body: ChatCompletionRequest,
                messages: list[dict[str, str]]) -> tuple[list[str], dict[str, Any]]:
    """The upstream call proper: the answer is read (bounded), parsed and buffered."""
    if st.http_client is None:  # closed (and reset to None) when the app's lifespan ends
        st.http_client = httpx.AsyncClient(timeout=st.chat.timeout_s)
    url = st.chat.upstream_url.rstrip("/") + "/chat/completions"  # type: ignore[union-attr]
    headers = {"Accept-Encoding": "identity"}  # bodies are read raw and bounded (`_raw_chunks`)
    if st.chat.upstream_api_key:
        headers["Authorization"] = f"Bearer {st.chat.upstream_api_key}"
    try:
        async with st.http_client.stream("POST", url, json=upstream_body(body, messages, bool(body.stream)),
                                         headers=headers) as resp:
            _raise_upstream(resp.status_code)
            return await (_read_stream(resp) if body.stream else _read_whole(resp))
    except httpx.TimeoutException as exc:  # one operation (connect, a read...) took longer than timeout_s
        raise ApiError(504, "upstream_timeout", f"upstream request timed out ({type(exc).__name__})",
                       {"timeout_s": st.chat.timeout_s}) from None
    except httpx.HTTPError as exc:
        raise ApiError(502, "upstream_unavailable", f"upstream request failed ({type(exc).__name__})") from None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise ApiError(502, "upstream_invalid", "upstream returned an unexpected response") from None


async def _read_whole(resp: httpx.Response) -> tuple[list[str], dict[str, Any]]:
    """A non-streamed answer: its text and metadata."""
    data = json.loads(await _bounded_body(resp))
    choice = data["choices"][0]
    content = choice["message"].get("content") or ""
    if not isinstance(content, str):  # content parts, an object...: not a reply we can check as text
        raise TypeError("non-text content")
    calls = _whole_calls(choice["message"].get("tool_calls") or [])
    meta = {"model": data.get("model"), "usage": data.get("usage"), "tool_calls": calls,
            "finish_reason": choice.get("finish_reason")}
    if len(content.encode()) + sum(len(c["function"]["arguments"].encode()) for c in calls) > MAX_BUFFER_BYTES:
        raise _too_large()
    return [content], meta


async def _read_stream(resp: httpx.Response) -> tuple[list[str], dict[str, Any]]:
    """A streamed answer, buffered: its first choice's text pieces and metadata, tool calls reassembled."""
    pieces: list[str] = []
    meta: dict[str, Any] = {}
    partial: dict[int, dict[str, Any]] = {}  # streamed tool calls by index, arguments still being concatenated
    size = 0
    done = False
    async with aclosing(_bounded_lines(resp)) as stream_lines:
        async for line in stream_lines:
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                done = True
                break
            chunk = json.loads(payload)
            if not isinstance(chunk, dict):
                raise TypeError("stream chunk")
            if "error" in chunk:  # an in-stream error: the text so far is not an answer
                raise ApiError(502, "upstream_error", "upstream reported an error in its stream")
            meta.setdefault("model", chunk.get("model"))
            for choice in chunk.get("choices") or ():
                if choice.get("index", 0) != 0:  # the first choice only (the one that is checked)
                    continue
                delta = choice.get("delta") or {}
                piece = delta.get("content")
                if piece and not isinstance(piece, str):
                    raise TypeError("non-text content")
                size += len(piece.encode()) if piece else 0
                size += _add_call_deltas(partial, delta.get("tool_calls") or [])
                if size > MAX_BUFFER_BYTES:
                    raise _too_large()
                if piece:
                    pieces.append(piece)
                if choice.get("finish_reason"):
                    meta["finish_reason"] = choice["finish_reason"]
    if not done and not meta.get("finish_reason"):  # cut off: a truncated answer is not released
        raise ApiError(502, "upstream_incomplete", "upstream stream ended before its answer did")
    meta["tool_calls"] = _whole_calls([partial[i] for i in sorted(partial)])
    return pieces, meta


def _too_large() -> ApiError:
    return ApiError(502, "upstream_too_large", "upstream answer exceeds the buffer limit")


def _raw_chunks(resp: httpx.Response) -> AsyncIterator[bytes]:
    """The body as sent: identity was asked for (`_call`), so a compressed one is refused rather than decoded
    (decoding hands over whole inflated chunks, a few kB of gzip can be tens of MB, before any bound applies)."""
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ApiError(502, "upstream_invalid", "upstream sent a compressed body although identity was asked for",
                       {"content_encoding": encoding[:40]})
    return resp.aiter_raw()


async def _bounded_body(resp: httpx.Response) -> bytes:
    """The whole (non-streamed) body, refused once it passes MAX_RAW_BYTES."""
    out = bytearray()
    async for chunk in _raw_chunks(resp):
        out += chunk
        if len(out) > MAX_RAW_BYTES:
            raise _too_large()
    return bytes(out)


async def _bounded_lines(resp: httpx.Response) -> AsyncGenerator[str, None]:
    """The stream's lines (any of CRLF, LF, CR ends one, as in SSE), each chunk scanned once, refusing a line that
    passes MAX_RAW_BYTES before its end arrives (httpx's aiter_lines buffers a line without bound). A line is
    decoded when whole, so a character split across chunks is read as sent."""
    pending = bytearray()
    after_cr = False  # the last chunk ended in CR: an LF opening this one completes that CRLF
    async for chunk in _raw_chunks(resp):
        start = 1 if after_cr and chunk[:1] == b"\n" else 0
        after_cr = False
        for m in _EOL.finditer(chunk, start):
            pending += chunk[start:m.start()]
            if len(pending) > MAX_RAW_BYTES:
                raise _too_large()
            line = pending.decode("utf-8")  # invalid UTF-8 is a ValueError: an unexpected response (502)
            pending.clear()
            start = m.end()
            after_cr = m.group() == b"\r" and start == len(chunk)
            yield line
        pending += chunk[start:]
        if len(pending) > MAX_RAW_BYTES:
            raise _too_large()
    if pending:
        yield pending.decode("utf-8")


def _add_call_deltas(partial: dict[int, dict[str, Any]], deltas: list[Any]) -> int:
    """Fold a stream chunk's `tool_calls` deltas into `partial`; returns the bytes added (for the buffer cap)."""
    added = 0
    for delta in deltas:
        index = delta["index"]
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError("tool call index")
        call = partial.setdefault(index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        if delta.get("id"):
            if not isinstance(delta["id"], str):
                raise TypeError("tool call id")
            call["id"] = delta["id"]
        fn = delta.get("function") or {}
        if not isinstance(fn, dict):
            raise TypeError("tool call function")
        for key in ("name", "arguments"):
            if fn.get(key) is not None:
                if not isinstance(fn[key], str):
                    raise TypeError(f"tool call {key}")
                call["function"][key] += fn[key]
                added += len(fn[key].encode())
    return added


def _whole_calls(calls: list[Any]) -> list[dict[str, Any]]:
    """Upstream tool calls in the OpenAI shape we release: {id, type: function, function: {name, arguments}}."""
    out = []
    for call in calls:
        fn = call["function"]
        if not isinstance(fn, dict) or not isinstance(call.get("id") or "", str):
            raise TypeError("tool call shape")
        args = "" if fn.get("arguments") is None else fn["arguments"]
        if not isinstance(fn["name"], str) or not fn["name"] or not isinstance(args, str):
            raise TypeError("tool call shape")
        cid = call.get("id")  # an id is released as is only if it is one: free text there is unchecked output
        out.append({"id": cid if cid and IDENTIFIER.fullmatch(cid) else f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {"name": fn["name"], "arguments": args}})
    return out


def _raise_upstream(status: int) -> None:
    if status >= 400:
        raise ApiError(502, "upstream_error", f"upstream answered HTTP {status}", {"upstream_status": status})
