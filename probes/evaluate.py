"""Evaluate a probe bundle on privacy JSONL (single- and multi-turn lines, detected per line).

Single-turn lines are scored in batches (cached activations) with the single-turn probe; latency is the p50
of un-batched checks on a sample. Multi-turn lines are replayed turn by turn through the sentinel encoder
exactly as the detector does at serving time (KV reuse, scored before each user turn is answered): a turn is
flagged when the per-turn probe exceeds its threshold for that turn (``threshold`` on turn 1,
``history_threshold`` after) or the drift S_t exceeds its own, a conversation when any turn is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from guardrails.models.templates import special_strings

from .capture import ActKey, probe_text, render, site_key, to_messages
from .features import cached_capture, single_turn_prompts
from .metrics import rates
from .probe import ProbeBundle
from .segments import repeated_tail_cut, sentence_prefixes
from .sentinel import SentinelEncoder
from .train import default_layers, drift_scores
from .velocity import alone_of, user_message_count

Record = dict[str, Any]


def _capture_acts(bundle: ProbeBundle, lm: Any, prompts: Sequence[str], progress: bool) -> dict[ActKey, np.ndarray]:
    # Capture at the standard candidate layers too: same forward cost (early exit at the deepest), and the
    # activation cache built during training is reused for any record already seen.
    layers = sorted(set(default_layers(lm.num_layers)) | set(bundle.layers))
    X = cached_capture(lm, prompts, layers, progress=progress)
    acts: dict[ActKey, np.ndarray] = {li: X[:, i] for i, li in enumerate(layers)}
    for k in sorted({k for ks in bundle.offsets.values() for k in ks} - {0}):  # probes reading an earlier token
        at = [li for li, ks in bundle.offsets.items() if k in ks]
        Xk = cached_capture(lm, prompts, at, progress=progress, offset=k)
        acts.update({site_key(li, k): Xk[:, i] for i, li in enumerate(at)})
    return acts


def eval_single(bundle: ProbeBundle, lm: Any, records: Sequence[Record], *, latency_sample: int = 16,
                progress: bool = True, sentences: bool = True) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """CONTRACT metrics for single-turn records; also returns (labels, raw scores) for plots. ``sentences``: as the
    detector serves (``PrivacyDetector(sentences=True)``), each request also scored at its earlier sentence ends
    (:mod:`probes.segments`), the largest score counting; ``whole_message`` reports the whole request alone. Rows
    holding a typed copy of a control token are scored through the sentinel, which reads it as text (as served)."""
    acts = _capture_acts(bundle, lm, single_turn_prompts(lm.tokenizer, records), progress)
    free = bundle.context_free

    def served(a: dict[ActKey, np.ndarray]) -> np.ndarray:  # raw single-probe score, or the larger margin
        if free is None:
            return np.asarray(bundle.single.raw(bundle.single.features(a)))
        return np.asarray(np.maximum.reduce(list(bundle.request_margins(a).values())))

    y = np.array([int(r["label"]) for r in records])
    whole = served(acts)
    s = whole.copy()
    marks = special_strings(lm.tokenizer)
    # cut where serving cuts: in the message as the probes read it (`probe_text`), not as written
    row_cuts = [sentence_prefixes(probe_text(r["request"]), markers=marks) if sentences else [] for r in records]
    enc = SentinelEncoder(lm.model, lm.tokenizer, bundle.layers, offsets=bundle.offsets)
    typed: set[int] = set()  # rows holding a control token's string: the batch path would read a real token there
    for i, r in enumerate(records):
        if any(m in f"{r.get('context') or ''}{r['request']}" for m in marks):
            typed.add(i)
            one, at_cuts = enc.activations(to_messages(r.get("context"), r["request"]), cuts=row_cuts[i])
            scores = [float(served({k: v[None] for k, v in a.items()})[0]) for a in (one, *at_cuts)]
            whole[i], s[i] = scores[0], max(scores)
    cuts = [(i, c) for i, r_cuts in enumerate(row_cuts) if i not in typed for c in r_cuts]
    if cuts:
        cut_prompts = [render(lm.tokenizer, to_messages(records[i].get("context"), c)) for i, c in cuts]
        np.maximum.at(s, np.array([i for i, _ in cuts]), served(_capture_acts(bundle, lm, cut_prompts, progress)))
    thr = bundle.single.meta.threshold if free is None else 0.0
    m: dict[str, Any] = rates(y, s, thr)
    if free is not None:  # served decision: either per-turn probe over its own τ; ranked by the larger margin
        by_probe = {"single": rates(y, bundle.single.raw(bundle.single.features(acts)), bundle.single.meta.threshold),
                    "context_free": rates(y, free.raw(free.features(acts)), free.meta.threshold)}
        m.update({"threshold": bundle.single.meta.threshold, "context_free_threshold": free.meta.threshold,
                  "by_probe": by_probe})
    m["sentences"] = sentences
    m["sentence_cuts"] = len(cuts)
    m["whole_message"] = {k: v for k, v in rates(y, whole, thr).items() if k in ("auroc", "tpr", "fpr")}
    lat = []
    for r, r_cuts in zip(records[:latency_sample], row_cuts, strict=False):
        t0 = time.perf_counter()
        enc.activations(to_messages(r.get("context"), r["request"]), cuts=r_cuts)
        lat.append((time.perf_counter() - t0) * 1000)
    m["latency_ms_p50"] = float(np.median(lat)) if lat else None
    m["layer"] = bundle.single.meta.layer
    m["layers"] = bundle.single.layers
    return m, y, s


def single_margins(bundle: ProbeBundle, scores: np.ndarray) -> np.ndarray:
    """`eval_single`'s scores as margins in score_scale units (> 0 flags), comparable with conversation margins:
    they already are when the bundle has a context-free probe (the max margin over both per-turn probes)."""
    if bundle.context_free is not None:
        return np.asarray(scores, dtype=np.float64)
    return (np.asarray(scores, dtype=np.float64) - bundle.single.meta.threshold) / bundle.single.meta.score_scale


def eval_multiturn(bundle: ProbeBundle, lm: Any, records: Sequence[Record], *, progress: bool = True,
                   margins_out: list[float] | None = None,
                   sentences: bool = True, alone: bool = False,
                   isolated: bool = False) -> tuple[dict[str, Any], np.ndarray, list[np.ndarray]]:
    """Conversation-level metrics + mean_detection_turn (1-based user turn of the first flag, positives), and
    with per-turn labels how that turn compares with the first inappropriate one (:func:`_timing`).
    ``margins_out`` receives each conversation's score (max margin over its turns; > 0 flags). ``sentences``: each
    user turn also scored at its earlier sentence ends, as the detector serves (see :func:`eval_single`).
    ``alone``: each user turn checked as the newest message alone (``Guard.check(text, session_id=...)``: no
    system prompt, no earlier messages), as served: the per-turn probes take the later-turn τ from the session's
    turn count (which a message repeating the previous one does not advance: a retry; without a drift probe there
    is no session and every check is turn 1), and the drift is computed but never enforced
    (``probes.scoring.PrivacyScorer``). ``isolated``: a user turn after earlier ones is also read behind the system
    prompt alone, at the first turn's τ, as the detector serves it when asked (``PrivacyDetector(alone=True)``)."""
    layers = bundle.layers
    enc = SentinelEncoder(lm.model, lm.tokenizer, layers, max_sessions=2, offsets=bundle.offsets)
    single, multi = bundle.single, bundle.multiturn
    y, conv_scores, drifts, first_flag, lat = [], [], [], [], []
    for ci, r in enumerate(tqdm(records, desc="conversations", disable=not progress)):
        msgs = to_messages(r.get("context"), turns=r["turns"])
        served: list[float] = []  # per user turn, the larger per-turn-probe margin over the message and its cuts
        a_multi: list[np.ndarray] = []
        turn, last = 0, None  # the session's turn count as served (alone: a repeated message is a retry)
        said: list[str] = []  # the earlier user messages, as the probes read them (repeated_tail_cut)
        for j, mm in enumerate(msgs):
            if mm["role"] != "user":
                continue
            if turn == 0 or not alone or (multi is not None and probe_text(mm["content"]) != last):
                turn += 1
            last = probe_text(mm["content"])
            t0 = time.perf_counter()
            upto = msgs[: j + 1]
            iso = [alone_of(upto)] if isolated and not alone and user_message_count(upto) > 1 else []
            text = probe_text(mm["content"])
            cuts = sentence_prefixes(text, markers=enc.markers) if sentences else []
            repeated = repeated_tail_cut(text, said) if sentences and not alone else None
            said.append(text)
            cuts += [repeated] if repeated and repeated not in cuts else []
            acts, cut_acts = enc.activations([mm] if alone else upto, session=None if alone else ci,
                                             cuts=sorted(cuts, key=len), renderings=iso)
            lat.append((time.perf_counter() - t0) * 1000)
            iso_acts = cut_acts.pop() if iso else None
            served.append(max([float(v) for a in (acts, *cut_acts) for v in bundle.request_margins(a, turn).values()]
                              + ([float(v) for v in bundle.request_margins(iso_acts, 1).values()]
                                 if iso_acts is not None else [])))
            if multi is not None:
                a_multi.append(multi.features(acts))
        enc.forget(ci)
        # per turn, the larger per-turn-probe margin (raw - τ for that turn) / score_scale: > 0 flags
        s1 = np.array(served)
        flags = s1 > 0
        if multi is not None and len(a_multi) > 1:
            d = drift_scores(multi.coef, np.stack(a_multi))
            drifts.append(d)
            dm = d - multi.meta.threshold
            dm[0] = -np.inf  # turn 1 is the baseline
            if not alone:
                flags = flags | (dm > 0)
            margin = s1 if alone else np.maximum(s1, dm / multi.meta.score_scale)
        else:
            drifts.append(np.zeros(len(served)))
            margin = s1
        y.append(int(r["label"]))
        conv_scores.append(float(np.max(margin)))
        first_flag.append(int(np.argmax(flags)) + 1 if flags.any() else None)
    ya = np.array(y)
    if margins_out is not None:
        margins_out.extend(conv_scores)
    m: dict[str, Any] = rates(ya, conv_scores, 0.0)
    # auroc ranks conversations by max over turns of max(single margin, drift margin) in score_scale units;
    # a conversation is flagged when that exceeds 0, i.e. when either probe crosses its own threshold.
    m["threshold"] = single.meta.threshold
    m["history_threshold"] = single.meta.history_threshold
    if bundle.context_free is not None:
        m["context_free_threshold"] = bundle.context_free.meta.threshold
    m["drift_threshold"] = multi.meta.threshold if multi else None
    m["drift_layer"] = multi.meta.layer if multi else None
    m["drift_layers"] = multi.layers if multi else None
    m["alone"] = alone
    det = [t for t, lab in zip(first_flag, y, strict=True) if lab == 1 and t is not None]
    m["mean_detection_turn"] = float(np.mean(det)) if det else None
    m.update(_timing(records, y, first_flag))
    m["latency_ms_p50"] = float(np.median(lat)) if lat else None
    m["encoder_stats"] = dict(enc.stats)
    return m, ya, drifts


def _timing(records: Sequence[Record], y: Sequence[int], first_flag: Sequence[int | None]) -> dict[str, Any]:
    """Was each attack flagged at the right turn? Needs per-user-turn ``turn_labels`` (1 = the turn asks for
    something inappropriate) on the attack records: ``mean_detection_delay`` is the first flagged turn minus the
    first inappropriate one over detected attacks (0 = caught at the turn itself), ``early_flag_rate`` the share
    of those detected attacks first flagged on a benign-looking step before it. None without labels."""
    delays: list[int] = []
    for r, lab, flag in zip(records, y, first_flag, strict=True):
        tl = r.get("turn_labels")
        if lab == 1 and flag is not None and tl and any(tl):
            delays.append(flag - (list(tl).index(1) + 1))
    if not delays:
        return {"mean_detection_delay": None, "early_flag_rate": None, "n_timed": 0}
    return {"mean_detection_delay": float(np.mean(delays)),
            "early_flag_rate": float(np.mean([d < 0 for d in delays])), "n_timed": len(delays)}


def plot(path: str | Path, y: np.ndarray, scores: np.ndarray, drifts: list[np.ndarray] | None = None,
         labels: Sequence[int] | None = None, drift_threshold: float | None = None) -> None:
    """ROC curve, and (multi-turn) S_t over turns per conversation, to one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    n = 2 if drifts else 1
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    ax = axes[0][0]
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, scores)
        ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="FPR", ylabel="TPR", title="ROC")
    if drifts:
        ax = axes[0][1]
        for d, lab in zip(drifts, labels or [0] * len(drifts), strict=False):
            ax.plot(range(1, len(d) + 1), d, c="red" if lab else "blue", alpha=0.4)
        if drift_threshold is not None:
            ax.axhline(drift_threshold, ls="--", c="k")
        ax.set(xlabel="user turn", ylabel="S_t", title="drift S_t (red = attack)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
