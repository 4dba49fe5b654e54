"""A LangChain chat model backed by a local Hugging Face causal LM (the embedded SmolLM2 by default).

Streaming uses transformers' TextIteratorStreamer with generation in a worker thread. Prefill observers
(`prefill_observers`) let a guard read the serving model's own activations during the prompt forward pass and
abort before any token is produced (NeuroFilter "fused" mode adds zero forward passes).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from ..errors import InvalidInputError, RailguardError
from ..text import content_text, message_role
from .kv import cache_keyword
from .loader import LoadedCausalLM, load_causal_lm
from .registry import DEFAULT_CHAT_MODEL
from .templates import encode_chat, template_render

_ROLES = ("system", "user", "assistant", "tool")


class PrefillBlocked(RailguardError):
    """Raised from inside the prompt forward pass by an observer whose verdict is block; carries the Decision."""

    def __init__(self, decision: Any, message: str = "blocked during prefill") -> None:
        super().__init__(message)
        self.decision = decision


class PrefillObserver(Protocol):
    """Attach hooks for the coming generate() call; return a function that detaches them.

    An observer may also offer ``attach_prefilled(lm, input_ids, messages) -> (detach, cache)``: it then runs the head
    of the prompt's prefill itself (reading what it needs beside the prompt in that forward) and generation continues
    from ``cache`` (None: it ran nothing, generate as usual). `LocalChatModel` asks the first observer that offers it,
    before attaching the others, whose hooks then see generation's own forward: the prompt's last tokens only."""

    def attach(self, lm: LoadedCausalLM, input_ids: Any, messages: list[dict[str, str]]) -> Callable[[], None]: ...


def to_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages → chat-template dicts (content parts read as `content_text` reads them, so the model
    sees the text the Guard checks). Tool calls of AI messages are rendered as text."""
    out = []
    for i, m in enumerate(messages):
        role = message_role(m)  # as the Guard reads it: a ChatMessage's own role, never "user" by default
        if role not in _ROLES:
            raise InvalidInputError(f"messages[{i}]: unsupported message role {str(role)[:40]!r}")
        content = m.content if isinstance(m.content, str) else str(content_text(m.content))
        if isinstance(m, AIMessage) and m.tool_calls and not content:
            content = "; ".join(f"call {c['name']}({c['args']})" for c in m.tool_calls)
        out.append({"role": str(role), "content": content})
    return out


class LocalChatModel(BaseChatModel):
    """`BaseChatModel` over a local HF model: greedy decoding by default, chat template, token streaming."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_name: str = DEFAULT_CHAT_MODEL
    device: str | None = None
    max_new_tokens: int = Field(default=96, ge=1, le=32_768)  # 0 failed inside generate, after the guard's writes
    temperature: float = Field(default=0.0, ge=0.0)
    # > 1 discourages repeating tokens (HF `repetition_penalty`); small greedy models otherwise loop on a phrase
    repetition_penalty: float = Field(default=1.0, gt=0)
    prefill_observers: list[Any] = Field(default_factory=list)
    _lm: LoadedCausalLM | None = PrivateAttr(default=None)
    _tools: list[Any] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "railguard-local-hf"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "repetition_penalty": self.repetition_penalty}

    @property
    def lm(self) -> LoadedCausalLM:
        if self._lm is None:
            self._lm = load_causal_lm(self.model_name, device=self.device)
        return self._lm

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> LocalChatModel:
        """Accept tools so `create_agent(tools=...)` works. A 135M model does not emit tool calls; bigger
        local models would need a tool-call parser here."""
        clone = self.model_copy()
        clone._lm = self._lm
        clone._tools = list(tools)
        return clone

    def with_structured_output(self, schema: Any, **kwargs: Any) -> Any:
        """Not supported: it would ride on tool calls, which this model never emits (so every structured call came
        back empty and a caller's fallback generated a second time). Callers fall back to plain text."""
        raise NotImplementedError("LocalChatModel emits no tool calls, so it has no structured output")

    # ---- generation core ----------------------------------------------------------------------
    def _inputs(self, messages: Sequence[BaseMessage]) -> tuple[dict[str, Any], list[dict[str, str]]]:
        import torch

        chat = to_chat_dicts(messages)
        tok = self.lm.tokenizer  # contents read as text: a user's "<|im_start|>" forges no turn (templates.py)
        ids = torch.tensor([encode_chat(tok, chat, template_render(tok))], dtype=torch.long, device=self.lm.device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, chat

    def _gen_kwargs(self, inputs: dict[str, Any], stop: list[str] | None) -> dict[str, Any]:
        kw: dict[str, Any] = dict(inputs, max_new_tokens=self.max_new_tokens,
                                  pad_token_id=self.lm.tokenizer.pad_token_id)
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=self.temperature)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if self.repetition_penalty != 1.0:
            kw["repetition_penalty"] = self.repetition_penalty
        if stop:
            kw["stop_strings"] = stop
            kw["tokenizer"] = self.lm.tokenizer
        return kw

    def _attach(self, inputs: dict[str, Any], chat: list[dict[str, str]],
                detach: list[Callable[[], None]]) -> dict[str, Any]:
        """Attach the observers (their detach functions appended to ``detach`` as they attach, so a failing one
        leaves none attached behind it); returns what generate() needs besides: the cache of a prefilled head."""
        observers = list(self.prefill_observers)
        first = next((o for o in observers if callable(getattr(o, "attach_prefilled", None))), None)
        extra: dict[str, Any] = {}
        if first is not None:
            undo, cache = first.attach_prefilled(self.lm, inputs["input_ids"], chat)
            detach.append(undo)
            observers.remove(first)
            if cache is not None:
                extra[cache_keyword(self.lm.model)] = cache
        for obs in observers:
            detach.append(obs.attach(self.lm, inputs["input_ids"], chat))
        return extra

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        import torch

        inputs, chat = self._inputs(messages)
        detach: list[Callable[[], None]] = []
        try:
            extra = self._attach(inputs, chat, detach)
            with torch.inference_mode():
                out = self.lm.model.generate(**self._gen_kwargs(inputs, stop), **extra)
        finally:
            for d in detach:
                d()
        new = out[0, inputs["input_ids"].shape[1]:]
        text = self.lm.tokenizer.decode(new, skip_special_tokens=True).strip()
        msg = AIMessage(content=text, response_metadata={"model_name": self.model_name,
                                                          "generated_tokens": int(new.shape[0])})
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        inputs, chat = self._inputs(messages)
        streamer = TextIteratorStreamer(self.lm.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
        failure: list[BaseException] = []
        halt = threading.Event()  # the consumer stopped iterating (closed the stream): stop generating too

        def work() -> None:
            # Observers attach in the thread that runs generate(): probe hooks read only their own thread's
            # forwards (the model object is shared), and the copied context carries the caller's identity.
            detach: list[Callable[[], None]] = []
            try:
                extra = self._attach(inputs, chat, detach)
                with torch.inference_mode():
                    self.lm.model.generate(**self._gen_kwargs(inputs, stop), **extra, streamer=streamer,
                                           stopping_criteria=StoppingCriteriaList([_Halt(halt)]))
            except BaseException as exc:  # surfaced in the consumer thread below
                failure.append(exc)
                streamer.end()
            finally:
                for d in detach:
                    d()

        worker = threading.Thread(target=contextvars.copy_context().run, args=(work,), name="railguard-generate",
                                  daemon=True)
        worker.start()
        try:
            first = True
            for piece in streamer:
                if failure:
                    break
                if not piece:
                    continue
                if first:
                    piece, first = piece.lstrip(), False
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                if run_manager:
                    run_manager.on_llm_new_token(piece, chunk=chunk)
                yield chunk
        finally:  # a consumer that leaves early (a cancelled request) ends the generation at its next token
            halt.set()
            worker.join()
        if failure:
            raise failure[0]


class _Halt:
    """A generate() stopping criterion that ends every sequence once `event` is set (duck-typed StoppingCriteria:
    called with the ids so far and the scores, answers one bool per sequence)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
