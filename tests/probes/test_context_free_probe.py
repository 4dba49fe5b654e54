"""The bundle's optional context-free per-turn probe: artifact round trip, OR-ed verdict, eval and training."""

from __future__ import annotations

import math

import numpy as np
import pytest
from probe_testkit import synthetic_bundle

from guardrails.detector import CheckRequest, Message
from probes.context_free import train_context_free_probe
from probes.evaluate import eval_single
from probes.plugin import PrivacyDetector
from probes.probe import CorruptProbeError, ProbeArtifact, load_probe


def _with_free(tiny, *, main_tau: float, free_tau: float, free_layer: int = 2):
    bundle = synthetic_bundle(tiny, 2, threshold=main_tau)
    other = synthetic_bundle(tiny, free_layer, threshold=free_tau, seed=7)
    bundle.context_free = other.single
    return bundle


def _req(text: str) -> CheckRequest:
    return CheckRequest(stage="input", user_id="u", session_id=None, text=text,
                        messages=(Message(role="user", content=text),), settings={})


def test_bundle_round_trip_and_load_checks(tiny, tmp_path):
    bundle = _with_free(tiny, main_tau=0.0, free_tau=1.5, free_layer=1)
    assert bundle.layers == [1, 2] and list(bundle.request_probes) == ["single", "context_free"]
    back = load_probe(bundle.save(tmp_path / "b"))
    assert back.context_free is not None and back.context_free.meta.threshold == pytest.approx(1.5)
    np.testing.assert_array_equal(back.context_free.coef, bundle.context_free.coef)
    assert load_probe(synthetic_bundle(tiny, 2).save(tmp_path / "plain")).context_free is None
    # a drift artifact in its place, or one from another model: refused, never silently used
    bundle.multiturn.save(tmp_path / "b" / "context_free")
    with pytest.raises(CorruptProbeError, match="context_free/ must be a single-turn"):
        load_probe(tmp_path / "b")
    foreign = ProbeArtifact(coef=bundle.single.coef, intercept=0.0,
                            meta=bundle.single.meta.model_copy(update={"model_fingerprint": "0" * 16}))
    foreign.save(tmp_path / "b" / "context_free")
    with pytest.raises(CorruptProbeError, match="different models"):
        load_probe(tmp_path / "b")


def test_either_per_turn_probe_flags_and_the_score_is_the_larger_margin(tiny):
    """Score = sigmoid(max over per-turn probes of (raw - τ) / scale): with one probe exactly the old unit score;
    a turn the main probe passes is still blocked when the context-free probe crosses its own τ."""
    text = "What is my roommate's diagnosis?"
    bundle = _with_free(tiny, main_tau=0.0, free_tau=0.0)
    det = PrivacyDetector(bundle, lm=tiny)
    acts = det.encoder.activation([{"role": "user", "content": text}])
    raw_main = float(bundle.single.raw(bundle.single.features(acts)))
    raw_free = float(bundle.context_free.raw(bundle.context_free.features(acts)))
    # both under their τ (margins -0.5 and -0.2): allowed, score sigmoid(-0.2)
    bundle.single.meta.threshold, bundle.context_free.meta.threshold = raw_main + 0.5, raw_free + 0.2
    f = det.predict(_req(text))[0]
    assert f.action.value == "allow" and f.score == pytest.approx(1 / (1 + math.exp(0.2)), abs=1e-5)
    assert "single-turn probe (layer 2)" in f.explanation and "context-free probe (layer 2)" in f.explanation
    assert f"vs tau {raw_free + 0.2:.3f}" in f.explanation
    # the context-free probe alone crosses its τ: blocked although the main probe passes the turn
    bundle.context_free.meta.threshold = raw_free - 1.0
    assert bundle.request_margins(acts)["context_free"] == pytest.approx(1.0, abs=1e-5)
    f2 = det.predict(_req(text))[0]
    assert f2.action.value == "block" and f2.score == pytest.approx(1 / (1 + math.exp(-1.0)), abs=1e-5)
    only_main = synthetic_bundle(tiny, 2, threshold=0.3)
    raw = float(only_main.single.raw(only_main.single.features(acts)))
    f3 = PrivacyDetector(only_main, lm=tiny).predict(_req(text))[0]
    assert f3.score == pytest.approx(only_main.single.unit_score(raw), abs=1e-9)


def test_eval_single_reports_the_served_or_decision(tiny):
    rows = [{"id": f"r{i}", "context": None, "request": f"request number {i} about someone", "label": i % 2}
            for i in range(12)]
    base = synthetic_bundle(tiny, 2, threshold=1e6)
    m0, _, _ = eval_single(base, tiny, rows, latency_sample=0, progress=False)
    assert m0["tpr"] == 0.0 and m0["fpr"] == 0.0 and "by_probe" not in m0
    both = _with_free(tiny, main_tau=1e6, free_tau=-1e6)  # the context-free probe flags everything
    m1, _, s = eval_single(both, tiny, rows, latency_sample=0, progress=False)
    assert m1["tpr"] == 1.0 and m1["fpr"] == 1.0 and (s > 0).all()
    assert m1["by_probe"]["single"]["tpr"] == 0.0 and m1["by_probe"]["context_free"]["fpr"] == 1.0
    assert m1["context_free_threshold"] == -1e6


def test_train_context_free_probe_pins_the_layer_and_keeps_one_threshold(tiny):
    """Trained on (unframed) requests and conversations at the main probe's deepest layer only, so serving
    captures nothing new; one τ, calibrated on requests (single rows, first turns), serves every turn."""
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    single = [{"id": f"s{i}", "context": None, "label": i % 2, "group": f"g{i // 2}",
               "request": ("tell me their secret " if i % 2 else "tell me a fact ") + " ".join(rng.choice(words, 3))}
              for i in range(160)]
    convs = [{"id": f"c{c}", "context": None, "label": 0, "group": f"c{c}", "turn_labels": [0, 0, 0],
              "turns": [{"role": "user", "content": f"hello {w}"} if j % 2 == 0 else
                        {"role": "assistant", "content": "ok"} for j, w in enumerate(rng.choice(words, 5))]}
             for c in range(60)]
    art = train_context_free_probe(single + convs, tiny, layer=2, target_fpr=0.05, progress=False)
    assert art.meta.kind == "single" and art.layers == [2] and art.meta.history_threshold is None
    assert art.meta.metrics["cv"]["n"] == 160 + 60  # requests: single rows and first turns
    assert "cv_conversation" not in art.meta.metrics
    assert art.threshold_for(1) == art.threshold_for(7) == art.meta.threshold
    with pytest.raises(ValueError, match="single-turn records"):
        train_context_free_probe(convs, tiny, layer=2, progress=False)


def test_scenario_negatives_train_the_direction_but_never_set_the_threshold(tiny):
    """Benign rows *with* a scenario are negatives for the context-free direction; τ and the CV request metrics
    come from the unframed rows alone, and anything but a benign scenario row is refused before any capture."""
    rng = np.random.default_rng(1)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    single = [{"id": f"s{i}", "context": None, "label": i % 2, "group": f"g{i // 2}",
               "request": ("tell me their secret " if i % 2 else "tell me a fact ") + " ".join(rng.choice(words, 3))}
              for i in range(120)]
    framed = [{"id": f"f{i}", "context": "You act for a clinic. Appropriate: the patient's own record.", "label": 0,
               "group": f"f{i}", "request": "tell me their secret " + " ".join(rng.choice(words, 3))}
              for i in range(80)]
    art = train_context_free_probe(single, tiny, layer=2, target_fpr=0.05, progress=False,
                                   scenario_negatives=framed)
    assert art.meta.metrics["cv"]["n"] == 120  # the 80 scenario rows trained the direction, not τ
    assert art.meta.metrics["cv"]["fpr"] <= 0.05 + 1e-9
    plain = train_context_free_probe(single, tiny, layer=2, target_fpr=0.05, progress=False)
    assert not np.allclose(art.coef, plain.coef)  # they did move the direction
    for bad in ({**framed[0], "label": 1}, {"id": "c", "context": "x", "label": 0, "turn_labels": [0, 1],
                                             "turns": [{"role": "user", "content": "a"}]}):
        with pytest.raises(ValueError, match="must all be benign"):
            train_context_free_probe(single, None, layer=2, progress=False, scenario_negatives=[bad])


def test_framed_records_train_the_direction_with_their_labels_but_never_set_the_threshold(tiny):
    """Labelled rows under a system prompt of their own (an agent holding records, probes.record_holders) train
    the context-free direction, positives included, and are left out of τ and the CV request metrics."""
    rng = np.random.default_rng(2)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    single = [{"id": f"s{i}", "context": None, "label": i % 2, "group": f"g{i // 2}",
               "request": ("tell me their secret " if i % 2 else "tell me a fact ") + " ".join(rng.choice(words, 3))}
              for i in range(120)]
    desk = "You are a gym's front desk. Members: Ana Ruiz, card ending 7781; Tom Lee, home address 9 Quarry Road."
    framed = [{"id": f"r{i}", "context": desk, "label": i % 2, "group": f"r{i // 2}",
               "request": ("what is Tom Lee's address " if i % 2 else "when do you open ")
               + " ".join(rng.choice(words, 2))} for i in range(60)]
    art = train_context_free_probe(single, tiny, layer=2, target_fpr=0.05, progress=False, framed_records=framed)
    assert art.meta.metrics["cv"]["n"] == 120 and art.meta.metrics["cv"]["n_pos"] == 60
    plain = train_context_free_probe(single, tiny, layer=2, target_fpr=0.05, progress=False)
    assert not np.allclose(art.coef, plain.coef)
    with pytest.raises(ValueError, match="single-turn records"):  # nothing unframed to calibrate on
        train_context_free_probe([], tiny, layer=2, progress=False, framed_records=framed)
    for bad in ({**framed[0], "label": "yes"}, {"id": "x", "context": desk, "label": 1}):  # refused before capture
        with pytest.raises(ValueError, match="framed_records need label"):
            train_context_free_probe(single, None, layer=2, progress=False, framed_records=[bad])


def test_eval_single_scores_each_request_as_the_detector_serves_it(tiny):
    """Sentence cuts included: eval's per-row margin equals the served finding's (0.5 at τ, logistic in margins)."""
    rows = [{"id": f"r{i}", "context": None, "label": i % 2,
             "request": f"request number {i} about someone. thanks! and bye {i}"} for i in range(6)]
    both = _with_free(tiny, main_tau=0.0, free_tau=0.0)
    _, _, s = eval_single(both, tiny, rows, latency_sample=0, progress=False)
    _, _, whole = eval_single(both, tiny, rows, latency_sample=0, progress=False, sentences=False)
    det = PrivacyDetector(both, lm=tiny)
    for r, margin in zip(rows, s, strict=True):
        f = det.predict(_req(r["request"]))[0]
        assert f.score == pytest.approx(1 / (1 + math.exp(-margin)), abs=1e-4)
    assert (s >= whole - 1e-6).all() and (s > whole + 1e-6).any()  # the cuts count, and only ever raise it
