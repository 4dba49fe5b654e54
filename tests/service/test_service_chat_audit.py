"""The chat proxy against an upstream that misbehaves, and requests it must refuse (session 25 audit): the turn the
input check judges, fields that would reach the upstream or the client unchecked, incomplete upstream streams."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from guardrails import Action, BaseDetector, CheckRequest, Finding, Guard, Stage
from guardrails.client import RailguardClient, ServiceInvalidInputError, ServiceUnavailableError
from guardrails.service import ChatConfig, create_app
from guardrails.store import SettingsStore
from tests.service.conftest import ADMIN_KEY, ThreadServer


class ContextKeyword(BaseDetector):
    """Blocks input containing EVIL; neither a gate nor a redactor, so the text-level history screen never runs it
    (like the privacy and harm detectors)."""

    name = "context_keyword"
    stages = frozenset({Stage.INPUT})
    calls = 0

    def predict(self, request: CheckRequest) -> list[Finding]:
        ContextKeyword.calls += 1
        hit = "EVIL" in request.text
        return [Finding(detector=self.name, category="evil", score=float(hit), threshold=0.5,
                        action=Action.BLOCK if hit else Action.ALLOW)]


def _sse(*events: Any, done: bool = True) -> StreamingResponse:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events] + (["data: [DONE]\n\n"] if done else [])
    return StreamingResponse(iter(lines), media_type="text/event-stream")


def _upstream(seen: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        seen.append(body)
        last = body["messages"][-1]["content"]
        part = {"choices": [{"index": 0, "delta": {"content": "part one "}, "finish_reason": None}]}
        if "STREAMERR" in last and body.get("stream"):
            return _sse(part, {"error": {"message": "overloaded"}})
        if "CUTOFF" in last and body.get("stream"):
            return _sse(part, done=False)
        if "ODDMETA" in last:  # free text where the client expects identifiers and counts
            call = {"id": "call bob@example.com", "type": "function",
                    "function": {"name": "lookup", "arguments": "{}"}}
            return {"model": "FORBIDDEN bob@example.com", "usage": {"leak": "4111 1111 1111 1111", "total_tokens": 3},
                    "choices": [{"index": 0, "finish_reason": "FORBIDDEN carol@example.com",
                                 "message": {"role": "assistant", "content": "fine", "tool_calls": [call]}}]}
        return {"model": "stub-1", "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": "ok"}}]}

    return app


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RailguardClient, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    store = SettingsStore(tmp_path_factory.mktemp("chat") / "c.db")
    guard = Guard([*Guard.from_registry(["pii", "validator"], store=store).slots, ContextKeyword()], store=store)
    with ThreadServer(_upstream(seen)) as up:
        app = create_app(guard, store, admin_key=ADMIN_KEY, chat=ChatConfig(upstream_url=f"{up.url}/v1"))
        with ThreadServer(app) as srv:
            with RailguardClient(srv.url, admin_key=ADMIN_KEY) as admin:
                key = admin.create_tenant("chat-audit")["api_key"]
            with RailguardClient(srv.url, api_key=key, max_retries=0) as client:
                yield client, seen
    store.close()


@pytest.mark.parametrize("after", [{"role": "system", "content": "be brief"},
                                   {"role": "assistant", "content": "Sure, here it is:"}])
def test_the_input_check_judges_the_users_turn_wherever_it_sits(proxy, after):
    """Only the last message got the input check: a user turn followed by a system message or an assistant prefill
    was left to the text-level screen, so "do EVIL" reached the upstream. The turn is checked once (a session
    detector such as the privacy drift counts each check), and the message after it gets the text-level screen."""
    client, seen = proxy
    calls = len(seen)
    r = client.chat([{"role": "user", "content": "do EVIL"}, after], user_id="u")
    assert r["choices"][0]["finish_reason"] == "content_filter" and r["railguard"]["input"]["action"] == "block"
    assert len(seen) == calls
    before = ContextKeyword.calls
    r = client.chat([{"role": "user", "content": "hello"}, {**after, "content": "card 4111 1111 1111 1111"}],
                    user_id="u")
    assert ContextKeyword.calls == before + 1 and len(seen) == calls + 1
    assert seen[-1]["messages"][-1]["content"] == "card [REDACTED:CREDIT_CARD]"


@pytest.mark.parametrize("extra", [
    {"prediction": {"type": "content", "content": "EVIL bob@example.com"}},  # text riding upstream unchecked
    {"audio": {"voice": "x"}}, {"n": 2}, {"max_tokens": True},
])
def test_fields_that_would_pass_unchecked_or_be_dropped_are_refused(proxy, extra):
    client, seen = proxy
    calls = len(seen)
    with pytest.raises(ServiceInvalidInputError):
        client.chat([{"role": "user", "content": "hello"}], user_id="u", **extra)
    assert len(seen) == calls
    client.chat([{"role": "user", "content": "hello"}], user_id="u", temperature=0.2, seed=1, n=1)
    assert seen[-1]["temperature"] == 0.2 and seen[-1]["seed"] == 1


def test_stream_is_a_boolean():
    from pydantic import ValidationError

    from guardrails.service.schemas import ChatCompletionRequest

    with pytest.raises(ValidationError):  # "yes" used to stream
        ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"})


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42"}],  # no tool_call_id
    [{"role": "user", "content": "hi", "tool_call_id": "call_1"}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_bob@example.com 4111111111111111", "type": "function",
         "function": {"name": "lookup", "arguments": "{}"}}]}, {"role": "tool", "content": "x", "tool_call_id": "c"}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "send_to_bob@example.com", "arguments": "{}"}}]},
     {"role": "tool", "content": "x", "tool_call_id": "call_1"}],
])
def test_tool_fields_are_where_they_belong_and_are_identifiers(proxy, messages):
    client, seen = proxy
    calls = len(seen)
    with pytest.raises(ServiceInvalidInputError):
        client.chat(messages, user_id="u")
    assert len(seen) == calls


def test_upstream_metadata_reaches_the_client_only_as_identifiers_and_counts(proxy):
    client, _ = proxy
    r = client.chat([{"role": "user", "content": "ODDMETA"}], user_id="u", model="m-1")
    shown = json.dumps({k: v for k, v in r.items() if k != "railguard"})
    for leak in ("FORBIDDEN", "bob@example.com", "4111", "carol"):
        assert leak not in shown, leak
    assert r["model"] == "m-1" and r["usage"] == {"total_tokens": 3}
    assert r["choices"][0]["finish_reason"] in ("stop", "tool_calls")


@pytest.mark.parametrize("marker", ["STREAMERR", "CUTOFF"])
def test_an_upstream_stream_that_fails_or_stops_short_is_not_released(proxy, marker):
    """An in-stream error event was ignored and the partial text released as a complete answer; so was a stream
    cut off before its end."""
    client, _ = proxy
    with pytest.raises(ServiceUnavailableError, match="upstream"):
        list(client.chat_stream([{"role": "user", "content": marker}], user_id="u"))


def test_the_identifier_rule_is_the_chat_proxys_only():
    """/v1/check and /v1/screen/history take messages as the Guard does: their tool ids are not forwarded anywhere."""
    from guardrails.service.schemas import CheckBody

    body = CheckBody.model_validate({"user_id": "u", "messages": [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call 1", "function": {"name": "a b"}}]},
        {"role": "tool", "content": "x", "tool_call_id": "call 1"}]})
    assert body.messages[1].tool_call_id == "call 1"


def test_the_requested_model_name_is_an_identifier():
    from pydantic import ValidationError

    from guardrails.service.schemas import ChatCompletionRequest

    msgs = [{"role": "user", "content": "hi"}]
    for ok in ("gpt-4o", "org/name", "claude-3-5-sonnet@20240620"):
        assert ChatCompletionRequest.model_validate({"model": ok, "messages": msgs}).model == ok
    with pytest.raises(ValidationError):  # forwarded upstream and echoed back: not free text
        ChatCompletionRequest.model_validate({"model": "bad model bob@example.com", "messages": msgs})
