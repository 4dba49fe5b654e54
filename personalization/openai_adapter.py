"""The OpenAI-compatible HTTP adapter of the ICL backend (`personalization.adapters` re-exports it).

One request builder and one parser shared by the sync and async clients; timeouts, bounded retries with backoff on
the statuses worth one (408/425/429/500/502/503/504) and on transport errors, a wall-clock deadline for the whole
call that holds while a reply trickles in, errors that name the endpoint (never its credentials) and status, and
one pooled async client per event loop.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import Sequence
from typing import Any

import httpx

from guardrails.client_transport import SYNC_TRACE, Deadline, PerLoop, describe
from guardrails.errors import ConfigError, DetectorError

from .labels import MAX_REPLY_BYTES, Messages, one_hot, parse_label

_TOKEN = re.compile(r"[!-~]{1,4096}")
#: answers worth a retry: a timeout, too early, rate limited, a server or gateway fault; not 501/505 (never works)
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def _seconds(v: object) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and 0 < v <= 86_400


_INVALID = "<invalid URL>"


def _shown(url: object) -> str:
    """The URL as errors and logs show it: scheme, host, port and path only (no user name, password or query,
    where a key may ride: "?api-key=..."); an unparseable one, or one with no http(s) scheme or no host, is not
    quoted at all."""
    try:
        u = httpx.URL(url) if isinstance(url, str) else None
    except (httpx.InvalidURL, ValueError, TypeError):
        u = None
    if u is None or u.scheme not in ("http", "https") or not u.host:
        return _INVALID  # "user:secret@host" parses with the scheme "user"
    return f"{u.scheme}://{u.netloc.decode('ascii', 'replace')}{u.path}"[:200]


class OpenAICompatAdapter:
    """Any OpenAI-compatible `/chat/completions` endpoint (vLLM, llama.cpp server, OpenAI, ...).

    ``base_url`` is the API root: "/chat/completions" is joined to its path, its query kept ("?api-version=...").
    Credentials: ``api_key`` (a Bearer token), or "user:password@" in ``base_url`` (sent as Basic auth, removed
    from the URL). A key put in the query stays in the URL, which httpx logs at INFO: pass it as ``api_key``."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 2, backoff: float = 0.5, structured: bool = True, deadline: float | None = None,
                 transport: httpx.BaseTransport | None = None,
                 async_transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.shown_url = _shown(base_url)
        if self.shown_url == _INVALID or not base_url.lower().startswith(("http://", "https://")):
            raise ConfigError(f"base_url must be an http(s) URL with a host, got {self.shown_url!r}")
        if not _seconds(timeout):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or not 0 <= max_retries <= 100:
            raise ConfigError(f"max_retries must be an integer from 0 to 100, got {max_retries!r}")
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or not 0 <= backoff <= 3600:
            raise ConfigError(f"backoff must be a number of seconds from 0 to 3600, got {backoff!r}")
        if deadline is not None and not _seconds(deadline):
            raise ConfigError(f"deadline must be a positive number of seconds, got {deadline!r}")
        if not isinstance(structured, bool):
            raise ConfigError(f"structured must be true or false, got {type(structured).__name__}")
        if not isinstance(model, str) or not model:
            raise ConfigError("model must be a non-empty string")
        if api_key is not None and (not isinstance(api_key, str) or not _TOKEN.fullmatch(api_key)):
            # never quoted: a key read from a file with its newline failed at the first call, in an error that
            # named the whole key (and was retried as a network fault)
            raise ConfigError("api_key must be printable ASCII without spaces or line breaks")
        url = httpx.URL(base_url)
        if url.fragment:  # everything after '#' is never sent: the POST went to the URL before it
            raise ConfigError(f"base_url must not have a #fragment, got {self.shown_url!r}")
        if url.userinfo and api_key is not None:
            raise ConfigError("give the credentials as api_key or in base_url (user:password@), not both")
        # The path is joined inside the URL, so a query ("?api-version=...") stays a query: appended to the string,
        # "/chat/completions" landed inside it. User and password travel as Basic auth, never in the URL itself
        # (httpx logs each request's URL at INFO).
        self._auth = httpx.BasicAuth(url.username, url.password) if url.userinfo else None
        path, query = url.raw_path.partition(b"?")[::2]  # as written: "%25" and "%2F" stay encoded
        raw_path = path.rstrip(b"/") + b"/chat/completions" + (b"?" + query if query else b"")
        self.endpoint = url.copy_with(userinfo=b"", raw_path=raw_path)
        self.base_url, self.model = base_url.rstrip("/"), model
        self.timeout, self.max_retries, self.backoff, self.structured = timeout, max_retries, backoff, structured
        # httpx timeouts bound each read, not a reply trickled byte by byte: a wall-clock budget for the whole call
        self.deadline = float(deadline) if deadline is not None else timeout * (max_retries + 1)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport, self._async_transport = transport, async_transport
        self._aclients: PerLoop[httpx.AsyncClient] = PerLoop(self._new_aclient)
        # One TLS context for all of this adapter's clients, built here rather than on an event loop: loading the
        # CA bundle takes 15-30 ms, which every sync call and every loop's first call would pay again.
        self._verify: ssl.SSLContext | bool = (
            True if transport is not None and async_transport is not None else httpx.create_ssl_context())

    # -- shared core -------------------------------------------------------------------------------------
    def _body(self, messages: Messages, labels: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": 16}
        if self.structured:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "harm_label", "strict": True, "schema": {
                    "type": "object", "additionalProperties": False, "required": ["label"],
                    "properties": {"label": {"type": "string", "enum": list(labels)}}}}}
        return body

    def _parse(self, body: bytes, labels: Sequence[str]) -> dict[str, float]:
        try:
            content = json.loads(body)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            raise DetectorError(f"{self.shown_url}: malformed chat completion response") from None
        return one_hot(parse_label(content or "", labels), labels)

    def _retryable(self, status: int) -> bool:
        return status in RETRY_STATUSES

    def _settle(self, status: int, body: bytes, labels: Sequence[str]) -> dict[str, float] | DetectorError:
        """One response, for both the sync and async loops: the parsed label probabilities, or a retryable
        error to back off on; a non-retryable error is raised at once. The error body is never quoted: an
        endpoint may echo the prompt (the user's text) back in it, and errors end up in decisions and logs."""
        if 200 <= status < 300:  # not a redirect's body (httpx does not follow them here)
            return self._parse(body, labels)
        err = DetectorError(f"{self.shown_url}/chat/completions returned HTTP {status}")
        if not self._retryable(status):
            raise err
        return err

    def _take(self, chunk: bytes, got: list[bytes], deadline: Deadline) -> None:
        got.append(chunk)
        if sum(map(len, got)) > MAX_REPLY_BYTES:
            raise DetectorError(f"{self.shown_url}: reply larger than {MAX_REPLY_BYTES} bytes")
        if deadline.expired:  # also bounds a custom transport, between the chunks it delivers
            raise httpx.ReadTimeout(f"no complete reply within the {self.deadline:g} s deadline")

    def _transport_error(self, exc: httpx.TransportError) -> httpx.TransportError:
        """A transport failure to retry; one that the same request would meet again (a header value httpx refuses,
        an unsupported scheme) is raised at once."""
        if isinstance(exc, httpx.LocalProtocolError | httpx.UnsupportedProtocol):
            raise self._local_error(exc) from None
        return exc

    def _local_error(self, exc: Exception) -> DetectorError:
        # by type only: httpx quotes the offending header value (the Authorization header: the API key)
        return DetectorError(f"{self.shown_url}: request or reply refused by the HTTP client ({type(exc).__name__})")

    def _why(self, exc: Exception) -> str:
        return describe(exc) if isinstance(exc, httpx.TransportError) else str(exc)

    def _out_of_time(self, last: Exception | None) -> DetectorError:
        """The deadline passed (during an attempt, or before the next one could start): the same error in both
        twins, whatever was reading when it ran out."""
        why = f" (last error: {self._why(last)})" if last is not None else ""
        return DetectorError(f"{self.shown_url}: no answer within the {self.deadline:g} s deadline{why}")

    def _after(self, attempt: int, outcome: dict[str, float] | Exception,
               deadline: Deadline) -> float | tuple[dict[str, float]]:
        """One attempt's outcome (the label probabilities, or the error it ended with), for both twins:
        `(probs,)` to return, or the backoff before the next attempt. Raises after the last attempt, or when the
        pause would leave no time before the deadline."""
        if isinstance(outcome, dict):
            return (outcome,)
        if attempt >= self.max_retries:
            raise DetectorError(f"{self.shown_url}: failed after {self.max_retries + 1} attempts: "
                                f"{self._why(outcome)}") from None
        pause = self.backoff * 2**attempt
        if not deadline.room_for(pause):
            raise DetectorError(f"{self.shown_url}: failed after {attempt + 1} attempt(s), and the next backoff "
                                f"({pause:g} s) would pass the {self.deadline:g} s deadline: "
                                f"{self._why(outcome)}") from None
        return pause

    def _request(self, messages: Messages, labels: Sequence[str], deadline: Deadline) -> dict[str, Any]:
        return {"method": "POST", "url": self.endpoint, "json": self._body(messages, labels), "auth": self._auth,
                "timeout": deadline.clip(httpx.Timeout(self.timeout))}

    # -- sync / async shells -----------------------------------------------------------------------------
    # The deadline bounds the whole call in both: async by `asyncio.timeout` around each attempt, sync by
    # clipping every socket read/write of the call to what is left of it (`Deadline.bounding_io`, with
    # `SYNC_TRACE` on the request), so a reply trickled byte by byte, status line and headers included, stops
    # at the deadline in the thread that reads it, and httpx closes that connection. See
    # `guardrails.client_transport` for why not a watchdog or a worker thread.
    def label_probs(self, messages: Messages, labels: Sequence[str]) -> dict[str, float]:
        last: Exception | None = None
        deadline = Deadline(self.deadline)
        with deadline.bounding_io(), httpx.Client(timeout=self.timeout, headers=self._headers, verify=self._verify,
                                                  transport=self._transport) as client:
            for attempt in range(self.max_retries + 1):
                outcome: dict[str, float] | Exception
                try:
                    got: list[bytes] = []
                    with client.stream(**self._request(messages, labels, deadline), extensions=SYNC_TRACE) as resp:
                        for chunk in resp.iter_bytes():
                            self._take(chunk, got, deadline)
                    outcome = self._settle(resp.status_code, b"".join(got), labels)
                except httpx.TransportError as exc:  # timeouts, connection errors, the deadline
                    if deadline.expired:
                        raise self._out_of_time(last) from None
                    outcome = self._transport_error(exc)
                except httpx.HTTPError as exc:  # a body that does not decode (bad gzip), ...: not a label
                    raise self._local_error(exc) from None
                step = self._after(attempt, outcome, deadline)
                if isinstance(step, tuple):
                    return step[0]
                last = outcome if isinstance(outcome, Exception) else None  # (an error whenever step is a pause)
                time.sleep(step)
        raise AssertionError("unreachable: _after raises after the last attempt")

    async def alabel_probs(self, messages: Messages, labels: Sequence[str]) -> dict[str, float]:
        last: Exception | None = None
        deadline = Deadline(self.deadline)
        client = self._aclients.get()  # one per event loop: pooled connections, no TLS setup per call
        for attempt in range(self.max_retries + 1):
            limit = deadline.atimeout()
            outcome: dict[str, float] | Exception
            try:
                async with limit:
                    got: list[bytes] = []
                    async with client.stream(**self._request(messages, labels, deadline)) as resp:
                        async for chunk in resp.aiter_bytes():
                            self._take(chunk, got, deadline)
                outcome = self._settle(resp.status_code, b"".join(got), labels)
            except (httpx.TransportError, TimeoutError) as exc:
                if limit.expired() or deadline.expired:
                    raise self._out_of_time(last) from None
                if not isinstance(exc, httpx.TransportError):
                    raise
                outcome = self._transport_error(exc)
            except httpx.HTTPError as exc:
                raise self._local_error(exc) from None
            step = self._after(attempt, outcome, deadline)
            if isinstance(step, tuple):
                return step[0]
            last = outcome if isinstance(outcome, Exception) else None  # (an error whenever step is a pause)
            await asyncio.sleep(step)
        raise AssertionError("unreachable: _after raises after the last attempt")

    def _new_aclient(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout, headers=self._headers, verify=self._verify,
                                 transport=self._async_transport)

    async def aclose(self) -> None:
        """Close the async clients: this event loop's now, other running loops' on their loops."""
        await self._aclients.aclose()

    def close(self) -> None:
        """Sync, best effort: close the async clients of event loops still running (each loop's is also closed
        when that loop shuts down). The sync twin keeps no connection between calls."""
        self._aclients.close()
