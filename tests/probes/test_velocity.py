from __future__ import annotations

import numpy as np
import pytest

from guardrails.errors import InvalidInputError
from probes.probe import ProbeArtifact, ProbeMeta
from probes.velocity import InMemoryStateStore, StateStore, VelocityTracker


def _mt(d=16, fp="fp"):
    meta = ProbeMeta(kind="multiturn", model_id="m", model_fingerprint=fp, layer=2, d_model=d, threshold=1.0,
                     target_fpr=0.01)
    return ProbeArtifact(coef=np.random.default_rng(0).normal(size=d).astype(np.float32), intercept=0.0,
                         meta=meta)


def test_telescoping_sum():
    probe = _mt()
    tr = VelocityTracker(probe)
    acts = np.random.default_rng(1).normal(size=(12, 16)).astype(np.float32) * 3
    for t, a in enumerate(acts, 1):
        s, turn = tr.update("t", "u", "s", a)
        assert turn == t
        assert s == pytest.approx(float(probe.coef @ (a - acts[0])), abs=1e-3)
        deltas = sum(float(probe.coef @ (acts[k] - acts[k - 1])) for k in range(1, t))
        assert s == pytest.approx(deltas, abs=1e-3)
    assert s != 0.0


def test_state_is_small_and_survives_restart():
    store = InMemoryStateStore()
    probe = _mt()
    acts = np.random.default_rng(2).normal(size=(3, 16)).astype(np.float32)
    VelocityTracker(probe, store).update("t", "u", "s", acts[0])
    VelocityTracker(probe, store).update("t", "u", "s", acts[1])  # "new process", same store
    s, turn = VelocityTracker(probe, store).update("t", "u", "s", acts[2])
    assert turn == 3 and s == pytest.approx(float(probe.coef @ (acts[2] - acts[0])), abs=1e-4)
    st = store.get_state("t", "u", "s", "privacy_velocity")
    assert set(st) == {"turn", "a1", "prev", "score", "probe_id"}  # never the history


def test_session_isolation():
    store = InMemoryStateStore()
    tr = VelocityTracker(_mt(), store)
    rng = np.random.default_rng(3)
    keys = [("t1", "alice", "s1"), ("t1", "alice", "s2"), ("t1", "bob", "s1"), ("t2", "alice", "s1")]
    for k in keys:
        tr.update(*k, rng.normal(size=16).astype(np.float32))
    for k in keys:
        assert tr.load(*k).turn == 1
    tr.update(*keys[0], rng.normal(size=16).astype(np.float32))
    assert tr.load(*keys[0]).turn == 2 and all(tr.load(*k).turn == 1 for k in keys[1:])


def test_retrained_probe_or_garbage_state_rebaselines():
    store = InMemoryStateStore()
    a = np.ones(16, dtype=np.float32)
    VelocityTracker(_mt(fp="old"), store).update("t", "u", "s", a)
    assert VelocityTracker(_mt(fp="new"), store).update("t", "u", "s", a) == (0.0, 1)
    store.put_state("t", "u", "s", "privacy_velocity", {"turn": "x"})
    assert VelocityTracker(_mt(fp="new"), store).update("t", "u", "s", a)[1] == 1


def test_bad_activation_rejected():
    tr = VelocityTracker(_mt())
    with pytest.raises(InvalidInputError):
        tr.update("t", "u", "s", np.full(16, np.nan, dtype=np.float32))
    with pytest.raises(InvalidInputError):
        tr.update("t", "u", "s", np.zeros(5, dtype=np.float32))


def test_real_settings_store_when_available(tmp_path):
    import guardrails.store as sql

    store = sql.SettingsStore(f"sqlite:///{tmp_path / 's.db'}")
    try:
        assert isinstance(store, StateStore)
        probe = _mt()
        acts = np.random.default_rng(4).normal(size=(2, 16)).astype(np.float32)
        VelocityTracker(probe, store).update("t", "u", "s", acts[0])
        s, turn = VelocityTracker(probe, store).update("t", "u", "s", acts[1])
        assert turn == 2 and s == pytest.approx(float(probe.coef @ (acts[1] - acts[0])), abs=1e-4)
        assert VelocityTracker(probe, store).load("t", "u", "other") is None
    finally:
        store.close()
