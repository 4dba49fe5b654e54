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
            w.B.copy_((torch.randn(w.B.shape, generator=g) * 0.02).half().float())
            w.A.copy_(w.A.half().float())
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
