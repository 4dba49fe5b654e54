"""Low-rank weight deltas (LoRA) for the embedded models: train small, ship small, merge at load time.

Why: a task-tuned copy of an embedded encoder is ~90 MB, too big to ship in a wheel, while its rank-16 deltas
are ~1.3 MB. A delta file is safetensors holding, for each adapted ``nn.Linear`` named ``<module>``, the
tensors ``<module>.A`` (r x in) and ``<module>.B`` (out x r); its metadata names the base model and the scale.
At load the deltas are folded into a private copy of the weights (``W += scale * B @ A``), so inference costs
exactly what the base model costs. The shared base instance (used by other plugins) is never modified.

``lora_linear`` / ``wrap_linears`` are the training-time wrapper (``scripts/train_harm_adapter.py``); merging the
trained factors gives the same function as the wrapped model (tested).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError


def file_digest(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_deltas(path: Path | str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, {module: (A, B)}) from a delta file; typed errors for missing or malformed files."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"LoRA delta file not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("lora", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"unreadable LoRA delta file {p}: {exc}") from None
    pairs: dict[str, Any] = {}
    for key in tensors:
        module, _, part = key.rpartition(".")
        if part not in ("A", "B") or not module:
            raise ModelLoadError(f"LoRA delta file {p}: unexpected tensor {key!r}")
        other = f"{module}.{'B' if part == 'A' else 'A'}"
        if other not in tensors:
            raise ModelLoadError(f"LoRA delta file {p}: {key} without {other}")
        if part == "A":
            pairs[module] = (tensors[key], tensors[other])
    if not isinstance(meta, dict) or not pairs or not isinstance(meta.get("scale"), int | float):
        raise ModelLoadError(f"LoRA delta file {p}: no deltas or no scale in its metadata")
    return meta, pairs


def merge_deltas(model: Any, path: Path | str) -> dict[str, Any]:
    """Fold a delta file into `model`'s weights in place (call on a private copy); returns the metadata."""
    meta, pairs = read_deltas(path)
    apply_deltas(model, meta, pairs)
    return meta


def apply_deltas(model: Any, meta: dict[str, Any], pairs: dict[str, Any]) -> None:
    """`merge_deltas` for factors already read by `read_deltas`."""
    import torch

    scale = float(meta["scale"])
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, (a, b) in pairs.items():
            lin = modules.get(name)
            if not isinstance(lin, torch.nn.Linear):
                raise ModelLoadError(f"LoRA delta targets {name!r}, which is not a Linear layer of this model")
            if tuple(a.shape) != (a.shape[0], lin.in_features) or tuple(b.shape) != (lin.out_features, a.shape[0]):
                raise ModelLoadError(f"LoRA delta for {name!r} has shapes {tuple(a.shape)}/{tuple(b.shape)}; "
                                     f"the layer is {lin.out_features}x{lin.in_features}")
            delta = (b.float() @ a.float()) * scale
            lin.weight.add_(delta.to(lin.weight.dtype).to(lin.weight.device))


def save_deltas(factors: dict[str, tuple[Any, Any]], path: Path | str, *, scale: float,
                **meta: Any) -> None:
    """Write {module: (A, B)} as fp16 plus JSON metadata (base model, scale, provenance)."""
    from safetensors.torch import save_file

    tensors = {}
    for name, (a, b) in factors.items():
        tensors[f"{name}.A"] = a.detach().to("cpu").half().contiguous()
        tensors[f"{name}.B"] = b.detach().to("cpu").half().contiguous()
    save_file(tensors, str(path), metadata={"lora": json.dumps({"scale": scale, **meta}, sort_keys=True)})


def lora_linear(base: Any, rank: int, scale: float = 2.0) -> Any:
    """Training wrapper: ``base(x) + scale * x A^T B^T`` with B = 0 at start (the model starts unchanged)."""
    import torch

    class LoRALinear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base, self.scale = base, scale
            dev = base.weight.device  # train where the base model lives (CPU or CUDA)
            self.A = torch.nn.Parameter(torch.randn(rank, base.in_features, device=dev) / base.in_features**0.5)
            self.B = torch.nn.Parameter(torch.zeros(base.out_features, rank, device=dev))

        def forward(self, x: Any) -> Any:
            return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale

    return LoRALinear()


def wrap_linears(model: Any, rank: int, *, prefix: str | tuple[str, ...] = "", scale: float = 2.0) -> dict[str, Any]:
    """Freeze `model` and wrap every Linear under `prefix` (or any of several) with `lora_linear`."""
    import torch

    for p in model.parameters():
        p.requires_grad = False
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(prefix)]
    wrapped = {}
    for n in names:
        parent_name, _, leaf = n.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        w = lora_linear(getattr(parent, leaf), rank, scale)
        setattr(parent, leaf, w)
        wrapped[n] = w
    return wrapped
