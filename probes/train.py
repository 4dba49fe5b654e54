"""Probe training: layer chosen by grouped cross-validation, threshold calibrated on held-out folds.

Why not NeuroFilter's recipe as-is: choosing the layer by *training* accuracy overfits, and an
accuracy-tuned threshold says nothing about false positives. Here every candidate layer is scored on
out-of-fold (OOF) predictions from ``GroupKFold`` over ``group`` (profile / template / vignette), so no
profile or template is on both sides; the layer maximizing OOF AUROC + OOF TPR at the target FPR wins, and τ
is the target-FPR quantile of the OOF *negative* scores at that layer. The final direction is refit on all
data. The multi-turn probe is fit on per-turn displacements a_t - a_1 (or deltas a_t - a_{t-1}), on activations
collected through the sentinel, and calibrated on conversation-level OOF max_t S_t of benign conversations (a
conversation is flagged if any turn is).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.model_selection import GroupKFold
from tqdm.auto import tqdm

from .linear import LinearProbe
from .metrics import auroc, calibrate_threshold, rates, tpr_at_fpr
from .probe import ProbeArtifact, ProbeMeta

log = logging.getLogger("railguard.probes")
Method = Literal["logreg", "diffmean"]
DriftTarget = Literal["displacement", "delta"]


def _folds(groups: Sequence[Any], n_splits: int) -> list[tuple[np.ndarray, np.ndarray]]:
    g = np.asarray([str(x) for x in groups])
    k = min(n_splits, len(np.unique(g)))
    if k < 2:
        raise ValueError("need at least 2 distinct groups for grouped cross-validation")
    return list(GroupKFold(n_splits=k).split(np.zeros(len(g)), groups=g))


MAX_COMBINED_LAYERS = 4


def _columns(X: np.ndarray, layers: Sequence[int], pick: Sequence[int]) -> np.ndarray:
    """``X [n, len(layers), d]`` -> ``[n, len(pick) * d]``: the picked layers concatenated in ascending order
    (the order :meth:`ProbeArtifact.features` uses at serving time)."""
    idx = [list(layers).index(li) for li in sorted(pick)]
    return X[:, idx].reshape(len(X), -1)


def _add_layers(chosen: list[int], key: float, scores: np.ndarray, candidates: Sequence[int],
                oof_key: Callable[[list[int]], tuple[float, np.ndarray]], *, max_layers: int, min_gain: float,
                progress: bool, desc: str) -> tuple[list[int], np.ndarray, list[dict[str, Any]]]:
    """Greedy forward layer selection shared by both probes: starting from ``chosen`` (CV key ``key``, OOF
    ``scores``), add the candidate whose concatenation raises ``oof_key`` most, while it rises by at least
    ``min_gain`` and fewer than ``max_layers`` are chosen. Returns (layers ascending, their OOF scores, steps)."""
    steps: list[dict[str, Any]] = [{"layers": list(chosen), "cv_key": key}]
    while len(chosen) < max_layers:
        trial: tuple[float, int, np.ndarray] | None = None
        for extra in tqdm([c for c in candidates if c not in chosen], desc=f"{desc}: combine with {chosen}",
                          disable=not progress, leave=False):
            k2, s2 = oof_key(sorted([*chosen, extra]))
            if trial is None or k2 > trial[0] + 1e-9:
                trial = (k2, extra, s2)
        if trial is None or trial[0] < key + min_gain:
            break
        key, scores = trial[0], trial[2]
        chosen = sorted([*chosen, trial[1]])
        steps.append({"layers": list(chosen), "cv_key": key})
    return chosen, scores, steps


def _cv_key(y: np.ndarray, s: np.ndarray, target_fpr: float) -> tuple[float, float, float]:
    """(OOF AUROC + TPR at target_fpr, AUROC, TPR): the layer-selection criterion, NaN scores dropped."""
    ok = np.isfinite(s)
    a = auroc(y[ok], s[ok]) or 0.0
    t = tpr_at_fpr(y[ok], s[ok], target_fpr)
    return a + t, a, t


def oof_scores(X: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]],
               method: Method = "logreg", C: float = 0.3) -> np.ndarray:
    """Out-of-fold decision scores of a LinearProbe (folds lacking a class fall back to NaN -> dropped)."""
    out = np.full(len(y), np.nan)
    for tr, te in folds:
        if len(np.unique(y[tr])) < 2:
            continue
        out[te] = LinearProbe(method=method, C=C).fit(X[tr], y[tr]).decision_function(X[te])
    return out


def _turn_index(conversation_turns: Sequence[tuple[str, int] | None] | None,
                n: int) -> tuple[np.ndarray, dict[str, list[int]]]:
    """(mask of request rows: single-turn or a first user turn, {conversation key: its rows})."""
    if conversation_turns is None:
        return np.ones(n, dtype=bool), {}
    if len(conversation_turns) != n:
        raise ValueError("conversation_turns must name one (conversation, turn) or None per training row")
    first = np.ones(n, dtype=bool)
    convs: dict[str, list[int]] = {}
    for i, ct in enumerate(conversation_turns):
        if ct is None:
            continue
        key, t = str(ct[0]), int(ct[1])
        if t < 0:
            raise ValueError("turn indices start at 0")
        first[i] = t == 0
        convs.setdefault(key, []).append(i)
    return first, convs


def _history_threshold(y: np.ndarray, s: np.ndarray, first: np.ndarray, convs: dict[str, list[int]], tau: float,
                       target_fpr: float) -> tuple[float | None, dict[str, Any] | None]:
    """τ for later turns: the ``target_fpr`` point of each benign conversation's highest OOF score over its later
    turns (None without such conversations), and the conversation-level OOF rates with both thresholds."""
    later = {k: [i for i in rows if not first[i] and np.isfinite(s[i])] for k, rows in convs.items()}
    benign = [k for k, rows in convs.items() if later[k] and not y[rows].any()]
    if not benign:
        return None, None
    tau_h = calibrate_threshold(np.array([s[later[k]].max() for k in benign]), target_fpr)
    keys = [k for k in convs if later[k]]
    margin = [max([s[i] - tau for i in convs[k] if first[i] and np.isfinite(s[i])] + [s[later[k]].max() - tau_h])
              for k in keys]
    return tau_h, rates(np.array([int(y[convs[k]].any()) for k in keys]), np.array(margin), 0.0)


def fit_single(X: np.ndarray, y: ArrayLike, groups: Sequence[Any], layers: Sequence[int], *,
               model_id: str, fingerprint: str, target_fpr: float = 0.01, layer: int | None = None,
               method: Method = "logreg", C: float = 0.3, n_splits: int = 5,
               data_sha256: dict[str, str] | None = None, progress: bool = True,
               domains: Sequence[str] | None = None, max_layers: int = MAX_COMBINED_LAYERS,
               min_gain: float = 0.005,
               conversation_turns: Sequence[tuple[str, int] | None] | None = None,
               later_turn_threshold: bool = True, calibration_rows: ArrayLike | None = None) -> ProbeArtifact:
    """Fit a single-turn probe. ``X`` is ``[n, len(layers), d]`` (layers sorted as given).

    The best single layer is chosen by grouped CV (OOF AUROC + TPR at ``target_fpr``). Then, up to
    ``max_layers`` in all, shallower candidate layers are added greedily, each time the one whose concatenation
    raises that CV key most, while it rises by at least ``min_gain``. Only shallower layers: the sentinel's
    early exit (the deepest probe layer) and so the per-turn cost do not move. On the default data (requests and
    every conversation turn) this took layer 15 alone (CV key 1.735) to layers 6+15 (1.843) and 6+12+15 (1.877).
    The key pools all rows, as the probe serves every turn. ``layer`` pins one layer and ``max_layers=1`` keeps
    the best single one.

    τ is the ``target_fpr`` point of the OOF negatives that are requests: single-turn rows and first user turns.
    ``conversation_turns`` names, per row, its (conversation key, 0-based user-turn index), or None for a
    single-turn request. Later turns get their own ``history_threshold``: the ``target_fpr`` point of the benign
    conversations' highest OOF score over their later turns, so a benign conversation, not a turn, is what
    ``target_fpr`` bounds. One pooled τ over all rows let the many easy history turns pull τ down (default data:
    OOF FPR 3.2 % on requests at a pooled 1 %) while each extra turn of a conversation was another chance of a
    false alarm; with both thresholds the default probe's OOF rates are 0.62 TPR at 0.98 % FPR on requests and,
    per conversation, 0.92 of attacks at 0.96 % of benign ones (``later_turn_threshold=False``: τ serves every
    turn). ``calibration_rows`` (a boolean mask, default all) limits the rows whose OOF scores set τ, the later-turn
    τ (whole conversations) and the CV metrics: rows outside it only train the direction (the context-free probe's
    scenario negatives).
    With ``domains`` (one source/scenario name per
    row) the OOF FPR of each domain at its rows' τ is stored too (``metrics.cv.fpr_by_domain``): a pooled 1 % can
    hide a domain the probe cannot separate (AirGap rows on the default probe).
    """
    y = np.asarray(y).astype(int)
    if max_layers < 1:
        raise ValueError("max_layers must be at least 1")
    dom = np.asarray([str(x) for x in domains]) if domains is not None else None
    if dom is not None and dom.shape != y.shape:
        raise ValueError("domains must name one domain per training row")
    layers = list(layers)
    folds = _folds(groups, n_splits)
    first, convs = _turn_index(conversation_turns, len(y))
    calib = np.ones(len(y), bool) if calibration_rows is None else np.asarray(calibration_rows, bool)
    if calib.shape != y.shape or not (calib & (y == 0)).any():
        raise ValueError("calibration_rows must mark one flag per training row, negatives among them")
    req = first & calib  # the request rows that set τ and the CV request metrics
    cand = [layer] if layer is not None else layers
    per_layer: dict[int, dict[str, float | None]] = {}
    best: tuple[float, int, np.ndarray] | None = None
    def oof_key(pick: list[int]) -> tuple[float, np.ndarray]:
        s = oof_scores(_columns(X, layers, pick), y, folds, method, C)
        return _cv_key(y, s, target_fpr)[0], s

    for li in tqdm(cand, desc="layers", disable=not progress):
        _, s = oof_key([li])
        key, a, t = _cv_key(y, s, target_fpr)
        per_layer[li] = {"oof_auroc": a, "oof_tpr_at_target_fpr": t}
        if best is None or key > best[0] + 1e-9:
            best = (key, li, s)
    assert best is not None
    key, li, s = best
    chosen, s, steps = _add_layers([li], key, s, [c for c in layers if c < li], oof_key,
                                   max_layers=1 if layer is not None else max_layers, min_gain=min_gain,
                                   progress=progress, desc="layers")
    ok = np.isfinite(s)
    neg = ok & (y == 0)
    tau = calibrate_threshold(s[neg & req], target_fpr)
    own_convs = {k: rows for k, rows in convs.items() if calib[rows].all()}  # the later-turn τ: same rule
    tau_h, cv_conv = (_history_threshold(y, s, first, own_convs, tau, target_fpr) if later_turn_threshold
                      else (None, None))
    thr = np.where(first, tau, tau if tau_h is None else tau_h)
    final = LinearProbe(method=method, C=C).fit(_columns(X, layers, chosen), y)
    cv = rates(y[ok & req], s[ok & req], tau)
    if dom is not None:
        cv["fpr_by_domain"] = {k: float((s[neg & (dom == k)] > thr[neg & (dom == k)]).mean())  # type: ignore
                               for k in sorted(set(dom[neg]))}
    scale = float(np.std(s[ok])) or 1.0
    meta = ProbeMeta(kind="single", model_id=model_id, model_fingerprint=fingerprint, layer=chosen[-1],
                     layers=chosen if len(chosen) > 1 else None, d_model=X.shape[-1], threshold=tau,
                     history_threshold=tau_h, target_fpr=target_fpr, score_scale=scale, method=method,
                     data_sha256=data_sha256 or {},
                     metrics={"cv": cv, "per_layer": {str(k): v for k, v in per_layer.items()},
                              "layer_selection": steps, "n_splits": len(folds),
                              **({"cv_conversation": cv_conv} if cv_conv else {})})
    log.info("single-turn probe: layers %s, tau %.4f (later turns %s), OOF requests auroc %.4f tpr %.4f fpr %.4f",
             chosen, tau, "same" if tau_h is None else f"{tau_h:.4f}", cv["auroc"] or 0, cv["tpr"] or 0,
             cv["fpr"] or 0)
    return ProbeArtifact(coef=final.coef_, intercept=float(final.intercept_), meta=meta)


def drift_scores(coef: np.ndarray, conv: np.ndarray) -> np.ndarray:
    """S_t = w·(a_t - a_1) for every turn of one conversation ``[T, d]`` (S_1 = 0)."""
    return (conv - conv[0]) @ coef


def fit_multiturn(convs: list[np.ndarray], labels: Sequence[int], turn_labels: Sequence[Sequence[int] | None],
                  groups: Sequence[Any], layers: Sequence[int], *, model_id: str, fingerprint: str,
                  target_fpr: float = 0.01, layer: int | None = None, method: Method = "logreg",
                  C: float = 0.3, n_splits: int = 5, data_sha256: dict[str, str] | None = None,
                  progress: bool = True, target: DriftTarget = "displacement",
                  max_layers: int = 1, min_gain: float = 0.005) -> ProbeArtifact:
    """Multi-turn drift probe; per-turn labels when given, else the conversation label.

    ``target="delta"`` fits w on a_t - a_{t-1} (NeuroFilter). ``"displacement"`` (default) fits it on
    a_t - a_1, the exact quantity S_t = w·(a_t - a_1) thresholds at serving time (NeuroFilter's
    delta-vs-displacement ablation); on our CMPL dev folds it ranked conversations clearly better (OOF AUROC
    0.76 vs 0.70 at the best layer). Serving is identical either way: the tracker still telescopes deltas.

    With ``max_layers`` > 1 the state a may concatenate layers, chosen as in :func:`fit_single` (best layer,
    then greedy while the conversation-level OOF key rises by ``min_gain``) but from every candidate: the caller
    already capped them at the sentinel's early-exit layer. Off by default: on the default data it raised the
    OOF TPR at 1 % FPR from 0.612 (layer 12) to 0.823 (layers 6+12+15), yet on the dev conversations flagged
    fewer attacks at more false alarms (0.883 / 0.070 vs 0.904 / 0.053 with layer 12 alone, measured with the
    session-8 per-turn probe): the CV folds share templates that the extra layers learn. ``layer`` pins one
    layer.
    """
    y_conv = np.asarray(labels).astype(int)
    layers = list(layers)
    if max_layers < 1:
        raise ValueError("max_layers must be at least 1")
    folds = _folds(groups, n_splits)

    def deltas(ids: Iterable[int], pick: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for i in ids:
            a = _columns(convs[i], layers, pick)
            tl = turn_labels[i]
            for t in range(1, len(a)):
                xs.append(a[t] - (a[0] if target == "displacement" else a[t - 1]))
                ys.append(int(tl[t]) if tl is not None else int(y_conv[i]))
        return np.asarray(xs), np.asarray(ys)

    def oof_key(pick: Sequence[int]) -> tuple[float, np.ndarray]:
        conv_score = np.full(len(convs), np.nan)
        for tr, te in folds:
            Xd, yd = deltas(tr, pick)
            if len(np.unique(yd)) < 2:
                continue
            w = LinearProbe(method=method, C=C).fit(Xd, yd).coef_
            for i in te:
                d = drift_scores(w, _columns(convs[i], layers, pick))
                conv_score[i] = d[1:].max() if len(d) > 1 else 0.0  # turn 1 is the baseline, never flagged
        return _cv_key(y_conv, conv_score, target_fpr)[0], conv_score

    per_layer: dict[int, dict[str, float | None]] = {}
    best: tuple[float, int, np.ndarray] | None = None
    for li in tqdm([layer] if layer is not None else layers, desc="layers (multi-turn)", disable=not progress):
        _, conv_score = oof_key([li])
        key, a, t = _cv_key(y_conv, conv_score, target_fpr)
        per_layer[li] = {"oof_auroc": a, "oof_tpr_at_target_fpr": t}
        if best is None or key > best[0] + 1e-9:
            best = (key, li, conv_score)
    assert best is not None
    key, li, s = best
    chosen, s, steps = _add_layers([li], key, s, layers, oof_key,
                                   max_layers=1 if layer is not None else max_layers, min_gain=min_gain,
                                   progress=progress, desc="layers (multi-turn)")
    ok = np.isfinite(s)
    tau = calibrate_threshold(s[ok & (y_conv == 0)], target_fpr)
    Xd, yd = deltas(range(len(convs)), chosen)
    final = LinearProbe(method=method, C=C).fit(Xd, yd)
    cv = rates(y_conv[ok], s[ok], tau)
    meta = ProbeMeta(kind="multiturn", model_id=model_id, model_fingerprint=fingerprint, layer=chosen[-1],
                     layers=chosen if len(chosen) > 1 else None, d_model=convs[0].shape[-1], threshold=tau,
                     target_fpr=target_fpr, score_scale=float(np.std(s[ok])) or 1.0, method=f"{method}:{target}",
                     data_sha256=data_sha256 or {},
                     metrics={"cv_conversation": cv, "per_layer": {str(k): v for k, v in per_layer.items()},
                              "layer_selection": steps, "n_splits": len(folds), "n_deltas": int(len(yd))})
    log.info("multi-turn probe: layers %s, tau %.4f, OOF conv auroc %.4f tpr %.4f fpr %.4f", chosen, tau,
             cv["auroc"] or 0, cv["tpr"] or 0, cv["fpr"] or 0)
    # Drift score has no intercept (telescoping sum of w·Δ); τ absorbs the offset.
    return ProbeArtifact(coef=final.coef_, intercept=0.0, meta=meta)


def default_layers(n_layers: int) -> list[int]:
    """Candidate layers: 20%..80% depth in 10% steps (6, 9, ..., 24 for 30 layers). Very early layers are
    lexical and the last ones are shaped for next-token prediction; stopping by 80% also keeps early exit
    worthwhile for the sentinel."""
    return sorted({max(1, round(n_layers * f / 10)) for f in range(2, 9)})
