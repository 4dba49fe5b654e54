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
prefixes, :mod:`probes.segments`) in the same pass: the prompt is prefilled up to where a cut's rendering leaves
the full one, that rendering's few remaining tokens (the template's end of turn) run on top, the cache is cropped
back, and so on; each cut costs one forward of those tokens, not a prefill of the conversation.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from guardrails.errors import InvalidInputError
from guardrails.models import crop_cache
from guardrails.models.templates import special_strings

from .capture import ActKey, LayerTap, encode_messages, layer_offsets, validate_messages

Acts = dict[ActKey, np.ndarray]


@dataclass
class _Entry:
    ids: list[int]
    cache: Any
    activation: Acts
    cuts: dict[tuple[int, ...], Acts] = field(default_factory=dict)  # activations of cut renderings, by their ids


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


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
        self._lru: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"full": 0, "incremental": 0, "hits": 0}
        # transformers 5.x renamed `past_key_values` to `cache`; accept both generations of the API.
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

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
                    cuts: Sequence[str] = ()) -> tuple[Acts, list[Acts]]:
        """The conversation's activations, and those of the same conversation with its last user message replaced
        by each of ``cuts`` (earlier prefixes of it, :func:`probes.segments.sentence_prefixes`), in order."""
        msgs = validate_messages(messages)
        ids = self._ids(msgs)
        cut_ids = [self._ids([*msgs[:-1], {"role": "user", "content": c}]) for c in cuts]
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
        """Prefill ``ids`` from ``start`` (``cache`` holds the positions before it), branching off at each cut: the
        shared path is prefilled up to where the cut's ids leave it (at least ``_max_offset + 1`` tokens before the
        cut's end, so its read sites are new tokens), the cut's remaining ids run on top, and the cache is cropped
        back. A cut that leaves the path before ``start`` gets a prefill of its own."""
        from transformers import DynamicCache

        cuts: dict[tuple[int, ...], Acts] = {}
        pos = start
        plan = sorted((min(_common_prefix(ids, c), len(c) - self._max_offset - 1), j) for j, c in enumerate(cut_ids))
        for branch, j in plan:
            c = cut_ids[j]
            if tuple(c) in cuts:
                continue
            if branch < pos:  # leaves the path before what is already prefilled: its own full prefill
                cuts[tuple(c)] = self._forward(c, DynamicCache(config=self.model.config), 0)
                continue
            if branch > pos:
                self._advance(ids, cache, pos, branch)
                pos = branch
            cuts[tuple(c)] = self._forward(c, cache, pos)
            crop_cache(cache, pos)
        if len(ids) - pos <= self._max_offset:  # the read sites must be new tokens: re-run a few (exact)
            pos = len(ids) - self._max_offset - 1
            crop_cache(cache, pos)
        return _Entry(ids, cache, self._forward(ids, cache, pos), cuts)

    def _advance(self, ids: list[int], cache: Any, start: int, stop: int) -> None:
        """Prefill ``ids[start:stop]`` into the cache up to the probe layers, reading nothing."""
        new = torch.tensor([ids[start:stop]], dtype=torch.long, device=self.device)
        mask = torch.ones((1, stop), dtype=torch.long, device=self.device)
        pos = torch.arange(start, stop, device=self.device).unsqueeze(0)
        with LayerTap(self.model, self.layers, early_exit=True) as tap:
            tap.run(input_ids=new, attention_mask=mask, position_ids=pos, use_cache=True, **{self._cache_kw: cache})

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
