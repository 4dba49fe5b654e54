"""KV-cache helpers that work across transformers generations."""

from __future__ import annotations

import inspect
from typing import Any


def crop_cache(cache: Any, length: int) -> None:
    """Keep the first ``length`` positions of a KV cache (no-op when it holds no more). transformers 5 accepts only
    the negative form of ``crop`` (tokens to drop); 4.x reads a negative value the same way."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def cache_keyword(model: Any) -> str:
    """The keyword a model's ``forward`` and ``generate`` take a KV cache by: transformers 5.x renamed
    ``past_key_values`` to ``cache``; both generations of the API are accepted."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
