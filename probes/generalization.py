"""Generalization protocols for probes: leave-one-scenario-out and train-on-one / test-on-another.

Why separate from training: these answer "does the direction transfer to a scenario it never saw?", which the
grouped CV inside :mod:`probes.train` cannot (its folds mix scenarios). Each probe here is calibrated on its own
training negatives (in-sample, as a deployment would be) and tested on the held-out scenario.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .linear import LinearProbe
from .metrics import calibrate_threshold, rates
from .train import Method, _columns


def _stacked(X: np.ndarray, layer_pos: int | Sequence[int]) -> np.ndarray:
    """``X [n, layers, d]`` at the given layer *positions*, concatenated (:func:`_columns` by position)."""
    return _columns(X, range(X.shape[1]), [int(i) for i in np.atleast_1d(layer_pos)])


def _transfer(F: np.ndarray, y: np.ndarray, train: np.ndarray, target_fpr: float, method: Method,
              C: float) -> tuple[LinearProbe, float]:
    """A probe fit on the ``train`` rows and its τ calibrated on their negatives (in-sample, as a deployment
    would): the shared step of the generalization protocols."""
    p = LinearProbe(method=method, C=C).fit(F[train], y[train])
    return p, calibrate_threshold(p.decision_function(F[train])[y[train] == 0], target_fpr)


def leave_one_out(X: np.ndarray, y: np.ndarray, key: Sequence[str], layer_pos: int | Sequence[int], *,
                  target_fpr: float = 0.01, method: Method = "logreg", C: float = 0.3,
                  min_pos: int = 1) -> dict[str, dict[str, Any]]:
    """Leave-one-scenario-out: train on all other scenarios, calibrate τ on their negatives (in-sample, as
    a deployment would), test on the held-out scenario. The honest generalization number."""
    y = np.asarray(y).astype(int)
    k = np.asarray(key)
    F = _stacked(X, layer_pos)
    out: dict[str, dict[str, Any]] = {}
    for s in sorted(set(key)):
        te, tr = k == s, k != s
        if len(np.unique(y[tr])) < 2:
            continue
        p, tau = _transfer(F, y, tr, target_fpr, method, C)
        out[s] = rates(y[te], p.decision_function(F[te]), tau)
    return out


def cross_domain(X: np.ndarray, y: np.ndarray, key: Sequence[str], layer_pos: int | Sequence[int], *,
                 domains: Sequence[str] | None = None, target_fpr: float = 0.01, method: Method = "logreg",
                 C: float = 0.3) -> dict[str, dict[str, dict[str, Any]]]:
    """Train on one domain, test on another, for every ordered pair (``{train: {test: rates}}``), each probe
    calibrated on its own training negatives as in :func:`leave_one_out`. ``domains`` restricts the pairs (e.g.
    the five CMPL scenarios); domains without both classes are not trained on."""
    y = np.asarray(y).astype(int)
    k = np.asarray(key)
    names = sorted(set(domains) if domains is not None else set(key))
    F = _stacked(X, layer_pos)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for a in names:
        if len(np.unique(y[k == a])) < 2:
            continue
        p, tau = _transfer(F, y, k == a, target_fpr, method, C)
        out[a] = {b: rates(y[k == b], p.decision_function(F[k == b]), tau) for b in names if b != a and (k == b).any()}
    return out
