"""Model runtime: embedded defaults (offline), any HF id or local path, device auto, LangChain chat model."""

from .kv import cache_keyword, crop_cache
from .loader import (
    LoadedCausalLM,
    LoadedEncoder,
    cache_dir,
    load_causal_lm,
    load_encoder,
    resolve_device,
)
from .registry import DEFAULT_CHAT_MODEL, DEFAULT_ENCODER, EMBEDDED, EmbeddedModel, pull, status

__all__ = [
    "DEFAULT_CHAT_MODEL",
    "DEFAULT_ENCODER",
    "EMBEDDED",
    "EmbeddedModel",
    "LoadedCausalLM",
    "LoadedEncoder",
    "cache_dir",
    "cache_keyword",
    "crop_cache",
    "load_causal_lm",
    "load_encoder",
    "pull",
    "resolve_device",
    "status",
]

from .chat import LocalChatModel, PrefillBlocked, PrefillObserver, to_chat_dicts  # noqa: E402

__all__ += ["LocalChatModel", "PrefillBlocked", "PrefillObserver", "to_chat_dicts"]
