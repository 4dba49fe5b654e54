"""Activation capture for any Hugging Face causal LM.

Layer index convention (the HF ``output_hidden_states`` one, so probes trained on either path agree):
``0`` = token embeddings, ``i`` in ``1..L-1`` = output of decoder block ``i-1``, ``L`` = the final-norm
output (HF applies the final norm to the last hidden state). We hook the module whose output *is* that
tensor instead of asking for every hidden state: one hook costs nothing, and raising from the hook stops
the forward right after the probe layer (early exit), which matters for offline collection and sentinels.

The feature is the **last real token** of the rendered prompt (the end of the assistant generation
header), or a token a fixed ``offset`` before it (a *site* is ``(layer, offset)``; the context-free probe reads
the user turn's end-of-turn token, :func:`turn_end_offset`). Batches are padded; we locate the last real token
from the attention mask so left and right padding give the same vector (the classic bug is reading ``[:, -1]``
under right padding). Activations are keyed by :func:`site_key`: the layer index for offset 0, ``(layer,
offset)`` otherwise.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from guardrails.errors import InvalidInputError
from guardrails.models.hooks import thread_owned
from guardrails.models.templates import encode_chat

Messages = list[dict[str, str]]
_ROLES = {"system", "user", "assistant"}
ActKey = int | tuple[int, int]  # an activation's key: layer (last token) or (layer, offset before it)


def site_key(layer: int, offset: int = 0) -> ActKey:
    """How activations of ``layer`` read ``offset`` tokens before the last prompt token are keyed."""
    return int(layer) if offset == 0 else (int(layer), int(offset))


def layer_offsets(layers: Sequence[int], offsets: Mapping[int, Sequence[int]] | None) -> dict[int, tuple[int, ...]]:
    """``{layer: sorted distinct offsets}`` for every layer (default ``(0,)``: the last token); negative is an
    InvalidInputError."""
    out = {int(li): tuple(sorted({int(k) for k in (offsets or {}).get(li, (0,))})) for li in layers}
    if any(not ks or ks[0] < 0 for ks in out.values()):
        raise InvalidInputError(f"token offsets must be non-negative, got {out}")
    return out


class _StopForward(Exception):
    """Raised from a hook to abort the forward pass once the deepest needed layer has run."""


class NonFiniteActivationError(InvalidInputError):
    """The model produced NaN/inf at the probe layer; a verdict on such a vector would be meaningless."""


# ----------------------------------------------------------------------------------------------- rendering
def to_messages(context: str | None, request: str | None = None,
                turns: Sequence[dict[str, str]] | None = None) -> Messages:
    """Build chat messages the way CONTRACT renders privacy data: context -> system, request -> user."""
    msgs: Messages = []
    if context is not None:
        msgs.append({"role": "system", "content": str(context)})
    if request is not None:
        msgs.append({"role": "user", "content": str(request)})
    for t in turns or ():
        msgs.append({"role": str(t["role"]), "content": str(t["content"])})
    return msgs


def message_field(message: Any, name: str) -> Any:
    """A field of a message given as a dict or as an object (a LangChain or spine message); an enum's value (a
    role); None if it has none."""
    value = message.get(name) if isinstance(message, dict) else getattr(message, name, None)
    return getattr(value, "value", value)


def validate_messages(messages: Sequence[Any]) -> Messages:
    """Normalize and check a conversation to be scored before the assistant answers its last user turn.

    Rejects (InvalidInputError): empty conversations, unknown roles, non-string content, an assistant
    speaking before any user turn, and a last turn that is not the user's (there is nothing to score "before the
    answer" then). A system message later in the conversation (an agent framework's reminder, a developer
    message) is read where it stands: it had failed every check of such a conversation closed (session 37).
    """
    if isinstance(messages, str | bytes | dict) or not isinstance(messages, Iterable):
        raise InvalidInputError(f"messages must be a list of messages, got {type(messages).__name__}")
    out: Messages = []
    for m in messages:
        role = message_field(m, "role")
        content = message_field(m, "content")
        if role not in _ROLES:
            raise InvalidInputError(f"unsupported message role {role!r}; expected system/user/assistant")
        if not isinstance(content, str):
            raise InvalidInputError("message content must be a string")
        try:  # a lone surrogate reached the tokenizer as a TypeError (the Guard refuses it before; direct calls)
            content.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError("message content contains an unpaired surrogate (not valid Unicode text)") \
                from None
        out.append({"role": role, "content": probe_text(content)})
    if not out:
        raise InvalidInputError("empty conversation: nothing to score")
    body = out[next((i for i, m in enumerate(out) if m["role"] != "system"), len(out)):]
    if not body:
        raise InvalidInputError("conversation has no user turn")
    if body[0]["role"] != "user":
        raise InvalidInputError("conversation must start with a user turn (assistant-first is not scorable)")
    if body[-1]["role"] != "user":
        raise InvalidInputError("the last message must be the user turn being checked")
    if not body[-1]["content"].strip():
        raise InvalidInputError("the user turn being checked is empty")
    return out


#: Unicode's Default_Ignorable_Code_Point set (zero-width characters, joiners, soft hyphen, bidi controls, variation
#: selectors, Hangul fillers, tag characters, BOM ...) and the other format characters (category Cf): invisible
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f"
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]+")
#: three or more combining marks of the common blocks on one letter ("Zalgo" text; after NFC, languages written
#: with these blocks stack at most two)
_MARK_PILES = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]{3,}")
_BLANKS = re.compile("[\u2800]")  # blank-looking symbols that are not whitespace (braille pattern blank)
#: runs of spaces (not tabs, carriage returns or line separators: columns and line ends keep their meaning); two
#: are common in our data and kept
_SPACES = re.compile("[ \u00a0\u2000-\u200a\u202f\u205f\u3000]{3,}")
_BLANK_LINES = re.compile(r"\n[^\S\n]*(?:\n[^\S\n]*){2,}")  # three or more line breaks (blank lines between)
#: a unit of up to 8 characters repeated 8 or more times: padding (" ok" x 70, "!" x 200, " ." x 100). Fewer
#: repeats are left: "hahahaha", "XXXX-XXXX", "|---|---|" and "****-****-1234" carry meaning.
_REPEATED = re.compile(r"(.{1,8}?)\1{7,}", re.S)


def _one_unit(m: re.Match[str]) -> str:
    return m.group(0) if m.group(1).isdigit() else m.group(1)  # a run of digits is a number ("0000"), kept


def _probe_pass(text: str) -> str:
    text = unicodedata.normalize("NFC", _INVISIBLE.sub("", text))  # NFC: an NFD letter's accents are no pile
    text = _BLANKS.sub(" ", _MARK_PILES.sub("", text))
    return _REPEATED.sub(_one_unit, _BLANK_LINES.sub("\n\n", _SPACES.sub(" ", text))).strip()


def probe_text(content: str) -> str:
    """A message as the probes read it: without what changes its tokens but not what it asks. Invisible characters
    go, and so do piles of three or more combining marks (after NFC), a unit of up to 8 characters repeated eight
    or more times is kept once (not a run of digits), runs of three or more spaces become one, more than two line
    breaks become two, and the ends are stripped; repeated until nothing changes (a kept copy can join its
    neighbours into a new run), and unless nothing would be left.

    Why: 200 newlines, spaces or zero-width spaces after a request hid it from the probes: of 60 dev requests the
    shipped probe blocks 40 as written, it blocked none with the padding; the reviews of that fix hid the demo's
    attacks again with tag characters, variation selectors, Hangul fillers, combining marks, " ." or "❤️" repeated,
    and nested units ("aaaabbbb" x 50) (session 36). The model reads the same request either way. Training,
    evaluation and serving all read messages through this. Junk that does not repeat (random words, a long harmless
    paragraph) still dilutes the request; sentence cuts (`probes.segments`) cover part of that."""
    return _normalized(content) or content


def reads_blank(content: str) -> bool:
    """Whether nothing of ``content`` is left as the probes read it (whitespace, zero-width or other invisible
    characters only)."""
    return not _normalized(content)


def _normalized(content: str) -> str:
    text = content
    for _ in range(8):
        done = _probe_pass(text)
        if done == text:
            break
        text = done
    return text


def render(tokenizer: Any, messages: Sequence[Any]) -> str:
    """Render through the model's own chat template with the generation header (what the model sees)."""
    msgs = validate_messages(messages)
    if getattr(tokenizer, "chat_template", None) is None:
        # Base models without a template: a plain, documented fallback (train and serve must agree).
        return "\n".join(f"{m['role']}: {m['content']}" for m in msgs) + "\nassistant:"
    return str(tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))


def encode_messages(tokenizer: Any, messages: Sequence[Any]) -> list[int]:
    """Token ids of :func:`render`'s prompt with the message contents read as text (a user's "<|im_start|>" is
    not the control token; see ``guardrails.models.templates``). Equal to ``encode(render(...))`` for any
    conversation whose contents hold no special token's string."""
    msgs = validate_messages(messages)
    return encode_chat(tokenizer, msgs, lambda m: render(tokenizer, m))


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt (the template already holds the special tokens)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def turn_end_offset(tokenizer: Any) -> int:
    """Tokens between the last user message's end-of-turn token and the last prompt token, for this tokenizer's
    chat template: the assistant generation header plus any whitespace after the end-of-turn marker (5 for
    ChatML: ``<|im_end|>`` ``\n`` | ``<|im_start|>`` ``ass`` ``istant`` ``\n``). Reading there, the state
    summarises the user's message before the header that the system prompt's answer-style instructions act on.
    0 without a chat template (the plain fallback of :func:`render` has no end-of-turn token)."""
    if getattr(tokenizer, "chat_template", None) is None:
        return 0
    msgs = [{"role": "user", "content": "Hello there."}]
    full = encode(tokenizer, str(tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)))
    bare = encode(tokenizer, str(tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)))
    if full[: len(bare)] != bare:
        raise InvalidInputError("chat template: the generation header is not a suffix of the rendered turn")
    trailing = 0
    while trailing < len(bare) and not tokenizer.decode(bare[len(bare) - 1 - trailing:len(bare) - trailing]).strip():
        trailing += 1
    return len(full) - len(bare) + trailing


# ------------------------------------------------------------------------------------------- layer modules
def decoder_parts(model: Any) -> tuple[Any, Any, Any]:
    """(embedding module, list of decoder blocks, final norm) for Llama/Qwen/Mistral/GPT-2-like models."""
    base = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", model)
    layers = getattr(base, "layers", None) or getattr(base, "h", None)
    norm = getattr(base, "norm", None) or getattr(base, "ln_f", None) or getattr(base, "final_layernorm", None)
    if layers is None or norm is None:
        raise InvalidInputError(f"unsupported architecture {type(model).__name__}: cannot find blocks/norm")
    return model.get_input_embeddings(), layers, norm


def num_layers(model: Any) -> int:
    return len(decoder_parts(model)[1])


def layer_module(model: Any, index: int) -> Any:
    """The module whose forward output equals ``hidden_states[index]`` (see the module docstring)."""
    emb, layers, norm = decoder_parts(model)
    n = len(layers)
    if not 0 <= index <= n:
        raise InvalidInputError(f"layer {index} out of range 0..{n}")
    if index == 0:
        return emb
    return norm if index == n else layers[index - 1]


def _out_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple | list) else output


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of the last real token in each row, for left *or* right padding."""
    seq = attention_mask.shape[1]
    flipped = torch.flip(attention_mask.long(), dims=[1])
    return seq - 1 - flipped.argmax(dim=1)


class LayerTap:
    """Context manager: forward hooks on the requested layers, last-token rows kept in fp32.

    ``offsets`` (``{layer: offsets}``, default ``(0,)`` for every layer) also reads tokens that many positions
    before the last one; values are keyed by :func:`site_key`. ``early_exit=True`` raises from the deepest
    hooked layer so the rest of the network never runs; the caller must then run the forward through
    :meth:`run`, which swallows that private signal.
    """

    def __init__(self, model: Any, layers: Sequence[int], *, early_exit: bool = True,
                 offsets: Mapping[int, Sequence[int]] | None = None) -> None:
        self.model = model
        self.layers = sorted(set(int(i) for i in layers))
        if not self.layers:
            raise InvalidInputError("no layers requested")
        self.offsets = layer_offsets(self.layers, offsets)
        self.early_exit = early_exit
        self.index: torch.Tensor | None = None  # last-token positions for the current batch
        self.packed = False  # True: ``index`` holds several positions of batch row 0 (packed sequences), one read each
        self.values: dict[ActKey, torch.Tensor] = {}
        self._handles: list[Any] = []

    @property
    def keys(self) -> list[ActKey]:
        return [site_key(li, k) for li in self.layers for k in self.offsets[li]]

    def _hook(self, layer: int):  # noqa: ANN202 - torch hook signature
        deepest = layer == self.layers[-1]

        def fn(_mod: Any, _inp: Any, output: Any) -> None:
            h = _out_tensor(output)
            idx = self.index if self.index is not None else torch.full((h.shape[0],), h.shape[1] - 1)
            idx = idx.to(h.device)
            if bool((idx < self.offsets[layer][-1]).any()):
                raise InvalidInputError(f"a prompt is shorter than the token offset {self.offsets[layer][-1]}")
            for k in self.offsets[layer]:
                rows = h[0, idx - k] if self.packed else h[torch.arange(h.shape[0], device=h.device), idx - k]
                self.values[site_key(layer, k)] = rows.detach().float()
            if deepest and self.early_exit:
                raise _StopForward

        return fn

    def __enter__(self) -> LayerTap:
        # the model object is shared per process: the hooks read and stop only this thread's forwards
        for i in self.layers:
            self._handles.append(layer_module(self.model, i).register_forward_hook(thread_owned(self._hook(i))))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def run(self, **forward_kwargs: Any) -> dict[ActKey, torch.Tensor]:
        """One forward; returns {site key: [batch, d] fp32}. Raises NonFiniteActivationError on NaN/inf."""
        self.values = {}
        try:
            with torch.inference_mode():
                forward_kwargs.setdefault("use_cache", False)
                self.model(**forward_kwargs)
        except _StopForward:
            pass
        missing = [i for i in self.keys if i not in self.values]
        if missing:
            raise RuntimeError(f"layers {missing} were not reached by the forward pass")
        for i, v in self.values.items():
            if not torch.isfinite(v).all():
                raise NonFiniteActivationError(f"non-finite activation at layer {i}")
        return self.values


def capture(model: Any, tokenizer: Any, prompts: Sequence[str], layers: Sequence[int], *,
            batch_size: int = 8, early_exit: bool = True, max_tokens: int | None = None,
            progress: bool = False, offset: int = 0) -> np.ndarray:
    """Last-real-token activations of rendered prompts: array ``[n, len(layers), d]`` (fp32, sorted layers);
    with ``offset``, of the token that many positions before the last real one.

    Prompts are sorted by length before batching (less padding, faster on CPU) and returned in input order.
    Batches are right-padded (positions stay 0..n-1 for every real token, so no position-id bookkeeping) and
    the last real token is read through the attention mask; left padding works with LayerTap directly.
    """
    layers = sorted(set(int(i) for i in layers))
    if not prompts:
        d = int(model.config.hidden_size)
        return np.zeros((0, len(layers), d), dtype=np.float32)
    dev = next(model.parameters()).device
    ids = [encode(tokenizer, p) for p in prompts]
    limit = max_tokens or int(getattr(model.config, "max_position_embeddings", 1 << 30))
    too_long = [i for i, x in enumerate(ids) if len(x) > limit]
    if too_long:
        raise InvalidInputError(f"{len(too_long)} prompt(s) exceed the model context of {limit} tokens")
    order = np.argsort([len(x) for x in ids], kind="stable")
    out: list[np.ndarray | None] = [None] * len(ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    bar = tqdm(total=len(ids), desc="capture", disable=not progress, unit="prompt")
    with LayerTap(model, layers, early_exit=early_exit, offsets={li: (offset,) for li in layers}) as tap:
        for s in range(0, len(ids), batch_size):
            chunk = [int(i) for i in order[s : s + batch_size]]
            width = max(len(ids[i]) for i in chunk)
            inp = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, i in enumerate(chunk):  # right padding; last_token_index handles it
                inp[r, : len(ids[i])] = torch.tensor(ids[i])
                mask[r, : len(ids[i])] = 1
            tap.index = last_token_index(mask)
            vals = tap.run(input_ids=inp.to(dev), attention_mask=mask.to(dev))
            stacked = torch.stack([vals[site_key(i, offset)] for i in layers], dim=1).cpu().numpy()
            for r, i in enumerate(chunk):
                out[i] = stacked[r]
            bar.update(len(chunk))
    bar.close()
    return np.stack(out).astype(np.float32)  # type: ignore[arg-type]


def capture_messages(model: Any, tokenizer: Any, conversations: Sequence[Sequence[Any]],
                     layers: Sequence[int], **kw: Any) -> np.ndarray:
    """:func:`capture` on conversations rendered through the chat template."""
    return capture(model, tokenizer, [render(tokenizer, c) for c in conversations], layers, **kw)
