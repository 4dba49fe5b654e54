"""Test kit for the probe tests: a tiny random Llama (no download, milliseconds) and synthetic bundles.

A uniquely named module (not conftest) so tests can import it without colliding with other conftests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


class CharTokenizer:
    """Byte-level stand-in tokenizer: no chat template, so probes.capture.render uses its plain fallback."""

    chat_template = None
    pad_token_id = 0
    eos_token_id = 1

    def __call__(self, text: str, add_special_tokens: bool = False, **_: Any) -> dict[str, list[int]]:
        return {"input_ids": [2 + b for b in text.encode("utf-8")]}


@dataclass
class TinyLM:
    """Quacks like guardrails.models.LoadedCausalLM."""

    model: Any
    tokenizer: Any
    name: str = "tiny-llama"
    device: str = "cpu"

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def fingerprint(self) -> str:
        w = self.model.get_input_embeddings().weight.detach().numpy()
        return hashlib.sha256(w[:4].tobytes()).hexdigest()[:16]


def make_tiny(seed: int = 0, layers: int = 4) -> TinyLM:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    return TinyLM(model=LlamaForCausalLM(cfg).eval(), tokenizer=CharTokenizer())


def synthetic_bundle(lm: Any, layer: int, *, multi_layer: int | None = None, threshold: float = 0.0,
                     seed: int = 0, single_layers: list[int] | None = None,
                     multi_layers: list[int] | None = None) -> Any:
    """A random-direction bundle bound to `lm`'s fingerprint (for plumbing tests, not accuracy).
    ``single_layers`` / ``multi_layers``: that probe reads these layers concatenated (the deepest must be
    ``layer`` / ``multi_layer``)."""
    from probes.probe import ProbeArtifact, ProbeBundle, ProbeMeta

    d = int(lm.model.config.hidden_size)
    rng = np.random.default_rng(seed)

    def art(kind: str, li: int, layers: list[int] | None = None) -> ProbeArtifact:
        meta = ProbeMeta(kind=kind, model_id=lm.name, model_fingerprint=lm.fingerprint(), layer=li, layers=layers,
                         d_model=d, threshold=threshold, target_fpr=0.01)
        width = d * (len(layers) if layers else 1)
        return ProbeArtifact(coef=rng.normal(size=width).astype(np.float32), intercept=0.0, meta=meta)

    return ProbeBundle(single=art("single", layer, single_layers),
                       multiturn=art("multiturn", multi_layer if multi_layer is not None else layer, multi_layers))
