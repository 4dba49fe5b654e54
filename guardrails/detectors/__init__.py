"""Built-in detectors: PII/secrets (`pii`) and the input-validation gate (`validator`).

`build_pii` and `build_validator` are the plugin factories (`PluginContext -> Detector`); they read optional
parameters from `ctx.config["pii"]` / `ctx.config["validator"]` and fail early with ConfigError on bad ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..detector import PluginContext
from ..errors import ConfigError
from .pii import ENTITIES, PIIDetector, PIIMatch, iban_ok, luhn_ok, shannon_entropy
from .validation import InputValidator

__all__ = [
    "ENTITIES",
    "InputValidator",
    "PIIDetector",
    "PIIMatch",
    "build_pii",
    "build_validator",
    "iban_ok",
    "luhn_ok",
    "shannon_entropy",
]


def _section(ctx: PluginContext, key: str) -> dict[str, Any]:
    section = (ctx.config or {}).get(key) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"config section {key!r} must be a mapping, got {type(section).__name__}")
    return dict(section)


def _build(cls: type, ctx: PluginContext, key: str) -> Any:
    params = _section(ctx, key)
    try:
        det = cls(**params)
    except TypeError:
        allowed = sorted(cls().get_params())
        raise ConfigError(
            f"unknown {key} parameter(s) {sorted(set(params) - set(allowed))}; allowed: {allowed}"
        ) from None
    det._validated()  # fail at build time, not on the first check
    return det


def build_pii(ctx: PluginContext) -> PIIDetector:
    """Plugin factory for the `pii` detector; params from `ctx.config.get("pii", {})`."""
    return _build(PIIDetector, ctx, "pii")


def build_validator(ctx: PluginContext) -> InputValidator:
    """Plugin factory for the `validator` gate; params from `ctx.config.get("validator", {})`."""
    return _build(InputValidator, ctx, "validator")
