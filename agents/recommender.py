"""Base recommender trained on MovieLens ratings: PureSVD (truncated SVD of the implicit user x item matrix).

Why PureSVD: on ml-latest-small it trains in about a second on one CPU core (so it is trained at first use and
cached in-process instead of shipping weights), it is a well-known strong top-N baseline (Cremonesi et al.
2010), folds in unseen users from their history with one matrix product, and its item factors double as the
collaborative similarity the Matcher needs for "more like <title>". Follows the scikit-learn estimator
protocol: hyper-parameters in __init__, ``fit`` returns self, learned attributes end with ``_``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.decomposition import TruncatedSVD

from .catalog import Catalog


class PureSVDRecommender(BaseEstimator):
    """Top-N recommender: score(u) = x_u V V^T, x_u = the user's (weighted) interaction row.

    Parameters
    ----------
    n_components: latent dimension.
    min_rating: ratings below this count as no interaction (MovieLens: 0 keeps every rating as implicit).
    positive_boost: extra weight for ratings >= 4 (emphasises what the user liked, not just watched).
    """

    def __init__(self, n_components: int = 32, min_rating: float = 0.0, positive_boost: float = 1.0,
                 random_state: int = 0) -> None:
        self.n_components = n_components
        self.min_rating = min_rating
        self.positive_boost = positive_boost
        self.random_state = random_state

    def _weights(self, ratings: np.ndarray) -> np.ndarray:
        return 1.0 + self.positive_boost * (ratings >= 4.0)

    def fit(self, X: np.ndarray, y: None = None, *, item_ids: Iterable[int] | None = None) -> PureSVDRecommender:
        """X: structured array with fields user, item, rating (see catalog.load_ratings).

        ``item_ids`` fixes the column order (pass the catalog's ids so scores align with catalog rows).
        """
        X = X[X["rating"] >= self.min_rating]
        self.item_ids_ = np.asarray(
            sorted(set(X["item"].tolist())) if item_ids is None else list(item_ids), dtype=np.int64
        )
        self.item_index_ = {int(m): i for i, m in enumerate(self.item_ids_)}
        self.user_ids_ = np.unique(X["user"])
        self.user_index_ = {int(u): i for i, u in enumerate(self.user_ids_)}
        keep = np.fromiter((int(m) in self.item_index_ for m in X["item"]), bool, len(X))
        X = X[keep]
        rows = np.fromiter((self.user_index_[int(u)] for u in X["user"]), np.int64, len(X))
        cols = np.fromiter((self.item_index_[int(m)] for m in X["item"]), np.int64, len(X))
        vals = self._weights(X["rating"]).astype(np.float32)
        self.interactions_ = sparse.csr_matrix(
            (vals, (rows, cols)), shape=(len(self.user_ids_), len(self.item_ids_)), dtype=np.float32
        )
        k = max(1, min(self.n_components, min(self.interactions_.shape) - 1))
        svd = TruncatedSVD(n_components=k, random_state=self.random_state, algorithm="randomized", n_iter=7)
        svd.fit(self.interactions_)
        self.item_factors_ = svd.components_.T.astype(np.float32)  # (n_items, k)
        pop = np.asarray((self.interactions_ > 0).sum(axis=0)).ravel().astype(np.float32)
        self.popularity_ = pop / max(pop.max(), 1.0)
        self.singular_values_ = svd.singular_values_.astype(np.float32)
        # Similarity uses V·Σ: weighting by singular values keeps the noisy tail dimensions from dominating.
        scaled = self.item_factors_ * self.singular_values_
        norms = np.linalg.norm(scaled, axis=1, keepdims=True)
        self.item_unit_ = scaled / np.maximum(norms, 1e-8)
        return self

    # ------------------------------------------------------------------------------------------ scoring
    def history_vector(self, user_id: int | None = None,
                       history: dict[int, float] | None = None) -> np.ndarray:
        """Interaction row for a known user, or folded in from {item_id: rating} for a new one."""
        x = np.zeros(len(self.item_ids_), dtype=np.float32)
        if user_id is not None and int(user_id) in self.user_index_:
            x = self.interactions_[self.user_index_[int(user_id)]].toarray().ravel()
        for m, r in (history or {}).items():
            j = self.item_index_.get(int(m))
            if j is not None:
                x[j] = self._weights(np.asarray([r]))[0]
        return x

    def score(self, user_id: int | None = None, history: dict[int, float] | None = None) -> np.ndarray:
        """Raw scores over ``item_ids_``. Cold users (no history) get popularity."""
        x = self.history_vector(user_id, history)
        if not x.any():
            return self.popularity_.copy()
        return (x @ self.item_factors_) @ self.item_factors_.T

    def seen(self, user_id: int | None = None, history: dict[int, float] | None = None) -> np.ndarray:
        return self.history_vector(user_id, history) > 0

    def recommend(self, user_id: int | None = None, k: int = 10, *,
                  history: dict[int, float] | None = None) -> list[int]:
        """Plain top-k item ids (unseen only): the baseline the command-aware planner is compared with."""
        s = self.score(user_id, history)
        s[self.seen(user_id, history)] = -np.inf
        top = np.argpartition(-s, min(k, len(s) - 1))[:k]
        return [int(self.item_ids_[i]) for i in top[np.argsort(-s[top])]]

    def similar_to(self, item_id: int) -> np.ndarray:
        """Collaborative cosine similarity of every item to one item (zeros when the item is unknown)."""
        j = self.item_index_.get(int(item_id))
        if j is None:
            return np.zeros(len(self.item_ids_), dtype=np.float32)
        return self.item_unit_ @ self.item_unit_[j]


_default: dict[str, PureSVDRecommender] = {}


def default_recommender(catalog: Catalog, ratings: np.ndarray | None = None) -> PureSVDRecommender:
    """Trained at first use on all MovieLens ratings (~1 s) and cached per process."""
    key = str(id(catalog)) if ratings is not None else "ml"
    if key not in _default:
        from .catalog import load_ratings

        r = load_ratings() if ratings is None else ratings
        _default[key] = PureSVDRecommender().fit(r, item_ids=catalog.item_ids)
    return _default[key]
