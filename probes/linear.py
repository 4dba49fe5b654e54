"""``LinearProbe``: the scikit-learn estimator that fits a probe direction.

It follows the estimator protocol (fit / decision_function / predict_proba / predict). Standardization is fitted
but then *folded into* the weights (``coef_ = w / scale``, ``intercept_ = b - w·mean/scale``) so serving is one
fp32 dot product on the raw activation, exactly what the fused hook can afford inside a forward pass; the fitted
direction is saved as a ``probes.probe.ProbeArtifact``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Logistic-regression (or difference-of-means) direction on standardized features, folded back.

    ``method="logreg"``: L2 logistic regression, ``C`` controls regularization; ``class_weight="balanced"``
    because privacy sets are rarely balanced. ``method="diffmean"``: mean(pos) - mean(neg) in standardized
    space; no optimizer, robust with few samples, usually a little weaker.
    """

    def __init__(self, method: Literal["logreg", "diffmean"] = "logreg", C: float = 0.3,
                 max_iter: int = 2000, threshold: float = 0.0) -> None:
        self.method = method
        self.C = C
        self.max_iter = max_iter
        self.threshold = threshold

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearProbe:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).astype(int)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError("X must be [n, d] and match y")
        if not np.isfinite(X).all():
            raise ValueError("X contains non-finite values")
        if set(np.unique(y)) != {0, 1}:
            raise ValueError("LinearProbe needs both classes 0 and 1")
        mean = X.mean(0)
        scale = X.std(0)
        scale[scale < 1e-8] = 1.0
        Z = (X - mean) / scale
        if self.method == "logreg":
            clf = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight="balanced")
            clf.fit(Z, y)
            w, b = clf.coef_[0], float(clf.intercept_[0])
        elif self.method == "diffmean":
            w = Z[y == 1].mean(0) - Z[y == 0].mean(0)
            w = w / (np.linalg.norm(w) + 1e-12)
            b = -float(w @ (Z[y == 1].mean(0) + Z[y == 0].mean(0))) / 2
        else:
            raise ValueError(f"unknown method {self.method!r}")
        self.coef_ = (w / scale).astype(np.float32)
        self.intercept_ = np.float32(b - float((w * mean / scale).sum()))
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        return (X @ self.coef_).astype(np.float64) + float(self.intercept_)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-np.clip(self.decision_function(X), -50, 50)))
        return np.stack([1 - p, p], axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.decision_function(X) > self.threshold).astype(int)
