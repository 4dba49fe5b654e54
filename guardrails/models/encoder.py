"""`LoadedEncoder`: a sentence encoder (mean-pooled, L2-normalised embeddings), optionally an adapted copy that
shares its lowest layers with its plain base (`shared_trunk`). Loaded and cached by `loader.load_encoder`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ModelLoadError
from .hooks import thread_owned


@dataclass
class LoadedEncoder:
    """A sentence encoder. An adapted copy whose LoRA deltas touch only the top layers records what it shares
    with its base (`base`, `layers_path`, `shared_layers`): `encode_with_base` then runs the shared lower layers
    once for both embeddings (see `models.lora`)."""

    name: str
    model: Any
    tokenizer: Any
    device: str
    autocast_bf16: bool = False
    int8: bool = False  # int8 Linear layers at fixed input scales (`models.quantize`); same `name`: same space
    base: LoadedEncoder | None = None
    layers_path: str = ""
    shared_layers: int = 0

    def encode(self, texts: list[str], *, batch_size: int = 64, normalize: bool = True,
               max_length: int = 256) -> Any:
        """Mean-pooled sentence embeddings (the all-MiniLM recipe) as a float32 numpy array, in input order.

        Texts are batched by length so padding is minimal (the bulk of CPU time on mixed-length input);
        results are scattered back to the caller's order. Runs under bf16 autocast where that is native
        (`autocast_bf16`, see `encoder_autocast_bf16`); pooling and normalization stay fp32.
        """
        return self._encode(texts, batch_size, normalize, max_length, with_base=False)[0]

    def encode_with_base(self, texts: list[str], *, batch_size: int = 64, normalize: bool = True,
                         max_length: int = 256) -> tuple[Any, Any]:
        """(this encoder's embeddings, its base's embeddings) for the same texts.

        When the deltas leave the lowest `shared_layers` layers untouched, one base forward pass is run and
        only this encoder's own top layers are replayed on the hidden state the base fed into the first
        adapted layer (same inputs, same attention mask): 6 + 2 layer passes instead of 12 for MiniLM with the
        top two layers adapted. Otherwise (or without a base) two full passes.
        """
        if self.base is None:
            raise ModelLoadError(f"encoder {self.name!r} has no base encoder")
        if self.shared_layers <= 0:
            return (self.encode(texts, batch_size=batch_size, normalize=normalize, max_length=max_length),
                    self.base.encode(texts, batch_size=batch_size, normalize=normalize, max_length=max_length))
        return self._encode(texts, batch_size, normalize, max_length, with_base=True)

    def _encode(self, texts: list[str], batch_size: int, normalize: bool, max_length: int,
                with_base: bool) -> tuple[Any, Any]:
        import numpy as np
        import torch

        dim = int(self.model.config.hidden_size)
        out = np.zeros((len(texts), dim), dtype=np.float32)
        out_base = np.zeros((len(texts), dim), dtype=np.float32) if with_base else None
        runner = self.base if with_base and self.base is not None else self
        own_top = list(self.model.get_submodule(self.layers_path))[self.shared_layers:] if with_base else []
        entry = runner.model.get_submodule(self.layers_path)[self.shared_layers] if with_base else None
        captured: dict[str, Any] = {}

        @thread_owned  # the base model is shared: another thread's forward through it is not recorded here
        def capture(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            captured["args"], captured["kwargs"] = args, kwargs

        def pool(hidden: Any, mask: Any) -> Any:
            emb = (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        autocast = torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.autocast_bf16)
        handle = entry.register_forward_pre_hook(capture, with_kwargs=True) if entry is not None else None
        try:
            with torch.inference_mode(), autocast:
                for start in range(0, len(order), batch_size):
                    idx = order[start : start + batch_size]
                    batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                           max_length=max_length, return_tensors="pt").to(self.device)
                    mask = batch["attention_mask"].unsqueeze(-1).float()
                    hidden = runner.model(**batch).last_hidden_state
                    if out_base is None:
                        out[idx] = pool(hidden, mask).cpu().numpy()
                        continue
                    out_base[idx] = pool(hidden, mask).cpu().numpy()
                    if "args" not in captured:
                        raise ModelLoadError(f"{self.layers_path}[{self.shared_layers}] of {self.name!r} was "
                                             "not run by its base's forward: cannot share the trunk")
                    args, kwargs = captured.pop("args"), captured.pop("kwargs")
                    h = args[0]
                    for layer in own_top:  # the adapted layers, on exactly what the base fed its layer k
                        h = layer(h, *args[1:], **kwargs)
                        h = h[0] if isinstance(h, tuple) else h
                    out[idx] = pool(h, mask).cpu().numpy()
        finally:
            if handle is not None:
                handle.remove()
        return out, out_base


def shared_trunk(model: Any, pairs: dict[str, Any]) -> tuple[str, int]:
    """(path of the model's layer list, how many of its lowest layers no delta touches).

    Only deltas inside one `torch.nn.ModuleList` of layers (e.g. ``encoder.layer.4.attention...``) can leave a
    shared trunk; a delta anywhere else (embeddings, pooler, a model without such a list) means nothing is shared.
    """
    import re

    import torch

    paths, lowest = set(), []
    for name in pairs:
        m = re.match(r"^(.*?)\.(\d+)\.", name)
        if m is None:
            return "", 0
        paths.add(m.group(1))
        lowest.append(int(m.group(2)))
    if len(paths) != 1:
        return "", 0
    path = paths.pop()
    try:
        layers = model.get_submodule(path)
    except AttributeError:
        return "", 0
    if not isinstance(layers, torch.nn.ModuleList):
        return "", 0
    return path, min(lowest)
