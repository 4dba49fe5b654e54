"""Sentinel activation encoder: per-turn cost independent of conversation length.

For remote/API agents a local model computes the probe activation. Re-encoding the whole history every turn
is quadratic; instead each session keeps the KV cache of its last rendered prompt (only up to the probe
layer: the forward is stopped there by the early-exit hook, so deeper layers are never run nor cached).
On the next turn the conversation is re-rendered and tokenized; if the cached token ids are an exact prefix
of the new ones, only the suffix is prefilled. Any template drift (a re-render that changes earlier
tokens) falls back to a full prefill, so the activation is always that of the exact rendered prompt.
Caches live in a small LRU; losing one (eviction, restart) only costs one full prefill. ``offsets`` reads tokens
before the last one too (keys as :func:`probes.capture.site_key`); a suffix too short to hold them (never the case
for a new user turn under a chat template) is re-prefilled in full.

:meth:`SentinelEncoder.activations` also reads the last user message as it stood at earlier cuts (its sentence
prefixes, :mod:`probes.segments`). A cut's rendering shares the full prompt's tokens up to near the cut, so its
remaining tokens (the template's end of turn) ride in the same forward as the new turn, packed in one row under a
4-D mask, and the cache is cropped back to the prompt after: a few more tokens, not another prefill.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from guardrails.errors import InvalidInputError
from guardrails.models import cache_keyword, crop_cache
from guardrails.models.attention import NAME as ATTENTION_NAME
from guardrails.models.templates import special_strings

from .capture import ActKey, LayerTap, encode_messages, layer_offsets, validate_messages

Acts = dict[ActKey, np.ndarray]


@dataclass
class _Entry:
    ids: list[int]
    cache: Any
    activation: Acts
    cuts: dict[tuple[int, ...], Acts] = field(default_factory=dict)  # activations of cut renderings, by their ids


#: New prompt tokens above which the cuts get a forward of their own after the prompt's (``packed_forward``); a
#: turn's new tokens are far fewer.
_PACK_MAX_NEW = 256


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def can_pack(model: Any, cache: Any) -> bool:
    """Packing needs an attention that reads a boolean 4-D mask as given (sdpa; eager adds it, flash ignores it)
    and a cache that can be cropped back (sliding-window layers cannot, once past their window)."""
    impl = getattr(model.config, "_attn_implementation", None)
    sliding = any("Sliding" in type(layer).__name__ for layer in getattr(cache, "layers", None) or ())
    return impl in ("sdpa", ATTENTION_NAME) and not sliding


def branch_points(ids: Sequence[int], renderings: Sequence[Sequence[int]], max_offset: int,
                  limit: int | None = None) -> dict[tuple[int, ...], int]:
    """``{rendering ids: branch}``: where each rendering leaves ``ids`` (their common prefix), at least
    ``max_offset + 1`` tokens before its end (its read sites are its own tokens) and at most ``limit``."""
    todo: dict[tuple[int, ...], int] = {}
    for c in renderings:
        b = max(0, min(_common_prefix(ids, c), len(c) - max_offset - 1))
        todo.setdefault(tuple(c), b if limit is None else min(b, limit))
    return todo


def packed_forward(model: Any, layers: Sequence[int], offsets: Mapping[int, Sequence[int]], ids: list[int],
                   start: int, cache: Any, todo: Mapping[tuple[int, ...], int], *, cache_kw: str = "past_key_values",
                   early_exit: bool = True) -> list[Acts]:
    """One forward over ``ids[start:]`` followed, in the same row, by each rendering's tokens past its branch point
    (``{rendering ids: branch}``, every branch at most ``len(ids)``): the prompt's tokens attend causally as usual; a
    rendering's tokens attend to the positions before its branch point and to their own earlier tokens (a 4-D
    mask), at the positions they have in that rendering. ``cache`` holds ``ids[:start]`` and is cropped back to
    ``ids`` after. Each rendering adds its own few tokens to the forward, not a prefill of its own; over
    ``_PACK_MAX_NEW`` new prompt tokens, the prompt runs causally first and the renderings in a second, short forward
    (a 4-D mask over thousands of tokens is slower than the plain causal path). ``early_exit=False`` runs every layer
    (a serving model's prefill, whose cache generation continues from; only the last position's logits are computed),
    in both forwards: the crop back to ``ids`` is then the same on every layer.
    Returns the prompt's activations (none when ``start == len(ids)``), then each rendering's, in ``todo`` order."""
    max_offset = max(ks[-1] for ks in layer_offsets(sorted(layers), offsets).values())
    past, main = start, len(ids) - start
    if 0 < main <= max_offset:  # callers prefill at least max_offset + 1 new tokens (see activations)
        raise InvalidInputError("too few new tokens to read the probe's sites")
    dev = next(model.parameters()).device
    extra = {} if early_exit else {"logits_to_keep": 1}
    if main > _PACK_MAX_NEW:  # a 4-D mask over a long prefill is slower than the causal path: that first, then the
        with LayerTap(model, layers, early_exit=early_exit, offsets=offsets) as tap:  # renderings in a short one
            vals = tap.run(input_ids=torch.tensor([ids[start:]], dtype=torch.long, device=dev),
                           attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=dev),
                           position_ids=torch.arange(start, len(ids), device=dev).unsqueeze(0), use_cache=True,
                           **{cache_kw: cache}, **extra)
        prompt = {k: v[0].cpu().numpy().astype(np.float32) for k, v in vals.items()}
        return [prompt, *(packed_forward(model, layers, offsets, ids, len(ids), cache, todo, cache_kw=cache_kw,
                                         early_exit=early_exit) if todo else [])]
    toks, pos, ends = list(ids[start:]), list(range(start, len(ids))), [main - 1] if main else []
    q = main + sum(len(c) - b for c, b in todo.items())
    mask = torch.zeros((1, 1, q, past + q), dtype=torch.bool)
    mask[0, 0, :main, : past + main] = torch.ones((main, past + main), dtype=torch.bool).tril(past)
    for c, b in todo.items():
        n, at = len(c) - b, len(toks)
        if n <= max_offset:  # its read sites would fall in the segment before it
            raise InvalidInputError(f"a cut's rendering is {len(c)} tokens; the probe reads {max_offset} "
                                    "tokens before the end")
        if b > len(ids):
            raise ValueError(f"a branch point ({b}) past the prompt ({len(ids)} tokens)")
        toks += c[b:]
        pos += range(b, len(c))
        mask[0, 0, at:at + n, :b] = True
        mask[0, 0, at:at + n, past + at:past + at + n] = torch.ones((n, n), dtype=torch.bool).tril()
        ends.append(at + n - 1)
    try:
        with LayerTap(model, layers, early_exit=early_exit, offsets=offsets) as tap:
            tap.index, tap.packed = torch.tensor(ends), True
            vals = tap.run(input_ids=torch.tensor([toks], dtype=torch.long, device=dev),
                           attention_mask=mask.to(dev), position_ids=torch.tensor([pos], device=dev),
                           use_cache=True, **{cache_kw: cache}, **extra)
    finally:
        crop_cache(cache, len(ids))
    return [{k: v[r].cpu().numpy().astype(np.float32) for k, v in vals.items()} for r in range(len(ends))]


class SentinelEncoder:
    """Activations at the probe ``layers`` for conversations, reusing each session's KV prefix: at the last prompt
    token, or ``offsets[layer]`` positions before it (a probe with a ``token_offset``).

    ``stats`` counts ``full`` prefills, ``incremental`` ones and ``hits`` (identical prompt re-checked).
    """

    def __init__(self, model: Any, tokenizer: Any, layers: int | Sequence[int], *, max_sessions: int = 32,
                 max_tokens: int | None = None, offsets: Mapping[int, Sequence[int]] | None = None,
                 max_cached_tokens: int = 32_768) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.markers = special_strings(tokenizer)  # a typed copy of one is text, and ends a sentence cut
        self.layers = sorted({int(layers)} if isinstance(layers, int) else {int(i) for i in layers})
        self.offsets = layer_offsets(self.layers, offsets)
        self._max_offset = max(ks[-1] for ks in self.offsets.values())
        self.max_sessions = max_sessions
        # Memory is bounded by tokens, not only sessions: one cached token costs ~23 kB of KV in fp32 on SmolLM2 up
        # to the probe layer, so 32 sessions of 8k tokens would hold ~6 GB. Least recently used caches go first.
        self.max_cached_tokens = max_cached_tokens
        self.max_tokens = max_tokens or int(getattr(model.config, "max_position_embeddings", 8192))
        # more characters than this cannot fit in max_tokens tokens (a token's string is at least as long as the
        # text it stands for): refused before a turn's cuts are copied (`probes.segments.joined_turn`)
        try:
            longest = max(map(len, tokenizer.get_vocab()), default=1)
        except (AttributeError, NotImplementedError, TypeError):  # a tokenizer without a vocabulary to list
            longest = 1
        self.max_chars = self.max_tokens * max(longest, 16)
        self._lru: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"full": 0, "incremental": 0, "hits": 0}
        self._cache_kw = cache_keyword(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _forward(self, ids: list[int], cache: Any, start: int) -> dict[ActKey, np.ndarray]:
        new = torch.tensor([ids[start:]], dtype=torch.long, device=self.device)
        mask = torch.ones((1, len(ids)), dtype=torch.long, device=self.device)
        pos = torch.arange(start, len(ids), device=self.device).unsqueeze(0)
        with LayerTap(self.model, self.layers, early_exit=True, offsets=self.offsets) as tap:
            vals = tap.run(input_ids=new, attention_mask=mask, position_ids=pos, use_cache=True,
                           **{self._cache_kw: cache})
        return {i: v[0].cpu().numpy().astype(np.float32) for i, v in vals.items()}

    def activation(self, messages: Sequence[Any], session: Hashable | None = None) -> Acts:
        """{site key: activation} of the rendered conversation (validated: must end with the user turn)."""
        return self.activations(messages, session)[0]

    def activations(self, messages: Sequence[Any], session: Hashable | None = None,
                    cuts: Sequence[str] = (), renderings: Sequence[Sequence[Any]] = ()) -> tuple[Acts, list[Acts]]:
        """The conversation's activations, and those of the same conversation with its last user message replaced
        by each of ``cuts`` (earlier prefixes of it, :func:`probes.segments.sentence_prefixes`), in order, then
        those of each of ``renderings`` (other conversations that share its opening tokens, such as its own
        opening: read like the cuts, a few tokens in the same forward)."""
        msgs = validate_messages(messages)
        ids = self._ids(msgs)
        cut_ids = [self._ids([*msgs[:-1], {"role": "user", "content": c}]) for c in cuts]
        cut_ids += [self._ids(validate_messages(r)) for r in renderings]
        from transformers import DynamicCache

        with self._lock:
            entry = self._lru.pop(session, None) if session is not None else None
            if entry is not None and entry.ids == ids and all(tuple(c) in entry.cuts for c in cut_ids):
                self.stats["hits"] += 1
            else:
                start = 0
                if (entry is not None and len(entry.ids) + self._max_offset < len(ids)
                        and ids[: len(entry.ids)] == entry.ids):
                    self.stats["incremental"] += 1
                    cache, start = entry.cache, len(entry.ids)
                else:
                    self.stats["full"] += 1
                    cache = DynamicCache(config=self.model.config)
                entry = self._run(ids, cut_ids, cache, start)
            act, cut_acts = entry.activation, [entry.cuts[tuple(c)] for c in cut_ids]
            if session is not None and len(entry.ids) <= self.max_cached_tokens:
                self._lru[session] = entry
                cached = sum(len(e.ids) for e in self._lru.values())
                while len(self._lru) > self.max_sessions or cached > self.max_cached_tokens:
                    cached -= len(self._lru.popitem(last=False)[1].ids)
        return act, cut_acts

    def _ids(self, messages: Sequence[Any]) -> list[int]:
        ids = encode_messages(self.tokenizer, messages)
        if len(ids) > self.max_tokens:
            raise InvalidInputError(f"conversation is {len(ids)} tokens; the probe model accepts {self.max_tokens}")
        return ids

    def _run(self, ids: list[int], cut_ids: Sequence[list[int]], cache: Any, start: int) -> _Entry:
        """Prefill ``ids`` from ``start`` (``cache`` holds the positions before it) and read it, and each cut: in the
        same forward for a turn's few new tokens, in a second short one after a long prefill (:func:`packed_forward`),
        each with its own prefill where packing is not safe (:meth:`_can_pack`)."""
        todo = branch_points(ids, cut_ids, self._max_offset)  # where each cut leaves the path
        if not todo:
            return _Entry(ids, cache, self._forward(ids, cache, start))
        if not self._can_pack(cache):
            act = self._forward(ids, cache, start)
            return _Entry(ids, cache, act, {c: self._forward(list(c), self._new_cache(), 0) for c in todo})
        acts = self._packed(ids, start, cache, todo)  # a long prefill: causally, then the cuts (packed_forward)
        return _Entry(ids, cache, acts[0], dict(zip(todo, acts[1:], strict=True)))

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _can_pack(self, cache: Any) -> bool:
        return can_pack(self.model, cache)

    def _packed(self, ids: list[int], start: int, cache: Any, todo: Mapping[tuple[int, ...], int]) -> list[Acts]:
        return packed_forward(self.model, self.layers, self.offsets, ids, start, cache, todo, cache_kw=self._cache_kw)

    def forget(self, session: Hashable) -> None:
        with self._lock:
            self._lru.pop(session, None)

    def forget_where(self, match: Callable[[Hashable], bool]) -> int:
        """Drop every cached session whose key matches (e.g. all of one user's); returns how many."""
        with self._lock:
            gone = [k for k in self._lru if match(k)]
            for k in gone:
                del self._lru[k]
        return len(gone)
