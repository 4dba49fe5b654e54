"""Fixtures shared by the model tests."""

from __future__ import annotations

import copy

import pytest
import torch

from guardrails.models import load_encoder
from guardrails.models.lora import save_deltas, wrap_linears


@pytest.fixture(scope="module")
def top_deltas(tmp_path_factory):
    """Deltas on the top two layers only, so the lower four are a trunk shared with the plain encoder."""
    base = load_encoder("all-minilm-l6-v2")
    model = copy.deepcopy(base.model)
    wrapped = wrap_linears(model, 4, prefix=("encoder.layer.4.", "encoder.layer.5."), scale=2.0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for w in wrapped.values():
            # A from the seeded generator too: lora_linear draws it from torch's global RNG, whose state here
            # depends on which tests ran first, so the fixture (and the int8 cosines measured on it) varied by run
            w.A.copy_((torch.randn(w.A.shape, generator=g) / w.A.shape[1] ** 0.5).half().float())
            w.B.copy_((torch.randn(w.B.shape, generator=g) * 0.05).half().float())
    path = tmp_path_factory.mktemp("lora_top") / "top.safetensors"
    save_deltas({n: (w.A, w.B) for n, w in wrapped.items()}, path, scale=2.0, base="all-minilm-l6-v2")
    return path, len(wrapped)
