"""Model runtime with the real shipped models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2)."""

from __future__ import annotations

import pytest

from guardrails.errors import ModelLoadError, ModelNotInstalledError
from guardrails.models import EMBEDDED, LocalChatModel, load_causal_lm, load_encoder
from guardrails.models.loader import default_dtype, local_source
from guardrails.models.registry import EmbeddedModel

pytestmark = pytest.mark.model


def test_embedded_models_installed_and_listed():
    for spec in EMBEDDED.values():
        assert spec.location() is not None, f"run `railguard models pull` ({spec.requirement})"


def test_gguf_converted_once_to_cached_safetensors():
    src = local_source("smollm2-135m-instruct")
    assert (src / "model.safetensors").exists() and (src / "config.json").exists()
    assert local_source("smollm2-135m-instruct") == src  # second resolution reuses the conversion


def test_causal_lm_loads_and_fingerprints():
    lm = load_causal_lm("smollm2-135m-instruct")
    assert lm.num_layers == 30 and lm.device == "cpu"
    assert lm.model.dtype == default_dtype("cpu")  # fp32, or bf16 under RAILGUARD_CPU_BF16=1
    assert lm.fingerprint() == lm.fingerprint() and len(lm.fingerprint()) == 16
    assert load_causal_lm("smollm2-135m-instruct") is lm  # per-process cache
    # a local path works too (the converted folder is an ordinary HF checkpoint)
    other = load_causal_lm(str(local_source("smollm2-135m-instruct")))
    assert other.fingerprint() == lm.fingerprint()


def test_encoder_embeddings_are_semantic():
    enc = load_encoder("all-minilm-l6-v2")
    v = enc.encode(["How do I bake bread?", "What's a recipe for a loaf of bread?", "Stock prices fell today."])
    assert v.shape == (3, 384)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    assert enc.encode([]).shape == (0, 384)


def test_missing_embedded_model_is_a_clear_error():
    ghost = EmbeddedModel(name="ghost", kind="causal-lm", requirement="ghost-wheel==1.0", package="no_such_pkg_x",
                          relpath="m.gguf", description="")
    with pytest.raises(ModelNotInstalledError, match="railguard models pull"):
        ghost.require()


def test_unknown_model_is_a_typed_error_without_hub(tmp_path):
    with pytest.raises(ModelLoadError):
        load_causal_lm(str(tmp_path / "does-not-exist"))
    with pytest.raises(ModelLoadError):
        load_causal_lm("some-org/some-model-that-is-not-cached")  # HF_HUB_OFFLINE=1 in tests
    # a folder that is not a model: transformers raises ValueError (no tokenizer backend, unknown model_type)
    (tmp_path / "empty").mkdir()
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text('{"model_type": "nope"}')
    for folder in ("empty", "odd"):
        with pytest.raises(ModelLoadError):
            load_causal_lm(str(tmp_path / folder))
        with pytest.raises(ModelLoadError):
            load_encoder(str(tmp_path / folder))


def test_local_chat_model_invoke_and_stream():
    chat = LocalChatModel(max_new_tokens=12)
    out = chat.invoke("What is the capital of France? Answer in one word.")
    assert isinstance(out.content, str) and out.content.strip()
    assert out.response_metadata["generated_tokens"] > 0
    chunks = list(chat.stream("Say hello."))
    assert len(chunks) >= 2 and "".join(c.content for c in chunks).strip()


def test_closing_a_stream_early_stops_the_generation():
    """A consumer that stops reading (the service's cancelled request) used to wait in `_stream`'s join for the
    whole generation (up to max_new_tokens: ~8 s here) while the model kept running; now generate() stops at the
    next token (a stopping criterion set when the stream closes)."""
    import threading

    from langchain_core.messages import HumanMessage

    chat = LocalChatModel(max_new_tokens=120)
    forwards = []
    hook = chat.lm.model.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        stream = chat.stream([HumanMessage("Write a long story about a dragon who learns to sing.")])
        for i, _ in enumerate(stream):
            if i == 3:
                break
        stream.close()
    finally:
        hook.remove()
    assert len(forwards) < 30, len(forwards)  # prefill + a few decode steps, not 120
    assert not [t for t in threading.enumerate() if t.name == "railguard-generate"]
    assert chat.invoke([HumanMessage("Say hello.")]).content  # the model is usable afterwards


def test_encoder_length_sorted_batches_keep_input_order():
    import dataclasses

    import numpy as np

    enc = dataclasses.replace(load_encoder("all-minilm-l6-v2"), autocast_bf16=False)  # exact fp32 comparison
    texts = ["short", "a much longer sentence about the weather today in Paris and elsewhere", "mid length text",
             "x", "another fairly long sentence that needs more padding than the others do"]
    together = enc.encode(texts, batch_size=2)
    alone = np.stack([enc.encode([t])[0] for t in texts])
    assert np.abs(together - alone).max() < 1e-4


def test_encoder_bf16_autocast_matches_fp32_embeddings(monkeypatch):
    """bf16 autocast (on by default where the CPU has native bf16) must not move embeddings: the calibrated
    thresholds of every embedding head were fit on fp32 embeddings."""
    import dataclasses

    import numpy as np

    from guardrails.models.loader import encoder_autocast_bf16

    base = load_encoder("all-minilm-l6-v2")
    texts = ["you are an idiot", "WINNER!! claim your free prize now, txt 8008", "the film was a quiet delight",
             "x", "a much longer sentence about the weather today in Paris and elsewhere, with some more words"]
    fp32 = dataclasses.replace(base, autocast_bf16=False).encode(texts)
    bf16 = dataclasses.replace(base, autocast_bf16=True).encode(texts)
    cos = (fp32 * bf16).sum(1)
    assert cos.min() > 0.999, cos
    assert not np.array_equal(fp32, bf16)  # autocast really ran
    monkeypatch.setenv("RAILGUARD_CPU_BF16", "0")
    assert encoder_autocast_bf16("cpu") is False
    monkeypatch.setenv("RAILGUARD_CPU_BF16", "1")
    assert encoder_autocast_bf16("cpu") is True


def test_causal_lm_dtype_follows_device_and_explicit_cpu_bf16(monkeypatch):
    import torch

    from guardrails.models.loader import default_dtype

    monkeypatch.delenv("RAILGUARD_CPU_BF16", raising=False)
    assert default_dtype("cuda") is torch.bfloat16 and default_dtype("cuda:1") is torch.bfloat16
    assert default_dtype("cpu") is torch.float32  # auto: probes were calibrated on fp32 activations
    monkeypatch.setenv("RAILGUARD_CPU_BF16", "auto")
    assert default_dtype("cpu") is torch.float32
    monkeypatch.setenv("RAILGUARD_CPU_BF16", "1")
    assert default_dtype("cpu") is torch.bfloat16
    monkeypatch.setenv("RAILGUARD_CPU_BF16", "0")
    assert default_dtype("cpu") is torch.float32
    assert default_dtype("cuda") is torch.bfloat16


def test_bad_device_settings_are_config_errors(monkeypatch):
    from guardrails.errors import ConfigError
    from guardrails.models import devices

    monkeypatch.setenv("RAILGUARD_CPU_BF16", "ture")  # a typo must not silently mean "auto"
    with pytest.raises(ConfigError, match="RAILGUARD_CPU_BF16='ture'"):
        devices.default_dtype("cpu")
    with pytest.raises(ConfigError, match="RAILGUARD_CPU_BF16"):
        devices.encoder_autocast_bf16("cpu")
    monkeypatch.setenv("RAILGUARD_CPU_BF16", "")
    assert devices.cpu_bf16_setting() is None
    monkeypatch.setattr(devices.resolve_device, "_threads_set", False, raising=False)
    monkeypatch.setenv("RAILGUARD_NUM_THREADS", "two")
    with pytest.raises(ConfigError, match="RAILGUARD_NUM_THREADS"):
        devices.resolve_device("cpu")


def test_auto_bf16_follows_a_measurement_not_cpu_flags(monkeypatch):
    """"auto" autocasts encoders only where bf16 measured faster: on one AVX512-BF16 box it was 0.55x fp32."""
    import torch

    from guardrails.models import devices

    monkeypatch.delenv("RAILGUARD_CPU_BF16", raising=False)
    monkeypatch.setattr(devices, "cpu_bf16_is_faster", lambda: False)
    assert devices.encoder_autocast_bf16("cpu") is False
    monkeypatch.setattr(devices, "cpu_bf16_is_faster", lambda: True)
    assert devices.encoder_autocast_bf16("cpu") is True
    monkeypatch.setenv("RAILGUARD_CPU_BF16", "0")  # an explicit setting wins over the measurement
    assert devices.encoder_autocast_bf16("cpu") is False
    monkeypatch.undo()

    # the real measurement: no bf16 instructions -> False; else a bool, the global RNG untouched
    monkeypatch.setattr(devices, "_bf16_choice", None)  # restored with the process's own measurement at teardown
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert devices.cpu_bf16_is_faster() is False
    monkeypatch.setattr(devices, "_bf16_choice", None)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    with torch.random.fork_rng():
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        first = devices.cpu_bf16_is_faster()
        assert first in (True, False)
        assert torch.equal(torch.rand(3), expected)  # the global torch RNG stream is not consumed
    calls = []
    monkeypatch.setattr(devices, "_measure_cpu_bf16", lambda: calls.append(1) or (not first))
    assert devices.cpu_bf16_is_faster() is first and not calls  # measured once per process, then remembered


def test_cpu_causal_lm_attends_grouped_heads_under_a_mask_without_copies():
    """KV-cached prefills carry a mask; transformers' sdpa then copied the whole KV history per query head. The CPU
    model runs `models.attention.masked_gqa_sdpa` instead: same outputs (the sentinel's activations were bitwise
    equal on a 20-turn replay), and torch broadcasts the grouped heads itself."""
    import torch

    from guardrails.models.attention import NAME

    lm = load_causal_lm("smollm2-135m-instruct")
    assert lm.model.config._attn_implementation == NAME
    ids = lm.tokenizer("The quick brown fox jumps over the lazy dog, twice, and then it rests.",
                       return_tensors="pt")["input_ids"]
    split = ids.shape[1] - 6
    calls = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(bool(kwargs.get("enable_gqa")))
        return real(*args, **kwargs)

    with torch.inference_mode():
        full = lm.model(ids).logits[0, -1]
        out = lm.model(ids[:, :split], use_cache=True)
        torch.nn.functional.scaled_dot_product_attention = spy
        try:  # 6 new tokens on a cache: a masked, grouped-head prefill
            step = lm.model(ids[:, split:], cache=out.past_key_values, use_cache=True).logits[0, -1]
        finally:
            torch.nn.functional.scaled_dot_product_attention = real
    assert calls and all(calls)
    torch.testing.assert_close(step, full, atol=1e-4, rtol=1e-4)


def test_a_model_refusing_custom_attention_keeps_sdpa():
    from types import SimpleNamespace

    from guardrails.models.attention import use_masked_gqa

    class Refuses:
        config = SimpleNamespace(_attn_implementation="sdpa")

        def set_attn_implementation(self, name):
            raise ValueError(f"{name} is not supported")

    model = Refuses()
    assert use_masked_gqa(model) is False and model.config._attn_implementation == "sdpa"
    assert use_masked_gqa(SimpleNamespace(config=SimpleNamespace(_attn_implementation="eager"))) is False


def test_concurrent_first_loads_build_one_instance(monkeypatch):
    """Concurrent first uses (an async Guard's detectors, a threaded batch) wait for one load per model instead
    of each loading its own copy (and racing transformers' lazy imports: "cannot import name 'AutoModel'", which
    made a fresh Guard's harm detector fail open on its first concurrent checks)."""
    from concurrent.futures import ThreadPoolExecutor

    import guardrails.models.loader as loader

    monkeypatch.setattr(loader, "_cache", {})  # a cold process, as far as the loader knows
    with ThreadPoolExecutor(4) as pool:
        encoders = list(pool.map(lambda _: load_encoder("all-minilm-l6-v2"), range(4)))
        lms = list(pool.map(lambda _: load_causal_lm("smollm2-135m-instruct"), range(3)))
    assert len({id(e) for e in encoders}) == 1 and len({id(m) for m in lms}) == 1


def test_repetition_penalty_reaches_generate_and_is_validated():
    from pydantic import ValidationError

    chat = LocalChatModel(max_new_tokens=4, repetition_penalty=1.15)
    assert chat._gen_kwargs({}, None)["repetition_penalty"] == 1.15
    assert "repetition_penalty" not in LocalChatModel(max_new_tokens=4)._gen_kwargs({}, None)  # HF default
    for bad in (0, -1.0):
        with pytest.raises(ValidationError):
            LocalChatModel(repetition_penalty=bad)
    assert chat.invoke("Name a fruit.").content  # generates with it


def test_cuda_dtype_is_bf16_only_where_it_is_native(monkeypatch):
    """Pre-Ampere GPUs (T4, V100) emulate bf16 slowly: models and encoders run fp32 there (no GPU needed to
    check the rule: the device capability is what decides)."""
    import torch

    from guardrails.models.devices import default_dtype, encoder_autocast_bf16

    for capability, dtype, autocast in (((9, 0), torch.bfloat16, True), ((8, 0), torch.bfloat16, True),
                                        ((7, 5), torch.float32, False)):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _d=None, c=capability: c)
        assert default_dtype("cuda") is dtype and encoder_autocast_bf16("cuda:0") is autocast
