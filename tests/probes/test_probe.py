from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from guardrails.errors import ConfigError, RailguardError
from probes.generalization import cross_domain
from probes.linear import LinearProbe
from probes.metrics import calibrate_threshold, rates
from probes.probe import (
    CorruptProbeError,
    ProbeArtifact,
    ProbeMeta,
    ProbeMismatchError,
    load_probe,
    meta_digest,
)
from probes.train import fit_multiturn, fit_single


def _data(n=400, d=16, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 5, d) + rng.normal(size=d) * 10
    X[:, 0] = rng.normal(size=n) + 4 * y
    return X.astype(np.float32), y


def test_estimator_protocol_and_folded_standardization():
    X, y = _data()
    p = LinearProbe(C=0.5)
    assert p.fit(X, y) is p
    assert p.coef_.shape == (16,) and p.n_features_in_ == 16 and list(p.classes_) == [0, 1]
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000, class_weight="balanced"))
    ref.fit(X, y)
    assert np.allclose(p.decision_function(X), ref.decision_function(X), atol=1e-3)
    assert p.predict_proba(X).shape == (400, 2) and set(p.predict(X)) <= {0, 1}
    dm = LinearProbe(method="diffmean").fit(X, y)
    assert (dm.decision_function(X[y == 1]).mean() > dm.decision_function(X[y == 0]).mean())
    with pytest.raises(ValueError):
        LinearProbe().fit(X, np.zeros(len(y)))


def test_calibration_hits_target_fpr_on_held_out_data():
    rng = np.random.default_rng(1)
    tau = calibrate_threshold(rng.normal(size=20_000), 0.01)
    fresh = rng.normal(size=200_000)
    assert abs((fresh > tau).mean() - 0.01) < 0.002
    assert calibrate_threshold([0.1, 0.2, 0.3], 0.01) == 0.3  # never above target with few negatives
    r = rates([0, 0, 1, 1], [0.1, 0.5, 0.6, 0.9], 0.55)
    assert r["tpr"] == 1.0 and r["fpr"] == 0.0 and r["auroc"] == 1.0


def test_fit_single_reports_fpr_by_domain():
    X, y = _data(600)
    X[np.arange(600) % 4 == 0, 0] += 3.0  # one domain in four: its benign rows look like positives
    dom = np.where(np.arange(600) % 4 == 0, "hard", "easy")
    art = fit_single(X[:, None], y, np.arange(600) // 3, [7], model_id="m", fingerprint="f", target_fpr=0.05,
                     progress=False, domains=dom)
    cv = art.meta.metrics["cv"]
    by = cv["fpr_by_domain"]
    assert set(by) == {"hard", "easy"} and by["hard"] > by["easy"]  # what the pooled FPR averages away
    n_hard, n_easy = ((y == 0) & (dom == "hard")).sum(), ((y == 0) & (dom == "easy")).sum()
    assert abs((by["hard"] * n_hard + by["easy"] * n_easy) / (n_hard + n_easy) - cv["fpr"]) < 1e-9
    with pytest.raises(ValueError, match="one domain per"):
        fit_single(X[:, None], y, np.arange(600) // 3, [7], model_id="m", fingerprint="f", progress=False,
                   domains=dom[:10])



def test_fit_single_calibrates_only_on_the_marked_rows():
    """``calibration_rows``: rows outside the mask train the direction but do not set τ or the CV metrics."""
    X, y = _data(600)
    g = np.arange(600) // 3
    easy = np.arange(600) >= 300
    X[easy & (y == 0), 0] -= 6.0  # many easy negatives: calibrating on them would pull τ down
    mixed = fit_single(X[:, None], y, g, [7], model_id="m", fingerprint="f", target_fpr=0.05, progress=False)
    own = fit_single(X[:, None], y, g, [7], model_id="m", fingerprint="f", target_fpr=0.05, progress=False,
                     calibration_rows=~easy)
    assert own.meta.metrics["cv"]["n"] == 300 and mixed.meta.metrics["cv"]["n"] == 600
    assert own.meta.threshold > mixed.meta.threshold
    np.testing.assert_allclose(own.coef, mixed.coef)  # same rows, same direction: only τ moved
    for bad in (~easy[:10], np.zeros(600, bool)):
        with pytest.raises(ValueError, match="calibration_rows"):
            fit_single(X[:, None], y, g, [7], model_id="m", fingerprint="f", progress=False, calibration_rows=bad)


def _requests_and_conversations(seed: int, n_req: int = 600, n_conv: int = 300, turns: int = 5):
    """1-d signal + noise. Requests: half positive. Conversations: benign ones have ``turns`` benign user turns;
    attacks end on one positive turn. Returns X [n, 1, d], y, groups, conversation_turns, conversation labels."""
    rng = np.random.default_rng(seed)
    d = 4
    X, y, g, ct = [], [], [], []
    for i in range(n_req):
        lab = i % 2
        X.append(rng.normal(size=d) + np.r_[3.0 * lab, np.zeros(d - 1)])
        y.append(lab), g.append(f"r{i // 2}"), ct.append(None)
    conv_y = []
    for c in range(n_conv):
        attack = c % 4 == 0
        conv_y.append(int(attack))
        for t in range(turns):
            lab = int(attack and t == turns - 1)
            X.append(rng.normal(size=d) + np.r_[3.0 * lab, np.zeros(d - 1)])
            y.append(lab), g.append(f"c{c}"), ct.append((f"c{c}", t))
    return np.asarray(X, dtype=np.float32)[:, None], np.asarray(y), g, ct, np.asarray(conv_y)


def test_later_turns_get_a_threshold_calibrated_per_conversation(tmp_path):
    """A pooled τ bounds the FPR per turn, so a benign conversation of 5 turns has ~4 more chances of a false
    alarm. fit_single calibrates τ on requests (single-turn rows and first turns) and ``history_threshold`` on
    each benign conversation's highest later-turn score: on fresh data both land near target_fpr, at their
    own unit (request, conversation), where the request τ applied to every turn would not."""
    X, y, g, ct, _ = _requests_and_conversations(0)
    art = fit_single(X, y, g, [7], model_id="m", fingerprint="f", target_fpr=0.05, progress=False,
                     conversation_turns=ct)
    tau, tau_h = art.meta.threshold, art.meta.history_threshold
    assert tau_h is not None and tau_h > tau
    assert art.threshold_for(1) == tau and art.threshold_for(2) == art.threshold_for(9) == tau_h
    assert art.unit_score(tau_h, user_turn=3) == pytest.approx(0.5)
    cvc = art.meta.metrics["cv_conversation"]
    assert cvc["n"] == 300 and cvc["n_pos"] == 75 and cvc["fpr"] <= 0.1
    Xf, yf, _, ctf, cyf = _requests_and_conversations(1, n_req=4000, n_conv=4000)
    s = art.raw(Xf[:, 0])
    req = np.array([c is None or c[1] == 0 for c in ctf])
    assert abs((s[req & (yf == 0)] > tau).mean() - 0.05) < 0.02
    later = np.array([c is not None and c[1] > 0 for c in ctf])
    benign_conv_max = s[later].reshape(4000, 4).max(1)[cyf == 0]
    assert abs((benign_conv_max > tau_h).mean() - 0.05) < 0.02
    assert (benign_conv_max > tau).mean() > 0.12  # what one τ for every turn would have cost
    plain = fit_single(X, y, g, [7], model_id="m", fingerprint="f", target_fpr=0.05, progress=False)
    assert plain.meta.history_threshold is None and plain.threshold_for(5) == plain.meta.threshold
    assert "cv_conversation" not in plain.meta.metrics
    back = ProbeArtifact.load(art.save(tmp_path / "p"))
    assert back.meta.history_threshold == pytest.approx(tau_h)
    with pytest.raises(ValueError, match="one \\(conversation, turn\\)"):
        fit_single(X, y, g, [7], model_id="m", fingerprint="f", progress=False, conversation_turns=ct[:5])
    with pytest.raises(ValueError, match="start at 0"):
        fit_single(X, y, g, [7], model_id="m", fingerprint="f", progress=False,
                   conversation_turns=[("c", -1) if c is not None else None for c in ct])

def test_fit_single_uses_grouped_cv_and_target_fpr():
    X, y = _data(600)
    Xl = np.stack([np.random.default_rng(2).normal(size=X.shape), X], axis=1)  # layer 0 noise, layer 1 signal
    groups = np.arange(600) // 3
    art = fit_single(Xl, y, groups, [4, 7], model_id="m", fingerprint="f", target_fpr=0.05, progress=False)
    assert art.meta.layer == 7 and art.meta.kind == "single"
    cv = art.meta.metrics["cv"]
    assert cv["fpr"] <= 0.05 and cv["auroc"] > 0.9


def test_fit_multiturn_on_deltas():
    rng = np.random.default_rng(3)
    d, convs, labels = 8, [], []
    for c in range(60):
        lab = c % 2
        base = rng.normal(size=d) * 5
        turns = [base + rng.normal(size=d) * 0.3 + (np.eye(d)[0] * 2 * t * lab) for t in range(5)]
        convs.append(np.stack(turns)[:, None, :].astype(np.float32))
        labels.append(lab)
    art = fit_multiturn(convs, labels, [None] * 60, list(range(60)), [5], model_id="m", fingerprint="f",
                        target_fpr=0.05, progress=False)
    assert art.meta.kind == "multiturn" and art.intercept == 0.0
    assert art.meta.metrics["cv_conversation"]["tpr"] > 0.9


def test_fit_multiturn_concatenates_layers_that_add_drift_signal():
    """Drift split over two layers (each carries half the attack's movement): the probe reads both, in ascending
    order, and any candidate layer may join (the caller caps candidates at the early-exit layer)."""
    rng = np.random.default_rng(5)
    d, convs, labels, tls = 6, [], [], []
    for c in range(120):
        lab = c % 2
        turns = []
        for t in range(5):
            a = rng.normal(size=(3, d)) * 0.8  # layers 4, 7, 9
            step = lab * t * 0.6
            a[0, 0] += step + rng.normal() * 0.8  # layer 4: half of the drift, noisily
            a[2, 1] += step + rng.normal() * 0.8  # layer 9: the other half
            turns.append(a)
        convs.append(np.stack(turns).astype(np.float32))
        labels.append(lab)
        tls.append(None)
    art = fit_multiturn(convs, labels, tls, list(range(120)), [4, 7, 9], model_id="m", fingerprint="f",
                        target_fpr=0.05, progress=False, max_layers=4)
    assert art.layers == [4, 9] and art.meta.layer == 9 and art.coef.shape == (2 * d,)
    steps = art.meta.metrics["layer_selection"]
    assert len(steps) == 2 and steps[1]["cv_key"] >= steps[0]["cv_key"] + 0.005
    one = fit_multiturn(convs, labels, tls, list(range(120)), [4, 7, 9], model_id="m", fingerprint="f",
                        target_fpr=0.05, progress=False)  # the default: one layer (see fit_multiturn)
    assert len(one.layers) == 1 and one.coef.shape == (d,)
    assert one.meta.metrics["cv_conversation"]["auroc"] < art.meta.metrics["cv_conversation"]["auroc"]


DEFAULT_MANIFEST = Path(__file__).parents[2] / "probes" / "default" / "bundle.json"


def _artifact(fp="abc", d=8):
    meta = ProbeMeta(kind="single", model_id="m", model_fingerprint=fp, layer=3, d_model=d, threshold=0.25,
                     target_fpr=0.01, data_sha256={"f.jsonl": "00"}, metrics={"auroc": 0.9})
    return ProbeArtifact(coef=np.arange(d, dtype=np.float32), intercept=0.5, meta=meta)


def test_artifact_round_trip(tmp_path):
    art = _artifact()
    art.save(tmp_path / "p")
    back = ProbeArtifact.load(tmp_path / "p")
    assert np.array_equal(back.coef, art.coef) and back.intercept == 0.5
    # identical metadata, plus the two digests save() records (the in-memory artifact is not mutated)
    assert back.meta == art.meta.model_copy(update={"weights_sha256": back.meta.weights_sha256,
                                                    "meta_sha256": back.meta.meta_sha256})
    assert art.meta.weights_sha256 is None and back.meta.weights_sha256 is not None
    assert art.meta.meta_sha256 is None and back.meta.meta_sha256 == back.meta.content_sha256()
    bundle = load_probe(tmp_path / "p")
    assert bundle.single.meta.layer == 3 and bundle.multiturn is None
    assert back.unit_score(0.25) == pytest.approx(0.5)


def test_a_bundle_saved_over_another_keeps_none_of_its_parts(tmp_path):
    """Saving a single-probe bundle where a bundle with a drift probe was saved left that stale drift probe to be
    loaded with the new one; a directory holding a lone artifact loaded as that artifact, not the bundle saved into
    it (session 25 audit)."""
    from probes.probe import ProbeBundle

    multi = _artifact().meta.model_copy(update={"kind": "multiturn"})
    ProbeBundle(single=_artifact(), multiturn=ProbeArtifact(coef=np.ones(8, np.float32), intercept=0.0,
                                                            meta=multi)).save(tmp_path / "b")
    assert load_probe(tmp_path / "b").multiturn is not None
    ProbeBundle(single=_artifact()).save(tmp_path / "b")
    assert load_probe(tmp_path / "b").multiturn is None and not (tmp_path / "b" / "multiturn").exists()
    _artifact().save(tmp_path / "lone")
    with pytest.raises(ConfigError, match="holds a probe artifact of its own"):
        ProbeBundle(single=_artifact()).save(tmp_path / "lone")
    assert not (tmp_path / "lone" / "single").exists()
    (tmp_path / "deep").mkdir()
    _artifact().save(tmp_path / "deep")
    (tmp_path / "deep" / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CorruptProbeError):  # was a RecursionError
        ProbeArtifact.load(tmp_path / "deep")


def test_a_bundle_missing_or_swapping_a_listed_part_is_refused(tmp_path, caplog):
    """Review, session 36: deleting multiturn/ (or context_free/) from a bundle loaded it without that probe, so
    multi-turn detection went off with one log line (or none). A bundle now lists its parts' meta digests in
    bundle.json; a part missing, added or swapped in from another bundle is a CorruptProbeError. A bundle from
    before the manifest loads, with a warning; so does an artifact without digests."""
    import logging
    import shutil

    from probes.probe import BUNDLE_MANIFEST, ProbeBundle

    multi = _artifact().meta.model_copy(update={"kind": "multiturn"})
    drift = ProbeArtifact(coef=np.ones(8, np.float32), intercept=0.0, meta=multi)
    b = ProbeBundle(single=_artifact(), multiturn=drift).save(tmp_path / "b")
    assert set(json.loads((b / BUNDLE_MANIFEST).read_text())["parts"]) == {"single", "multiturn"}
    assert load_probe(b).multiturn is not None
    shutil.rmtree(b / "multiturn")
    with pytest.raises(CorruptProbeError, match=r"missing \['multiturn'\]"):
        load_probe(b)
    other = ProbeBundle(single=_artifact(d=8), multiturn=ProbeArtifact(
        coef=np.full(8, 2.0, np.float32), intercept=0.0, meta=multi)).save(tmp_path / "other")
    shutil.copytree(other / "multiturn", b / "multiturn")  # same model and shape, another bundle's drift probe
    with pytest.raises(CorruptProbeError, match="replaced"):
        load_probe(b)
    shutil.copytree(b / "single", b / "context_free")  # a part the manifest does not list
    with pytest.raises(CorruptProbeError, match=r"not listed \['context_free'\]"):
        load_probe(b)
    for bad in ("{", "[]", '{"parts": ["single"]}', '{"parts": {"extra": "x"}}'):
        (other / BUNDLE_MANIFEST).write_text(bad)
        with pytest.raises(CorruptProbeError, match="bundle.json is invalid"):
            load_probe(other)
    (other / BUNDLE_MANIFEST).unlink()
    meta = json.loads((other / "single" / "meta.json").read_text())
    del meta["meta_sha256"], meta["weights_sha256"]
    (other / "single" / "meta.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="railguard.probes"):
        assert load_probe(other).multiturn is not None  # older bundles still load ...
    assert "no bundle.json" in caplog.text and "is not verified" in caplog.text  # ... and say they are unchecked
    assert json.loads((DEFAULT_MANIFEST).read_text())["parts"].keys() == {"single", "multiturn", "context_free"}


def test_model_mismatch_is_typed_error(tmp_path):
    art = _artifact(fp="abc")
    with pytest.raises(ProbeMismatchError) as e:
        art.check_model("zzz", "other-model")
    assert isinstance(e.value, ConfigError) and isinstance(e.value, RailguardError)
    with pytest.raises(ProbeMismatchError):
        art.raw(np.zeros(5))


def test_a_probe_matching_only_an_older_fingerprint_loads_with_a_warning():
    """Probes stamped with an older, weaker fingerprint (`LoadedCausalLM.fingerprints`: current first) still serve,
    but say so; a probe carrying the current one serves silently, and one carrying neither is refused."""
    import warnings

    from probes import LegacyFingerprintWarning

    with pytest.warns(LegacyFingerprintWarning, match="older model fingerprint.*Retrain"):
        _artifact(fp="old").check_model(("new", "old"), "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _artifact(fp="new").check_model(("new", "old"), "m")
        _artifact(fp="new").check_model("new", "m")
    with pytest.raises(ProbeMismatchError):
        _artifact(fp="older").check_model(("new", "old"), "m")


def test_corrupt_artifacts_are_typed_errors(tmp_path):
    p = _artifact().save(tmp_path / "p")
    (p / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(CorruptProbeError):
        ProbeArtifact.load(p)
    p = _artifact().save(tmp_path / "q")
    (p / "meta.json").write_text("{not json")
    with pytest.raises(CorruptProbeError):
        ProbeArtifact.load(p)
    p = _artifact().save(tmp_path / "r")
    meta = json.loads((p / "meta.json").read_text())
    meta["d_model"] = 9
    (p / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptProbeError):
        ProbeArtifact.load(p)
    with pytest.raises(CorruptProbeError):
        load_probe(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorruptProbeError):
        load_probe(tmp_path / "empty")


def test_weights_digest_catches_swapped_or_edited_weights(tmp_path):
    """Same-shape weights from another artifact (or an in-place edit) pass every shape/finiteness check; the
    sha256 recorded in meta.json at save time refuses them. Artifacts from before the digest still load."""
    a, b = _artifact(), _artifact()
    b.coef = b.coef[::-1].copy() + 1.0
    pa, pb = a.save(tmp_path / "a"), b.save(tmp_path / "b")
    assert len(json.loads((pa / "meta.json").read_text())["weights_sha256"]) == 64
    assert np.array_equal(ProbeArtifact.load(pa).coef, a.coef)
    (pa / "weights.safetensors").write_bytes((pb / "weights.safetensors").read_bytes())
    with pytest.raises(CorruptProbeError, match="does not match meta.json"):
        ProbeArtifact.load(pa)
    legacy = json.loads((pb / "meta.json").read_text())
    del legacy["weights_sha256"], legacy["meta_sha256"]  # as written before either digest existed
    (pb / "meta.json").write_text(json.dumps(legacy))
    assert np.array_equal(ProbeArtifact.load(pb).coef, b.coef)
    for bad in ("abc", 5, "0" * 63 + "G"):
        legacy["weights_sha256"] = bad
        (pb / "meta.json").write_text(json.dumps(legacy))
        with pytest.raises(CorruptProbeError):
            ProbeArtifact.load(pb)
    shipped = load_probe("default")  # the shipped bundle carries (and passes) its digests
    for art in (shipped.single, shipped.multiturn, shipped.context_free):
        assert art is not None and art.meta.weights_sha256 is not None


def test_meta_digest_refuses_an_edited_threshold_or_layer(tmp_path):
    """meta.json was covered by no digest: a threshold edited by hand (or a damaged digit) loaded silently and moved
    the operating point, e.g. τ 0.25 -> 99 turns the guard off with no error. save() stamps meta_sha256 over every
    other field; load() refuses a mismatch. Re-indenting or re-spelling the same values is not a change, and an
    artifact from before the digest (no meta_sha256) still loads."""
    p = _artifact().save(tmp_path / "p")
    m = json.loads((p / "meta.json").read_text())
    for edit in ({"threshold": 99.0}, {"threshold": 0.2500001}, {"layer": 2}, {"target_fpr": 0.02},
                 {"model_id": "other"}, {"metrics": {"auroc": 0.99}}, {"note": "extra field"}):
        (p / "meta.json").write_text(json.dumps({**m, **edit}))
        with pytest.raises(CorruptProbeError, match="changed after it was written"):
            ProbeArtifact.load(p)
    (p / "meta.json").write_text(json.dumps(m, indent=7, sort_keys=True).replace("0.25", "2.5e-1"))
    assert ProbeArtifact.load(p).meta.threshold == 0.25  # same content, other spelling
    legacy = {k: v for k, v in m.items() if k != "meta_sha256"}
    (p / "meta.json").write_text(json.dumps({**legacy, "threshold": 0.5}))
    assert ProbeArtifact.load(p).meta.threshold == 0.5  # not checkable without the digest: loads as before
    # Written by a release whose model lacked fields added since (they read as their defaults): the digest is of
    # the object as stored, so a release adding a defaulted field does not refuse every artifact on disk.
    older = {k: v for k, v in m.items() if k not in ("history_threshold", "token_offset", "layers")}
    (p / "meta.json").write_text(json.dumps({**older, "meta_sha256": meta_digest(older)}))
    assert ProbeArtifact.load(p).meta.token_offset == 0
    shipped = load_probe("default")  # the shipped bundle carries (and passes) its content digests
    for art in (shipped.single, shipped.multiturn, shipped.context_free):
        assert art is not None and art.meta.meta_sha256 == art.meta.content_sha256()


def test_a_malformed_meta_digest_is_a_corrupt_artifact(tmp_path):
    """meta_sha256 must be 64 lower-case hex digits: anything else (upper case, short, a number, empty) is a typed
    CorruptProbeError at load, never a digest that compares unequal by accident or a pydantic error."""
    p = _artifact().save(tmp_path / "p")
    m = json.loads((p / "meta.json").read_text())
    for bad in (m["meta_sha256"].upper(), m["meta_sha256"][:63], "", 12, ["x"], "g" * 64):
        (p / "meta.json").write_text(json.dumps({**m, "meta_sha256": bad}))
        with pytest.raises(CorruptProbeError, match="meta.json is invalid"):
            ProbeArtifact.load(p)
    (p / "meta.json").write_text(json.dumps(m))
    assert ProbeArtifact.load(p).meta.meta_sha256 == m["meta_sha256"]


def _split_signal(n=600, d=8, seed=4):
    """Two layers that each carry part of the label: layer 7 strongly, layer 4 a separate, weaker part;
    layer 9 (deeper than the best single layer) also carries an independent part."""
    rng = np.random.default_rng(seed)
    z1, z2, z3 = (rng.normal(size=n) for _ in range(3))
    y = (1.6 * z1 + 1.0 * z2 + 0.9 * z3 + 0.3 * rng.normal(size=n) > 0).astype(int)
    L4, L7, L9 = (rng.normal(size=(n, d)) for _ in range(3))
    L7[:, 0], L4[:, 1], L9[:, 2] = z1, z2, z3
    return np.stack([L4, L7, L9], axis=1).astype(np.float32), y


def test_fit_single_concatenates_shallower_layers_that_add_signal():
    X, y = _split_signal()
    groups = np.arange(len(y)) // 3
    art = fit_single(X, y, groups, [4, 7, 9], model_id="m", fingerprint="f", target_fpr=0.05, progress=False)
    assert art.layers == [4, 7] and art.meta.layer == 7  # 9 would help too but is deeper than the best layer
    steps = art.meta.metrics["layer_selection"]
    assert [s["layers"] for s in steps] == [[7], [4, 7]] and steps[1]["cv_key"] >= steps[0]["cv_key"] + 0.005
    assert art.coef.shape == (2 * 8,)
    acts = {4: X[:, 0], 7: X[:, 1], 9: X[:, 2]}
    # serving order is ascending layer order, whatever order the mapping holds
    assert np.allclose(art.raw(art.features(acts)), art.raw(np.concatenate([X[:, 0], X[:, 1]], axis=1)))
    assert not np.allclose(art.raw(art.features(acts)), art.raw(np.concatenate([X[:, 1], X[:, 0]], axis=1)))
    one = fit_single(X, y, groups, [4, 7, 9], model_id="m", fingerprint="f", target_fpr=0.05, progress=False,
                     max_layers=1)
    assert one.layers == [7] and one.meta.layers is None and one.coef.shape == (8,)
    pinned = fit_single(X, y, groups, [4, 7, 9], model_id="m", fingerprint="f", progress=False, layer=4)
    assert pinned.layers == [4]
    with pytest.raises(ValueError, match="max_layers"):
        fit_single(X, y, groups, [4, 7, 9], model_id="m", fingerprint="f", progress=False, max_layers=0)
    with pytest.raises(ProbeMismatchError, match="lack probe layer"):
        art.features({7: X[:, 1]})


def test_multi_layer_artifact_round_trip_and_validation(tmp_path):
    meta = ProbeMeta(kind="single", model_id="m", model_fingerprint="abc", layer=5, layers=[2, 5], d_model=4,
                     threshold=0.1, target_fpr=0.01)
    art = ProbeArtifact(coef=np.arange(8, dtype=np.float32), intercept=0.0, meta=meta)
    p = art.save(tmp_path / "p")
    assert json.loads((p / "meta.json").read_text())["format_version"] == 2  # older releases refuse it by version
    back = ProbeArtifact.load(p)
    assert back.layers == [2, 5] and np.array_equal(back.coef, art.coef) and back.meta.format_version == 2
    assert art.meta.format_version == 1  # saving does not mutate the in-memory artifact
    assert _artifact().save(tmp_path / "one") and json.loads((tmp_path / "one/meta.json").read_text())[
        "format_version"] == 1  # single-layer artifacts keep the old format
    for bad in ({"layers": [5, 2]}, {"layers": [2, 4]}, {"layers": []}, {"layers": [2, 2, 5]},
                {"d_model": 8}, {"format_version": 3}, {"threshold": float("nan")},
                {"history_threshold": float("inf")}, {"history_threshold": "high"}, {"score_scale": float("inf")}):
        q = art.save(tmp_path / f"bad{len(list(tmp_path.iterdir()))}")
        m = json.loads((q / "meta.json").read_text())
        m.update(bad)
        del m["meta_sha256"]  # each field check on its own, not only the content digest
        (q / "meta.json").write_text(json.dumps(m))
        with pytest.raises(CorruptProbeError):
            ProbeArtifact.load(q)


def test_cross_domain_trains_on_one_domain_and_tests_on_each_other():
    """Domains a and b share the signal direction, c has it reversed, d has one class only: a->b generalizes,
    a->c ranks backwards, d is never trained on (and is tested on only when named)."""
    rng = np.random.default_rng(5)
    X, y, key = [], [], []
    for dom, sign in (("a", 1), ("b", 1), ("c", -1), ("d", 1)):
        for i in range(200):
            lab = 0 if dom == "d" else i % 2
            X.append(np.r_[sign * 3.0 * lab + rng.normal(), rng.normal(size=3)])
            y.append(lab), key.append(dom)
    X = np.asarray(X, dtype=np.float32)[:, None]
    out = cross_domain(X, np.asarray(y), key, 0, target_fpr=0.05)
    assert set(out) == {"a", "b", "c"} and set(out["a"]) == {"b", "c", "d"}
    assert out["a"]["b"]["auroc"] > 0.95 and out["a"]["c"]["auroc"] < 0.05
    assert out["a"]["d"]["auroc"] is None and out["a"]["d"]["fpr"] <= 0.15
    assert set(cross_domain(X, np.asarray(y), key, [0], domains=["a", "b"], target_fpr=0.05)) == {"a", "b"}


def test_detection_timing_against_the_first_inappropriate_turn():
    from probes.evaluate import _timing

    recs = [{"turn_labels": [0, 0, 1, 1]}, {"turn_labels": [0, 1]}, {"turn_labels": [0, 0, 1]},
            {"turn_labels": [0, 0]}, {}]
    got = _timing(recs, [1, 1, 1, 0, 1], [3, 1, None, 2, 2])  # on time, one turn early, missed, benign, unlabelled
    assert got == {"mean_detection_delay": -0.5, "early_flag_rate": 0.5, "n_timed": 2}
    assert _timing([{}], [1], [2]) == {"mean_detection_delay": None, "early_flag_rate": None, "n_timed": 0}


def test_calibration_rows_also_bound_the_later_turn_threshold():
    """Conversations outside ``calibration_rows`` do not set the later-turn τ either (whole conversations)."""
    X, y, g, ct, _ = _requests_and_conversations(3)
    keep = np.ones(len(y), bool)
    loud = [i for i, c in enumerate(ct) if c is not None and int(c[0][1:]) % 4 == 1]  # a quarter of the benign ones
    X[loud, 0, 0] += 2.5  # benign but loud later turns: they would raise the later-turn τ
    keep[loud] = False
    args = dict(model_id="m", fingerprint="f", target_fpr=0.05, progress=False, conversation_turns=ct)
    mixed = fit_single(X, y, g, [7], **args)
    own = fit_single(X, y, g, [7], **args, calibration_rows=keep)
    assert own.meta.history_threshold < mixed.meta.history_threshold


def test_grouped_folds_never_put_a_group_on_both_sides():
    """``_folds`` (the CV behind layer choice and τ): every row is held out exactly once, no group (profile /
    template) is on both sides of any fold, uneven groups included; fewer groups than splits gives one fold per
    group, and a single group is refused (no held-out data at all)."""
    from probes.train import _folds

    rng = np.random.default_rng(8)
    groups = [f"g{i}" for i in rng.integers(0, 23, 300)]  # 23 groups of uneven size, shuffled rows
    folds = _folds(groups, 5)
    assert len(folds) == 5
    held = np.concatenate([te for _, te in folds])
    assert sorted(held.tolist()) == list(range(300))  # each row held out once
    g = np.asarray(groups)
    for tr, te in folds:
        assert len(te) and not set(g[tr]) & set(g[te])
        assert sorted([*tr.tolist(), *te.tolist()]) == list(range(300))
    assert len(_folds(["a", "b", "a", "c", "b"], 5)) == 3
    with pytest.raises(ValueError, match="2 distinct groups"):
        _folds(["a"] * 10, 5)


def _memorisable_and_genuine_layers(n_groups=80, per_group=4, d=64, seed=0):
    """Layer 4: a genuine, noisy signal (dimension 0 moves with the label, row by row). Layer 9: one random vector
    per group, repeated on each of its rows (all carrying the group's label): learnable by heart, no signal about
    an unseen group."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_groups) % 2, per_group)
    groups = np.repeat([f"g{i}" for i in range(n_groups)], per_group)
    memo = np.repeat(rng.normal(size=(n_groups, d)), per_group, axis=0)
    genuine = rng.normal(size=(len(y), d))
    genuine[:, 0] += 1.5 * y
    return np.stack([genuine, memo], axis=1).astype(np.float32), y, groups


def test_layer_choice_and_threshold_come_from_held_out_groups_not_memorised_rows():
    """A layer that memorises each group's rows (training AUROC ~1, row-level CV ~1) against one with a genuine
    but weaker signal: fit_single picks the genuine one because its CV holds whole groups out (with one group per
    row, the same data picks the memorising layer: the trap is real). τ is the target-FPR point of the *held-out*
    negatives' scores: pinned to the memorising layer, τ and the stored CV metrics are those of its chance-level
    held-out scores, not of its perfect in-sample ones."""
    from probes.metrics import auroc
    from probes.train import _folds

    X, y, groups = _memorisable_and_genuine_layers()
    train_auroc = {li: auroc(y, LinearProbe(C=0.3).fit(X[:, k], y).decision_function(X[:, k]))
                   for k, li in enumerate((4, 9))}
    assert train_auroc[9] > 0.99 > train_auroc[4]  # by training fit the memorising layer wins
    art = fit_single(X, y, groups, [4, 9], model_id="m", fingerprint="f", target_fpr=0.05, progress=False)
    assert art.layers == [4] and art.meta.layer == 4
    per = art.meta.metrics["per_layer"]
    assert per["9"]["oof_auroc"] < 0.6 < 0.75 < per["4"]["oof_auroc"]
    by_row = fit_single(X, y, np.arange(len(y)), [4, 9], model_id="m", fingerprint="f", target_fpr=0.05,
                        progress=False)  # every row its own group: a group's copies on both sides
    assert by_row.layers == [9] and by_row.meta.metrics["per_layer"]["9"]["oof_auroc"] > 0.99

    pinned = fit_single(X, y, groups, [4, 9], layer=9, model_id="m", fingerprint="f", target_fpr=0.05,
                        progress=False)
    oof = np.full(len(y), np.nan)
    for tr, te in _folds(groups, 5):
        oof[te] = LinearProbe(C=0.3).fit(X[tr, 1], y[tr]).decision_function(X[te, 1])
    held_out_tau = calibrate_threshold(oof[y == 0], 0.05)
    in_sample_tau = calibrate_threshold(pinned.raw(X[y == 0, 1]), 0.05)
    assert pinned.meta.threshold == pytest.approx(held_out_tau, abs=1e-6)
    assert abs(pinned.meta.threshold - in_sample_tau) > 1.0  # the two really differ here
    cv = pinned.meta.metrics["cv"]
    assert cv["auroc"] < 0.6 and cv["fpr"] <= 0.05 and cv["tpr"] < 0.2  # honest: chance, not the in-sample 1.0
