"""The client's sans-IO core: how each service call is built, retried and parsed, independent of any I/O.

It lives here (pure pydantic + httpx types, no FastAPI) so `guardrails.client` stays small and both client
twins share one copy of the protocol: a new endpoint is one `Core` method plus a one-line wrapper per twin.
Importing this module does not import the server (the package `__init__` is lazy).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from ..decision import Decision, Stage
from ..errors import ConfigError, InvalidInputError, UnknownUserError, VersionConflictError
from ..guard_types import HistoryScreen
from ..store.settings import AuditEntry, StoredSettings
from ..text import as_dicts, check_id, coerce_messages, coerce_text

ENV_URL, ENV_KEY = "RAILGUARD_URL", "RAILGUARD_API_KEY"
_AUDIT = TypeAdapter(list[AuditEntry])



def _stage(stage: Stage | str) -> Stage:
    """The stage as `Guard.check` reads it: an unknown one is the same typed error there and here."""
    try:
        return Stage(stage)
    except ValueError:
        raise InvalidInputError(f"unknown stage {stage!r}; expected one of {[s.value for s in Stage]}") from None

@dataclass(frozen=True)
class Op:
    """One request, fully described; `parse` turns a 2xx response into the typed result."""

    method: str
    path: str
    parse: Callable[[httpx.Response], Any]
    json: Any = None
    params: Mapping[str, Any] | None = None
    admin: bool = False
    retry_status: bool = True  # False where a repeat is expensive (chat generation)
    timeout: float | None = None
    headers: Mapping[str, str | bytes] | None = None


class Core:
    """Request building, retry policy and error mapping shared by both clients."""

    def __init__(self, base_url: str | None, api_key: str | None, admin_key: str | None, max_retries: int,
                 backoff_s: float, backoff_max_s: float) -> None:
        self.base_url = (base_url or os.environ.get(ENV_URL) or "http://127.0.0.1:8080").rstrip("/")
        self.api_key = (api_key if api_key is not None else os.environ.get(ENV_KEY)) or None  # empty: no key
        self.admin_key = admin_key or None
        for what, key in (("api_key", self.api_key), ("admin_key", self.admin_key)):
            # never quoted: a key read from a file with its newline failed at the first request, in an error
            # quoting the header (the key) and read as "service unreachable"
            if key is not None and (not isinstance(key, str) or not _TOKEN.fullmatch(key)):
                raise ConfigError(f"{what} must be printable ASCII, without line breaks or surrounding spaces")
        self.max_retries, self.backoff_s, self.backoff_max_s = max_retries, backoff_s, backoff_max_s

    def headers(self, op: Op) -> httpx.Headers:
        key = self.admin_key if op.admin else self.api_key
        merged = {**({"Authorization": f"Bearer {key}"} if key else {}), **(op.headers or {})}
        return httpx.Headers([(k.encode("ascii"), v if isinstance(v, bytes) else v.encode("ascii"))
                              for k, v in merged.items()])

    def delay(self, attempt: int) -> float:
        return min(self.backoff_max_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)

    def should_retry(self, op: Op, attempt: int, resp: httpx.Response | None, exc: Exception | None) -> bool:
        if attempt >= self.max_retries:
            return False
        if exc is not None:  # only failures where the request never reached the server
            return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        return op.retry_status and resp is not None and resp.status_code >= 500

    # ---- operations ----------------------------------------------------------------------------------
    @staticmethod
    def check(content: Any, user_id: str, session_id: str | None,
              stage: Stage | str, metadata: Mapping[str, Any] | None) -> Op:
        body: dict[str, Any] = {"user_id": user_id, "session_id": session_id}
        # what Guard.check accepts (str, UTF-8 bytes, role/content dicts, (role, content) pairs, LangChain
        # messages), with its typed errors, as the wire's text or role/content dicts
        if isinstance(content, str | bytes | bytearray | memoryview):
            body["text"] = coerce_text(content)
        else:
            body["messages"] = as_dicts(coerce_messages(content))
        if metadata:
            body["metadata"] = dict(metadata)
        return Op("POST", f"/v1/check/{_stage(stage).value}", lambda r: Decision.model_validate_json(r.content),
                   json=body)

    @staticmethod
    def screen_history(messages: Sequence[Mapping[str, Any]], user_id: str, session_id: str | None) -> Op:
        body = {"user_id": user_id, "session_id": session_id, "messages": [dict(m) for m in messages],
                "include_last": True}

        def parse(r: httpx.Response) -> HistoryScreen:
            out = r.json()
            blocked = out.get("blocked")
            return HistoryScreen(messages=out["messages"],
                                 decisions=[(d["index"], Decision.model_validate(d["decision"]))
                                            for d in out["decisions"]],
                                 blocked=None if blocked is None else Decision.model_validate(blocked))

        return Op("POST", "/v1/screen/history", parse, json=body)

    @staticmethod
    def _settings(r: httpx.Response) -> StoredSettings:
        return StoredSettings.model_validate_json(r.content)

    def get_settings(self, user_id: str) -> Op:
        return Op("GET", f"/v1/users/{_seg(user_id)}/settings", self._settings)

    def put_settings(self, user_id: str, settings: Mapping[str, Any], expected_version: int | None) -> Op:
        return Op("PUT", f"/v1/users/{_seg(user_id)}/settings", self._settings,
                   json={"settings": dict(settings), "expected_version": expected_version})

    def delete_settings(self, user_id: str) -> Op:
        return Op("DELETE", f"/v1/users/{_seg(user_id)}/settings", lambda r: None)

    @staticmethod
    def erase_user(user_id: str) -> Op:
        return Op("POST", f"/v1/users/{_seg(user_id)}/erase", lambda r: dict(r.json()["erased"]))

    @staticmethod
    def get_section(user_id: str, section: str) -> Op:
        return Op("GET", f"/v1/users/{_seg(user_id)}/settings/{_seg(section)}", lambda r: r.json())

    def put_section(self, user_id: str, section: str, data: Mapping[str, Any], expected_version: int | None) -> Op:
        return Op("PUT", f"/v1/users/{_seg(user_id)}/settings/{_seg(section)}", self._settings,
                   json={"data": dict(data), "expected_version": expected_version})

    def delete_section(self, user_id: str, section: str) -> Op:
        return Op("DELETE", f"/v1/users/{_seg(user_id)}/settings/{_seg(section)}", self._settings)

    def apply_operation(self, user_id: str, section: str, operation: str, body: Mapping[str, Any]) -> Op:
        # not retried on a 5xx: an operation need not be idempotent ("block" a second time is refused)
        return Op("POST", f"/v1/users/{_seg(user_id)}/settings/{_seg(section)}/{_seg(operation)}", self._settings,
                  json=dict(body), retry_status=False)

    def update_section(self, user_id: str, section: str, fn: Callable[[dict[str, Any]], Mapping[str, Any]],
                       max_retries: int) -> Generator[Op | float, Any, StoredSettings]:
        """Sans-IO read-modify-write: yields requests (or a float: sleep that long) and gets their results."""
        for attempt in range(max_retries + 1):
            try:
                cur = yield self.get_section(user_id, section)
                data, version = cur["data"], cur["version"]
            except UnknownUserError:
                data, version = {}, 0
            try:
                return (yield self.put_section(user_id, section, fn(dict(data)), version))
            except VersionConflictError:
                if attempt >= max_retries:
                    raise
                yield self.delay(min(attempt, 4)) / 10
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def audit(user_id: str, limit: int) -> Op:
        return Op("GET", f"/v1/users/{_seg(user_id)}/audit", lambda r: _AUDIT.validate_json(r.content),
                   params={"limit": limit})

    @staticmethod
    def get(path: str) -> Op:
        return Op("GET", path, lambda r: r.json())

    @staticmethod
    def create_tenant(tenant_id: str) -> Op:
        return Op("POST", "/v1/admin/tenants", lambda r: r.json(), json={"tenant_id": tenant_id}, admin=True,
                   retry_status=False)

    @staticmethod
    def chat(messages: Sequence[Mapping[str, Any]], user_id: str, session_id: str | None,
             params: Mapping[str, Any], timeout: float | None) -> Op:
        body = {**params, "messages": [dict(m) for m in messages], "user": user_id, "stream": False}
        return Op("POST", "/v1/chat/completions", lambda r: r.json(), json=body, retry_status=False,
                   timeout=timeout, headers={"X-Railguard-Session-Id": _header_id(session_id)} if session_id else None)


_TOKEN = re.compile(r"[!-~](?:[ -~]{0,4094}[!-~])?")  # what an HTTP header carries: inner spaces are fine


def _header_id(session_id: str) -> bytes:
    """A session id as the chat proxy's header carries it: UTF-8 bytes (the service reads them so). An id HTTP
    cannot carry in a header (surrounding spaces) or no id at all is an InvalidInputError here, not a transport
    error that read as "service unreachable" and was retried."""
    check_id(session_id, "session_id")
    if session_id != session_id.strip(" \t"):
        raise InvalidInputError("a session id sent to the chat proxy cannot start or end with a space or tab")
    return session_id.encode("utf-8")


def _seg(value: str) -> str:
    """Path segments are percent-encoded: a user id may contain '/', '?', '#' or spaces. The ids '.' and '..'
    are encoded too: left as they are, the HTTP client resolves them as path steps (``erase_user("..")`` posted to
    ``/v1/erase``)."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"an id in the URL must be a non-empty string, got {type(value).__name__}")
    if value in (".", ".."):
        return "%2E" * len(value)
    try:
        return quote(value, safe="")
    except UnicodeEncodeError:  # a lone surrogate: no URL can carry it
        raise InvalidInputError("an id in the URL must be UTF-8 text (it holds an unpaired surrogate)") from None


def sse_line(line: str) -> dict[str, Any] | None | bool:
    """One SSE line → a chunk object, None (not data), or False at the `[DONE]` sentinel."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    return False if payload == "[DONE]" else json.loads(payload)
