"""Evaluation: the paper's binary protocol (`harm eval`) and the personalization protocols (`personalize-eval`).

Why these definitions (CONTRACT.md keys; extra keys are ours):
- Binary: harmful = any non-benign label; a text is flagged when any *active* category of the profile scores
  at or above its threshold. F1/precision/recall of the harmful class, FPR on benign, as in the paper. The CLI
  by default keeps active only the categories the file annotates (`scope_to_labels`): the paper evaluates each
  dataset with that dataset's labels, and a corpus that never annotated sentiment cannot tell whether flagging
  a sad SMS as negative was an error.
- block-new: the target category is unblocked in the base profile (the paper's baseline omits it), then a user
  category is created from ONE example drawn from the bank; success = share of held-out texts of that category
  flagged by the new category; `block_new_other_fpr` = FPR it adds on held-out benign text of all tasks.
- unblock: success = share of the category's texts on which that category's finding, as the harm detector makes
  it, no longer enforces (the policy mask: 1.0 by design, measured on the serving path so a broken mask shows);
  `unblock_other_recall` = recall on the other categories' texts with the category unblocked,
  flagged by any active category (end to end), with the default-profile baseline beside it; that figure also loses
  the other-category texts only the unblocked category was catching, so `unblock_other_own_recall` (each other
  category's own detector on its own texts, pooled) is reported beside `default_other_own_recall`: the mask must
  leave it exactly unchanged.
- variation: a user category from one flagged seed text; success = share of 8 perturbed variants (10 % of words
  edited, seeds disjoint from the example) that it flags. Means over 3 seeds where sampling is involved.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from guardrails.errors import InvalidInputError
from guardrails.jsonl import read_jsonl
from guardrails.text import coerce_text

from . import profile_ops as ops
from .profile import BASE_CATEGORIES, NAME_RE, RESERVED_NAMES, ModerationProfile
from .variations import variations

DEV_EVAL_PATH = Path(__file__).parent / "data" / "dev_eval.jsonl"


def load_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Harm rows `{"id", "text", "label"}`; a malformed line is an InvalidInputError naming the line."""
    rows = []
    for n, r in read_jsonl(path):
        if not isinstance(r.get("text"), str) or not isinstance(r.get("label"), str):
            raise InvalidInputError(f'{path}:{n}: expected {{"text": str, "label": str}}')
        try:  # `railguard check` refuses empty text and unpaired surrogates; an eval must not score them either
            coerce_text(r["text"])
        except InvalidInputError as exc:
            raise InvalidInputError(f"{path}:{n}: {exc}") from None
        label = r["label"]
        if label != "benign" and (not NAME_RE.fullmatch(label) or label in RESERVED_NAMES):
            # "Benign" or "" would be scored as a harmful user category that no detector can flag
            raise InvalidInputError(f"{path}:{n}: label must be 'benign', a base category or a user category name "
                                    f"(lowercase letters, digits, _ or -, starting with a letter), got {label[:60]!r}")
        rows.append(r)
    if not rows:
        raise InvalidInputError(f"{path}: no rows")
    return rows


def flagged(scores: dict[str, np.ndarray], profile: ModerationProfile) -> np.ndarray:
    n = len(next(iter(scores.values())))
    out = np.zeros(n, dtype=bool)
    for name, cat in profile.active().items():
        out |= scores[name] >= (0.5 if cat.threshold is None else cat.threshold)
    return out


def _unenforced_share(backend: Any, scores: dict[str, np.ndarray], profile: ModerationProfile, category: str,
                      rows: np.ndarray) -> float:
    """Share of ``rows`` on which ``category``'s finding, as the harm detector makes it (`HarmDetector.findings`,
    where the policy mask lives), does not enforce: unblock success measured on the path that serves checks."""
    from guardrails.decision import Action

    from .plugin import HarmDetector

    detector = HarmDetector(backend)
    kept = [next(f for f in detector.findings(scores, profile, i=int(i)) if f.category == category).action
            == Action.ALLOW for i in rows]
    return float(np.mean(kept)) if kept else 0.0


def _own_recall(scores: dict[str, np.ndarray], profile: ModerationProfile, labels: np.ndarray,
                cats: list[str]) -> float | None:
    """Share of the texts labelled with one of ``cats`` that their own category flags and enforces, pooled."""
    active = profile.active()
    hits = total = 0
    for d in cats:
        rows = labels == d
        total += int(rows.sum())
        cat = active.get(d)
        if cat is not None:
            hits += int((scores[d][rows] >= (0.5 if cat.threshold is None else cat.threshold)).sum())
    return hits / total if total else None


def scope_to_labels(profile: ModerationProfile, labels: set[str]) -> tuple[ModerationProfile, str]:
    """The paper's per-dataset protocol: only the categories the file annotates may flag.

    A spam corpus does not annotate sentiment, so a sad but legitimate SMS that the *negative* category rightly
    flags would count as a false positive of the spam detector (dev SMS file: F1 0.880 with every default
    category vs 0.958 with spam alone). Categories whose name is not a label in the file are set to allow.
    Returns the profile and the scope used: "labels", or "profile" when the file names none of the profile's
    categories (e.g. an all-benign file measuring FPR), in which case the profile is evaluated unchanged.
    """
    named = {n for n in profile.categories if n in labels}
    if not named:
        return profile, "profile"
    for name, cat in profile.categories.items():
        if name not in named and cat.action != "allow":
            profile = ops.set_action(profile, name, "allow")
    return profile, "labels"


def binary_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    tp, fp = int((y & pred).sum()), int((~y & pred).sum())
    fn, tn = int((y & ~pred).sum()), int((~y & ~pred).sum())
    prec = tp / (tp + fp) if tp + fp else None
    rec = tp / (tp + fn) if tp + fn else None
    # No positives: F1 undefined (null). Positives but nothing flagged (precision undefined): F1 = 0.
    f1 = None if rec is None else 2 * prec * rec / (prec + rec) if prec and rec else 0.0
    return {"n": int(y.size), "n_pos": int(y.sum()), "n_neg": int((~y).sum()), "precision": prec, "recall": rec,
            "f1": f1, "fpr": fp / (fp + tn) if fp + tn else None, "accuracy": (tp + tn) / max(y.size, 1),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def evaluate(rows: list[dict[str, Any]], backend: Any, profile: ModerationProfile | None = None,
             *, plot: Path | None = None) -> dict[str, Any]:
    profile = profile or ModerationProfile()
    texts = [r["text"] for r in rows]
    labels = np.array([r["label"] for r in rows])
    t = time.perf_counter()
    scores = backend.score(texts, profile)
    dt = time.perf_counter() - t
    pred = flagged(scores, profile)
    y = labels != "benign"
    out = binary_metrics(y, pred)
    out["texts_per_s"] = len(texts) / dt if dt > 0 else None
    out["backend"] = getattr(backend, "name", type(backend).__name__)
    encoder = getattr(backend, "encoder", None)
    if encoder is not None and hasattr(encoder, "int8"):  # which weights scored: traceable in every result
        out["encoder"], out["encoder_int8"] = encoder.name, encoder.int8
    out["active_categories"] = sorted(profile.active())
    active = list(profile.active())
    top = np.max(np.stack([scores[c] for c in active]), 0) if active else np.zeros(len(texts))
    if 0 < y.sum() < y.size:
        from sklearn.metrics import average_precision_score, roc_auc_score

        out["auroc"], out["auprc"] = float(roc_auc_score(y, top)), float(average_precision_score(y, top))
    else:
        out["auroc"] = out["auprc"] = None
    per = {}
    for lab in sorted(set(labels)):
        m = labels == lab
        d: dict[str, Any] = {"n": int(m.sum()), "flag_rate": float(pred[m].mean())}
        if lab != "benign":
            d["recall"] = d["flag_rate"]
            sub = m | (labels == "benign")
            d.update({k: v for k, v in binary_metrics(y[sub], pred[sub]).items() if k in ("f1", "precision")})
        per[lab] = d
    out["per_label"] = per
    if plot is not None:
        _plot(y, top, plot)
    return out


def _plot(y: np.ndarray, s: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    if 0 < y.sum() < y.size:
        fpr, tpr, _ = roc_curve(y, s)
        pr, rc, _ = precision_recall_curve(y, s)
        ax[0].plot(fpr, tpr)
        ax[1].plot(rc, pr)
    ax[0].set(xlabel="FPR", ylabel="TPR", title="ROC (harmful = positive)")
    ax[1].set(xlabel="recall", ylabel="precision", title="Precision-recall")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def personalize_eval(backend: Any, rows: list[dict[str, Any]] | None = None, *, seeds: tuple[int, ...] = (0, 1, 2),
                     bank: Any = None, max_per_label: int = 150, shots: tuple[int, ...] = (),
                     variation: bool = True) -> dict[str, Any]:
    """Block-new / unblock / variation protocols on held-out dev rows (default: the shipped dev_eval set)."""
    from .bank import ExampleBank

    rows = rows if rows is not None else load_jsonl(DEV_EVAL_PATH)
    bank = bank or ExampleBank.load()
    rng = random.Random(0)
    by: dict[str, list[str]] = {}
    for r in rows:
        by.setdefault(r["label"], []).append(r["text"])
    by = {k: rng.sample(v, min(len(v), max_per_label * (3 if k == "benign" else 1))) for k, v in by.items()}
    cats = [c for c in BASE_CATEGORIES if by.get(c)]
    texts = [t for lab in ("benign", *cats) for t in by.get(lab, [])]
    lab_arr = np.array([lab for lab in ("benign", *cats) for _ in by.get(lab, [])])
    t0 = time.perf_counter()
    emb, emb_topic = backend.encode_both(texts) if hasattr(backend, "encode_both") else (None, None)

    def score(profile: ModerationProfile) -> dict[str, np.ndarray]:
        if emb is None:
            return backend.score(texts, profile)
        return backend.score_embeddings(emb, texts, profile, E_topic=emb_topic)

    default = ModerationProfile()
    s_def = score(default)
    f_def = flagged(s_def, default)
    benign = lab_arr == "benign"
    res: dict[str, Any] = {"per_category": {}}
    agg: dict[str, list[float]] = {}
    for c in cats:
        pc: dict[str, Any] = {}
        tgt = lab_arr == c
        base = ops.unblock(default, c)
        s_base = score(base)
        f_base = flagged(s_base, base)
        bank_c = [t for t, lab in zip(bank.texts, bank.labels, strict=True) if lab == c]
        for key, use_def in (("block_new", False), ("block_new_with_definition", True)):
            succ, add_fpr = [], []
            for seed in seeds:
                ex = random.Random(seed).choice(bank_c)
                prof = ops.block_new(base, f"user_{c}", examples=[ex],
                                     definition=BASE_CATEGORIES[c] if use_def else "")
                s = score(prof)
                succ.append(float((s[f"user_{c}"][tgt] >= 0.5).mean()))
                add_fpr.append(float(flagged(s, prof)[benign].mean() - f_base[benign].mean()))
            pc[f"{key}_success"], pc[f"{key}_other_fpr"] = float(np.mean(succ)), float(np.mean(add_fpr))
        for n in shots:  # how many user examples the backend needs (the paper's curve over # user examples)
            succ = []
            for seed in seeds:
                exs = random.Random(seed).sample(bank_c, min(n, len(bank_c)))
                s = score(ops.block_new(base, f"user_{c}", examples=exs))
                succ.append(float((s[f"user_{c}"][tgt] >= 0.5).mean()))
            pc[f"block_new_success_at_{n}"] = float(np.mean(succ))
        # unblock: mask, so the category never enforces; end-to-end allow rate and others' recall reported too
        pc["unblock_success"] = _unenforced_share(backend, s_base, base, c, np.flatnonzero(tgt))
        pc["unblock_final_allow_rate"] = float((~f_base[tgt]).mean())
        others = ~benign & ~tgt
        pc["unblock_other_recall"] = float(f_base[others].mean()) if others.any() else None
        pc["default_other_recall"] = float(f_def[others].mean()) if others.any() else None
        # each other category's own detector on its own texts: what "other categories' recall unchanged" asks of
        # the unblock (the end-to-end figure above also loses the texts only category c was catching)
        pc["unblock_other_own_recall"] = _own_recall(s_base, base, lab_arr, [d for d in cats if d != c])
        pc["default_other_own_recall"] = _own_recall(s_def, default, lab_arr, [d for d in cats if d != c])
        # variation: one seed text as the only example; 8 held-out variants per seed
        seeds_txt = [t for t in by[c] if len(t) > 50][:30] if variation else []
        for pct in (0.1, 0.5):
            hits = []
            for i, seed_text in enumerate(seeds_txt):
                prof = ops.block_new(base, f"seen_{c}", examples=[seed_text])
                var = variations(seed_text, 8, pct, seed=1000 + i)
                if not var:
                    continue
                sv = backend.score(var, prof)
                hits.append(float((sv[f"seen_{c}"] >= 0.5).mean()))
            pc[f"variation_success_pct{int(pct * 100)}"] = float(np.mean(hits)) if hits else None
        pc["n_target"], pc["n_benign"] = int(tgt.sum()), int(benign.sum())
        res["per_category"][c] = pc
        for k, v in pc.items():
            if isinstance(v, float):
                agg.setdefault(k, []).append(v)
    mean = {k: float(np.mean(v)) for k, v in agg.items()}
    res.update({
        "block_new_success": mean.get("block_new_success"),
        "block_new_other_fpr": mean.get("block_new_other_fpr"),
        "block_new_with_definition_success": mean.get("block_new_with_definition_success"),
        "block_new_with_definition_other_fpr": mean.get("block_new_with_definition_other_fpr"),
        "unblock_success": mean.get("unblock_success"),
        "unblock_final_allow_rate": mean.get("unblock_final_allow_rate"),
        "unblock_other_recall": mean.get("unblock_other_recall"),
        "default_other_recall": mean.get("default_other_recall"),
        "unblock_other_own_recall": mean.get("unblock_other_own_recall"),
        "default_other_own_recall": mean.get("default_other_own_recall"),
        "variation_success": mean.get("variation_success_pct10"),
        "variation_success_pct50": mean.get("variation_success_pct50"),
        **{f"block_new_success_at_{n}": mean.get(f"block_new_success_at_{n}") for n in shots},
        "backend": getattr(backend, "name", type(backend).__name__),
        "seeds": list(seeds), "seconds": time.perf_counter() - t0,
    })
    return res
