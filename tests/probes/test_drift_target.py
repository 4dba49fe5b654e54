"""What the drift probe is fit on (displacement a_t - a_1 by default, NeuroFilter's per-turn deltas on request),
and the training data's hashes in a probe's metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from probes import train as train_module
from probes.cli import app
from probes.datasets import data_hashes, file_sha256
from probes.train import fit_multiturn


def _conversations(n=60, d=8, seed=3):
    """Attack conversations step along axis 0 every turn; benign ones wander around their own start."""
    rng = np.random.default_rng(seed)
    convs, labels = [], []
    for c in range(n):
        lab = c % 2
        base = rng.normal(size=d) * 5
        turns = [base + rng.normal(size=d) * 0.3 + np.eye(d)[0] * 2 * t * lab for t in range(5)]
        convs.append(np.stack(turns)[:, None, :].astype(np.float32))
        labels.append(lab)
    return convs, labels


@pytest.mark.parametrize("target", ["displacement", "delta"])
def test_the_drift_probe_is_fit_on_the_chosen_target(monkeypatch, target):
    """The rows the final fit sees are a_t - a_1 (displacement) or a_t - a_{t-1} (delta), as the metadata says; both
    targets find the attack direction here."""
    convs, labels = _conversations()
    seen: list[np.ndarray] = []
    real_fit = train_module.LinearProbe.fit

    def spy(self, X, y):
        seen.append(np.asarray(X))
        return real_fit(self, X, y)

    monkeypatch.setattr(train_module.LinearProbe, "fit", spy)
    art = fit_multiturn(convs, labels, [None] * 60, list(range(60)), [5], model_id="m", fingerprint="f",
                        target_fpr=0.05, progress=False, target=target)
    a = convs[0][:, 0, :]
    expected = a[1:] - (a[0] if target == "displacement" else a[:-1])
    np.testing.assert_allclose(seen[-1][:4], expected, atol=1e-6)  # the final fit: conversation 0's turns first
    assert art.meta.method == f"logreg:{target}"
    assert art.meta.metrics["cv_conversation"]["tpr"] > 0.9
    assert abs(art.coef[0]) == np.abs(art.coef).max()  # the attack axis carries the weight


def test_probes_train_refuses_an_unknown_drift_target(tmp_path):
    data = tmp_path / "t.jsonl"
    data.write_text(json.dumps({"id": "a", "request": "hi", "label": 0}) + "\n")
    res = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "p"), "--multiturn",
                                   "--drift-target", "velocity", "--json"])
    assert res.exit_code == 2 and json.loads(res.stdout) == {"error": "--drift-target must be displacement or delta"}
    assert not (tmp_path / "p").exists()


def test_training_files_that_share_a_name_keep_both_hashes(tmp_path):
    """Two --data files named train.jsonl in different folders: keyed by the path given, neither hash lost."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b, c = tmp_path / "a" / "train.jsonl", tmp_path / "b" / "train.jsonl", tmp_path / "extra.jsonl"
    a.write_text("one\n")
    b.write_text("two\n")
    c.write_text("three\n")
    got = data_hashes([a, b, c])
    assert got == {"a/train.jsonl": file_sha256(a), "b/train.jsonl": file_sha256(b), "extra.jsonl": file_sha256(c)}
    assert len(set(got.values())) == 3 and not any(str(tmp_path) in k for k in got)  # no absolute path kept
    (tmp_path / "x" / "a").mkdir(parents=True)
    d = tmp_path / "x" / "a" / "train.jsonl"  # same folder name and file name as `a`: numbered
    d.write_text("four\n")
    assert data_hashes([a, d]) == {"a/train.jsonl": file_sha256(a), "a/train.jsonl#2": file_sha256(d)}
