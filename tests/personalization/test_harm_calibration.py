"""Domain-balanced calibration of the heads' strict point, and `harm eval`'s per-dataset scope (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from personalization import profile as P
from personalization.evaluate import scope_to_labels
from personalization.heads import CROSS_NEGATIVES, BaseHeads, balanced_quantile


def _fpr(raw: np.ndarray, dom: np.ndarray, t: float) -> dict[str, float]:
    return {d: float((raw[dom == d] >= t).mean()) for d in np.unique(dom)}


def test_balanced_quantile_gives_every_domain_equal_weight():
    rng = np.random.default_rng(0)
    # a big, easy domain and a small one whose benign texts score high (tweets vs a toxicity head)
    raw = np.concatenate([rng.normal(0, 1, 5000), rng.normal(2.5, 1, 200)])
    dom = np.array(["reviews"] * 5000 + ["tweets"] * 200)
    pooled = float(np.quantile(raw, 0.99))
    t = balanced_quantile(raw, dom, 0.01)
    assert np.mean(list(_fpr(raw, dom, pooled).values())) > 0.05  # the pooled point lets the small domain through
    bal = _fpr(raw, dom, t)
    assert 0.005 <= np.mean(list(bal.values())) <= 0.01
    # it is the lowest such threshold: one step lower breaks the budget
    lower = np.max(raw[raw < t])
    assert np.mean(list(_fpr(raw, dom, lower).values())) > 0.01


def test_balanced_quantile_single_domain_matches_plain_quantile():
    raw = np.arange(1000, dtype=float)
    assert balanced_quantile(raw, np.array(["a"] * 1000), 0.01) == 990.0
    assert balanced_quantile(raw, np.array(["a"] * 1000), 0.0) > raw.max()  # 0 % FPR: above every benign score


def test_scope_to_labels_keeps_only_annotated_categories():
    prof = P.block_new(P.ModerationProfile(), "crypto", examples=["Buy $DOGEX now"])
    scoped, used = scope_to_labels(prof, {"benign", "spam"})
    assert used == "labels" and set(scoped.active()) == {"spam"}
    scoped, used = scope_to_labels(prof, {"benign", "crypto", "toxic"})
    assert used == "labels" and set(scoped.active()) == {"crypto", "toxic"}
    # nothing annotated that the profile knows (an all-benign file): the profile is evaluated unchanged
    scoped, used = scope_to_labels(prof, {"benign"})
    assert used == "profile" and scoped == prof
    # a category the user allows stays allowed even when the file annotates it
    off = P.unblock(prof, "spam")
    assert set(scope_to_labels(off, {"benign", "spam", "toxic"})[0].active()) == {"toxic"}
    assert prof.active().keys() == {"spam", "toxic", "negative", "crypto"}  # the input profile is unchanged


@pytest.mark.parametrize("labels", [set(), {"benign", "other"}])
def test_scope_to_labels_without_matches_is_a_no_op(labels):
    prof = P.ModerationProfile()
    assert scope_to_labels(prof, labels) == (prof, "profile")


def _corpus(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
    """Benign noise plus one direction per category; spam also leans along the toxic direction (shouty ads)."""
    shift = {"benign": [0, 0, 0], "toxic": [3, 0, 0], "spam": [2, 4, 0], "negative": [0, 0, 3]}
    labels = [lab for lab in shift for _ in range(n)]
    E = rng.normal(0, 0.7, (len(labels), 6))
    E[:, :3] += np.array([shift[lab] for lab in labels], dtype=float)
    return E, labels


@pytest.mark.parametrize("cross", [{}, None])
def test_cross_negatives_stop_a_head_firing_on_another_category(cross, tmp_path):
    """One-vs-benign heads flag spam that looks a bit toxic; trained with other categories' positives as
    negatives (the default, CROSS_NEGATIVES) they do not, and benign FPR / own recall stay as calibrated."""
    rng = np.random.default_rng(0)
    (E, y), (Ec, yc), (Ed, yd) = _corpus(rng, 400), _corpus(rng, 300), _corpus(rng, 300)
    t = [""] * len(y)
    h = BaseHeads(use_lexical=False, cross_negatives=cross).fit(E, t, y, Ec, [""] * len(yc), yc)
    p = h.predict_proba(Ed, [""] * len(yd)) >= 0.5
    yd_a, tox = np.asarray(yd), h.classes_.index("toxic")
    toxic_on_spam = float(p[yd_a == "spam", tox].mean())
    if cross == {}:
        assert toxic_on_spam > 0.5
    else:
        assert h.cross_negatives == CROSS_NEGATIVES and toxic_on_spam < 0.05
    assert p[yd_a == "toxic", tox].mean() > 0.9 and p[yd_a == "benign", tox].mean() < 0.1
    h.save(tmp_path / "h.safetensors")
    back = BaseHeads.load(tmp_path / "h.safetensors")
    assert back.cross_negatives == h.cross_negatives
    assert np.allclose(back.predict_proba(Ed, [""] * len(yd)), h.predict_proba(Ed, [""] * len(yd)))


@pytest.mark.parametrize("bad", [{"toxic": ["toxic"]}, {"toxic": ["benign"]}, {"weird": ["spam"]}, {"toxic": "spam"}])
def test_cross_negatives_must_name_other_base_categories(bad):
    from guardrails.errors import ConfigError

    with pytest.raises(ConfigError, match="cross_negatives"):
        BaseHeads(cross_negatives=bad)
