"""Model adapters for the ICL backend: local HF causal LM, OpenAI-compatible HTTP endpoint, LangChain chat model.

Each adapter turns chat messages + a label set into a probability per label. They are transports in the httpx
sense: the prompt logic lives once in `icl.py`; only "ask the model" differs.
- Local causal LM: exact label likelihoods (sum of label-token log-probs after the generation prompt), with
  the shared prompt prefix KV-cached across calls when demos do not change.
- OpenAI-compatible (`personalization.openai_adapter`, re-exported here): timeouts, bounded retries, a deadline
  for the whole call, errors that name the endpoint (never its credentials) and status.
- LangChain: any BaseChatModel; `with_structured_output` (enum of labels) where the model supports it, else
  text parsed against the label set; a structured answer outside the label set (unvalidated, or refused by the
  schema's validation or LangChain's output parser) falls back to that text path too.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import ValidationError

from guardrails.detector import offload, release_offload
from guardrails.errors import ConfigError

from .labels import MAX_REPLY_BYTES, Messages, one_hot, parse_label
from .openai_adapter import OpenAICompatAdapter

__all__ = ["MAX_REPLY_BYTES", "LangChainAdapter", "LocalLMAdapter", "Messages", "OpenAICompatAdapter", "one_hot",
           "parse_label"]


class LocalLMAdapter:
    """Label likelihoods from a local HF causal LM (default: the embedded SmolLM2-135M-Instruct)."""

    def __init__(self, model: str | Any = "smollm2-135m-instruct", *, max_prompt_tokens: int = 3000) -> None:
        if isinstance(max_prompt_tokens, bool) or not isinstance(max_prompt_tokens, int) or max_prompt_tokens < 64:
            raise ConfigError(f"max_prompt_tokens must be an integer >= 64, got {max_prompt_tokens!r}")
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

    def forget_prefix(self) -> bool:
        """Drop the cached prompt prefix (it holds a profile's examples as token ids and KV); whether one was held."""
        with self._lock:
            held, self._prefix = self._prefix is not None, None
        return held

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


def _reply_text(reply: Any) -> str:
    """A chat model's answer as text: a message's text parts only (not its reasoning parts, which may name other
    labels), or the reply itself when it is a string."""
    content = getattr(reply, "content", reply)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) if isinstance(p, dict)
                       and p.get("type", "text") == "text" else "" for p in content)
    return str(content)


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
            except (NotImplementedError, AttributeError, TypeError, ValueError):  # ValueError: schema refused
                runnable = None
            if runnable is not None:
                try:
                    res = runnable.invoke(msgs)
                    lab = getattr(res, "label", None) or (res.get("label") if isinstance(res, dict) else None)
                    if isinstance(lab, str) and lab in labels:
                        return one_hot(lab, labels)
                except (NotImplementedError, ValueError):  # a provider that refuses the schema when called
                    pass
                except (ValidationError, OutputParserException):
                    # the model answered, but not with a label the schema admits ("crypto", a malformed tool call):
                    # the same fallback as an out-of-set label from a parser that does not validate, plain text
                    # parsed against the labels (a DetectorError if that names none)
                    pass
        reply = self.chat_model.invoke(msgs)
        return one_hot(parse_label(_reply_text(reply), labels), labels)

    async def alabel_probs(self, messages: Messages, labels: Sequence[str]) -> dict[str, float]:
        return await offload(self, self.label_probs, messages, labels)  # its own pool (guardrails.offload)
