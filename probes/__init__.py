"""railguard privacy probes (NeuroFilter): activation probes with cross-turn velocity.

Public API (everything else is internal):

- capture: ``capture``, ``capture_messages``, ``render``, ``to_messages``, ``validate_messages``,
  ``layer_module``, ``LayerTap``, ``NonFiniteActivationError``
- probes: ``LinearProbe``, ``ProbeArtifact``, ``ProbeBundle``, ``ProbeMeta``, ``load_probe``,
  ``ProbeError``, ``ProbeMismatchError``, ``CorruptProbeError``, ``LegacyFingerprintWarning``
- training: ``fit_single``, ``fit_multiturn``, ``train_bundle``, ``train_drift_probe``,
  ``train_context_free_probe``, ``leave_one_out``,
  ``cross_domain``, ``calibrate_threshold``
- serving: ``SentinelEncoder``, ``VelocityTracker``, ``InMemoryStateStore``, ``StateStore``,
  ``PrivacyDetector``, ``FusedProbeHook``, ``build_privacy_detector``, ``demo``

Heavy modules (torch, transformers, sklearn) load lazily on first attribute access: importing this package (and
``probes.cli``, which ``railguard --help`` mounts) is cheap.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs (nothing heavy is imported at run time)
    from .capture import LayerTap as LayerTap
    from .capture import NonFiniteActivationError as NonFiniteActivationError
    from .capture import capture as capture
    from .capture import capture_messages as capture_messages
    from .capture import layer_module as layer_module
    from .capture import render as render
    from .capture import to_messages as to_messages
    from .capture import validate_messages as validate_messages
    from .context_free import train_context_free_probe as train_context_free_probe
    from .fused import FusedProbeHook as FusedProbeHook
    from .generalization import cross_domain as cross_domain
    from .generalization import leave_one_out as leave_one_out
    from .linear import LinearProbe as LinearProbe
    from .metrics import calibrate_threshold as calibrate_threshold
    from .plugin import PrivacyDetector as PrivacyDetector
    from .plugin import build_privacy_detector as build_privacy_detector
    from .plugin import demo as demo
    from .probe import CorruptProbeError as CorruptProbeError
    from .probe import LegacyFingerprintWarning as LegacyFingerprintWarning
    from .probe import ProbeArtifact as ProbeArtifact
    from .probe import ProbeBundle as ProbeBundle
    from .probe import ProbeError as ProbeError
    from .probe import ProbeMeta as ProbeMeta
    from .probe import ProbeMismatchError as ProbeMismatchError
    from .probe import load_probe as load_probe
    from .sentinel import SentinelEncoder as SentinelEncoder
    from .train import fit_multiturn as fit_multiturn
    from .train import fit_single as fit_single
    from .train_runs import train_bundle as train_bundle
    from .train_runs import train_drift_probe as train_drift_probe
    from .velocity import InMemoryStateStore as InMemoryStateStore
    from .velocity import StateStore as StateStore
    from .velocity import VelocityTracker as VelocityTracker

_LAZY = {
    **dict.fromkeys(["LayerTap", "NonFiniteActivationError", "capture", "capture_messages", "layer_module", "render",
                     "to_messages", "validate_messages"], "capture"),
    "train_context_free_probe": "context_free",
    "cross_domain": "generalization", "leave_one_out": "generalization",
    "LinearProbe": "linear",
    "calibrate_threshold": "metrics",
    "FusedProbeHook": "fused",
    **dict.fromkeys(["PrivacyDetector", "build_privacy_detector", "demo"], "plugin"),
    **dict.fromkeys(["CorruptProbeError", "LegacyFingerprintWarning", "ProbeArtifact", "ProbeBundle", "ProbeError",
                     "ProbeMeta", "ProbeMismatchError", "load_probe"], "probe"),
    "SentinelEncoder": "sentinel",
    **dict.fromkeys(["fit_multiturn", "fit_single"], "train"),
    **dict.fromkeys(["train_bundle", "train_drift_probe"], "train_runs"),
    **dict.fromkeys(["InMemoryStateStore", "StateStore", "VelocityTracker"], "velocity"),
}

__all__ = [
    "CorruptProbeError", "FusedProbeHook", "InMemoryStateStore", "LayerTap", "LegacyFingerprintWarning", "LinearProbe",
    "NonFiniteActivationError", "PrivacyDetector", "ProbeArtifact", "ProbeBundle", "ProbeError", "ProbeMeta",
    "ProbeMismatchError", "SentinelEncoder", "StateStore", "VelocityTracker", "build_privacy_detector",
    "calibrate_threshold", "capture", "capture_messages", "cross_domain", "demo", "fit_multiturn", "fit_single",
    "layer_module", "leave_one_out", "load_probe", "render", "to_messages", "train_bundle",
    "train_context_free_probe", "train_drift_probe", "validate_messages",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        setattr(sys.modules[__name__], name, value)  # resolved once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(ModuleType):
    """``probes.capture`` is the public function, as it was when this package imported everything eagerly.

    Importing the submodule ``probes.capture`` (any ``from .capture import ...``) makes the import system set the
    package attribute ``capture`` to that submodule; this keeps the function there instead (the submodule stays
    in ``sys.modules`` for ``from probes.capture import ...``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "capture" and isinstance(value, ModuleType) and value.__name__ == f"{self.__name__}.capture":
            value = getattr(value, "capture", value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
