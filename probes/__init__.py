"""railguard privacy probes (NeuroFilter): activation probes with cross-turn velocity.

Public API (everything else is internal):

- capture: ``capture``, ``capture_messages``, ``render``, ``to_messages``, ``validate_messages``,
  ``layer_module``, ``LayerTap``, ``NonFiniteActivationError``
- probes: ``LinearProbe``, ``ProbeArtifact``, ``ProbeBundle``, ``ProbeMeta``, ``load_probe``,
  ``ProbeError``, ``ProbeMismatchError``, ``CorruptProbeError``
- training: ``fit_single``, ``fit_multiturn``, ``train_bundle``, ``train_drift_probe``,
  ``train_context_free_probe``, ``leave_one_out``,
  ``cross_domain``, ``calibrate_threshold``
- serving: ``SentinelEncoder``, ``VelocityTracker``, ``InMemoryStateStore``, ``StateStore``,
  ``PrivacyDetector``, ``FusedProbeHook``, ``build_privacy_detector``, ``demo``
"""

from .capture import (
    LayerTap,
    NonFiniteActivationError,
    capture,
    capture_messages,
    layer_module,
    render,
    to_messages,
    validate_messages,
)
from .context_free import train_context_free_probe
from .generalization import cross_domain, leave_one_out
from .metrics import calibrate_threshold
from .plugin import FusedProbeHook, PrivacyDetector, build_privacy_detector, demo
from .probe import (
    CorruptProbeError,
    LinearProbe,
    ProbeArtifact,
    ProbeBundle,
    ProbeError,
    ProbeMeta,
    ProbeMismatchError,
    load_probe,
)
from .sentinel import SentinelEncoder
from .train import fit_multiturn, fit_single, train_bundle, train_drift_probe
from .velocity import InMemoryStateStore, StateStore, VelocityTracker

__all__ = [
    "CorruptProbeError", "FusedProbeHook", "InMemoryStateStore", "LayerTap", "LinearProbe",
    "NonFiniteActivationError", "PrivacyDetector", "ProbeArtifact", "ProbeBundle", "ProbeError", "ProbeMeta",
    "ProbeMismatchError", "SentinelEncoder", "StateStore", "VelocityTracker", "build_privacy_detector",
    "calibrate_threshold", "capture", "capture_messages", "cross_domain", "demo", "fit_multiturn", "fit_single",
    "layer_module", "leave_one_out", "load_probe", "render", "to_messages", "train_bundle",
    "train_context_free_probe", "train_drift_probe", "validate_messages",
]
