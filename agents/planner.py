"""Planner agent: turns a RecPolicy into a feed with the RecBot tool chain, chosen from the preference kinds.

    hard prefs          -> Filter      (keep-only / exclude by rule; never violated, never relaxed)
    positive soft prefs -> Matcher     (+ attribute match + encoder similarity + collaborative similarity)
    negative soft prefs -> Attenuator  (- attribute match - encoder similarity)
    always              -> Aggregator  (s = base + match + atten, then top-k)

Why rules and not an LLM: the chain is fully determined by the preference kinds, and a rule planner makes the
hard-constraint guarantee checkable. Relaxation only loosens constraints the user never stated (quality floor,
then "unseen items only"); when explicit hard constraints still leave fewer than k items the feed says so
(``infeasible``) and returns fewer items rather than violating them.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from guardrails.errors import InvalidInputError

from .catalog import Catalog
from .embeddings import ItemEmbeddings
from .policy import RecPolicy
from .recommender import PureSVDRecommender
from .schema import Preference


class Plan(BaseModel):
    """What the planner did: the chain, what was relaxed, and whether the request could be met."""

    tools: list[str] = Field(default_factory=list)
    relaxed: list[str] = Field(default_factory=list)
    infeasible: bool = False
    n_candidates: int = 0
    explanation: str = ""


class Feed(BaseModel):
    items: list[int]
    titles: list[str]
    plan: Plan


def _rescale(sim: np.ndarray, pct: float) -> np.ndarray:
    """Map similarities to [0, 1] relative to the catalog: only the top (100 - pct)% get any credit."""
    lo, hi = float(np.percentile(sim, pct)), float(sim.max())
    return np.clip((sim - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def choose_tools(policy: RecPolicy) -> list[str]:
    """The tool chain from the preference kinds present (RecBot's rule table)."""
    prefs = policy.preferences
    tools = []
    if any(p.kind == "hard" for p in prefs):
        tools.append("Filter")
    if any(p.kind == "soft" and p.polarity == "+" for p in prefs):
        tools.append("Matcher")
    if any(p.kind == "soft" and p.polarity == "-" for p in prefs):
        tools.append("Attenuator")
    tools.append("Aggregator")
    return tools


class Planner:
    """Command-aware re-ranker over a pluggable base recommender (anything with score/seen/similar_to)."""

    def __init__(
        self, catalog: Catalog, base: PureSVDRecommender, embeddings: ItemEmbeddings | None = None, *,
        attr_weight: float = 0.6, sem_weight: float = 0.5, collab_weight: float = 0.8, min_support: int = 5,
    ) -> None:
        self.catalog = catalog
        self.base = base
        self.embeddings = embeddings
        self.attr_weight = attr_weight
        self.sem_weight = sem_weight
        self.collab_weight = collab_weight
        self.min_support = min_support
        pop = np.zeros(len(catalog), dtype=np.float32)
        self._rows = np.fromiter((catalog.index.get(int(m), -1) for m in base.item_ids_), np.int64)
        counts = np.asarray((base.interactions_ > 0).sum(axis=0)).ravel()
        ok = self._rows >= 0
        pop[self._rows[ok]] = counts[ok]
        self.support_ = pop

    # ------------------------------------------------------------------------------------------- tools
    def filter(self, hard: list[Preference]) -> np.ndarray:
        """Filter tool: items satisfying every hard preference (positive = keep-only, negative = exclude); keep-only
        filters in one ``any_of`` set are alternatives (an item needs one of them)."""
        keep = np.ones(len(self.catalog), bool)
        either: dict[str, np.ndarray] = {}
        for p in hard:
            m = self.catalog.mask(p)
            if p.any_of is not None:
                either[p.any_of] = either[p.any_of] | m if p.any_of in either else m
            else:
                keep &= m if p.polarity == "+" else ~m
        for m in either.values():
            keep &= m
        return keep

    def _semantic(self, p: Preference) -> np.ndarray:
        if self.embeddings is None or not self.embeddings.available:
            return np.zeros(len(self.catalog), np.float32)
        if p.attribute == "title" and p.operator == "like":
            row = self._title_row(str(p.value))
            sim = self.embeddings.item_similarity(row) if row >= 0 else self.embeddings.similarity(str(p.value))
        else:
            sim = self.embeddings.similarity(str(p.value))
        return _rescale(sim, 75)

    def _title_row(self, value: str) -> int:
        from .catalog import fold

        v = fold(value)
        hits = [i for i, t in enumerate(self.catalog.folded_titles) if v in t]
        if not hits:
            return -1
        return max(hits, key=lambda i: self.support_[i])

    def _collab(self, p: Preference) -> np.ndarray:
        out = np.zeros(len(self.catalog), np.float32)
        if p.attribute != "title" or p.operator != "like":
            return out
        row = self._title_row(str(p.value))
        if row < 0:
            return out
        sim = self.base.similar_to(int(self.catalog.item_ids[row]))
        ok = self._rows >= 0
        out[self._rows[ok]] = sim[ok]
        out[row] = 0.0
        out = _rescale(out, 95)  # "more like X" should not recommend X itself
        if p.polarity == "-":  # "less like X" penalises X the most (its 0 lifted X above the films it attenuated)
            out[row] = 1.0
        return out

    def _pref_score(self, p: Preference) -> np.ndarray:
        s = np.zeros(len(self.catalog), np.float32)
        if p.attribute in ("genre", "year", "tag") or (p.attribute == "title" and p.operator == "contains"):
            s += self.attr_weight * self.catalog.mask(p)
        if p.attribute in ("tag", "text", "title") or p.operator == "like":
            s += self.sem_weight * self._semantic(p)
        s += self.collab_weight * self._collab(p)
        return p.weight * s

    def matcher(self, positives: list[Preference]) -> np.ndarray:
        """Matcher tool: positive soft score = attribute match + semantic + collaborative similarity."""
        s = np.zeros(len(self.catalog), np.float32)
        for p in positives:
            s += self._pref_score(p)
        return s

    def attenuator(self, negatives: list[Preference]) -> np.ndarray:
        """Attenuator tool: negative soft intents, embedded separately (never folded into the positive query)."""
        s = np.zeros(len(self.catalog), np.float32)
        for p in negatives:
            s -= self._pref_score(p)
        return s

    def base_scores(self, user_id: int | None, history: dict[int, float] | None) -> tuple[np.ndarray, np.ndarray]:
        raw = self.base.score(user_id, history)
        seen_b = self.base.seen(user_id, history)
        s = np.full(len(self.catalog), -1.0, np.float32)
        seen = np.zeros(len(self.catalog), bool)
        ok = self._rows >= 0
        top = max(float(raw[~seen_b].max()) if (~seen_b).any() else 1.0, 1e-6)
        s[self._rows[ok]] = np.clip(raw[ok] / top, -1, 1)
        seen[self._rows[ok]] = seen_b[ok]
        return s, seen

    # --------------------------------------------------------------------------------------- aggregator
    def recommend(self, policy: RecPolicy, user_id: int | None = None, *, k: int = 10,
                  history: dict[int, float] | None = None) -> Feed:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        tools = choose_tools(policy)
        hard = policy.hard()
        pos = [p for p in policy.soft() if p.polarity == "+"]
        neg = [p for p in policy.soft() if p.polarity == "-"]
        for p in policy.preferences:
            self.catalog.require(p.attribute)
        base, seen = self.base_scores(user_id, history)
        score = base + self.matcher(pos) + self.attenuator(neg)
        keep = self.filter(hard)
        relaxed: list[str] = []
        floor = self.support_ >= self.min_support
        cand = keep & ~seen & floor
        if cand.sum() < k:
            relaxed.append(f"quality floor (items with >= {self.min_support} ratings)")
            cand = keep & ~seen
        if cand.sum() < k:
            relaxed.append("unseen-only (already rated items allowed)")
            cand = keep.copy()
        infeasible = bool(cand.sum() < k)
        idx = np.flatnonzero(cand)
        order = idx[np.argsort(-score[idx], kind="stable")][:k]
        expl = f"chain {' -> '.join(tools)}; {int(cand.sum())} candidates"
        if relaxed:
            expl += "; relaxed " + ", ".join(relaxed)
        if infeasible:
            expl += (f"; only {len(order)} items satisfy the hard constraints "
                     f"({'; '.join(p.describe() for p in hard)}) - not relaxed")
        plan = Plan(tools=tools, relaxed=relaxed, infeasible=infeasible, n_candidates=int(cand.sum()),
                    explanation=expl)
        return Feed(items=[int(self.catalog.item_ids[i]) for i in order],
                    titles=[self.catalog.titles[i] for i in order], plan=plan)
