"""A linear probe's on-disk artifact (the estimator that fits it: ``probes.linear.LinearProbe``).

An artifact is a directory: ``weights.safetensors`` (``coef`` [d·k], ``intercept`` [1]) + ``meta.json``
(:class:`ProbeMeta`). A probe reads the last-token state of k ≥ 1 layers (``meta.layers``, ascending,
concatenated in that order; ``meta.layer`` is the deepest, where the sentinel's early exit stops).
The model fingerprint is part of the metadata because a probe direction is meaningless on any other model
(different basis): loading it against another model is a :class:`ProbeMismatchError`.
A bundle (the shipped default) is a directory with ``single/`` and ``multiturn/`` artifacts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from guardrails.errors import ConfigError

from .capture import ActKey, site_key

FORMAT_VERSION = 1  # single-layer artifacts (readable by every release)
MULTI_LAYER_FORMAT_VERSION = 2  # ``layers`` has more than one entry: older releases refuse it by version
TOKEN_OFFSET_FORMAT_VERSION = 3  # ``token_offset`` > 0: a release reading the last token would misread it
DEFAULT_DIR = Path(__file__).parent / "default"
#: a bundle's parts (directories) and the file that lists them with their digests
BUNDLE_PARTS = ("single", "multiturn", "context_free")
BUNDLE_MANIFEST = "bundle.json"

log = logging.getLogger("railguard.probes")


class ProbeError(ConfigError):
    """Base class of probe artifact errors (a ConfigError: the configured probe cannot be used)."""


class LegacyFingerprintWarning(UserWarning):
    """A probe matched its model through an older, weaker fingerprint (see ``LoadedCausalLM.fingerprints``)."""


class ProbeMismatchError(ProbeError):
    """The probe was trained on a different model (fingerprint differs); its direction would be noise."""


class CorruptProbeError(ProbeError):
    """The artifact directory is missing files, unparsable, or internally inconsistent."""


class ProbeMeta(BaseModel):
    """Everything needed to trust (or refuse) a probe: which model, which layer, which data, how good."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    format_version: int = FORMAT_VERSION
    kind: Literal["single", "multiturn"]
    model_id: str
    model_fingerprint: str
    layer: int = Field(ge=0)  # the deepest input layer
    layers: list[int] | None = None  # input layers, ascending, concatenated in this order (None = [layer])
    # which token: this many positions before the last prompt token (0 = the end of the generation header; the
    # context-free probe reads the user turn's end-of-turn token, probes.capture.turn_end_offset)
    token_offset: int = Field(default=0, ge=0)
    d_model: int = Field(gt=0)  # hidden size of one layer; the weights have d_model * len(input_layers)
    threshold: float = Field(allow_inf_nan=False)
    # Single-turn probes trained with conversations: τ for a user turn that follows earlier user turns of the
    # same conversation, calibrated per conversation (None: ``threshold`` serves every turn). See fit_single.
    history_threshold: float | None = Field(default=None, allow_inf_nan=False)
    target_fpr: float = Field(gt=0, lt=1)
    # maps raw score to [0,1]: sigmoid((s - threshold)/scale)
    score_scale: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    method: str = "logreg"
    data_sha256: dict[str, str] = Field(default_factory=dict)
    # sha256 of weights.safetensors as written: a weights file swapped in from another artifact of the same shape
    # (or edited in place) is refused at load. None in artifacts written before it existed (not checked).
    weights_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    # sha256 of every other field (`content_sha256`), stamped at save: a threshold or layer edited by hand, or a
    # damaged digit, is refused at load instead of silently moving the operating point. None in artifacts written
    # before it existed (not checked). Per-user strictness belongs in the guard settings, not in the artifact.
    meta_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _layers_consistent(self) -> ProbeMeta:
        if self.layers is not None:
            if not self.layers or any(i < 0 for i in self.layers) or self.layers != sorted(set(self.layers)):
                raise ValueError(f"layers must be distinct, non-negative and ascending, got {self.layers}")
            if self.layers[-1] != self.layer:
                raise ValueError(f"layer ({self.layer}) must be the deepest of layers {self.layers}")
        return self

    @property
    def input_layers(self) -> list[int]:
        return list(self.layers) if self.layers is not None else [self.layer]

    def content_sha256(self) -> str:
        """`meta_digest` of this metadata as `save` writes it."""
        return meta_digest(json.loads(self.model_dump_json()))


def meta_digest(stored: Mapping[str, Any]) -> str:
    """sha256 of a meta.json's parsed object as canonical JSON (sorted keys, extra fields included), its
    ``meta_sha256`` left out: the same for the same content however the file was indented or its floats spelled.
    Of the object as stored, not as a model reads it: a later release that adds a field with a default must not
    change the digest of every artifact already written (review, session 36)."""
    body = {k: v for k, v in stored.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def margin_to_unit(z: float) -> float:
    """A margin in score_scale units ((raw - τ) / scale) mapped to (0, 1), 0.5 at τ: the Finding score."""
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


@dataclass
class ProbeArtifact:
    """A fitted direction + metadata. ``score`` is the raw fp32 projection the threshold applies to."""

    coef: np.ndarray
    intercept: float
    meta: ProbeMeta

    @property
    def layers(self) -> list[int]:
        """The layers whose activations this probe reads (ascending)."""
        return self.meta.input_layers

    @property
    def keys(self) -> list[ActKey]:
        """The activation keys it reads (:func:`probes.capture.site_key`: its layers at its token offset)."""
        return [site_key(li, self.meta.token_offset) for li in self.layers]

    def features(self, acts: Mapping[ActKey, np.ndarray]) -> np.ndarray:
        """The probe's input from per-site activations (``{site key: [..., d]}``, a plain layer index for the
        last token): its layers concatenated on the last axis, in ascending order. A missing one is a
        ProbeMismatchError (wrong capture)."""
        keys = self.keys
        missing = [k for k in keys if k not in acts]
        if missing:
            raise ProbeMismatchError(f"activations lack probe layer(s) {missing} (have {list(acts)})")
        if len(keys) == 1:
            return np.asarray(acts[keys[0]], dtype=np.float32)
        return np.concatenate([np.asarray(acts[k], dtype=np.float32) for k in keys], axis=-1)

    def raw(self, activation: np.ndarray) -> np.ndarray:
        """w·a + b for single-turn probes; multi-turn probes use w·(a_t - a_1) with no intercept (telescoped
        sum of per-turn delta scores), so callers pass the displacement and ``intercept`` is 0 there."""
        a = np.asarray(activation, dtype=np.float32)
        if a.shape[-1] != self.coef.shape[0]:
            raise ProbeMismatchError(f"activation width {a.shape[-1]} != probe width {self.coef.shape[0]}")
        return (a @ self.coef).astype(np.float64) + self.intercept

    def threshold_for(self, user_turn: int = 1) -> float:
        """τ for the ``user_turn``-th user message of a conversation (1-based): ``threshold`` for a first turn or
        a single request, ``history_threshold`` (when calibrated) for any later turn."""
        if user_turn > 1 and self.meta.history_threshold is not None:
            return self.meta.history_threshold
        return self.meta.threshold

    def unit_score(self, raw: float, user_turn: int = 1) -> float:
        """Raw score mapped to (0, 1) with the calibrated threshold (for that user turn, see
        :meth:`threshold_for`) at exactly 0.5 (for Findings/settings)."""
        return margin_to_unit((raw - self.threshold_for(user_turn)) / self.meta.score_scale)

    def check_model(self, fingerprint: str | tuple[str, ...], model_id: str | None = None) -> None:
        """Refuse a model other than the one this probe was trained on. `fingerprint`: the model's, or every one it
        may carry (`model_fingerprints`: current first, then legacy)."""
        accepted = (fingerprint,) if isinstance(fingerprint, str) else tuple(fingerprint)
        if self.meta.model_fingerprint not in accepted:
            raise ProbeMismatchError(
                f"probe was trained on model {self.meta.model_id!r} (fingerprint {self.meta.model_fingerprint}) "
                f"but is being used with {model_id or 'a model'} (fingerprint {accepted[0]}); retrain it with "
                f"`railguard probes train --model ...`")
        if self.meta.model_fingerprint != accepted[0]:
            warnings.warn(
                f"probe for {self.meta.model_id!r} carries an older model fingerprint ({self.meta.model_fingerprint}),"
                " which hashes only the first weight tensors: a model fine-tuned in later layers would pass it. "
                f"Retrain the probe (`railguard probes train`) to bind it to every tensor ({accepted[0]}).",
                LegacyFingerprintWarning, stacklevel=2)

    def save(self, path: str | Path) -> Path:
        from safetensors.numpy import save_file

        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        # Multi-layer artifacts are written as version 2 (older releases refuse them by version, not by shape).
        version = MULTI_LAYER_FORMAT_VERSION if len(self.layers) > 1 else FORMAT_VERSION
        if self.meta.token_offset:
            version = TOKEN_OFFSET_FORMAT_VERSION
        meta = self.meta.model_copy(update={"format_version": version})
        save_file({"coef": self.coef.astype(np.float32),
                   "intercept": np.array([self.intercept], dtype=np.float32)}, str(p / "weights.safetensors"))
        digest = hashlib.sha256((p / "weights.safetensors").read_bytes()).hexdigest()
        meta = meta.model_copy(update={"weights_sha256": digest})
        meta = meta.model_copy(update={"meta_sha256": meta.content_sha256()})
        (p / "meta.json").write_text(meta.model_dump_json(indent=2) + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path) -> ProbeArtifact:
        from safetensors.numpy import load_file

        p = Path(path)
        if not (p / "meta.json").is_file() or not (p / "weights.safetensors").is_file():
            raise CorruptProbeError(f"{p} is not a probe artifact (needs meta.json and weights.safetensors)")
        try:
            stored = json.loads((p / "meta.json").read_text())
            meta = ProbeMeta.model_validate(stored)
        except (ValueError, ValidationError, RecursionError, OSError) as exc:  # RecursionError: nested too deeply
            raise CorruptProbeError(f"{p}/meta.json is invalid: {str(exc).splitlines()[0]}") from None
        if meta.format_version not in (FORMAT_VERSION, MULTI_LAYER_FORMAT_VERSION, TOKEN_OFFSET_FORMAT_VERSION):
            raise CorruptProbeError(f"{p}: unsupported format_version {meta.format_version}")
        if (meta.format_version == TOKEN_OFFSET_FORMAT_VERSION) != (meta.token_offset > 0):
            raise CorruptProbeError(f"{p}: format_version {meta.format_version} does not match token_offset "
                                    f"{meta.token_offset} (version {TOKEN_OFFSET_FORMAT_VERSION} <=> an offset)")
        if meta.weights_sha256 is not None:
            digest = hashlib.sha256((p / "weights.safetensors").read_bytes()).hexdigest()
            if digest != meta.weights_sha256:
                raise CorruptProbeError(f"{p}/weights.safetensors does not match meta.json (sha256 {digest[:12]}… "
                                        f"!= {meta.weights_sha256[:12]}…): the weights were replaced or damaged")
        if meta.meta_sha256 is None or meta.weights_sha256 is None:  # unkeyed digests: damage, not tampering
            log.warning("probe artifact %s has no meta_sha256/weights_sha256 (written by an older railguard, or "
                        "removed): its content is not verified", p)
        if meta.meta_sha256 is not None and meta_digest(stored) != meta.meta_sha256:
            raise CorruptProbeError(f"{p}/meta.json was changed after it was written (its content no longer matches "
                                    "its meta_sha256): a threshold, layer or other field edited by hand or damaged. "
                                    "Retrain the probe, or set per-user strictness in the guard settings")
        try:
            t = load_file(str(p / "weights.safetensors"))
            coef, intercept = t["coef"].astype(np.float32), float(t["intercept"].reshape(-1)[0])
        except Exception as exc:  # safetensors raises several unrelated types on garbage
            raise CorruptProbeError(f"{p}/weights.safetensors is unreadable: {exc}") from None
        width = meta.d_model * len(meta.input_layers)
        if coef.shape != (width,) or not np.isfinite(coef).all() or not math.isfinite(intercept):
            raise CorruptProbeError(f"{p}: weights shape {coef.shape} / values do not match meta "
                                    f"(d={meta.d_model} x {len(meta.input_layers)} layer(s))")
        return cls(coef=coef, intercept=intercept, meta=meta)


@dataclass
class ProbeBundle:
    """A single-turn probe plus (optionally) a multi-turn drift probe on the same model and layer set, and
    (optionally) ``context_free``: a second per-turn probe trained on requests without a scenario (no system
    message, or a generic one), which the scenario-trained probe misses; a turn is flagged when either per-turn
    probe crosses its own threshold (:meth:`request_margins`)."""

    single: ProbeArtifact
    multiturn: ProbeArtifact | None = None
    context_free: ProbeArtifact | None = None

    @property
    def request_probes(self) -> dict[str, ProbeArtifact]:
        """The per-turn probes by name ("single" first)."""
        probes = {"single": self.single}
        if self.context_free is not None:
            probes["context_free"] = self.context_free
        return probes

    def request_margins(self, acts: Mapping[ActKey, np.ndarray], user_turn: int = 1) -> dict[str, np.ndarray]:
        """Per per-turn probe, (raw - its τ for that user turn) / its score_scale: > 0 means it flags. ``acts``
        holds one activation per layer (0-d margins) or a batch (``[n, d]`` per layer, ``[n]`` margins). The
        served request score is ``margin_to_unit(max margin)``: 0.5 exactly where the first of them crosses its τ
        (with ``single`` alone, :meth:`ProbeArtifact.unit_score`)."""
        return {name: (p.raw(p.features(acts)) - p.threshold_for(user_turn)) / p.meta.score_scale
                for name, p in self.request_probes.items()}

    def check_model(self, fingerprint: str | tuple[str, ...], model_id: str | None = None, *,
                    config: Any = None) -> None:
        """Refuse a model other than the one the probes were trained on (fingerprint), and, given the model's
        ``config``, probes whose layers or width it does not have (a tampered or hand-edited meta.json with the
        right fingerprint would otherwise fail only at the first check, as an input error)."""
        for art in (self.single, self.multiturn, self.context_free):
            if art is not None:
                art.check_model(fingerprint, model_id)
                if config is not None:
                    _check_fits(art, config, model_id)

    @property
    def model_id(self) -> str:
        return self.single.meta.model_id

    @property
    def layers(self) -> list[int]:
        """Every layer any probe reads (ascending): what a capture must provide; the last is the early exit."""
        return sorted(self.offsets)

    @property
    def offsets(self) -> dict[int, tuple[int, ...]]:
        """Per layer, the token offsets any probe reads there (what LayerTap / SentinelEncoder capture)."""
        arts = [a for a in (self.single, self.multiturn, self.context_free) if a is not None]
        out: dict[int, set[int]] = {}
        for a in arts:
            for li in a.layers:
                out.setdefault(li, set()).add(a.meta.token_offset)
        return {li: tuple(sorted(ks)) for li, ks in sorted(out.items())}

    def save(self, path: str | Path) -> Path:
        """Write the bundle into ``path``; a part this bundle lacks is removed from it, so an earlier bundle saved
        there never contributes a stale probe to the next load."""
        p = Path(path)
        problem = bundle_dir_problem(p)
        if problem:
            raise ConfigError(problem)
        self.single.save(p / "single")
        for name, art in (("multiturn", self.multiturn), ("context_free", self.context_free)):
            if art is not None:
                art.save(p / name)
            else:
                for f in ("meta.json", "weights.safetensors"):
                    (p / name / f).unlink(missing_ok=True)
                if (p / name).is_dir() and not any((p / name).iterdir()):
                    (p / name).rmdir()
        parts = {name: ProbeArtifact.load(p / name).meta.meta_sha256 for name in BUNDLE_PARTS if (p / name).is_dir()}
        (p / BUNDLE_MANIFEST).write_text(json.dumps({"parts": parts}, indent=2) + "\n")
        return p


def bundle_dir_problem(path: str | Path) -> str | None:
    """Why a bundle may not be saved into ``path`` (checked before training, and again when saving), or None: a
    directory holding a single artifact of its own (meta.json) would load as that artifact, not the bundle."""
    if (Path(path) / "meta.json").exists():
        return f"{path} holds a probe artifact of its own (meta.json): save the bundle to another directory"
    return None


def load_probe(path: str | Path) -> ProbeBundle:
    """Load ``default``, a bundle dir (single/ [+ multiturn/] [+ context_free/]) or a single artifact dir, as a
    bundle.

    A lone multi-turn artifact is not usable on its own (the detector also needs a per-turn probe).
    """
    p = DEFAULT_DIR if str(path) == "default" else Path(path)
    if not p.is_dir():
        raise CorruptProbeError(f"probe directory {p} does not exist")
    if (p / "meta.json").exists():
        art = ProbeArtifact.load(p)
        if art.meta.kind != "single":
            raise CorruptProbeError(f"{p} is a multi-turn artifact; load its bundle (parent with single/)")
        return ProbeBundle(single=art)
    if not (p / "single").is_dir():
        raise CorruptProbeError(f"{p} holds neither meta.json nor a single/ artifact")
    single = ProbeArtifact.load(p / "single")
    multi = ProbeArtifact.load(p / "multiturn") if (p / "multiturn").is_dir() else None
    if single.meta.kind != "single" or (multi is not None and multi.meta.kind != "multiturn"):
        raise CorruptProbeError(f"{p}: single/ and multiturn/ kinds are swapped or wrong")
    if multi is not None and multi.meta.model_fingerprint != single.meta.model_fingerprint:
        raise CorruptProbeError(f"{p}: single/ and multiturn/ were trained on different models")
    free = ProbeArtifact.load(p / "context_free") if (p / "context_free").is_dir() else None
    if free is not None and free.meta.kind != "single":
        raise CorruptProbeError(f"{p}: context_free/ must be a single-turn (per-turn) artifact")
    if free is not None and free.meta.model_fingerprint != single.meta.model_fingerprint:
        raise CorruptProbeError(f"{p}: single/ and context_free/ were trained on different models")
    _check_manifest(p, {"single": single, "multiturn": multi, "context_free": free})
    return ProbeBundle(single=single, multiturn=multi, context_free=free)


def _check_manifest(p: Path, loaded: Mapping[str, ProbeArtifact | None]) -> None:
    """A bundle saved with its manifest (`bundle.json`: each part's meta_sha256) must hold exactly those parts: a
    part deleted (the drift probe, and with it multi-turn detection, silently off) or swapped in from another
    bundle is refused. A bundle written before the manifest loads as it is, with a warning."""
    path = p / BUNDLE_MANIFEST
    if not path.exists():
        log.warning("probe bundle %s has no %s (written by an older railguard): its parts are not checked against "
                    "each other", p, BUNDLE_MANIFEST)
        return
    try:
        listed = json.loads(path.read_text())["parts"]
        if not isinstance(listed, dict) or not set(listed) <= set(BUNDLE_PARTS):
            raise ValueError("parts must map part names to digests")
    except (ValueError, KeyError, TypeError, RecursionError, OSError) as exc:
        raise CorruptProbeError(f"{path} is invalid: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                                ) from None
    have = {name: art.meta.meta_sha256 for name, art in loaded.items() if art is not None}
    if have != listed:
        missing, extra = sorted(set(listed) - set(have)), sorted(set(have) - set(listed))
        raise CorruptProbeError(f"{p} does not hold the parts its {BUNDLE_MANIFEST} lists (missing {missing}, not "
                                f"listed {extra}, or a part replaced): a bundle is saved whole, by `probes train`")


def _check_fits(art: ProbeArtifact, config: Any, model_id: str | None) -> None:
    n_layers, width = getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)
    if isinstance(n_layers, int) and any(not 0 <= li <= n_layers for li in art.meta.input_layers):
        raise ProbeMismatchError(f"{art.meta.kind} probe reads layer(s) {art.meta.input_layers}; "
                                 f"{model_id or 'the model'} has hidden states 0..{n_layers}")
    if isinstance(width, int) and art.meta.d_model != width:
        raise ProbeMismatchError(f"{art.meta.kind} probe expects hidden size {art.meta.d_model}; "
                                 f"{model_id or 'the model'} has {width}")


def model_config(lm: Any) -> Any:
    """The HF config of a loaded causal LM (or of a bare HF model)."""
    return getattr(getattr(lm, "model", lm), "config", None)


def model_fingerprints(lm: Any) -> tuple[str, ...]:
    """The fingerprints a probe bound to `lm` may carry (current, then legacy where the model object has one)."""
    return tuple(lm.fingerprints()) if hasattr(lm, "fingerprints") else (lm.fingerprint(),)
