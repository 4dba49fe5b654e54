"""Load causal LMs and encoders: embedded names, any local path or Hugging Face id; device auto.

The embedded SmolLM2 ships as GGUF. transformers dequantizes it (slow, ~15 s) so we do it once and save
safetensors into a platformdirs cache keyed by the GGUF's size and mtime; later loads read the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from .devices import default_dtype, encoder_autocast_bf16, resolve_device
from .encoder import LoadedEncoder, shared_trunk
from .registry import EMBEDDED, EmbeddedModel

log = logging.getLogger("railguard.models")
_lock = threading.Lock()
_cache: dict[tuple[str, str, str], Any] = {}
# Held while a model is loaded on a cache miss: concurrent first uses (an async Guard's detectors, a threaded
# batch) wait for the one load instead of racing transformers' lazy imports and building duplicate instances.
# Re-entrant because an adapted or int8 encoder loads its plain base inside its own load.
_load_lock = threading.RLock()


def cache_dir() -> Path:
    """Where converted weights live. `RAILGUARD_CACHE_DIR` overrides the platformdirs default."""
    env = os.environ.get("RAILGUARD_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("railguard"))


@dataclass
class LoadedCausalLM:
    name: str
    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    device: str
    source: Path | str  # where the weights were read from

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def fingerprint(self) -> str:
        """Stable id of architecture + weights: the architecture's defining numbers and a sample of parameters.

        - Independent of the dtype and device the weights were loaded in: the sampled values are rounded to bf16
          (round-to-nearest-even, the cast `from_pretrained(dtype=bfloat16)` performs), so the fp32 CPU model a
          probe was trained on and the bf16 CUDA model that serves it share one fingerprint.
        - Independent of how a transformers release writes the config: only `architecture_summary`'s fields
          count, normalised (transformers 5 writes `rope_parameters` where 4.x wrote `rope_theta`; hashing the
          whole `config.to_dict()` made the shipped probe refuse, and the privacy guard block everything, under
          any other transformers line).
        - Sensitive to a change in any layer: every parameter tensor contributes its shape and 64 values spread
          over it. The previous definition (`sample_fingerprint`) sampled only the first four tensors (embeddings
          and layer 0's q/k/v), so a fine-tune or merged LoRA of later layers kept the base model's fingerprint
          and a probe bound to the base loaded on it silently.
        """
        import torch

        if any(p.device.type == "meta" for p in self.model.parameters()):
            raise ModelLoadError(f"{self.name}: some weights are offloaded (meta device), so the model cannot be "
                                 "fingerprinted and no probe can be bound to it; load it without offloading")
        h = hashlib.sha256(b"v3" + json.dumps(architecture_summary(self.model.config.to_dict()), sort_keys=True,
                                              default=str).encode())
        with torch.no_grad():
            for _, p in self.model.named_parameters():
                flat = p.detach().flatten()
                step = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
                h.update(json.dumps(list(p.shape)).encode())
                h.update(flat[::step][:_SAMPLES_PER_TENSOR].to(torch.bfloat16).float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def sample_fingerprint(self) -> str:
        """The fingerprint probes trained from 2026-12-05 to 2026-12-06 carry: the architecture summary + a sample of
        the first four parameter tensors only (see `fingerprint`). Accepted so those probes keep loading; it cannot
        tell a model whose later layers changed, which is why `fingerprint` replaced it."""
        return self._weights_hash(architecture_summary(self.model.config.to_dict()))

    def legacy_fingerprint(self) -> str:
        """The fingerprint probes trained from 2026-12-02 (commit 6601a94, bf16-rounded weight sample) to 2026-12-05
        carry: the whole config dict (minus paths, versions and dtypes) + the same weight sample. Valid under the
        transformers line that trained them; accepted so those probes keep loading (`fingerprints`). Probes trained
        before 6601a94 hashed the raw weight sample: they are refused with a clear error and must be retrained."""
        cfg = self.model.config.to_dict()
        return self._weights_hash({k: cfg.get(k) for k in sorted(cfg) if k not in (
            "_name_or_path", "transformers_version", "dtype", "torch_dtype", "_commit_hash")})

    def fingerprints(self) -> tuple[str, ...]:
        """Every fingerprint a probe bound to this model may carry: the current one first, then the older ones."""
        return self.fingerprint(), self.sample_fingerprint(), self.legacy_fingerprint()

    def _weights_hash(self, config_part: dict[str, Any]) -> str:
        import torch

        h = hashlib.sha256(json.dumps(config_part, sort_keys=True, default=str).encode())
        with torch.no_grad():
            for _, p in list(self.model.named_parameters())[:4]:
                flat = p.detach().flatten()[:256].to(torch.bfloat16).float().cpu().numpy()
                h.update(flat.tobytes())
        return h.hexdigest()[:16]


_SAMPLES_PER_TENSOR = 64
_ARCHITECTURE_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                      "vocab_size", "hidden_act", "tie_word_embeddings")
# Fields other families use that change hidden states; counted only when set to something that acts (a release
# that starts writing `attention_bias: false` or `partial_rotary_factor: 1.0` for every model changes nothing).
_ACTING_KEYS = ("sliding_window", "max_window_layers", "partial_rotary_factor", "num_experts", "num_local_experts",
                "num_experts_per_tok", "hidden_activation", "attention_bias", "mlp_bias", "attn_logit_softcapping",
                "final_logit_softcapping", "query_pre_attn_scalar", "no_rope_layers", "qk_layernorm", "use_qk_norm")


def _acts(key: str, value: Any) -> bool:
    if value is None or value is False or value in ([], {}, ""):
        return False
    if key == "partial_rotary_factor":
        return bool(value != 1.0)
    return value is True or not isinstance(value, int | float) or value != 0


def architecture_summary(cfg: dict[str, Any]) -> dict[str, Any]:
    """What in a model config changes the hidden states, normalised across transformers versions' spellings."""
    out: dict[str, Any] = {k: cfg.get(k) for k in _ARCHITECTURE_KEYS}
    heads = cfg.get("num_attention_heads") or 1
    out["num_key_value_heads"] = cfg.get("num_key_value_heads") or heads
    out["head_dim"] = cfg.get("head_dim") or (cfg.get("hidden_size") or 0) // heads
    out["norm_eps"] = cfg.get("rms_norm_eps", cfg.get("layer_norm_eps", cfg.get("layer_norm_epsilon")))
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    theta = cfg.get("rope_theta", rope.get("rope_theta") if isinstance(rope, dict) else None)
    out["rope_theta"] = float(theta) if theta is not None else None
    kind = (rope.get("rope_type") or rope.get("type")) if isinstance(rope, dict) else None
    out["rope_type"] = kind or "default"
    extra = rope.items() if isinstance(rope, dict) else ()
    out["rope_scaling"] = sorted([k, v] for k, v in extra if k not in ("rope_theta", "rope_type", "type"))
    if out["rope_type"] != "default":  # dynamic / long-context rope reads the trained context length
        out["max_position_embeddings"] = cfg.get("max_position_embeddings")
    acting = {k: cfg[k] for k in _ACTING_KEYS if _acts(k, cfg.get(k))}
    if cfg.get("use_sliding_window") is False:
        acting.pop("sliding_window", None)
        acting.pop("max_window_layers", None)
    kinds = cfg.get("layer_types")
    if isinstance(kinds, list) and any(k != "full_attention" for k in kinds):
        acting["layer_types"] = kinds
    if acting:
        out["acting"] = acting
    return out


_SAMPLE_BYTES = 1 << 20


def _gguf_cache_path(spec: EmbeddedModel, gguf: Path) -> Path:
    """Where the converted weights of this GGUF file live: keyed by its size and content (first and last MiB),
    not its mtime, which pip sets at install time (a reinstall or a second venv converted ~0.5 GB again)."""
    size = gguf.stat().st_size
    h = hashlib.sha256(f"{spec.requirement}:{size}:".encode())
    with gguf.open("rb") as f:
        h.update(f.read(_SAMPLE_BYTES))
        f.seek(max(0, size - _SAMPLE_BYTES))
        h.update(f.read(_SAMPLE_BYTES))
    return cache_dir() / "models" / f"{spec.name}-{h.hexdigest()[:12]}"


def _convert_gguf(spec: EmbeddedModel, gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s from GGUF to safetensors in %s (once)", spec.name, target)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    # The dequantized model is plain fp32; drop the GGUF quantizer marker so it can be serialized.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, target)  # atomic: concurrent converters race harmlessly
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise


# What transformers raises for a folder that is not a model (no tokenizer, unknown model_type, missing files) or a
# GGUF conversion that cannot run (no gguf package, unwritable cache): ModelLoadError, not a bare exception.
_LOAD_ERRORS = (OSError, ValueError, KeyError, ImportError)


def local_source(name_or_path: str) -> Path | str:
    """Map a model name to what transformers should load: cached conversion, wheel folder, path or hub id."""
    spec = EMBEDDED.get(name_or_path)
    if spec is None:
        return name_or_path
    path = spec.require()
    if path.suffix == ".gguf":
        target = _gguf_cache_path(spec, path)
        if not (target / "config.json").exists():
            with _lock:
                if not (target / "config.json").exists():
                    try:
                        _convert_gguf(spec, path, target)
                    except _LOAD_ERRORS as exc:
                        raise ModelLoadError(f"cannot convert {path.name} for {name_or_path!r}: {exc}") from None
        return target
    return path


def _offline_kwargs(source: Path | str) -> dict[str, Any]:
    # Embedded models and local paths must never trigger a hub request.
    return {"local_files_only": True} if isinstance(source, Path) or Path(str(source)).exists() else {}


def load_causal_lm(name_or_path: str, *, device: str | None = None, dtype: Any = None) -> LoadedCausalLM:
    """Load (and cache per process) a causal LM with its tokenizer. Embedded names work offline."""
    dev = resolve_device(device)
    # the resolved device and dtype: "cuda" / "cuda:0" and dtype=None / the device default are one instance, and a
    # changed RAILGUARD_CPU_BF16 gets the dtype it asks for instead of the instance loaded before the change
    dtype = dtype or default_dtype(dev)
    key = (name_or_path, _device_key(dev), str(dtype))
    with _lock:
        if key in _cache:
            return _cache[key]
    with _load_lock:
        with _lock:
            if key in _cache:  # loaded by the thread we waited for
                return _cache[key]
        return _load_causal_lm(name_or_path, dev, dtype, key)


def _device_key(dev: str) -> str:
    """'cuda' and 'cuda:0' (the current device) name the same device; 'cpu' stays 'cpu'."""
    import torch

    d = torch.device(dev)
    if d.type == "cuda" and d.index is None and torch.cuda.is_available():
        d = torch.device("cuda", torch.cuda.current_device())
    return str(d)


def _load_causal_lm(name_or_path: str, dev: str, dtype: Any, key: tuple[str, str, str]) -> LoadedCausalLM:
    source = local_source(name_or_path)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kw = _offline_kwargs(source)
        tok = AutoTokenizer.from_pretrained(source, **kw)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or default_dtype(dev), **kw)
    except _LOAD_ERRORS as exc:
        raise ModelLoadError(f"cannot load causal LM {name_or_path!r} from {source}: {exc}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.to(dev).eval()  # type: ignore[arg-type]
    if dev == "cpu":  # grouped KV heads under a mask without copying the history (`models.attention`)
        from .attention import use_masked_gqa

        use_masked_gqa(model)
    loaded = LoadedCausalLM(name=name_or_path, model=model, tokenizer=tok, device=dev, source=source)
    with _lock:
        _cache[key] = loaded
    return loaded


def load_encoder(name_or_path: str, *, device: str | None = None, adapter: Path | str | None = None,
                 int8_calibration: Sequence[str] | None = None) -> LoadedEncoder:
    """A sentence encoder (cached per process). With `adapter` (a LoRA delta file, see `models.lora`), a
    private copy with the deltas merged; the plain instance other callers share is left untouched.

    `int8_calibration` (CPU only; `devices.encoder_int8` is the policy): texts like the ones it will embed; a
    separate copy with int8 Linear layers whose input scales are fixed from a pass over them
    (`models.quantize`; ~1 s for 256 short texts). Cached per texts; the fp32 instance stays what others get.
    """
    dev = resolve_device(device)
    if int8_calibration is not None:
        if not dev.startswith("cpu"):
            raise ModelLoadError(f"int8 encoders run on CPU only, not {dev!r}")
        if not int8_calibration:
            raise ModelLoadError("int8 calibration needs at least one text")
        from .quantize import int8_engine_available

        if not int8_engine_available():
            raise ModelLoadError("int8 encoders need torch's x86 int8 Linear kernel (fbgemm), not in this build")
    if adapter is None and int8_calibration is None:  # the common cached lookup never waits behind a load
        with _lock:
            hit = _cache.get((name_or_path, dev, "encoder"))
        if hit is not None:
            return hit  # type: ignore[no-any-return]
    with _load_lock:  # one load per key even under concurrent first use (re-entrant: adapted → plain base)
        return _load_encoder(name_or_path, dev, adapter, int8_calibration)


def _load_encoder(name_or_path: str, dev: str, adapter: Path | str | None,
                  int8_calibration: Sequence[str] | None) -> LoadedEncoder:
    if adapter is not None:
        return _load_adapted_encoder(name_or_path, dev, Path(adapter), int8_calibration)
    if int8_calibration is not None:
        key = (name_or_path, dev, "encoder-int8-" + _texts_digest(int8_calibration))
        with _lock:
            if key in _cache:
                return _cache[key]
        enc = _int8_copy(load_encoder(name_or_path, device=dev), int8_calibration)
        with _lock:
            return _cache.setdefault(key, enc)
    key = (name_or_path, dev, "encoder")
    with _lock:
        if key in _cache:
            return _cache[key]
    source = local_source(name_or_path)
    try:
        from transformers import AutoModel, AutoTokenizer

        kw = _offline_kwargs(source)
        tok = AutoTokenizer.from_pretrained(source, **kw)
        model = AutoModel.from_pretrained(source, **kw)
    except _LOAD_ERRORS as exc:
        raise ModelLoadError(f"cannot load encoder {name_or_path!r} from {source}: {exc}") from None
    model.to(dev).eval()
    enc = LoadedEncoder(name=name_or_path, model=model, tokenizer=tok, device=dev,
                        autocast_bf16=encoder_autocast_bf16(dev))
    with _lock:
        _cache[key] = enc
    return enc


def _texts_digest(texts: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(texts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _int8_copy(fp32: LoadedEncoder, texts: Sequence[str]) -> LoadedEncoder:
    """`fp32` with its int8 targets quantized at input ranges measured by encoding `texts` through it."""
    from .quantize import calibrate_ranges, quantize_encoder_int8

    ranges = calibrate_ranges(fp32.model, lambda: fp32.encode(list(texts)))
    return dataclasses.replace(fp32, model=quantize_encoder_int8(fp32.model, ranges), autocast_bf16=False,
                               int8=True)


def _load_adapted_encoder(name_or_path: str, dev: str, adapter: Path,
                          int8_calibration: Sequence[str] | None) -> LoadedEncoder:
    import copy

    from .lora import apply_deltas, file_digest, read_deltas

    digest = file_digest(adapter) if adapter.is_file() else "missing"
    int8 = "" if int8_calibration is None else "-int8-" + _texts_digest(int8_calibration)
    key = (name_or_path, dev, "encoder+" + digest + int8)
    with _lock:
        if key in _cache:
            return _cache[key]
    meta, pairs = read_deltas(adapter)
    if meta.get("base") not in (None, name_or_path):
        raise ModelLoadError(f"LoRA deltas {adapter.name} were trained on {meta.get('base')!r}, not {name_or_path!r}")
    fp32 = load_encoder(name_or_path, device=dev)
    model = copy.deepcopy(fp32.model)  # the deltas merge into fp32 weights; int8 (if asked) comes after
    apply_deltas(model, meta, pairs)
    model.eval()
    layers_path, shared = shared_trunk(model, pairs)
    enc = LoadedEncoder(name=f"{name_or_path}+lora-{digest[:12]}", model=model, tokenizer=fp32.tokenizer,
                        device=dev, autocast_bf16=fp32.autocast_bf16, layers_path=layers_path, shared_layers=shared)
    if int8_calibration is not None:
        enc = _int8_copy(enc, int8_calibration)
    # user categories' plain space, at the same precision (and calibration) as this encoder
    enc.base = load_encoder(name_or_path, device=dev, int8_calibration=int8_calibration)
    with _lock:
        _cache[key] = enc
    return enc


def measure_embedded_load(name: str = "smollm2-135m-instruct") -> dict[str, float]:
    """Time a cold load (GGUF dequantization + save, into a throwaway cache) against a cached reload."""
    import tempfile
    import time

    from transformers import AutoModelForCausalLM

    spec = EMBEDDED[name]
    gguf = spec.require()
    with tempfile.TemporaryDirectory(prefix="railguard-load-") as tmp:
        target = Path(tmp) / "model"
        t0 = time.perf_counter()
        _convert_gguf(spec, gguf, target)
        AutoModelForCausalLM.from_pretrained(target, local_files_only=True)
        cold = time.perf_counter() - t0
        t1 = time.perf_counter()
        AutoModelForCausalLM.from_pretrained(target, local_files_only=True)
        cached = time.perf_counter() - t1
    return {"chat_model_cold_load_s": round(cold, 3), "chat_model_cached_load_s": round(cached, 3),
            "cold_over_cached_load": round(cold / max(cached, 1e-9), 1)}
