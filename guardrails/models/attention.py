"""CPU attention for grouped-query models under a mask, without copying the KV history.

Why: transformers' sdpa path lets torch broadcast grouped key/value heads (`enable_gqa`) only when no attention
mask is passed; with one it copies the keys and values of the whole history to every query head first
(`repeat_kv`). A KV-cached prefill of several new tokens always carries a mask, so the sentinel's per-turn check
grew with the conversation: SmolLM2-135M (9 query / 3 KV heads), 30 new tokens through 15 layers, 2 CPU cores:
+7.3 ms of copies between 75 and 620 cached tokens, turn20_over_turn2 1.38-1.40. torch's CPU flash kernel
takes the mask and grouped heads together, so this function passes both (same math: equal within fp32
rounding) and defers to transformers' own sdpa function in every other case.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("railguard.models")
NAME = "sdpa_masked_gqa"


def masked_gqa_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                    scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any) -> tuple[Any, None]:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    plain = (attention_mask is None or groups <= 1 or query.device.type != "cpu" or query.shape[2] == 1
             or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None
             or kwargs.get("output_attentions", False) or key.shape[-1] != value.shape[-1])
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def use_masked_gqa(model: Any) -> bool:
    """Switch a loaded model from "sdpa" to `masked_gqa_sdpa` (registered once). Models on another attention
    implementation (eager, flash, flex) are left alone; returns whether it switched."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(NAME, masked_gqa_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the masks sdpa expects (else a custom name gets none)
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, NotImplementedError, AttributeError) as exc:  # a model that refuses custom backends
        log.info("keeping sdpa for %s: %s", type(model).__name__, exc)  # (validated before it changes anything)
        return False
    return True
