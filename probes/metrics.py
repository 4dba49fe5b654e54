"""Threshold calibration and the CONTRACT metrics, shared by training, eval and tests."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score


def calibrate_threshold(neg_scores: ArrayLike, target_fpr: float) -> float:
    """Smallest τ such that at most ``floor(target_fpr * n)`` negatives score strictly above it.

    Flagging is ``score > τ``. Computed on *held-out* negative scores, so the FPR we promise is an estimate
    of deployment FPR, not a training-set artefact. With few negatives the floor makes it conservative.
    """
    s = np.sort(np.asarray(neg_scores, dtype=np.float64))[::-1]
    if s.size == 0:
        raise ValueError("need negative scores to calibrate a threshold")
    if not 0 < target_fpr < 1:
        raise ValueError("target_fpr must be in (0, 1)")
    k = int(np.floor(target_fpr * s.size))
    return float(s[min(k, s.size - 1)])


def auroc(y: ArrayLike, scores: ArrayLike) -> float | None:
    ya = np.asarray(y)
    if len(np.unique(ya)) < 2:
        return None
    return float(roc_auc_score(ya, np.asarray(scores, dtype=np.float64)))


def rates(y: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, float | int | None]:
    """n, n_pos, n_neg, auroc, tpr (None without positives), fpr (None without negatives)."""
    ya = np.asarray(y).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    flag = s > threshold
    n_pos, n_neg = int((ya == 1).sum()), int((ya == 0).sum())
    return {"n": int(ya.size), "n_pos": n_pos, "n_neg": n_neg, "auroc": auroc(ya, s),
            "tpr": float(flag[ya == 1].mean()) if n_pos else None,
            "fpr": float(flag[ya == 0].mean()) if n_neg else None, "threshold": float(threshold)}


def tpr_at_fpr(y: ArrayLike, scores: ArrayLike, target_fpr: float) -> float:
    """TPR when τ is calibrated on these same negatives (used only to *rank* layers on OOF scores)."""
    ya = np.asarray(y).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    tau = calibrate_threshold(s[ya == 0], target_fpr)
    return float((s[ya == 1] > tau).mean())
