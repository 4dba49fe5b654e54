"""Model adapters for the ICL backend: local HF causal LM, OpenAI-compatible HTTP endpoint, LangChain chat model.

Each adapter turns chat messages + a label set into a probability per label. They are transports in the httpx
sense: the prompt logic lives once in `icl.py`; only "ask the model" differs.
- Local causal LM: exact label likelihoods (sum of label-token log-probs after the generation prompt), with
  the shared prompt prefix KV-cached across calls when demos do not change.
- OpenAI-compatible: one request builder and one parser shared by the sync and async clients; timeouts,
  bounded retries with backoff on 429/5xx/transport errors, a wall-clock deadline for the whole call that holds
  while a reply trickles in, errors that name the endpoint and status, and one pooled async client per event loop.
- LangChain: any BaseChatModel; `with_structured_output` (enum of labels) where the model supports it, else
  text parsed against the label set; a structured answer outside the label set (unvalidated, or refused by the
  schema's validation or LangChain's output parser) falls back to that text path too.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import ssl
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal

import httpx
from pydantic import ValidationError

from guardrails.client_transport import SYNC_TRACE, Deadline, PerLoop, describe
from guardrails.detector import offload, release_offload
from guardrails.errors import ConfigError, DetectorError

Messages = list[dict[str, str]]
MAX_REPLY_BYTES = 1 << 20  # a label reply is a few bytes; anything near this is not a chat completion


def parse_label(text: str, labels: Sequence[str]) -> str:
    """Map a model reply to one label: JSON {"label": ...}, exact match, or the one label the reply names
    without negating it ("it is benign, not spam"); a reply naming several is a DetectorError."""
    if not isinstance(text, str | None):
        raise DetectorError(f"model reply must be text, got {type(text).__name__}")
    s = (text or "").strip()
    try:
        obj = json.loads(s)
        if isinstance(obj, dict) and isinstance(obj.get("label"), str):
            s = obj["label"].strip()
    except (ValueError, TypeError, RecursionError):  # not JSON: prose, a 5000-digit number, "[" * 10**5
        pass
    low = s.lower().strip(" .'\"`*")
    for lab in labels:
        if low == lab.lower():
            return lab
    # a label is named as a whole word: "spam" is not named inside "crypto-spam" (a user category's name)
    said = {lab for lab in labels for m in re.finditer(rf"(?<![\w-]){re.escape(lab.lower())}(?![\w-])", low)
            if not _NEGATED.search(low[: m.start()])}
    if len(said) == 1:
        return said.pop()
    if said:  # "spam? No. benign": guessing would be a coin flip the fail mode should decide instead
        raise DetectorError(f"model reply names several labels ({len(said)}); refusing to guess")
    raise DetectorError(f"model reply is not one of the labels {list(labels)}")


_NEGATED = re.compile(r"(?:\bnot|\bno|n't|\bnever)\s+(?:a\s+|an\s+|the\s+)?$")


def one_hot(label: str, labels: Sequence[str]) -> dict[str, float]:
    return {lab: float(lab == label) for lab in labels}


class LocalLMAdapter:
    """Label likelihoods from a local HF causal LM (default: the embedded SmolLM2-135M-Instruct)."""

    def __init__(self, model: str | Any = "smollm2-135m-instruct", *, max_prompt_tokens: int = 3000) -> None:
        self.model_ref, self.max_prompt_tokens = model, max_prompt_tokens
        self._lm: Any = None
        self._prefix: tuple[tuple[int, ...], Any] | None = None  # (token ids, KV cache) of the last prompt
        self._lock = threading.Lock()  # the cached prefix is mutated (cropped) per call

    @property
    def lm(self) -> Any:
        if self._lm is None:
            if isinstance(self.model_ref, str):
                from guardrails.models import load_causal_lm

                self._lm = load_causal_lm(self.model_ref)
            else:
                self._lm = self.model_ref
        return self._lm

    def _prompt_ids(self, messages: Messages) -> list[int]:
        from guardrails.models.templates import encode_chat, template_render

        tok = self.lm.tokenizer  # contents read as text: a "<|im_end|>" in a text forges no answer
        ids = encode_chat(tok, messages, template_render(tok))
        if len(ids) > self.max_prompt_tokens:  # keep the card's head and the query's tail
            ids = ids[: self.max_prompt_tokens // 2] + ids[-self.max_prompt_tokens // 2 :]
        return ids

    def label_probs(self, messages: Messages, labels: Sequence[str]) -> dict[str, float]:
        import torch

        from guardrails.models import crop_cache

        lm = self.lm
        ids = self._prompt_ids(messages)
        # Everything before the last user turn is shared between texts when demos are fixed: cache its KV
        # once, run only the query, and crop the cache back after each label (no copies).
        split = max(1, min(self._shared_len(messages), len(ids) - 1))
        pre, rest = ids[:split], ids[split:]
        dev = lm.device
        with self._lock, torch.inference_mode():
            cache = self._prefix_cache(pre)
            try:
                out = _forward(lm.model, torch.tensor([rest], device=dev), cache)
                full = len(ids)
                base_logp = torch.log_softmax(out.logits[0, -1].float(), -1)
                scores = []
                end = self.end_of_answer
                for lab in labels:
                    # the answer is the label *and then the end of the turn*: without the end, a label that is a
                    # token prefix of another ("ben" of "benign") scored at least as high as it, on every text
                    lab_ids = lm.tokenizer(lab, add_special_tokens=False)["input_ids"] + ([end] if end is not None
                                                                                          else [])
                    lp = float(base_logp[lab_ids[0]])
                    if len(lab_ids) > 1:
                        o2 = _forward(lm.model, torch.tensor([lab_ids[:-1]], device=dev), cache)
                        crop_cache(cache, full)
                        lps = torch.log_softmax(o2.logits[0].float(), -1)
                        lp += float(sum(lps[j, lab_ids[j + 1]] for j in range(len(lab_ids) - 1)))
                    scores.append(lp)
            finally:
                crop_cache(cache, len(pre))
        p = torch.softmax(torch.tensor(scores), 0).tolist()
        return dict(zip(labels, p, strict=True))

    @functools.cached_property
    def end_of_answer(self) -> int | None:
        """The token the chat template puts right after an assistant answer (SmolLM2: ``<|im_end|>``), read from a
        rendered exchange; the tokenizer's EOS where the rendering does not show one; None if neither exists."""
        from guardrails.models.templates import encode_chat, template_render

        tok = self.lm.tokenizer
        probe = "Zq7 answer"
        said = tok(probe, add_special_tokens=False)["input_ids"]
        ids = encode_chat(tok, [{"role": "user", "content": "q"}, {"role": "assistant", "content": probe}],
                          template_render(tok, add_generation_prompt=False))
        at = next((i for i in range(len(ids) - len(said), -1, -1) if ids[i:i + len(said)] == said), None)
        after = ids[at + len(said)] if at is not None and at + len(said) < len(ids) else None
        return after if after is not None else getattr(tok, "eos_token_id", None)

    def _shared_len(self, messages: Messages) -> int:
        from guardrails.models.templates import encode_chat, template_render

        tok = self.lm.tokenizer
        head = encode_chat(tok, messages[:-1], template_render(tok, add_generation_prompt=False))
        return min(len(head), self.max_prompt_tokens // 2) - 1

    def _prefix_cache(self, pre: list[int]) -> Any:
        import torch

        key = tuple(pre)
        if self._prefix is not None and self._prefix[0] == key:
            return self._prefix[1]
        from transformers import DynamicCache

        cache = DynamicCache()
        _forward(self.lm.model, torch.tensor([pre], device=self.lm.device), cache)
        self._prefix = (key, cache)
        return cache


def _forward(model: Any, ids: Any, cache: Any) -> Any:
    """One forward pass that appends to `cache` in place (transformers 5 renamed `past_key_values`)."""
    try:
        return model(ids, cache=cache, use_cache=True)
    except TypeError:
        return model(ids, past_key_values=cache, use_cache=True)


class OpenAICompatAdapter:
    """Any OpenAI-compatible `/chat/completions` endpoint (vLLM, llama.cpp server, OpenAI, ...)."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 2, backoff: float = 0.5, structured: bool = True, deadline: float | None = None,
                 transport: httpx.BaseTransport | None = None,
                 async_transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must be an http(s) URL, got {base_url!r}")
        if not (isinstance(timeout, int | float) and timeout > 0) or isinstance(timeout, bool):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ConfigError(f"max_retries must be an integer ≥ 0, got {max_retries!r}")
        if not isinstance(backoff, int | float) or backoff < 0:
            raise ConfigError(f"backoff must be a number ≥ 0, got {backoff!r}")
        if deadline is not None and not (isinstance(deadline, int | float) and deadline > 0):
            raise ConfigError(f"deadline must be a positive number of seconds, got {deadline!r}")
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
            raise DetectorError(f"{self.base_url}: malformed chat completion response") from None
        return one_hot(parse_label(content or "", labels), labels)

    def _retryable(self, status: int) -> bool:
        return status == 429 or status >= 500

    def _settle(self, status: int, body: bytes, labels: Sequence[str]) -> dict[str, float] | DetectorError:
        """One response, for both the sync and async loops: the parsed label probabilities, or a retryable
        error to back off on; a non-retryable error is raised at once. The error body is never quoted: an
        endpoint may echo the prompt (the user's text) back in it, and errors end up in decisions and logs."""
        if status < 400:
            return self._parse(body, labels)
        err = DetectorError(f"{self.base_url}/chat/completions returned HTTP {status}")
        if not self._retryable(status):
            raise err
        return err

    def _take(self, chunk: bytes, got: list[bytes], deadline: Deadline) -> None:
        got.append(chunk)
        if sum(map(len, got)) > MAX_REPLY_BYTES:
            raise DetectorError(f"{self.base_url}: reply larger than {MAX_REPLY_BYTES} bytes")
        if deadline.expired:  # also bounds a custom transport, between the chunks it delivers
            raise httpx.ReadTimeout(f"no complete reply within the {self.deadline:g} s deadline")

    def _why(self, exc: Exception) -> str:
        return describe(exc) if isinstance(exc, httpx.TransportError) else str(exc)

    def _out_of_time(self, last: Exception | None) -> DetectorError:
        """The deadline passed (during an attempt, or before the next one could start): the same error in both
        twins, whatever was reading when it ran out."""
        why = f" (last error: {self._why(last)})" if last is not None else ""
        return DetectorError(f"{self.base_url}: no answer within the {self.deadline:g} s deadline{why}")

    def _after(self, attempt: int, outcome: dict[str, float] | Exception,
               deadline: Deadline) -> float | tuple[dict[str, float]]:
        """One attempt's outcome (the label probabilities, or the error it ended with), for both twins:
        `(probs,)` to return, or the backoff before the next attempt. Raises after the last attempt, or when the
        pause would leave no time before the deadline."""
        if isinstance(outcome, dict):
            return (outcome,)
        if attempt >= self.max_retries:
            raise DetectorError(f"{self.base_url}: failed after {self.max_retries + 1} attempts: "
                                f"{self._why(outcome)}") from None
        pause = self.backoff * 2**attempt
        if not deadline.room_for(pause):
            raise self._out_of_time(outcome) from None
        return pause

    def _request(self, messages: Messages, labels: Sequence[str], deadline: Deadline) -> dict[str, Any]:
        return {"method": "POST", "url": f"{self.base_url}/chat/completions", "json": self._body(messages, labels),
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
                    outcome = exc
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
                outcome = exc
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


class LangChainAdapter:
    """Any LangChain `BaseChatModel`; structured output over the label enum when the model supports it."""

    def __init__(self, chat_model: Any, *, structured: bool = True) -> None:
        self.chat_model, self.structured = chat_model, structured

    @staticmethod
    def _lc_messages(messages: Messages) -> list[Any]:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
        return [kinds[m["role"]](content=m["content"]) for m in messages]

    def _schema(self, labels: Sequence[str]) -> Any:
        from pydantic import create_model

        return create_model("HarmLabel", label=(Literal[tuple(labels)], ...))  # type: ignore[arg-type,valid-type]

    def close(self) -> None:
        """Release this adapter's worker threads (see `Guard.close`); it stays usable."""
        release_offload(self)

    def label_probs(self, messages: Messages, labels: Sequence[str]) -> dict[str, float]:
        from langchain_core.exceptions import OutputParserException

        msgs = self._lc_messages(messages)
        if self.structured:
            try:
                runnable = self.chat_model.with_structured_output(self._schema(labels))
            except (NotImplementedError, AttributeError, TypeError):
                runnable = None
            if runnable is not None:
                try:
                    res = runnable.invoke(msgs)
                    lab = getattr(res, "label", None) or (res.get("label") if isinstance(res, dict) else None)
                    if isinstance(lab, str) and lab in labels:
                        return one_hot(lab, labels)
                except NotImplementedError:
                    pass
                except (ValidationError, OutputParserException):
                    # the model answered, but not with a label the schema admits ("crypto", a malformed tool call):
                    # the same fallback as an out-of-set label from a parser that does not validate, plain text
                    # parsed against the labels (a DetectorError if that names none)
                    pass
        reply = self.chat_model.invoke(msgs)
        return one_hot(parse_label(str(getattr(reply, "content", reply)), labels), labels)

    async def alabel_probs(self, messages: Messages, labels: Sequence[str]) -> dict[str, float]:
        return await offload(self, self.label_probs, messages, labels)  # its own pool (guardrails.offload)
