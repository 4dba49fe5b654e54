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
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from guardrails.errors import InvalidInputError

from .capture import ActKey, LayerTap, encode, layer_offsets, render


@dataclass
class _Entry:
    ids: list[int]
    cache: Any
    activation: dict[ActKey, np.ndarray]


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

    def activation(self, messages: Sequence[Any], session: Hashable | None = None) -> dict[ActKey, np.ndarray]:
        """{site key: activation} of the rendered conversation (validated: must end with the user turn)."""
        ids = encode(self.tokenizer, render(self.tokenizer, messages))
        if len(ids) > self.max_tokens:
            raise InvalidInputError(f"conversation is {len(ids)} tokens; the probe model accepts {self.max_tokens}")
        from transformers import DynamicCache

        with self._lock:
            entry = self._lru.pop(session, None) if session is not None else None
            if entry is not None and entry.ids == ids:
                self.stats["hits"] += 1
                act = entry.activation
            elif (entry is not None and len(entry.ids) + self._max_offset < len(ids)
                  and ids[: len(entry.ids)] == entry.ids):
                self.stats["incremental"] += 1
                act = self._forward(ids, entry.cache, len(entry.ids))
                entry = _Entry(ids, entry.cache, act)
            else:
                self.stats["full"] += 1
                cache = DynamicCache(config=self.model.config)
                act = self._forward(ids, cache, 0)
                entry = _Entry(ids, cache, act)
            if session is not None and len(entry.ids) <= self.max_cached_tokens:
                self._lru[session] = entry
                cached = sum(len(e.ids) for e in self._lru.values())
                while len(self._lru) > self.max_sessions or cached > self.max_cached_tokens:
                    cached -= len(self._lru.popitem(last=False)[1].ids)
        return act

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
