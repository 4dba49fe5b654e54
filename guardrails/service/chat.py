"""`POST /v1/chat/completions`: an OpenAI-compatible proxy with the Guard on both sides.

Earlier messages of the (resent) conversation pass the Guard's text-level detectors first (`screen_history`):
an earlier turn that is redacted is forwarded redacted, one that is blocked blocks the request.

Why it buffers: the bug users hit with other guardrail servers is streaming that bypasses output checks (or
checks a chunk after it was sent). Here the input is checked before anything goes upstream; the whole answer
(streamed or not) is collected, checked as one output turn, and only then released: the original chunks when
allowed, one chunk of redacted text when redacted, one refusal chunk when blocked. Each request owns its
buffer, so concurrent streams cannot mix. Because nothing is sent before the check, an upstream failure is
still a clean JSON error (502; 504 past `timeout_s` or `total_timeout_s`, see `upstream.py`), never a half-finished
stream. A client that disconnects cancels its request's work (`_unless_disconnected`).

Tool use (OpenAI shape) passes through checked: the tool calls an upstream answer asks for are assembled (from
stream deltas too) and each is checked at the `tool_call` stage; a blocked or redacted one refuses the whole answer
(`content_filter`), so the client never receives, let alone runs, it. Requests keep their turns' `tool_calls` /
`tool_call_id` upstream, and trailing tool results (what the client ran since the model's last turn) get the full
check at the `tool_result` stage instead of `input`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..decision import DEFAULT_REFUSAL, Action, Decision, Stage
from ..errors import InvalidInputError
from ..text import call_text, check_id, unanswered_user_turns
from .auth import Principal
from .deps import ApiError, ServiceState, log, require_tenant, state
from .schemas import ChatCompletionRequest, ErrorOut
from .upstream import from_upstream, released_meta

router = APIRouter(tags=["chat"])


def local_model(st: ServiceState) -> Any:
    """The LocalChatModel used when no upstream URL is configured (built once per process)."""
    if st.chat_model is None:
        from ..models import DEFAULT_CHAT_MODEL, LocalChatModel

        st.chat_model = LocalChatModel(model_name=st.chat.local_model or DEFAULT_CHAT_MODEL,
                                       max_new_tokens=st.chat.max_new_tokens)
    return st.chat_model


async def _from_local(st: ServiceState, body: ChatCompletionRequest,
                      messages: list[dict[str, str]]) -> tuple[list[str], dict[str, Any]]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    kinds = {"system": SystemMessage, "assistant": AIMessage}
    lc = [kinds.get(m["role"], HumanMessage)(content=m["content"]) for m in messages]
    model = local_model(st)
    if body.max_tokens:
        model = model.model_copy(update={"max_new_tokens": min(body.max_tokens, 4 * st.chat.max_new_tokens)})

    stop = threading.Event()  # set when the request is cancelled (client gone): stop consuming the stream

    def run() -> list[str]:
        out: list[str] = []
        chunks = model.stream(lc)
        try:
            for c in chunks:
                if stop.is_set():
                    break
                if c.content:
                    out.append(str(c.content))
        finally:  # closing the stream ends the generation here, in this thread, while the lock is still held
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return out

    assert st.chat_lock is not None
    async with st.chat_lock:  # one generation at a time per process: CPU inference does not parallelise
        pieces = await _until_thread_ends(asyncio.ensure_future(asyncio.to_thread(run)), stop)
    return pieces, {"model": body.model or f"railguard-local/{model.model_name}"}


async def _until_thread_ends(thread: asyncio.Future[list[str]], stop: threading.Event) -> list[str]:
    """Await a worker thread's result; when cancelled, tell it to stop and still wait for it to finish before
    re-raising. A thread cannot be cancelled: letting the CancelledError through at once would release
    `chat_lock` while the generation runs on, and every client that disconnects would add one more."""
    try:
        return await asyncio.shield(thread)
    except asyncio.CancelledError:
        stop.set()
        while not thread.done():
            try:
                await asyncio.wait({thread})
            except asyncio.CancelledError:  # cancelled again: the thread still has to end first
                continue
        if not thread.cancelled():
            thread.exception()  # retrieved: a failure of the abandoned generation is not logged as unawaited
        raise


def _completion(cid: str, model: str, a: _Answer) -> dict[str, Any]:
    content = "".join(a.pieces)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if a.tool_calls:
        message.update(content=content or None, tool_calls=a.tool_calls)
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": a.finish}],
            "usage": a.usage, "railguard": a.decisions}


def _chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None,
           extra: dict[str, Any] | None = None) -> bytes:
    obj: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                           "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if extra is not None:
        obj["railguard"] = extra
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


@dataclass
class _Answer:
    """A finished, checked answer: exactly what may be released to the caller."""

    model: str
    pieces: list[str]
    finish: str
    decisions: dict[str, Any]
    usage: Any = None
    tool_calls: list[dict[str, Any]] | None = None


def _events(cid: str, a: _Answer) -> Iterator[bytes]:
    # Everything here was checked already: this only replays the approved buffer.
    yield _chunk(cid, a.model, {"role": "assistant", "content": ""}, None)
    for piece in a.pieces:
        yield _chunk(cid, a.model, {"content": piece}, None)
    if a.tool_calls:  # whole calls, one delta (each already checked as a whole)
        yield _chunk(cid, a.model, {"tool_calls": [{"index": i, **c} for i, c in enumerate(a.tool_calls)]}, None)
    yield _chunk(cid, a.model, {}, a.finish, a.decisions)
    yield b"data: [DONE]\n\n"


def _sse(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _respond(body: ChatCompletionRequest, a: _Answer) -> Response:
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    if not body.stream:
        return JSONResponse(_completion(cid, a.model, a))

    async def replay() -> AsyncIterator[bytes]:
        for event in _events(cid, a):
            yield event

    return _sse(replay())


def _with_keepalive(work: asyncio.Task[_Answer], every_s: float) -> StreamingResponse:
    """Stream SSE comments while the answer is generated and checked, then the approved chunks. The 200 is
    committed early, so a failure after that is sent as an `error` event (OpenAI's in-stream error shape)."""
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"

    async def events() -> AsyncIterator[bytes]:
        try:
            while not (await asyncio.wait({work}, timeout=every_s))[0]:
                yield b": keepalive\n\n"
            try:
                answer = work.result()
            except Exception as exc:  # the status line is gone: report in-stream, never a torn connection
                if isinstance(exc, ApiError):
                    err = {"code": exc.code, "message": str(exc.detail), "status": exc.status_code}
                elif isinstance(exc, InvalidInputError):
                    err = {"code": "invalid_input", "message": str(exc), "status": 422}
                else:
                    err = {"code": "internal_error", "message": "internal server error", "status": 500}
                yield f"data: {json.dumps({'error': err})}\n\ndata: [DONE]\n\n".encode()
                return
            for event in _events(cid, answer):
                yield event
        finally:
            work.cancel()  # client went away: stop waiting on the upstream (no-op once done)

    return _sse(events())


def _header_text(value: str | None, what: str) -> str | None:
    """A header's value as the UTF-8 text its bytes are (the server hands them over read as latin-1, so the header
    "é" was the user "Ã©", another user than the body's "é"); bytes that are not UTF-8 are a 422."""
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise ApiError(422, f"invalid_{what}", f"the X-Railguard-{what.title().replace('_', '-')} header must be "
                       "UTF-8 text") from None


@router.post("/v1/chat/completions", responses={s: {"model": ErrorOut} for s in (401, 413, 415, 422, 502, 504)})
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           p: Principal = Depends(require_tenant),
                           x_railguard_user_id: str | None = Header(default=None),
                           x_railguard_session_id: str | None = Header(default=None)) -> Response:
    """Guarded chat completion (OpenAI wire format, `stream` supported). The end user is `user` or the
    `X-Railguard-User-Id` header (both set and different: 422 `user_mismatch`); decisions are returned under the
    extra `railguard` key."""
    st = state(request)
    x_railguard_user_id = _header_text(x_railguard_user_id, "user_id")
    x_railguard_session_id = _header_text(x_railguard_session_id, "session_id")
    if body.user and x_railguard_user_id and body.user != x_railguard_user_id:
        # A gateway that sets the header vouches for the user; a client-written body `user` must not override
        # it and borrow another user's settings (and drift state). Neither one silently wins.
        raise ApiError(422, "user_mismatch", "the request's 'user' field and the X-Railguard-User-Id header "
                       "name different users")
    user_id = body.user or x_railguard_user_id
    if not user_id:
        raise ApiError(422, "missing_user", "set the request's 'user' field or the X-Railguard-User-Id header")
    check_id(user_id, "user_id")
    session_id = x_railguard_session_id
    check_id(session_id, "session_id", optional=True)
    work = _answer(st, st.guard_for(p.tenant_id), body, user_id, session_id)
    if body.stream and st.chat.sse_keepalive_s:
        return _with_keepalive(asyncio.create_task(work), st.chat.sse_keepalive_s)
    answer = await _unless_disconnected(request, asyncio.create_task(work))
    return _respond(body, answer) if answer is not None else Response(status_code=499)


async def _unless_disconnected(request: Request, work: asyncio.Task[_Answer]) -> _Answer | None:
    """The answer, or None when the client disconnected first: then the work (the upstream call, a queued or
    running local generation) is cancelled instead of being carried on for nobody. (With SSE keep-alive the
    streaming response notices the disconnect itself.)"""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":  # the body was read: only this comes
            pass

    watcher = asyncio.create_task(disconnected())
    try:
        done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if work not in done and watcher.exception() is not None:  # cannot watch (odd server): just wait
            done, _ = await asyncio.wait({work})
    except BaseException:  # this handler was cancelled (server shutdown)
        work.cancel()
        raise
    finally:
        watcher.cancel()
    if work in done:
        return work.result()  # the answer, or its ApiError as usual
    work.cancel()
    await asyncio.wait({work})  # a local generation ends first (and releases chat_lock)
    if not work.cancelled():
        work.exception()  # retrieved (nobody is left to tell)
    log.info("chat client disconnected", extra={"fields": {"event": "chat_client_disconnected"}})
    return None  # 499 (nginx's "client closed request"), seen only by the access log and metrics


async def _answer(st: ServiceState, guard: Any, body: ChatCompletionRequest, user_id: str,
                  session_id: str | None) -> _Answer:
    """Input check → generation (upstream or local) → output check; returns what may be released."""
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    model = body.model or "railguard"
    # Clients resend the whole history: its earlier turns go upstream too, so they pass the text-level
    # detectors again (a card number redacted on turn 1 must not reach the upstream in the clear on turn 2).
    history = await guard.ascreen_history(messages, user_id=user_id, session_id=session_id)
    for _, d in history.decisions:
        st.metrics.observe_decision(d, history=True)
    messages = history.messages
    decisions: dict[str, Any] = {"input": None, "output": None}
    if history.decisions:
        decisions["history"] = [{"index": i, **d.log_record()} for i, d in history.decisions]
    blocked: Decision | None = history.blocked
    if blocked is None:  # what else of those turns goes upstream: tool-call arguments, names
        messages, fields = await _screen_tool_fields(st, guard, messages, user_id, session_id)
        if fields.decisions:
            decisions.setdefault("history", []).extend(fields.decisions)
        blocked = fields.blocked
    if blocked is not None:  # the request is refused on its input side
        decisions["input"] = blocked.log_record()
        return _Answer(model, [DEFAULT_REFUSAL], "content_filter", decisions)
    # Tool results the client sends back since the model's last turn get the full tool_result check each (with
    # the conversation up to it as context); then, as for any request, the whole conversation gets the input
    # check. Both always: a client-made tool turn must not let a user question skip the input detectors.
    for i in _trailing_tool_results(messages):
        d_tool = await _check(st, guard, messages[:i + 1], user_id, session_id, Stage.TOOL_RESULT)
        decisions.setdefault("tool_results", []).append({"index": i, **d_tool.log_record()})
        if d_tool.blocked:
            decisions["input"] = d_tool.log_record()
            return _Answer(model, [DEFAULT_REFUSAL], "content_filter", decisions)
        if d_tool.enforced_action is Action.REDACT and d_tool.redacted_text is not None:
            messages[i] = {**messages[i], "content": d_tool.redacted_text}
    # The input check judges the user's turn the model is to answer, with the conversation up to it (once: the
    # privacy drift counts it); a system message or an assistant prefill sent after it gets the text-level screen
    # (the history screen above covered every message but the last). Without a user turn, the last message.
    last, roles = len(messages) - 1, [m["role"] for m in messages]
    turns = unanswered_user_turns(roles[:-1] if roles[-1] == "assistant" else roles)  # a prefill answers nothing
    at = turns[-1] if turns else last
    d_in = await _check(st, guard, messages[: at + 1], user_id, session_id, Stage.INPUT)
    decisions["input"] = d_in.log_record()
    if d_in.blocked:
        return _Answer(model, [DEFAULT_REFUSAL], "content_filter", decisions)
    if d_in.enforced_action is Action.REDACT and d_in.redacted_text is not None:
        messages[at] = {**messages[at], "content": d_in.redacted_text}  # the upstream never sees the original
    if at != last:
        tail = await guard.ascreen_history(messages[last:], user_id=user_id, session_id=session_id, include_last=True)
        for _, d in tail.decisions:
            st.metrics.observe_decision(d, history=True)
            decisions.setdefault("history", []).append({"index": last, **d.log_record()})
        if tail.blocked is not None:
            decisions["input"] = tail.blocked.log_record()
            return _Answer(model, [DEFAULT_REFUSAL], "content_filter", decisions)
        messages[last] = tail.messages[0]

    if st.chat.upstream_url:
        pieces, meta = await from_upstream(st, body, messages)
    else:
        pieces, meta = await _from_local(st, body, messages)
    meta = released_meta(meta, model)
    model, usage = meta.get("model") or model, meta.get("usage")
    calls: list[dict[str, Any]] = meta.get("tool_calls") or []
    finish = meta.get("finish_reason") or ("tool_calls" if calls else "stop")
    text = "".join(pieces)
    if not text.strip():  # no text to check (tool calls still are) and none to release
        pieces = []
    else:
        turn = [*messages, {"role": "assistant", "content": text}]
        d_out = await _check(st, guard, turn, user_id, session_id, Stage.OUTPUT)
        decisions["output"] = d_out.log_record()
        if d_out.blocked:
            return _Answer(model, [DEFAULT_REFUSAL], "content_filter", decisions)
        if d_out.enforced_action is Action.REDACT and d_out.redacted_text is not None:
            pieces = [d_out.redacted_text]
    for call in calls:  # a blocked call refuses the answer; a redacted one too (other arguments = another call)
        fn = call["function"]
        d_call = await _check(st, guard, call_text(fn["name"], fn["arguments"]), user_id, session_id,
                              Stage.TOOL_CALL)
        decisions.setdefault("tool_calls", []).append(d_call.log_record())
        if d_call.stops_tool_call:
            return _Answer(model, [DEFAULT_REFUSAL], "content_filter", decisions)
    return _Answer(model, pieces, finish, decisions, usage, calls or None)


@dataclass
class _FieldScreen:
    decisions: list[dict[str, Any]]
    blocked: Decision | None


async def _screen_tool_fields(st: ServiceState, guard: Any, messages: list[dict[str, Any]], user_id: str,
                              session_id: str | None) -> tuple[list[dict[str, Any]], _FieldScreen]:
    """The tool-use fields a resent conversation carries upstream besides `content` (each tool call's arguments,
    `name`), through the text-level detectors as `screen_history` does for contents: redacted in place, or the
    request refused. Arguments are model output (checked as such), names caller input."""
    where: list[tuple[int, int | None]] = []  # (message, tool call) or (message, None) for its name
    texts: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        for j, call in enumerate(m.get("tool_calls") or ()):
            if call["function"]["arguments"].strip():
                where.append((i, j))
                texts.append({"role": "assistant", "content": call["function"]["arguments"]})
        if (m.get("name") or "").strip():
            where.append((i, None))
            texts.append({"role": "user", "content": m["name"]})
    if not texts:
        return messages, _FieldScreen([], None)
    screen = await guard.ascreen_history(texts, user_id=user_id, session_id=session_id, include_last=True)
    for _, d in screen.decisions:
        st.metrics.observe_decision(d, history=True)
    out = [dict(m) for m in messages]
    for (msg_i, call_j), text in zip(where, screen.messages, strict=True):
        if call_j is None:
            out[msg_i]["name"] = text["content"]
        else:
            calls = [dict(c) for c in out[msg_i]["tool_calls"]]
            calls[call_j] = {**calls[call_j], "function": {**calls[call_j]["function"], "arguments": text["content"]}}
            out[msg_i]["tool_calls"] = calls
    found = [{"index": where[k][0], "field": "name" if where[k][1] is None else f"tool_calls[{where[k][1]}].arguments",
              **d.log_record()} for k, d in screen.decisions]
    return out, _FieldScreen(found, screen.blocked)


def _trailing_tool_results(messages: list[dict[str, Any]]) -> list[int]:
    """Indexes of the tool messages that end the conversation (results of the model's last tool calls)."""
    out: list[int] = []
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] != "tool":
            break
        out.insert(0, i)
    return out


async def _check(st: ServiceState, guard: Any, messages: Any, user_id: str,
                 session_id: str | None, stage: Stage) -> Decision:
    started = time.perf_counter()
    try:
        decision: Decision = await guard.acheck(messages, user_id=user_id, session_id=session_id, stage=stage)
    except InvalidInputError as exc:
        if stage in (Stage.INPUT, Stage.TOOL_RESULT):  # what the client sent: its 422
            raise
        # the upstream's answer cannot be checked (an unpaired surrogate, too large): its fault, not the client's
        raise ApiError(502, "upstream_invalid", f"upstream answer cannot be checked: {exc}"[:300]) from None
    st.metrics.observe_decision(decision, time.perf_counter() - started)
    return decision
