"""`railguard bench` contribution: embedding-backend throughput on realistic short messages.

Why measure the whole backend (encode + all category scores) and not the bare encoder: that is what a check
costs. Texts are the shipped dev set's messages (tweets, SMS, review sentences), batched 64 at a time.
"""

from __future__ import annotations

import time
from typing import Any


def bench(quick: bool = False) -> dict[str, Any]:
    """`embed_texts_per_s`: a profile with one user category (heads + a second, plain-encoder pass for the
    category's prototype: the costlier case, kept as the headline); `..._default_profile`: base categories only
    (one pass through the adapted encoder: what a user who never customised costs). On a CPU with the int8
    kernel, `embed_int8_over_fp32` is the opt-in int8 encoder's encoder-only speed-up over fp32, same texts."""
    from .embedding import EmbeddingBackend, Encoder
    from .evaluate import DEV_EVAL_PATH, load_jsonl
    from .profile import ModerationProfile
    from .profile_ops import block_new

    texts = [r["text"] for r in load_jsonl(DEV_EVAL_PATH)]
    texts = texts[: 256 if quick else 1024]
    be = EmbeddingBackend()
    custom = block_new(ModerationProfile(), "crypto_shill", examples=["Buy $DOGEX now, 50x guaranteed!"])
    rates = {}
    for key, profile in (("embed_texts_per_s", custom), ("embed_texts_per_s_default_profile", ModerationProfile())):
        be.score(texts[:64], profile)  # warm-up: model load, bank embeddings, profile compile
        t = time.perf_counter()
        be.score(texts, profile)
        rates[key] = round(len(texts) / (time.perf_counter() - t), 1)
    raw = _encode_seconds(be.encoder, texts)
    out = {**rates, "embed_encoder_only_texts_per_s": round(len(texts) / raw, 1), "embed_bench_n": len(texts),
           "embed_adapter": be.encoder.name, "embed_autocast_bf16": bool(be.encoder.autocast_bf16),
           "embed_int8": be.encoder.int8}
    from guardrails.models.quantize import int8_engine_available

    if int8_engine_available() and be.encoder._load().device == "cpu":
        # the opt-in int8 encoder (RAILGUARD_CPU_INT8=1) against fp32: same adapted encoder, same texts, same run
        other = Encoder(be.encoder.base_name, adapter=be.encoder.adapter, int8=not be.encoder.int8)
        other.encode(texts[:64])
        other_s = _encode_seconds(other, texts)
        out["embed_int8_over_fp32"] = round(other_s / raw if be.encoder.int8 else raw / other_s, 2)
    return out


def _encode_seconds(encoder: Any, texts: list[str]) -> float:
    t = time.perf_counter()
    encoder.encode(texts)
    return time.perf_counter() - t
