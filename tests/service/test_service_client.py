"""Client behaviour without a server (httpx.MockTransport): request shapes, retries, backoff, typed errors."""

from __future__ import annotations

import json

import httpx
import pytest

from guardrails import Action, Decision
from guardrails.client import (
    AsyncRailguardClient,
    AuthenticationError,
    RailguardClient,
    ServiceError,
    ServiceInvalidInputError,
    ServiceUnavailableError,
    ServiceVersionConflictError,
)
from guardrails.errors import (
    ConfigError,
    ErasureBusyError,
    InvalidInputError,
    RailguardError,
    VersionConflictError,
)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

DECISION = {"action": "warn", "stage": "output", "findings": [], "user_id": "u", "session_id": "s",
            "latency_ms": 1.0, "shadow": False, "error": None}
SETTINGS = {"tenant_id": "t", "user_id": "u", "version": 2, "settings": {"guard": {"shadow": True}},
            "updated_at": None}


def err(status: int, code: str, details=None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": "m", "status": status,
                                                  "details": details}})


class Script:
    """A MockTransport handler that plays back responses (or raises) and records requests."""

    def __init__(self, *steps) -> None:
        self.steps, self.requests = list(steps), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step


def client(script: Script, **kw) -> RailguardClient:
    kw.setdefault("max_retries", 3)
    return RailguardClient("http://rg.test", api_key="rgk_k.s", transport=httpx.MockTransport(script),
                           backoff_s=0.001, **kw)


def test_check_request_shape_and_result():
    s = Script(httpx.Response(200, json=DECISION))
    with client(s) as c:
        d = c.check([{"role": "user", "content": "hi"}], user_id="u", session_id="s", stage="output")
    assert isinstance(d, Decision) and d.action is Action.WARN
    req = s.requests[0]
    assert req.method == "POST" and req.url.path == "/v1/check/output"
    assert req.headers["authorization"] == "Bearer rgk_k.s"
    assert json.loads(req.content) == {"user_id": "u", "session_id": "s",
                                       "messages": [{"role": "user", "content": "hi"}]}


def test_path_segments_are_encoded():
    s = Script(httpx.Response(200, json=SETTINGS))
    with client(s) as c:
        c.get_settings("a/b c?")
    assert s.requests[0].url.raw_path == b"/v1/users/a%2Fb%20c%3F/settings"


def test_retries_5xx_with_backoff_then_succeeds():
    s = Script(httpx.Response(503), err(502, "x"), httpx.Response(200, json=DECISION))
    with client(s) as c:
        assert c.check("hi", user_id="u").action is Action.WARN
    assert len(s.requests) == 3


def test_gives_up_after_max_retries():
    s = Script(err(500, "internal_error"))
    with client(s, max_retries=2) as c, pytest.raises(ServiceUnavailableError) as e:
        c.check("hi", user_id="u")
    assert len(s.requests) == 3 and e.value.status_code == 500 and e.value.code == "internal_error"


def test_connect_errors_retry_but_read_timeouts_do_not():
    s = Script(httpx.ConnectError("refused"))
    with client(s, max_retries=2) as c, pytest.raises(ServiceUnavailableError) as e:
        c.health()
    assert len(s.requests) == 3 and e.value.status_code is None
    s = Script(httpx.ReadTimeout("slow"))  # the request may have been processed: not repeated
    with client(s) as c, pytest.raises(ServiceUnavailableError):
        c.check("hi", user_id="u")
    assert len(s.requests) == 1


@pytest.mark.parametrize(("resp", "exc", "base"), [
    (err(400, "invalid_json"), ServiceInvalidInputError, InvalidInputError),
    (err(413, "payload_too_large"), ServiceInvalidInputError, InvalidInputError),
    (err(415, "unsupported_media_type"), ServiceInvalidInputError, InvalidInputError),
    (err(422, "invalid_request"), ServiceInvalidInputError, InvalidInputError),
    (err(401, "invalid_api_key"), AuthenticationError, PermissionError),
    (err(403, "forbidden"), AuthenticationError, PermissionError),
    (err(409, "version_conflict", {"expected": 1, "actual": 4}), ServiceVersionConflictError, VersionConflictError),
    (httpx.Response(418, text="teapot"), ServiceError, RailguardError),
    # what a local store or Guard raises for the same failure (session 25 audit: a bare ServiceError or
    # ServiceInvalidInputError, which `except ConfigError` / `except ErasureBusyError` missed)
    (err(422, "invalid_settings"), ServiceInvalidInputError, ConfigError),
    (err(409, "erasure_busy"), ServiceError, ErasureBusyError),
    (httpx.Response(409, json={"error": "boom"}), ServiceError, RailguardError),  # not our error shape
])
def test_4xx_are_typed_and_never_retried(resp, exc, base):
    s = Script(resp)
    with client(s) as c, pytest.raises(exc) as e:
        c.put_settings("u", {"guard": {}}, expected_version=1)
    assert isinstance(e.value, base) and isinstance(e.value, ServiceError)
    assert e.value.status_code == resp.status_code and len(s.requests) == 1
    if exc is ServiceVersionConflictError:
        assert (e.value.expected, e.value.actual) == (1, 4)


def test_update_section_retries_conflicts():
    s = Script(httpx.Response(200, json={"section": "guard", "data": {"shadow": False}, "version": 1}),
               err(409, "version_conflict", {"expected": 1, "actual": 2}),
               httpx.Response(200, json={"section": "guard", "data": {"shadow": False}, "version": 2}),
               httpx.Response(200, json=SETTINGS))
    with client(s) as c:
        out = c.update_section("u", "guard", lambda g: {**g, "shadow": True})
    assert out.version == 2
    puts = [r for r in s.requests if r.method == "PUT"]
    assert [json.loads(r.content)["expected_version"] for r in puts] == [1, 2]
    assert json.loads(puts[-1].content)["data"] == {"shadow": True}


def test_env_defaults_and_timeout(monkeypatch):
    monkeypatch.setenv("RAILGUARD_URL", "http://from-env.test")
    monkeypatch.setenv("RAILGUARD_API_KEY", "rgk_env.key")
    s = Script(httpx.Response(200, json={"status": "ok"}))
    with RailguardClient(transport=httpx.MockTransport(s), timeout=1.5) as c:
        c.health()
    req = s.requests[0]
    assert req.url.host == "from-env.test" and req.headers["authorization"] == "Bearer rgk_env.key"
    assert req.extensions["timeout"]["read"] == 1.5


def test_unreachable_server():
    with RailguardClient(f"http://127.0.0.1:{free_port()}", api_key="k", max_retries=1, backoff_s=0.001) as c:
        with pytest.raises(ServiceUnavailableError):
            c.check("hi", user_id="u")
        assert c.ready() is False


async def test_async_twin_same_behaviour():
    calls: list[httpx.Request] = []
    replies = [httpx.Response(503), httpx.Response(200, json=DECISION), err(422, "invalid_input")]

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return replies.pop(0)

    async with AsyncRailguardClient("http://rg.test", api_key="rgk_k.s", backoff_s=0.001,
                                    transport=httpx.MockTransport(handler)) as c:
        assert (await c.check("hi", user_id="u", stage="output")).action is Action.WARN
        with pytest.raises(ServiceInvalidInputError):
            await c.check("x", user_id="u")
    assert len(calls) == 3 and calls[0].url.path == "/v1/check/output"


def test_check_takes_what_guard_check_takes_with_the_same_typed_errors():
    """The client converts content as `Guard.check` reads it (session 25 audit: LangChain messages were sent as
    pydantic dumps the service refused, (role, content) pairs raised ValueError, invalid UTF-8 UnicodeDecodeError,
    None a TypeError), and refuses what the Guard refuses before sending anything."""
    from langchain_core.messages import AIMessage, HumanMessage

    s = Script(httpx.Response(200, json=DECISION))
    with client(s) as c:
        c.check([AIMessage("hello"), HumanMessage("hi")], user_id="u")
        c.check([("user", "hi")], user_id="u")
        c.check(b"caf\xc3\xa9", user_id="u")
        sent = [json.loads(r.content) for r in s.requests]
        assert sent[0]["messages"] == [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "hi"}]
        assert sent[1]["messages"] == [{"role": "user", "content": "hi"}] and sent[2]["text"] == "caf\u00e9"
        for bad in (b"\xff\xfe", None, "", [], [{"role": "robot", "content": "x"}], "x" * 4_000_001):
            with pytest.raises(InvalidInputError):
                c.check(bad, user_id="u")
    assert len(s.requests) == 3  # nothing was sent for the refused ones


def _stream(*lines: str) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"},
                          content="".join(f"{line}\n\n" for line in lines).encode())


@pytest.mark.parametrize(("lines", "exc"), [
    (['data: {"error": {"code": "upstream_timeout", "message": "m", "status": 504}}', "data: [DONE]"],
     ServiceUnavailableError),
    (['data: {"error": {"code": "invalid_input", "message": "m", "status": 422}}', "data: [DONE]"],
     ServiceInvalidInputError),
    (["data: {not json"], ServiceUnavailableError),
])
async def test_chat_stream_errors_are_typed_in_both_twins(lines, exc):
    """The service reports a failure after the stream began as an in-stream error event: it used to be yielded as
    an ordinary chunk; a malformed event raised JSONDecodeError."""
    messages = [{"role": "user", "content": "hi"}]
    with client(Script(_stream('data: {"id": "c1", "choices": []}', *lines))) as c, pytest.raises(exc):
        list(c.chat_stream(messages, user_id="u"))

    async def handler(_request: httpx.Request) -> httpx.Response:
        return _stream(*lines)

    async with AsyncRailguardClient("http://rg.test", api_key="k", transport=httpx.MockTransport(handler)) as ac:
        with pytest.raises(exc):
            [chunk async for chunk in ac.chat_stream(messages, user_id="u")]


async def test_chat_stream_unreachable_is_a_service_unavailable_error():
    url, messages = f"http://127.0.0.1:{free_port()}", [{"role": "user", "content": "hi"}]
    with RailguardClient(url, api_key="k") as c, pytest.raises(ServiceUnavailableError):
        list(c.chat_stream(messages, user_id="u"))
    async with AsyncRailguardClient(url, api_key="k") as ac:
        with pytest.raises(ServiceUnavailableError):
            [chunk async for chunk in ac.chat_stream(messages, user_id="u")]


@pytest.mark.parametrize("key", ["rgk_abc\n", " rgk_abc", "rgk_é", "rgk\tabc"])
def test_a_malformed_api_key_is_refused_when_the_client_is_built_and_never_quoted(key):
    """A key read from a file with its newline failed at the first request with an error that quoted the header,
    and was read as "service unreachable" (review of session 33)."""
    from guardrails.client import RailguardClient
    from guardrails.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        RailguardClient("http://127.0.0.1:9", api_key=key)
    assert "rgk" not in str(err.value)
    RailguardClient("http://127.0.0.1:9", api_key="", admin_key="my admin key").close()  # empty: no key
    RailguardClient("http://127.0.0.1:9", api_key="rgk_a.b", admin_key="").close()


@pytest.mark.parametrize("user", [5, None, "", "\ud800"])
def test_an_id_no_url_can_carry_is_a_typed_error_before_any_request(user):
    from guardrails.client import RailguardClient
    from guardrails.errors import InvalidInputError

    with RailguardClient("http://127.0.0.1:9", max_retries=0) as c, pytest.raises(InvalidInputError):
        c.get_settings(user)  # type: ignore[arg-type]
