"""Scoring a user category from a few examples: a nearest-prototype margin against benign anchors (see
`personalization.embedding` for why: 1-50 examples are too few to train anything, and this needs no retraining
when the user edits the profile)."""

from __future__ import annotations

import numpy as np

from guardrails.errors import InvalidInputError

from .heads import calibrate, sigmoid


class PrototypeCategory:
    """A user category scored by a nearest-prototype margin against benign anchors (works from 1 example)."""

    def __init__(self, target_fpr: float = 0.01, definition_weight: float = 0.9, k_neg: int = 3) -> None:
        self.target_fpr, self.definition_weight, self.k_neg = target_fpr, definition_weight, k_neg

    def fit(self, P: np.ndarray, N: np.ndarray, E_cal: np.ndarray, definition: np.ndarray | None = None,
            counter: np.ndarray | None = None) -> PrototypeCategory:
        """P: example embeddings, N: benign anchors, E_cal: held-out benign for calibration, counter: the user's
        counter-examples (more negatives). N is kept by reference, not copied: every category of a backend shares
        one anchor array, so a cache of many compiled categories holds the anchors once."""
        if P.shape[0] == 0 and definition is None:
            raise InvalidInputError("a category needs at least one example or a definition")
        self.pos_ = P
        self.def_ = definition
        self.anchors_ = N
        self.counter_ = counter if counter is not None and counter.shape[0] else None
        self.threshold_, self.scale_ = calibrate(self._raw(E_cal), self.target_fpr)
        return self

    def _raw(self, E: np.ndarray) -> np.ndarray:
        pos = np.full(E.shape[0], -1.0, dtype=np.float32)
        if self.pos_.shape[0]:
            pos = (E @ self.pos_.T).max(1)
        if self.def_ is not None:  # definitions are short and abstract: they count a little less than examples
            pos = np.maximum(pos, self.definition_weight * (E @ self.def_))
        sims = E @ self.anchors_.T
        if self.counter_ is not None:
            sims = np.concatenate([sims, E @ self.counter_.T], axis=1)
        k = min(self.k_neg, sims.shape[1])
        neg = np.sort(sims, axis=1)[:, -k:].mean(1) if k else np.zeros(E.shape[0])
        return pos - neg

    def decision_function(self, E: np.ndarray) -> np.ndarray:
        return (self._raw(E) - self.threshold_) / self.scale_

    def predict_proba(self, E: np.ndarray) -> np.ndarray:
        return sigmoid(self.decision_function(E))

    def predict(self, E: np.ndarray) -> np.ndarray:
        return self.predict_proba(E) >= 0.5
