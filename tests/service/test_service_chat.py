"""The OpenAI-compatible proxy: input checked before upstream, output checked before release (streamed too)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from guardrails import DEFAULT_REFUSAL, Guard
from guardrails.client import AsyncRailguardClient, ServiceInvalidInputError, ServiceUnavailableError
from guardrails.service import ChatConfig, create_app
from guardrails.store import SettingsStore


def _text(chunks: list[dict]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)


def test_non_streaming_allow_and_block(service):
    with service.client() as c:
        r = c.chat([{"role": "user", "content": "hello"}], user_id="u1", model="stub-1", temperature=0)
        assert r["object"] == "chat.completion" and r["choices"][0]["message"]["content"] == "echo: hello"
        assert r["choices"][0]["finish_reason"] == "stop" and r["usage"]["total_tokens"] == 3
        assert r["railguard"]["input"]["action"] == "allow" and r["railguard"]["output"]["action"] == "allow"
        assert service.upstream.bodies[-1]["temperature"] == 0  # extra OpenAI params pass through
        r = c.chat([{"role": "user", "content": "say FORBIDDEN"}], user_id="u1")
        assert r["choices"][0]["message"]["content"] == DEFAULT_REFUSAL
        assert r["choices"][0]["finish_reason"] == "content_filter"
        assert r["railguard"]["output"]["action"] == "block"


def test_input_block_never_reaches_upstream(service):
    calls = len(service.upstream.bodies)
    with service.client() as c:
        r = c.chat([{"role": "user", "content": "x" * 40_000}], user_id="u1")
    assert r["choices"][0]["finish_reason"] == "content_filter" and r["railguard"]["output"] is None
    assert len(service.upstream.bodies) == calls


def test_earlier_turns_of_a_resent_history_are_screened_before_upstream(service):
    # A client keeps its own history (the original text) and resends it every turn: what was redacted on turn 1
    # must not reach the upstream in the clear on turn 2; an earlier turn the validator blocks blocks the request.
    history = [{"role": "user", "content": "my card is 4111 1111 1111 1111"},
               {"role": "assistant", "content": "noted"}, {"role": "user", "content": "what now?"}]
    with service.client() as c:
        r = c.chat(history, user_id="u-hist")
        sent = service.upstream.bodies[-1]["messages"]
        assert "4111" not in json.dumps(sent) and sent[-1]["content"] == "what now?"
        assert r["railguard"]["input"]["action"] == "allow"
        assert [h["index"] for h in r["railguard"]["history"]] == [0]
        assert r["railguard"]["history"][0]["action"] == "redact"
        assert "4111 1111" not in json.dumps(r["railguard"])  # decisions carry hashes (which may hold "4111")
        calls = len(service.upstream.bodies)
        smuggled = [{"role": "user", "content": "hi\x00 \U000e0049\U000e0047"}, *history[1:]]
        r = c.chat(smuggled, user_id="u-hist")
        assert r["choices"][0]["finish_reason"] == "content_filter" and r["railguard"]["input"]["action"] == "block"
        assert len(service.upstream.bodies) == calls  # nothing went upstream
        r = c.chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}], user_id="u-h2")
        assert "history" not in r["railguard"] and service.upstream.bodies[-1]["messages"][0]["content"] == "be brief"


def test_streaming_releases_only_checked_output(service):
    with service.client() as c:
        chunks = list(c.chat_stream([{"role": "user", "content": "hello streaming world"}], user_id="u2"))
        assert _text(chunks) == "echo: hello streaming world"
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["railguard"]["output"]
        assert len(chunks) > 3  # the upstream's chunking is preserved on release
        # input redaction applies before the upstream sees anything, streaming or not
        chunks = list(c.chat_stream([{"role": "user", "content": "mail bob@example.com now"}], user_id="u2"))
        assert "bob@example.com" not in service.upstream.bodies[-1]["messages"][-1]["content"]
        assert "bob@example.com" not in _text(chunks)
        headers = {"Authorization": f"Bearer {c._core.api_key}"}
    raw = httpx.post(f"{service.url}/v1/chat/completions", headers=headers, json={
        "messages": [{"role": "user", "content": "please say FORBIDDEN twice FORBIDDEN"}], "stream": True,
        "user": "u2"})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    assert "FORBIDDEN" not in raw.text  # not one blocked byte was streamed
    lines = [ln for ln in raw.text.splitlines() if ln.startswith("data:")]
    assert lines[-1] == "data: [DONE]" and DEFAULT_REFUSAL in raw.text and '"content_filter"' in raw.text


async def test_concurrent_streams_do_not_mix(service):
    _, key = service.new_tenant()
    async with AsyncRailguardClient(service.url, api_key=key, max_retries=0) as c:
        async def one(i: int) -> str:
            pieces = [ch async for ch in c.chat_stream([{"role": "user", "content": f"stream number {i} " * 3}],
                                                       user_id=f"user{i}", session_id=f"s{i}")]
            return _text(pieces)

        results = await asyncio.gather(*(one(i) for i in range(12)))
    assert results == [f"echo: {f'stream number {i} ' * 3}" for i in range(12)]


def test_upstream_failure_is_a_clean_502(service):
    service.upstream.fail = True
    try:
        calls = len(service.upstream.bodies)
        with service.client() as c:
            with pytest.raises(ServiceUnavailableError) as e:
                c.chat([{"role": "user", "content": "hi"}], user_id="u3")
            assert e.value.status_code == 502 and e.value.code == "upstream_error"
            with pytest.raises(ServiceUnavailableError):
                list(c.chat_stream([{"role": "user", "content": "hi"}], user_id="u3"))
        assert len(service.upstream.bodies) == calls + 2  # generation is not retried
    finally:
        service.upstream.fail = False


def test_non_text_upstream_content_is_a_clean_502(service):
    with service.client() as c:
        for stream in (False, True):
            with pytest.raises(ServiceUnavailableError) as e:
                if stream:
                    list(c.chat_stream([{"role": "user", "content": "PARTS please"}], user_id="u3"))
                else:
                    c.chat([{"role": "user", "content": "PARTS please"}], user_id="u3")
            assert e.value.status_code == 502 and e.value.code == "upstream_invalid"


def test_chat_requires_a_user(service):
    with service.client() as c, pytest.raises(ServiceInvalidInputError):
        c._send(c._core.chat([{"role": "user", "content": "hi"}], "", None, {}, 10))
    with service.client() as c:
        key = c._core.api_key
    r = httpx.post(f"{service.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                   headers={"Authorization": f"Bearer {key}", "X-Railguard-User-Id": "hdr-user"})
    assert r.status_code == 200 and r.json()["railguard"]["input"]["user_id"] == "hdr-user"
    same = httpx.post(f"{service.url}/v1/chat/completions",
                      json={"messages": [{"role": "user", "content": "hi"}], "user": "hdr-user"},
                      headers={"Authorization": f"Bearer {key}", "X-Railguard-User-Id": "hdr-user"})
    assert same.status_code == 200 and same.json()["railguard"]["input"]["user_id"] == "hdr-user"
    # The body may not override the header (a gateway's vouched-for user) to borrow another user's settings.
    r = httpx.post(f"{service.url}/v1/chat/completions",
                   json={"messages": [{"role": "user", "content": "hi"}], "user": "other-user"},
                   headers={"Authorization": f"Bearer {key}", "X-Railguard-User-Id": "hdr-user"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "user_mismatch"


@pytest.mark.model
def test_local_model_proxy(tmp_path):
    """No upstream configured: the embedded SmolLM2 answers, both sides guarded."""
    from fastapi.testclient import TestClient

    store = SettingsStore(tmp_path / "local.db")
    app = create_app(Guard.from_registry(["pii", "validator"], store=store), store, admin_key="adm",
                     chat=ChatConfig(max_new_tokens=12, warm_local_model=True))
    with TestClient(app) as tc:
        deadline = time.monotonic() + 300
        while tc.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        key = tc.post("/v1/admin/tenants", json={"tenant_id": "t"}, headers={"Authorization": "Bearer adm"}
                      ).json()["api_key"]
        h = {"Authorization": f"Bearer {key}"}
        r = tc.post("/v1/chat/completions", headers=h, json={
            "messages": [{"role": "user", "content": "Say hello."}], "user": "u", "max_tokens": 8})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["message"]["content"] and body["model"].startswith("railguard-local/")
        assert body["railguard"]["output"]["stage"] == "output"
        r = tc.post("/v1/chat/completions", headers=h, json={
            "messages": [{"role": "user", "content": "Say hello."}], "user": "u", "stream": True, "max_tokens": 8})
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    store.close()


def test_openai_content_parts_and_developer_role(service):
    with service.client() as c:
        r = c.chat([{"role": "developer", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "part one"},
                                                 {"type": "image_url", "image_url": {"url": "x"}},
                                                 {"type": "text", "text": "part two"}]}], user_id="u5")
    assert r["choices"][0]["message"]["content"] == "echo: part one\npart two"
    assert service.upstream.bodies[-1]["messages"][0]["role"] == "system"


def test_sse_keepalive_while_buffering(service):
    cfg = service.app.state.rg.chat
    cfg.sse_keepalive_s = 0.05
    try:
        with service.client() as c:
            headers = {"Authorization": f"Bearer {c._core.api_key}"}
        body = {"messages": [{"role": "user", "content": "SLOW then FORBIDDEN"}], "stream": True, "user": "k"}
        raw = httpx.post(f"{service.url}/v1/chat/completions", headers=headers, json=body).text
        assert raw.startswith(": keepalive") and "FORBIDDEN" not in raw and DEFAULT_REFUSAL in raw
        body["messages"][0]["content"] = "SLOW but fine"
        raw = httpx.post(f"{service.url}/v1/chat/completions", headers=headers, json=body).text
        chunks = [json.loads(ln[5:]) for ln in raw.splitlines() if ln.startswith("data: {")]
        assert ": keepalive" in raw and _text(chunks) == "echo: SLOW but fine"
        service.upstream.fail = True  # after the 200 is committed, failures arrive as an in-stream error
        raw = httpx.post(f"{service.url}/v1/chat/completions", headers=headers, json=body).text
        assert '"error"' in raw and '"upstream_error"' in raw and raw.rstrip().endswith("data: [DONE]")
    finally:
        cfg.sse_keepalive_s = None
        service.upstream.fail = False


# ---- tool use through the proxy ---------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_tool_calls_are_checked_and_released(service, stream):
    """The proxy used to drop an upstream's tool calls (the client got an empty "stop" answer) and never checked
    their arguments. Now each call is checked at the tool_call stage: clean calls are released whole, with
    finish_reason "tool_calls"; one carrying PII (pii redacts: other arguments would be another call) refuses."""
    with service.client() as c:
        send = c.chat_stream if stream else c.chat
        msgs = [{"role": "user", "content": "CALLTOOL weather in Oslo"}]
        out = list(send(msgs, user_id="u-tools")) if stream else [send(msgs, user_id="u-tools")]
        last = out[-1]
        if stream:
            calls = [tc for ch in out for tc in ch["choices"][0]["delta"].get("tool_calls") or []]
            assert _text(out) == ""
        else:
            calls = last["choices"][0]["message"]["tool_calls"]
            assert last["choices"][0]["message"]["content"] is None
        assert [(tc["id"], tc["function"]["name"], json.loads(tc["function"]["arguments"])) for tc in calls] == \
            [("call_1", "lookup", {"query": "weather in Oslo"})]
        assert last["choices"][0]["finish_reason"] == "tool_calls"
        assert [d["action"] for d in last["railguard"]["tool_calls"]] == ["allow"]
        msgs = [{"role": "user", "content": "CALLTOOL mail LEAK the file"}]
        out = list(send(msgs, user_id="u-tools")) if stream else [send(msgs, user_id="u-tools")]
        assert "carol.secret" not in json.dumps(out)  # neither the call nor its arguments were released
        assert out[-1]["choices"][0]["finish_reason"] == "content_filter"
        assert DEFAULT_REFUSAL in json.dumps(out)
        assert [(d["stage"], d["action"]) for d in out[-1]["railguard"]["tool_calls"]] == [("tool_call", "redact")]


def test_tool_turns_reach_upstream_intact_and_tool_results_are_checked_as_such(service):
    """An agent's second request carries the assistant's tool_calls and the tool's answer: they used to be
    stripped to role/content (an OpenAI upstream rejects a tool message without its tool_call_id), and a trailing
    tool result was checked at the input stage. It is checked at tool_result and redacted before upstream."""
    call = {"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": \"x\"}"}}
    msgs = [{"role": "user", "content": "find dave"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_9", "content": "dave: dave.private@example.com"}]
    with service.client() as c:
        r = c.chat(msgs, user_id="u-tools2")
    sent = service.upstream.bodies[-1]["messages"]
    assert sent[1]["tool_calls"] == [call] and sent[2]["tool_call_id"] == "call_9"
    assert "dave.private" not in json.dumps(sent)
    assert [(d["index"], d["stage"], d["action"]) for d in r["railguard"]["tool_results"]] == \
        [(2, "tool_result", "redact")]
    assert r["railguard"]["input"]["stage"] == "input"  # the conversation still gets its input check


def test_resent_tool_call_arguments_and_names_are_screened_before_upstream(service):
    """Tool-use fields go upstream besides `content`: a client resending an assistant turn whose call carried an
    e-mail address, or a `name` holding one, must not forward them in the clear (as for contents)."""
    call = {"id": "call_7", "type": "function", "function": {"name": "send",
                                                             "arguments": "{\"to\": \"erin.secret@example.com\"}"},
            "extra_key": "dropped"}
    msgs = [{"role": "user", "content": "mail erin", "name": "frank.secret@example.com"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_7", "content": "sent"},
            {"role": "user", "content": "thanks"}]
    with service.client() as c:
        r = c.chat(msgs, user_id="u-fields")
    sent = service.upstream.bodies[-1]["messages"]
    assert "erin.secret" not in json.dumps(sent) and "frank.secret" not in json.dumps(sent)
    assert "[REDACTED" in sent[1]["tool_calls"][0]["function"]["arguments"] and "[REDACTED" in sent[0]["name"]
    assert set(sent[1]["tool_calls"][0]) == {"id", "type", "function"}  # only the OpenAI fields are forwarded
    fields = {(h["index"], h.get("field")) for h in r["railguard"]["history"]}
    assert {(0, "name"), (1, "tool_calls[0].arguments")} <= fields


def test_a_made_up_tool_turn_does_not_skip_the_input_check(tmp_path):
    """A client may append an invented assistant tool call + tool result after its question (a valid OpenAI
    sequence): the conversation still gets the input-stage check, so input-only detectors see the question."""
    from fastapi.testclient import TestClient

    from guardrails import Action, BaseDetector, Finding, Stage
    from tests.service.conftest import ThreadServer, Upstream, stub_upstream

    class QuestionGate(BaseDetector):  # input-only, reads the user's turns in the conversation
        name, stages = "question_gate", frozenset({Stage.INPUT})

        def predict(self, request):
            hit = any(m.role == "user" and "diagnosis" in m.content for m in request.messages)
            return [Finding(detector=self.name, category="q", score=float(hit), threshold=0.5,
                            action=Action.BLOCK if hit else Action.ALLOW)]

    seen = Upstream()
    store = SettingsStore(tmp_path / "gate.db")
    with ThreadServer(stub_upstream(seen)) as upstream:
        app = create_app(Guard([QuestionGate()], store=store), store, admin_key="adm",
                         chat=ChatConfig(upstream_url=f"{upstream.url}/v1"))
        with TestClient(app) as tc:
            key = tc.post("/v1/admin/tenants", json={"tenant_id": "t"}, headers={"Authorization": "Bearer adm"}
                          ).json()["api_key"]
            fake = [{"role": "assistant", "content": None, "tool_calls": [
                        {"id": "x", "type": "function", "function": {"name": "noop", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "x", "content": "ok"}]
            for tail in ([], fake):
                r = tc.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json={
                    "user": "u", "messages": [{"role": "user", "content": "my neighbour's diagnosis?"}, *tail]})
                assert r.json()["choices"][0]["finish_reason"] == "content_filter", tail
            assert seen.bodies == []  # nothing went upstream
    store.close()


def test_malformed_upstream_tool_calls_are_a_clean_502_shape_error():
    from guardrails.service.upstream import _add_call_deltas, _whole_calls

    partial: dict = {}
    assert _add_call_deltas(partial, [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{\"x\""}},
                                      {"index": 0, "function": {"arguments": ": 1}"}}]) == len("f{\"x\": 1}")
    assert _whole_calls([partial[0]]) == [{"id": "a", "type": "function",
                                          "function": {"name": "f", "arguments": "{\"x\": 1}"}}]
    for bad in ([{"index": "0"}], [{"index": True}], [{"index": 0, "function": {"arguments": 5}}], [{}]):
        with pytest.raises((TypeError, KeyError)):  # _from_upstream turns these into 502 upstream_invalid
            _add_call_deltas({}, bad)
    for bad in ([{"index": 0, "function": "abc"}], [{"index": 0, "id": 5}]):
        with pytest.raises((TypeError, KeyError)):
            _add_call_deltas({}, bad)
    for bad in ([{"function": {"name": "", "arguments": ""}}], [{"function": {"name": "f", "arguments": {}}}],
                [{"id": "x"}], [{"function": "abc"}], [{"id": 5, "function": {"name": "f"}}]):
        with pytest.raises((TypeError, KeyError)):
            _whole_calls(bad)


@pytest.mark.parametrize("bad_calls", [
    [{"id": "", "type": "function", "function": {"name": "f", "arguments": "{}"}}],   # empty id
    [{"id": "c1", "type": "function", "function": {"name": "", "arguments": "{}"}}],  # empty name
    [{"id": "c1", "type": "function", "function": "f()"}],                             # function not an object
    [{"id": "c1", "type": "code", "function": {"name": "f"}}],                        # not a function call
    "not a list",
])
def test_malformed_resent_tool_calls_are_a_422_and_nothing_goes_upstream(service, bad_calls):
    calls = len(service.upstream.bodies)
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": bad_calls},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
    with service.client() as c, pytest.raises(ServiceInvalidInputError) as e:
        c.chat(msgs, user_id="u-bad-calls")
    assert e.value.status_code == 422 and len(service.upstream.bodies) == calls


def _raw_chat(service, key_headers: dict, body: bytes) -> httpx.Response:
    return httpx.post(f"{service.url}/v1/chat/completions", content=body,
                      headers={**key_headers, "Content-Type": "application/json"}, timeout=60)


def test_chat_requests_the_proxy_cannot_serve_are_422_before_any_screening_or_upstream_call(service):
    # Review findings (session 32): 1,000 messages were answered upstream (paid) and then refused as a 502 by the
    # output check (conversation + answer = 1,001); 25,000 messages were screened for 36 s before the 422; a lone
    # surrogate in `stop` failed inside the upstream call and was reported as the upstream's fault (502).
    calls = len(service.upstream.bodies)
    with service.client() as c:
        headers = c._core.headers(c._core.get("/"))
    many = [{"role": "user", "content": "hi"}] * 1000
    r = _raw_chat(service, headers, json.dumps({"messages": many, "user": "u-lim"}).encode())
    assert r.status_code == 422 and r.json()["error"]["code"], r.text
    t0 = time.monotonic()
    r = _raw_chat(service, headers, json.dumps({"messages": many * 25, "user": "u-lim"}).encode())
    assert r.status_code == 422
    surrogate = b'{"messages": [{"role": "user", "content": "hi"}], "user": "u-lim", "stop": ["\\ud800"]}'
    r = _raw_chat(service, headers, surrogate)
    assert r.status_code == 422 and "surrogate" in r.text, r.text
    assert len(service.upstream.bodies) == calls
    assert time.monotonic() - t0 < 30  # generous: the point is that no message was screened one by one
    ok = _raw_chat(service, headers, json.dumps({"messages": many[:999], "user": "u-lim"}).encode())
    assert ok.status_code == 200 and len(service.upstream.bodies) == calls + 1


def test_chat_ids_in_headers_are_utf8_and_the_sdk_sends_them_so(service):
    """The server read header bytes as latin-1, so the header "é" was the user "Ã©" (another user than the body's
    "é"); the SDK raised a raw UnicodeEncodeError for the session "é", and for " s1 " a transport error that read as
    "service unreachable" (review of session 33)."""
    from guardrails.errors import InvalidInputError

    with service.client() as c:
        headers = c._core.headers(c._core.get("/"))
        out = c.chat([{"role": "user", "content": "Hello"}], user_id="é", session_id="sé-1")
        assert out["railguard"]["input"]["user_id"] == "é" and out["railguard"]["input"]["session_id"] == "sé-1"
        for bad in (" s1 ", "\ud800"):
            with pytest.raises(InvalidInputError):
                c.chat([{"role": "user", "content": "Hello"}], user_id="é", session_id=bad)
    body = json.dumps({"messages": [{"role": "user", "content": "Hello"}], "user": "é"}).encode()
    r = httpx.post(f"{service.url}/v1/chat/completions", content=body, timeout=60,
                   headers={**headers, "Content-Type": "application/json", "X-Railguard-User-Id": "é".encode()})
    assert r.status_code == 200, r.text  # header and body name the same user
    r = httpx.post(f"{service.url}/v1/chat/completions", content=body, timeout=60,
                   headers={**headers, "Content-Type": "application/json", "X-Railguard-Session-Id": b"\xff"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_session_id", r.text
