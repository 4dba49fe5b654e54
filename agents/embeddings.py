"""Encoder access for the Matcher/Attenuator and the student parser, with an on-disk item-embedding cache.

Why a cache: embedding the 9.7k MovieLens items takes ~30-60 s on a laptop CPU; it depends only on the catalog
text and the encoder, so it is computed once and stored as .npy keyed by a digest of both.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from .catalog import Catalog

ENCODER_NAME = "all-minilm-l6-v2"


class TextEncoder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...


def rec_cache_dir() -> Path:
    """`RAILGUARD_REC_CACHE` overrides; else <railguard cache>/rec."""
    env = os.environ.get("RAILGUARD_REC_CACHE")
    if env:
        return Path(env)
    from guardrails.models import cache_dir

    return Path(cache_dir()) / "rec"


@lru_cache(maxsize=2)
def get_encoder(name: str = ENCODER_NAME) -> TextEncoder:
    from guardrails.models import load_encoder

    return load_encoder(name)


class ItemEmbeddings:
    """Item vectors (L2-normalised) plus a small query cache; `encoder=None` disables semantics."""

    def __init__(self, catalog: Catalog, encoder: TextEncoder | None = None, *, name: str = ENCODER_NAME) -> None:
        self.catalog = catalog
        self.encoder = encoder
        self.name = name
        self._items: np.ndarray | None = None
        self._queries: dict[str, np.ndarray] = {}

    @property
    def available(self) -> bool:
        return self.encoder is not None

    def items(self) -> np.ndarray:
        if self._items is None:
            if self.encoder is None:
                raise RuntimeError("no encoder configured")
            texts = [self.catalog.item_text(i) for i in range(len(self.catalog))]
            h = hashlib.sha256(("\n".join(texts) + self.name).encode()).hexdigest()[:16]
            path = rec_cache_dir() / f"items-{self.name}-{h}.npy"
            if path.exists():
                self._items = np.load(path)
            else:
                self._items = np.asarray(self.encoder.encode(texts), dtype=np.float32)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, self._items)
                os.replace(tmp, path)
        return self._items

    def query(self, text: str) -> np.ndarray:
        if text not in self._queries:
            if self.encoder is None:
                raise RuntimeError("no encoder configured")
            if len(self._queries) > 4096:
                self._queries.clear()
            self._queries[text] = np.asarray(self.encoder.encode([text]), dtype=np.float32)[0]
        return self._queries[text]

    def similarity(self, text: str) -> np.ndarray:
        """Cosine of every item to a text (both sides normalised by the encoder)."""
        return self.items() @ self.query(text)

    def item_similarity(self, row: int) -> np.ndarray:
        emb = self.items()
        return emb @ emb[row]
