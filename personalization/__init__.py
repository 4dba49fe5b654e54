"""Personalized harm detection: per-user moderation profiles with embedding and in-context-learning backends.

Public API (everything else is internal):
- profile: `ModerationProfile`, `Category`, `BASE_CATEGORIES`, pure operations `block_new`, `unblock`,
  `reblock`, `set_action`, `set_threshold`, `extend`, `remove`, `reset`, `list_categories`,
  `export_json`, `import_json`, `parse_profile`.
- `ProfileService`: the same operations through the settings store (section "moderation"; versioned, audited).
- backends: `EmbeddingBackend` (default; base heads + per-user prototypes) and `ICLBackend` with adapters
  `LocalLMAdapter`, `OpenAICompatAdapter`, `LangChainAdapter`.
- plugin: `HarmDetector`, `build_harm_detector`, `demo`; evaluation: `personalize_eval` (and module
  `personalization.evaluate` for the binary protocol).
Heavy modules (torch, transformers) load lazily on first attribute access.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .profile import BASE_CATEGORIES, Category, ModerationProfile, parse_profile
from .profile_io import export_json, import_json
from .profile_ops import (
    block_new,
    extend,
    list_categories,
    reblock,
    remove,
    reset,
    set_action,
    set_threshold,
    unblock,
)
from .service import ProfileService

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs (nothing heavy is imported at run time)
    from .adapters import LangChainAdapter as LangChainAdapter
    from .adapters import LocalLMAdapter as LocalLMAdapter
    from .adapters import OpenAICompatAdapter as OpenAICompatAdapter
    from .bank import ExampleBank as ExampleBank
    from .embedding import EmbeddingBackend as EmbeddingBackend
    from .evaluate import personalize_eval as personalize_eval
    from .icl import ICLBackend as ICLBackend
    from .plugin import HarmDetector as HarmDetector
    from .plugin import build_harm_detector as build_harm_detector
    from .plugin import demo as demo

_LAZY = {
    "EmbeddingBackend": "embedding",
    "ICLBackend": "icl",
    "LocalLMAdapter": "adapters",
    "OpenAICompatAdapter": "adapters",
    "LangChainAdapter": "adapters",
    "ExampleBank": "bank",
    "HarmDetector": "plugin",
    "build_harm_detector": "plugin",
    "demo": "plugin",
    "personalize_eval": "evaluate",
}

__all__ = [
    "BASE_CATEGORIES",
    "Category",
    "ModerationProfile",
    "ProfileService",
    "block_new",
    "export_json",
    "extend",
    "import_json",
    "list_categories",
    "parse_profile",
    "reblock",
    "remove",
    "reset",
    "set_action",
    "set_threshold",
    "unblock",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
