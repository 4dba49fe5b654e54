"""The shipped example bank: labelled texts from ../shared/data train files (never test splits).

Why ship a bank: the ICL backend needs demonstrations to retrieve (random / lexical / semantic, balanced per
label), and the embedding backend needs benign anchors and a benign calibration set that are disjoint from
the user's own texts. Its embeddings ship beside it (safetensors, not pickle) so the first check is fast;
they are recomputed when a different encoder is used. Provenance is in DATA.md ("harm example bank").
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DATA_DIR = Path(__file__).parent / "data"
BANK_PATH = DATA_DIR / "bank.jsonl"
EMB_PATH = DATA_DIR / "bank_embeddings.safetensors"
_TOKEN = re.compile(r"[a-z0-9']+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


RETRIEVAL_METHODS = ("random", "lexical", "semantic")  # demonstration selection (the paper's three)


@dataclass
class ExampleBank:
    """Parallel lists of bank rows plus lazily built retrieval indexes."""

    ids: list[str]
    texts: list[str]
    labels: list[str]
    sources: list[str]
    _emb: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _bm25: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, path: Path | str = BANK_PATH) -> ExampleBank:
        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        return cls([r["id"] for r in rows], [r["text"] for r in rows], [r["label"] for r in rows],
                   [r.get("source", "") for r in rows])

    def __len__(self) -> int:
        return len(self.texts)

    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.texts).encode()).hexdigest()[:16]

    def embeddings(self, encoder: Any) -> np.ndarray:
        """Bank embeddings for `encoder` (an `embedding.Encoder`): shipped file when it matches, else computed."""
        with self._lock:
            if encoder.name in self._emb:
                return self._emb[encoder.name]
        E = None
        if EMB_PATH.exists():
            from safetensors import safe_open

            with safe_open(str(EMB_PATH), framework="np") as f:
                meta = f.metadata() or {}
                if meta.get("encoder") == encoder.name and meta.get("bank") == self.digest():
                    E = f.get_tensor("embeddings").astype(np.float32)
        if E is None:
            E = encoder.encode(self.texts)
        with self._lock:
            self._emb[encoder.name] = E
        return E

    def save_embeddings(self, encoder: Any) -> None:
        from safetensors.numpy import save_file

        E = self.embeddings(encoder)
        save_file({"embeddings": E.astype(np.float16)}, str(EMB_PATH),
                  metadata={"encoder": encoder.name, "bank": self.digest()})

    # -- retrieval (the paper's random / lexical / semantic demo selection, balanced per label) --------------

    def by_label(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, lab in enumerate(self.labels):
            out.setdefault(lab, []).append(i)
        return out

    def _bm25_scores(self, query: str) -> np.ndarray:
        # Small self-contained BM25 (k1=1.5, b=0.75): no extra dependency, a few hundred docs.
        with self._lock:
            if self._bm25 is None:
                docs = [Counter(tokens(t)) for t in self.texts]
                df: Counter[str] = Counter(w for d in docs for w in d)
                avg = sum(sum(d.values()) for d in docs) / max(len(docs), 1)
                idf = {w: math.log(1 + (len(docs) - n + 0.5) / (n + 0.5)) for w, n in df.items()}
                self._bm25 = (docs, idf, avg)
        docs, idf, avg = self._bm25
        q = set(tokens(query))
        out = np.zeros(len(docs))
        for i, d in enumerate(docs):
            dl = sum(d.values())
            for w in q & d.keys():
                tf = d[w]
                out[i] += idf[w] * tf * 2.5 / (tf + 1.5 * (0.25 + 0.75 * dl / avg))
        return out

    def select(self, query: str, labels: list[str], k: int, *, method: str = "random", seed: int = 0,
               encoder: Any = None, query_emb: np.ndarray | None = None) -> list[int]:
        """k demo indices balanced over `labels` (k // len(labels) each), most relevant last (nearest the query)."""
        if k <= 0:  # zero-shot
            return []
        groups = self.by_label()
        per = max(1, k // max(len(labels), 1))
        if method == "semantic":
            if query_emb is None:
                query_emb = encoder.encode([query])[0]
            rel = self.embeddings(encoder) @ query_emb
        elif method == "lexical":
            rel = self._bm25_scores(query)
        elif method == "random":
            rel = None
        else:
            raise ValueError(f"unknown retrieval method {method!r}; use one of {list(RETRIEVAL_METHODS)}")
        rng = random.Random(seed)
        picked: list[int] = []
        for lab in labels:
            idx = list(groups.get(lab, []))
            if rel is None:
                picked += rng.sample(idx, min(per, len(idx)))
            else:
                picked += sorted(idx, key=lambda i: -rel[i])[:per]
        if rel is None:
            rng.shuffle(picked)
        else:
            picked.sort(key=lambda i: rel[i])  # ascending: the most similar demos sit closest to the query
        return picked
