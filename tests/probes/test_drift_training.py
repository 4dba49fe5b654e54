"""Drift-probe training data and tooling: extra conversations, sentinel-path capture with cache, layer bound."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from guardrails.errors import InvalidInputError
from probes.capture import capture
from probes.datasets import DRIFT_PROFILES, drift_records, multiturn_records
from probes.features import conversation_capture, multiturn_prompts
from probes.sentinel import SentinelEncoder
from probes.train_runs import train_drift_probe


def _cmpl_dir(root: Path) -> Path:
    """A CMPL-shaped folder (5 scenarios; scenario 5 has 84 profiles, the others 200, as in the real files)."""
    d = root / "cmpl"
    d.mkdir(parents=True)
    (d / "scenarios_descriptions.yaml").write_text(
        "".join(f"{s}: |\n  Title: scenario {s}\n  Appropriate: a\n  Inappropriate: b\n" for s in range(1, 6)))
    for s in range(1, 6):
        n = 84 if s == 5 else 200
        (d / f"generated_profiles_scenario_{s}.json").write_text(json.dumps([{"name": f"P{s}-{i}"} for i in range(n)]))
    return root


def _records(n: int) -> list[dict]:
    out = []
    for c in range(n):
        turns = []
        for t in range(3 + c % 2):
            turns.append({"role": "user", "content": f"conversation {c} asks question {t} about the file"})
            turns.append({"role": "assistant", "content": "noted"})
        out.append({"id": f"c{c}", "context": "be careful with private data" if c % 3 else None,
                    "turns": turns[:-1], "label": c % 2, "turn_labels": None, "group": f"g{c}"})
    return out


def test_drift_records_are_extra_profiles_and_leave_the_default_set_alone(tmp_path):
    data = _cmpl_dir(tmp_path)
    default = multiturn_records(data)
    extra = drift_records(data)
    assert len(default) == 80 and default[0]["id"] == "mt-s1-0"  # the set older probes and notes used
    assert {r["context"].split(".")[0] for r in default if r["scenario"] == "cmpl2"} == {
        f"You act on behalf of P2-{p}" for p in range(100, 116)}
    assert {r["id"] for r in default}.isdisjoint({r["id"] for r in extra})
    assert len({r["id"] for r in extra}) == len(extra) == 4 * len(DRIFT_PROFILES) + len(range(32, 84))
    for r in extra:
        s, p = map(int, re.fullmatch(r"mtx-s(\d)-p(\d+)", r["id"]).groups())
        assert p in DRIFT_PROFILES and not (p < 30 or 100 <= p < 116)  # clear of cmpl_records and mt- profiles
        assert s != 5 or p >= 32  # scenario 5 (84 profiles): the default set wraps to 16..31
        assert r["group"] == r["id"] and len(r["turn_labels"]) == sum(t["role"] == "user" for t in r["turns"])
        assert (max(r["turn_labels"]) == 1) == (r["label"] == 1)  # attacks end with inappropriate asks
    assert abs(np.mean([r["label"] for r in extra]) - 0.5) < 0.02


def test_conversation_capture_equals_full_prefill_and_is_cached(tiny, tmp_path, monkeypatch):
    recs = _records(3)
    convs = conversation_capture(tiny, recs, [1, 3], cache_dir=tmp_path, progress=False)
    prompts, index = multiturn_prompts(tiny.tokenizer, recs)
    full = capture(tiny.model, tiny.tokenizer, prompts, [1, 3])
    assert [c.shape for c in convs] == [(3, 2, 32), (4, 2, 32), (3, 2, 32)]
    for row, (c, t) in enumerate(index):
        assert abs(convs[c][t] - full[row]).max() < 1e-4  # the incremental (served) path == full prefill
    assert len(list(tmp_path.glob("conv-act-*.npz"))) == 1

    def no_model(*_a, **_k):
        raise AssertionError("cached conversations must not run the model again")

    monkeypatch.setattr("probes.sentinel.SentinelEncoder.activation", no_model)
    again = conversation_capture(tiny, recs, [1, 3], cache_dir=tmp_path, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(convs, again, strict=True))


def test_conversation_capture_stopped_part_way_resumes_from_its_shards(tiny, tmp_path, monkeypatch):
    recs = _records(3)
    real = SentinelEncoder.activation

    def stop_at_third(self, messages, session=None):
        if session == 2:
            raise KeyboardInterrupt  # the run stopped while capturing the third conversation
        return real(self, messages, session=session)

    monkeypatch.setattr("probes.sentinel.SentinelEncoder.activation", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        conversation_capture(tiny, recs, [1, 3], cache_dir=tmp_path, progress=False, save_every=1)
    assert len(list(tmp_path.glob("conv-act-*.npz"))) == 2  # one shard per finished conversation
    counted: list[object] = []

    def count(self, messages, session=None):
        counted.append(session)
        return real(self, messages, session=session)

    monkeypatch.setattr("probes.sentinel.SentinelEncoder.activation", count)
    resumed = conversation_capture(tiny, recs, [1, 3], cache_dir=tmp_path, progress=False, save_every=1)
    assert set(counted) == {2}  # only the conversation that was not finished runs again
    fresh = conversation_capture(tiny, recs, [1, 3], cache_dir=tmp_path / "fresh", progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(resumed, fresh, strict=True))
    with pytest.raises(ValueError, match="save_every"):
        conversation_capture(tiny, recs, [1, 3], cache_dir=tmp_path, progress=False, save_every=0)


def test_conversation_capture_rejects_a_record_without_user_turn(tiny, tmp_path):
    bad = _records(2) + [{"id": "x", "context": None, "turns": [], "label": 0}]
    with pytest.raises(InvalidInputError):
        conversation_capture(tiny, bad, [1], cache_dir=tmp_path, progress=False)
    assert not list(tmp_path.iterdir())  # rejected before any capture: no cache shard written


def test_train_drift_probe_stays_at_or_below_the_single_probe_layer(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("RAILGUARD_PROBES_CACHE", str(tmp_path))
    art = train_drift_probe(_records(20), tiny, max_layer=2, layers=[1, 2, 3, 4], progress=False)
    assert art.meta.kind == "multiturn" and art.meta.layer in (1, 2)
    assert art.meta.model_fingerprint == tiny.fingerprint() and art.meta.metrics["cv_conversation"]["n"] == 20
    with pytest.raises(ValueError, match="no candidate layer"):
        train_drift_probe(_records(20), tiny, max_layer=0, layers=[1, 2], progress=False)
    with pytest.raises(ValueError, match="multi-turn records"):
        train_drift_probe([], tiny, max_layer=2, progress=False)


def test_drift_probe_reuses_conversations_captured_at_more_layers(tiny, tmp_path, monkeypatch):
    """train_bundle hands over the conversations it captured for the per-turn probe (all candidate layers): the
    drift probe slices their columns instead of running them again, and learns exactly the same direction."""
    monkeypatch.setenv("RAILGUARD_PROBES_CACHE", str(tmp_path / "a"))
    recs = _records(20)
    reference = train_drift_probe(recs, tiny, max_layer=2, layers=[1, 2, 3, 4], progress=False)
    wide = conversation_capture(tiny, recs[:12], [1, 2, 3, 4], cache_dir=tmp_path / "wide", progress=False)
    monkeypatch.setenv("RAILGUARD_PROBES_CACHE", str(tmp_path / "b"))  # empty cache: only the rest may run
    ran: list[int] = []
    real = conversation_capture

    def counting(lm, records, layers, **kw):
        ran.append(len(records))
        return real(lm, records, layers, **kw)

    monkeypatch.setattr("probes.features.conversation_capture", counting)
    reused = train_drift_probe(recs, tiny, max_layer=2, layers=[1, 2, 3, 4], progress=False,
                               captured=([1, 2, 3, 4], wide))
    assert ran == [8]  # the 12 handed over were not captured again
    assert reused.meta.layer == reference.meta.layer
    assert reused.meta.threshold == pytest.approx(reference.meta.threshold)
    assert np.allclose(reused.coef, reference.coef, atol=1e-6)
    before = sorted(p.name for p in (tmp_path / "b").iterdir())
    with pytest.raises(ValueError, match="do not cover"):
        train_drift_probe(recs, tiny, max_layer=2, layers=[1, 2, 3, 4], progress=False, captured=([1, 3], wide))
    assert ran == [8] and sorted(p.name for p in (tmp_path / "b").iterdir()) == before  # refused before any capture


def test_activation_cache_never_serves_fp32_vectors_to_a_bf16_model(tiny, tmp_path):
    """The fingerprint ignores dtype (a probe trained on fp32 loads on a bf16 GPU model); the cache must not."""
    import copy
    from dataclasses import replace

    import torch

    from probes.features import cached_capture

    half_model = copy.deepcopy(tiny.model).to(torch.bfloat16)
    half = replace(tiny, model=half_model)
    half.fingerprint = tiny.fingerprint  # type: ignore[method-assign] # same weights, same fingerprint, other dtype
    prompts = [f"user: question {i} about my own account" for i in range(3)]
    x32 = cached_capture(tiny, prompts, [2], cache_dir=tmp_path, progress=False)
    x16 = cached_capture(half, prompts, [2], cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("act-*.npz"))) == 2  # one shard per dtype
    assert not np.array_equal(x32, x16)  # the bf16 run computed its own vectors ...
    cos = (x32 * x16).sum(-1) / np.linalg.norm(x32, axis=-1) / np.linalg.norm(x16, axis=-1)
    assert cos.min() > 0.95  # ... of the same prompts
    again = cached_capture(tiny, prompts, [2], cache_dir=tmp_path, progress=False)
    assert np.array_equal(again, x32)


def test_train_bundle_multiturn_without_conversations_is_refused_before_any_capture(tiny, tmp_path, monkeypatch):
    """`--multiturn` with single-turn lines only: a clear error, raised before a forward pass or a cache write."""
    from probes.train_runs import train_bundle

    cache = tmp_path / "cache"
    monkeypatch.setenv("RAILGUARD_PROBES_CACHE", str(cache))
    single = [{"id": f"r{i}", "context": None, "request": f"request {i}", "label": i % 2, "group": f"g{i}"}
              for i in range(10)]
    with pytest.raises(ValueError, match="needs multi-turn records"):
        train_bundle(single, tiny, layers=[1, 2], multiturn=True, progress=False)
    assert not cache.exists() or not any(cache.iterdir())


def test_train_bundle_drift_extra_trains_the_drift_probe_only(tiny, tmp_path, monkeypatch):
    """`drift_extra` (remark copies): more conversations for the drift probe, none for the per-turn probe."""
    from probes.remarks import remark_copies
    from probes.train_runs import train_bundle

    monkeypatch.setenv("RAILGUARD_PROBES_CACHE", str(tmp_path))
    single = [{"id": f"r{i}", "context": None, "request": f"request {i} about {'her file' if i % 2 else 'my file'}",
               "label": i % 2, "group": f"s{i}"} for i in range(12)]
    recs = _records(20)
    copies = remark_copies(recs)
    base = train_bundle(single + recs, tiny, layers=[1, 2], multiturn=True, progress=False)
    extra = train_bundle(single + recs, tiny, layers=[1, 2], multiturn=True, progress=False, drift_extra=copies)
    assert np.array_equal(extra.single.coef, base.single.coef)
    assert extra.single.meta.threshold == base.single.meta.threshold
    assert extra.multiturn.meta.metrics["n_deltas"] == 2 * base.multiturn.meta.metrics["n_deltas"]
    reference = train_drift_probe(recs + copies, tiny, max_layer=extra.single.meta.layer, layers=[1, 2],
                                  progress=False)
    assert np.allclose(extra.multiturn.coef, reference.coef, atol=1e-6)
    assert not np.allclose(extra.multiturn.coef, base.multiturn.coef, atol=1e-6)


@pytest.mark.parametrize("bad, why", [
    ({"id": "x", "request": "hi", "label": 0}, "not a multi-turn record"),
    ("not a record", "not a multi-turn record"),
    ({"id": "x", "turns": [{"role": "user", "content": "hi"}]}, "label must be 0 or 1"),
    ({"id": "x", "turns": [{"role": "user", "content": "hi"}], "label": True}, "label must be 0 or 1"),
    ({"id": "x", "turns": [{"role": "assistant", "content": "hi"}], "label": 0}, "start with a user turn"),
    ({"id": "x", "turns": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "label": 1,
      "turn_labels": [0]}, "one per user turn"),
    ({"id": "x", "turns": [{"role": "user", "content": "a"}], "label": 1, "turn_labels": [2]}, "turn_labels"),
])
def test_malformed_drift_extra_is_refused_before_any_capture(tiny, tmp_path, monkeypatch, bad, why):
    from probes.train_runs import train_bundle

    cache = tmp_path / "cache"
    monkeypatch.setenv("RAILGUARD_PROBES_CACHE", str(cache))
    recs = _records(4)
    with pytest.raises(ValueError, match=rf"drift_extra \((id 'x'|1)\): .*{why}"):
        train_bundle(recs, tiny, layers=[1, 2], multiturn=True, progress=False, drift_extra=[recs[0], bad])
    with pytest.raises(ValueError, match="needs multiturn=True"):
        train_bundle(recs, tiny, layers=[1, 2], progress=False, drift_extra=recs[:1])
    if isinstance(bad, dict) and "turns" in bad and "request" not in bad:  # the same record among `records`
        with pytest.raises(ValueError, match=rf"a multi-turn record \(id 'x'\): .*{why}"):
            train_bundle([*recs, bad], tiny, layers=[1, 2], multiturn=True, progress=False)
    assert not cache.exists() or not any(cache.iterdir())
