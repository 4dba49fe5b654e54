"""LoRA deltas for the embedded encoder: merge == wrapped forward, private copies, typed errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from guardrails.errors import ConfigError, ModelLoadError
from guardrails.models import load_encoder
from guardrails.models.lora import merge_deltas, save_deltas, wrap_linears

pytestmark = pytest.mark.model
TEXTS = ["you are an idiot", "the film was a quiet delight", "WINNER!! claim your prize, txt 8008 now"]


def _pooled(model, tok, texts):
    b = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**b).last_hidden_state
    m = b["attention_mask"].unsqueeze(-1).float()
    return ((h * m).sum(1) / m.sum(1)).numpy()


@pytest.fixture(scope="module")
def deltas(tmp_path_factory):
    base = load_encoder("all-minilm-l6-v2")
    model = copy.deepcopy(base.model)
    wrapped = wrap_linears(model, 4, prefix="encoder.layer.", scale=2.0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for w in wrapped.values():  # non-zero B, rounded to fp16 as stored, so the comparison is exact
            w.A.copy_((torch.randn(w.A.shape, generator=g) / w.A.shape[1] ** 0.5).half().float())  # not the global RNG
            w.B.copy_((torch.randn(w.B.shape, generator=g) * 0.02).half().float())
    path = tmp_path_factory.mktemp("lora") / "d.safetensors"
    save_deltas({n: (w.A, w.B) for n, w in wrapped.items()}, path, scale=2.0, base="all-minilm-l6-v2")
    return path, _pooled(model.eval(), base.tokenizer, TEXTS), len(wrapped)


def test_merged_deltas_equal_the_wrapped_model(deltas):
    path, wrapped_out, n = deltas
    base = load_encoder("all-minilm-l6-v2")
    assert n == 36  # 6 layers x (q, k, v, attention out, intermediate, output)
    model = copy.deepcopy(base.model)
    merge_deltas(model, path)
    merged_out = _pooled(model.eval(), base.tokenizer, TEXTS)
    np.testing.assert_allclose(merged_out, wrapped_out, atol=2e-4)
    assert np.abs(merged_out - _pooled(base.model, base.tokenizer, TEXTS)).max() > 1e-2  # the deltas do something


def test_adapted_encoder_is_a_private_copy(deltas):
    path, _, _ = deltas
    base = load_encoder("all-minilm-l6-v2")
    before = base.encode(TEXTS)
    adapted = load_encoder("all-minilm-l6-v2", adapter=path)
    assert adapted is not base and adapted.model is not base.model and "+lora-" in adapted.name
    assert load_encoder("all-minilm-l6-v2", adapter=path) is adapted  # cached by content digest
    np.testing.assert_array_equal(base.encode(TEXTS), before)  # the shared instance is untouched
    assert (adapted.encode(TEXTS) * before).sum(1).min() < 0.9999


def _refused(path, match=None):
    with pytest.raises(ModelLoadError, match=match):
        load_encoder("all-minilm-l6-v2", adapter=path)


def _query_delta(path, in_features, base):
    q = "encoder.layer.0.attention.self.query"
    save_deltas({q: (torch.zeros(4, in_features), torch.zeros(384, 4))}, path, scale=1.0, base=base)
    return path


def test_bad_delta_files_are_typed_errors(tmp_path, deltas):
    from safetensors.torch import save_file

    _refused(tmp_path / "missing.safetensors", "not found")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00not a safetensors file")
    _refused(junk)
    _refused(_query_delta(tmp_path / "wrong.safetensors", 10, "all-minilm-l6-v2"), "shapes")
    orphan = tmp_path / "orphan.safetensors"
    save_file({"encoder.layer.0.attention.self.query.B": torch.zeros(384, 4)}, str(orphan),
              metadata={"lora": '{"scale": 1.0}'})
    _refused(orphan, "without")
    _refused(_query_delta(tmp_path / "other.safetensors", 384, "some-other-model"), "trained on")


def test_head_fit_on_other_weights_is_refused():
    from personalization.embedding import ADAPTER_PATH, EmbeddingBackend

    if not ADAPTER_PATH.is_file():
        pytest.fail("the shipped harm adapter is missing")
    with pytest.raises(ConfigError, match="rebuild"):
        _ = EmbeddingBackend(adapter=None).heads  # shipped head was fit on the adapted encoder


def test_shared_trunk_pass_equals_two_full_passes(top_deltas):
    import dataclasses

    path, n = top_deltas
    assert n == 12  # 2 layers x 6 Linears
    adapted = load_encoder("all-minilm-l6-v2", adapter=path)
    assert (adapted.layers_path, adapted.shared_layers) == ("encoder.layer", 4)
    texts = [*TEXTS, "a much longer message that pads the others in its batch " * 4, "ok"]
    for bf16 in (False, adapted.autocast_bf16):  # exact in fp32; the CPU/GPU bf16 path too, where native
        enc = dataclasses.replace(adapted, autocast_bf16=bf16, base=dataclasses.replace(adapted.base,
                                                                                        autocast_bf16=bf16))
        own, plain = enc.encode_with_base(texts, batch_size=2)
        np.testing.assert_allclose(own, enc.encode(texts, batch_size=2), atol=1e-5 if not bf16 else 2e-2)
        np.testing.assert_allclose(plain, enc.base.encode(texts, batch_size=2), atol=1e-5 if not bf16 else 2e-2)
        assert (own * plain).sum(1).min() < 0.999  # two different spaces, not one copied twice


def test_shared_trunk_needs_every_delta_inside_one_layer_list():
    from guardrails.models.loader import shared_trunk

    model = load_encoder("all-minilm-l6-v2").model
    top = {"encoder.layer.3.attention.self.query": None, "encoder.layer.5.output.dense": None}
    assert shared_trunk(model, top) == ("encoder.layer", 3)
    assert shared_trunk(model, {**top, "pooler.dense": None}) == ("", 0)  # a delta outside the layers
    assert shared_trunk(model, {"encoder.layer.3.x": None, "embeddings.word.0.x": None}) == ("", 0)
    assert shared_trunk(model, {"nonexistent.list.2.x": None}) == ("", 0)


def test_full_depth_deltas_share_nothing(deltas):
    path, _, _ = deltas
    adapted = load_encoder("all-minilm-l6-v2", adapter=path)
    assert adapted.shared_layers == 0
    own, plain = adapted.encode_with_base(TEXTS)  # two full passes, same results as calling each
    np.testing.assert_allclose(own, adapted.encode(TEXTS), atol=1e-6)
    np.testing.assert_allclose(plain, adapted.base.encode(TEXTS), atol=1e-6)
    with pytest.raises(ModelLoadError, match="no base"):
        adapted.base.encode_with_base(TEXTS)


def test_shared_trunk_pass_ignores_other_threads_using_the_base(top_deltas):
    """The trunk hook sits on the shared plain encoder; other threads' forwards through it must not leak in."""
    import threading

    adapted = load_encoder("all-minilm-l6-v2", adapter=top_deltas[0])
    texts = [f"message number {i}: " + "word " * (i % 7) for i in range(48)]
    others = ["short", "a somewhat longer text about the weather " * 3] * 8
    want_own, want_plain = adapted.encode(texts, batch_size=4), adapted.base.encode(texts, batch_size=4)
    want_other = adapted.base.encode(others, batch_size=2)
    stop, got_other = threading.Event(), []

    def hammer() -> None:
        while not stop.is_set():
            got_other.append(adapted.base.encode(others, batch_size=2))

    t = threading.Thread(target=hammer)
    t.start()
    try:
        for _ in range(3):
            own, plain = adapted.encode_with_base(texts, batch_size=4)
            np.testing.assert_allclose(own, want_own, atol=1e-4)
            np.testing.assert_allclose(plain, want_plain, atol=1e-4)
    finally:
        stop.set()
        t.join()
    assert got_other
    for g in got_other:
        np.testing.assert_allclose(g, want_other, atol=1e-4)


def test_harm_encoder_pair_uses_the_trunk_and_matches_separate_encoders(top_deltas):
    from personalization.embedding import Encoder

    adapted, plain = Encoder(adapter=top_deltas[0], batch_size=2), Encoder(adapter=None)
    own, topic = adapted.encode_with_plain(TEXTS)
    np.testing.assert_allclose(own, adapted.encode(TEXTS), atol=2e-2)
    np.testing.assert_allclose(topic, plain.encode(TEXTS), atol=2e-2)
    assert adapted._load().shared_layers == 4
    same, same_again = plain.encode_with_plain(TEXTS)  # no adapter: one space, one pass
    assert same is same_again


def test_lora_factors_live_on_the_base_layer_device():
    """Training on a GPU puts the base on CUDA; the factors must follow it (here: torch's device-less "meta"
    device stands in for "not the CPU", so this runs everywhere)."""
    from guardrails.models.lora import lora_linear

    cpu = lora_linear(torch.nn.Linear(8, 4), rank=2)
    assert cpu.A.device.type == "cpu" and torch.count_nonzero(cpu.B) == 0
    elsewhere = lora_linear(torch.nn.Linear(8, 4, device="meta"), rank=2)
    assert elsewhere.A.device.type == "meta" and elsewhere.B.device.type == "meta"
    assert tuple(elsewhere(torch.empty(3, 8, device="meta")).shape) == (3, 4)
