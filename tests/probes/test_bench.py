"""`railguard bench`'s privacy keys (CONTRACT.md), measured by the real bench on the shipped model and probe.

Only invariants are asserted (no absolute or relative speed: machines here are noisy; the targets live in the
bench output and the issue notes)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.model

CONTRACT_KEYS = {"device", "fused_extra_forward_passes", "fused_overhead_pct", "sentinel_ms_p50", "judge_ms_p50",
                 "judge_over_sentinel", "turn20_over_turn2"}


def test_privacy_bench_reports_the_contract_keys_and_fused_mode_adds_no_forward_pass():
    from probes.bench import bench

    out = bench(quick=True)
    assert CONTRACT_KEYS <= set(out), CONTRACT_KEYS - set(out)
    json.dumps(out)  # what `railguard bench --json` prints: plain JSON values only
    assert out["fused_extra_forward_passes"] == 0  # the hook reads the serving prefill
    assert out["fused_fired"] >= 1  # ... and it did read it (the hook fired, its time counted)
    assert 0 < out["fused_overhead_pct"] < 100
    # a turn with a sentence cut: its head prefilled beside the cut, one forward call more (session 40)
    assert out["fused_cut_head_prefilled"] and out["fused_cut_extra_forward_calls"] == 1
    assert len(out["sentinel_ms_by_turn"]) == 20 and all(ms > 0 for ms in out["sentinel_ms_by_turn"])
    assert out["judge_over_sentinel"] == pytest.approx(out["judge_ms_p50"] / out["sentinel_ms_p50"])
    assert out["turn20_over_turn2"] == pytest.approx(out["sentinel_ms_by_turn"][19] / out["sentinel_ms_by_turn"][1],
                                                     rel=0.01)
