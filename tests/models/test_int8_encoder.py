"""Int8 sentence encoders (fixed, calibrated input scales) on the real all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

from guardrails.errors import ConfigError, ModelLoadError
from guardrails.models import load_encoder
from guardrails.models.quantize import int8_engine_available

pytestmark = [pytest.mark.model,
              pytest.mark.skipif(not int8_engine_available(), reason="needs torch's x86 int8 kernel")]

CALIBRATION = ["you are an idiot", "WINNER!! claim your free prize now, txt 8008", "the film was a quiet delight",
               "meeting moved to 3pm, see you there", "I can't believe how bad the service was",
               "a much longer sentence about the weather today in Paris and elsewhere, with some more words"] * 4
TEXTS = ["How do I bake bread?", "What's a recipe for a loaf of bread?", "Stock prices fell today.",
         "free entry in a weekly competition to win cup final tickets, text FA to 87121", "ok", "you moron",
         "The acting was wooden and the plot made no sense at all, two hours I will never get back."]


def test_int8_copy_keeps_the_embedding_space_and_leaves_the_shared_fp32_encoder_alone():
    import torch

    fp32 = load_encoder("all-minilm-l6-v2")
    int8 = load_encoder("all-minilm-l6-v2", int8_calibration=CALIBRATION)
    assert int8.int8 and not fp32.int8 and int8.name == fp32.name and int8 is not fp32
    assert load_encoder("all-minilm-l6-v2", int8_calibration=list(CALIBRATION)) is int8  # cached per texts
    # every Linear of the shared fp32 model is still fp32; the copy quantized all but the down-projections
    assert all(type(m) is torch.nn.Linear for m in fp32.model.modules() if "Linear" in type(m).__name__)
    layer0 = int8.model.encoder.layer[0]
    assert type(layer0.output.dense) is torch.nn.Linear  # the down-projection (reads the GELU output) stays fp32
    for m in (layer0.attention.self.query, layer0.attention.output.dense, layer0.intermediate.dense):
        assert type(m).__name__ == "StaticInt8Linear"
    a, b = fp32.encode(TEXTS), int8.encode(TEXTS)
    cos = (a * b).sum(1)
    assert cos.min() > 0.95 and cos.mean() > 0.98, cos  # measured: 0.967 ("ok") and 0.989 mean
    assert not np.array_equal(a, b)  # int8 really ran
    sims = b @ b.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # still semantic


def test_int8_embedding_of_a_text_does_not_depend_on_its_batch_neighbours():
    """Fixed input scales: a text's vector is the same (cosine > 0.9999) next to an extreme text as next to an
    ordinary one. torch's dynamic int8 rescales per batch: cosine down to 0.875 on these texts, and on the harm
    encoder 16 of 880 dev verdicts flipped between batch sizes 1 and 32. Scored alone (no
    padding at all) it can differ a little: sdpa's unmasked path differs from the masked one by ~1e-7 in fp32,
    and an int8 rounding step can amplify that (measured min cosine 0.977 here; 0 of 7,832 dev verdicts flipped
    between batch sizes 1 and 32)."""
    enc = load_encoder("all-minilm-l6-v2", int8_calibration=CALIBRATION)
    extreme = "Ω" * 40 + " !!!! $$$$ 99999999 " * 10
    ordinary = "a much longer sentence about the weather today in Paris and elsewhere " * 2
    with_extreme = enc.encode([extreme, *TEXTS], batch_size=64)[1:]
    with_ordinary = enc.encode([ordinary, *TEXTS], batch_size=64)[1:]
    assert ((with_extreme * with_ordinary).sum(1)).min() > 0.9999  # torch's dynamic int8 here: 0.875
    np.testing.assert_array_equal(with_extreme, enc.encode([extreme, *TEXTS], batch_size=64)[1:])  # deterministic
    alone = enc.encode(TEXTS, batch_size=1)
    assert ((alone * with_ordinary).sum(1)).min() > 0.95


def test_int8_adapted_encoder_shares_its_calibration_with_its_plain_base(top_deltas):
    path = top_deltas[0]
    adapted = load_encoder("all-minilm-l6-v2", adapter=path, int8_calibration=CALIBRATION)
    assert adapted.int8 and adapted.base is load_encoder("all-minilm-l6-v2", int8_calibration=CALIBRATION)
    assert adapted.shared_layers == 4
    own, plain = adapted.encode_with_base(TEXTS, batch_size=4)  # the trunk pass equals two full passes
    np.testing.assert_allclose(own, adapted.encode(TEXTS, batch_size=4), atol=1e-5)
    np.testing.assert_allclose(plain, adapted.base.encode(TEXTS, batch_size=4), atol=1e-5)
    fp32 = load_encoder("all-minilm-l6-v2", adapter=path)
    cos = (fp32.encode(TEXTS) * own).sum(1)
    # the plain encoder's bounds (test above): the worst text is "ok" (3 tokens). Measured on the adapter:
    # min 0.974-0.982 over 8 random adapters on an AVX2 box, 0.969 on CI's CPU (min > 0.97 failed there)
    assert not fp32.int8 and cos.min() > 0.95 and cos.mean() > 0.98, cos


def test_int8_bad_requests_are_typed_errors():
    from guardrails.models import loader

    load_encoder("all-minilm-l6-v2")
    before = dict(loader._cache)
    with pytest.raises(ModelLoadError, match="at least one text"):
        load_encoder("all-minilm-l6-v2", int8_calibration=[])
    with pytest.raises(ModelLoadError, match="CPU only"):
        load_encoder("all-minilm-l6-v2", device="meta", int8_calibration=CALIBRATION)
    assert loader._cache == before  # nothing loaded or cached


def test_int8_without_the_kernel_is_a_typed_error(monkeypatch):
    import guardrails.models.quantize as quantize
    from guardrails.models import loader

    monkeypatch.setattr(quantize, "int8_engine_available", lambda: False)
    before = dict(loader._cache)
    with pytest.raises(ModelLoadError, match="x86 int8 Linear kernel"):
        load_encoder("all-minilm-l6-v2", int8_calibration=["another calibration set, never loaded"])
    assert loader._cache == before


def test_int8_policy_switch(monkeypatch):
    """Opt-in: int8 cost block-new success 0.923 -> 0.918 (target 0.92), so only RAILGUARD_CPU_INT8=1 turns it on."""
    from guardrails.models import devices

    for off in ("0", "auto", ""):
        monkeypatch.setenv("RAILGUARD_CPU_INT8", off)
        assert devices.encoder_int8("cpu") is False
    monkeypatch.delenv("RAILGUARD_CPU_INT8")
    assert devices.encoder_int8("cpu") is False
    monkeypatch.setenv("RAILGUARD_CPU_INT8", "1")
    assert devices.encoder_int8("cpu") is True and devices.encoder_int8("cuda") is False
    monkeypatch.setenv("RAILGUARD_CPU_INT8", "yes please")
    with pytest.raises(ConfigError, match="RAILGUARD_CPU_INT8='yes please'"):
        devices.encoder_int8("cpu")
    import guardrails.models.quantize as quantize

    monkeypatch.setenv("RAILGUARD_CPU_INT8", "1")
    monkeypatch.setattr(quantize, "int8_engine_available", lambda: False)
    with pytest.raises(ConfigError, match="no x86 int8"):
        devices.encoder_int8("cpu")


def test_harm_backend_int8_keeps_the_shipped_heads_verdicts():
    """The shipped heads, bank and thresholds were fit in fp32; the opt-in int8 encoder serves them. On the shipped
    dev file (880 messages) nearly every verdict must stay (measured on the 7,832-text dev split: 44 differ)."""
    from personalization import EmbeddingBackend, ModerationProfile
    from personalization.evaluate import DEV_EVAL_PATH, flagged, load_jsonl

    texts = [r["text"] for r in load_jsonl(DEV_EVAL_PATH)]
    profile = ModerationProfile()
    fp32, int8 = EmbeddingBackend(int8=False), EmbeddingBackend(int8=True)
    assert int8.encoder.int8 and int8.topic_encoder.int8 and not fp32.encoder.int8
    a, b = flagged(fp32.score(texts, profile), profile), flagged(int8.score(texts, profile), profile)
    assert a.sum() > 200 and (a != b).mean() < 0.015, (int(a.sum()), int((a != b).sum()))
