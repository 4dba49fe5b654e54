"""Turn privacy records into probe features, with an on-disk cache.

Extraction dominates training cost on CPU, so activations are cached as ``.npz`` keyed by the model
fingerprint, the layer set and a hash of the exact rendered prompts: any change to data, template or model
invalidates the cache automatically, and re-running training or evaluation is cheap.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from guardrails.errors import InvalidInputError

from .capture import capture, render, site_key, to_messages

log = logging.getLogger("railguard.probes")
Record = dict[str, Any]


def default_cache_dir() -> Path:
    """``$RAILGUARD_PROBES_CACHE``, else ``probes/`` under the package's per-user cache dir
    (:func:`guardrails.models.loader.cache_dir`: ``$RAILGUARD_CACHE_DIR`` or the platformdirs user cache).

    Never a fixed shared path such as ``/tmp/probes_cache``: on a multi-user host another user could plant shards
    there that training and evaluation would then load as activations.
    """
    env = os.environ.get("RAILGUARD_PROBES_CACHE")
    if env:
        return Path(env)
    from guardrails.models.loader import cache_dir

    return cache_dir() / "probes"


def single_turn_prompts(tokenizer: Any, records: Sequence[Record]) -> list[str]:
    return [render(tokenizer, to_messages(r.get("context"), r["request"])) for r in records]


def multiturn_prompts(tokenizer: Any, records: Sequence[Record]) -> tuple[list[str], list[tuple[int, int]]]:
    """One prompt per user turn (the prefix up to and including it); returns (prompts, (conv, turn) index)."""
    prompts, index = [], []
    for ci, r in enumerate(records):
        msgs = to_messages(r.get("context"), turns=r["turns"])
        k = 0
        for j, m in enumerate(msgs):
            if m["role"] == "user":
                prompts.append(render(tokenizer, msgs[: j + 1]))
                index.append((ci, k))
                k += 1
    return prompts, index


def _shard_prefix(lm: Any, layers: Sequence[int], offset: int = 0) -> str:
    # The model fingerprint ignores dtype on purpose (a probe trained on fp32 CPU activations loads on a bf16 GPU
    # model), but cached activations must not: bf16 vectors differ from fp32 ones, so the dtype is part of the key.
    # So is a token offset (offset 0 keeps the keys caches were written under before offsets existed).
    param = next(lm.model.parameters())
    dtype = param.dtype
    where = f"|offset {offset}" if offset else ""
    if param.device.type != "cpu":  # bf16 on CUDA (other kernels, attention implementation) is not bf16 on a CPU;
        # CPU keys stay as they were written
        where += f"|{param.device.type}|{getattr(lm.model.config, '_attn_implementation', None)}"
    h = hashlib.sha256(f"{lm.fingerprint()}|{list(layers)}|{dtype}{where}".encode()).hexdigest()[:16]
    return f"act-{h}-"


def _load_shards(cdir: Path, prefix: str) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    for f in sorted(cdir.glob(prefix + "*.npz")):
        try:
            with np.load(f) as z:
                for k, v in zip(z["keys"], z["x"], strict=True):
                    found[str(k)] = v
        except Exception:  # a torn shard is just recomputed
            log.warning("ignoring unreadable cache shard %s", f)
    return found


def _save_shard(cdir: Path, prefix: str, keys: list[str], x: np.ndarray) -> None:
    """Write one cache shard atomically (temp file + rename); a failed write only costs a recompute later."""
    try:
        cdir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256("".join(keys).encode()).hexdigest()[:12]
        tmp = cdir / f"tmp-{os.getpid()}-{name}.npz"
        np.savez(tmp, keys=np.array(keys, dtype="U64"), x=x)
        os.replace(tmp, cdir / f"{prefix}{name}.npz")
    except OSError as exc:
        log.warning("could not write activation cache: %s", exc)


def cached_capture(lm: Any, prompts: Sequence[str], layers: Sequence[int], *, batch_size: int = 8,
                   cache_dir: Path | None = None, progress: bool = True, offset: int = 0) -> np.ndarray:
    """:func:`probes.capture.capture` with a per-prompt npz cache; returns ``[n, len(layers), d]`` fp32 (at
    ``offset`` tokens before the last one).

    Shards are keyed by (model fingerprint, weight dtype, layer set); each row by the sha256 of the rendered prompt, so
    any subset or superset of earlier prompts reuses what was computed (train/dev splits, evals, reruns).
    """
    layers = sorted(set(int(i) for i in layers))
    cdir = cache_dir or default_cache_dir()
    prefix = _shard_prefix(lm, layers, offset)
    keys = [hashlib.sha256(p.encode()).hexdigest() for p in prompts]
    found = _load_shards(cdir, prefix) if cdir.is_dir() else {}
    missing = sorted({i for i, k in enumerate(keys) if k not in found})
    if missing:
        uniq: dict[str, int] = {}
        for i in missing:
            uniq.setdefault(keys[i], i)
        idx = list(uniq.values())
        x = capture(lm.model, lm.tokenizer, [prompts[i] for i in idx], layers, batch_size=batch_size,
                    progress=progress, offset=offset)
        for j, i in enumerate(idx):
            found[keys[i]] = x[j]
        _save_shard(cdir, prefix, [keys[i] for i in idx], x)
    d = int(lm.model.config.hidden_size)
    if not prompts:
        return np.zeros((0, len(layers), d), dtype=np.float32)
    return np.stack([found[k] for k in keys]).astype(np.float32)


def conversation_capture(lm: Any, records: Sequence[Record], layers: Sequence[int], *,
                         cache_dir: Path | None = None, progress: bool = True, offset: int = 0,
                         save_every: int = 200) -> list[np.ndarray]:
    """Per-user-turn activations of multi-turn records, one ``[T, len(layers), d]`` array per conversation.

    Collected the way the sentinel serves them (:class:`probes.sentinel.SentinelEncoder`: the conversation's KV
    cache is extended turn by turn, early exit at the deepest layer), so training sees exactly the served vectors
    and a conversation costs one prefill of its context plus each turn's new tokens, not one full prefill per
    turn (measured: ~0.5 s per 4-7-turn CMPL conversation up to layer 15 on 2 CPU cores). Cached like
    :func:`cached_capture`, keyed by each turn's rendered prompt, under a separate shard prefix (these rows come
    from the incremental path). A shard is written every ``save_every`` conversations, so a capture stopped
    part-way (a drift retrain's 2,385 conversations with their copies: about 25 min on 2 CPU cores) resumes where
    it was.
    """
    from tqdm.auto import tqdm

    from .sentinel import SentinelEncoder

    if save_every < 1:
        raise ValueError("save_every must be at least 1")

    layers = sorted(set(int(i) for i in layers))
    cdir = cache_dir or default_cache_dir()
    prefix = "conv-" + _shard_prefix(lm, layers, offset)
    found = _load_shards(cdir, prefix) if cdir.is_dir() else {}
    prompts, index = multiturn_prompts(lm.tokenizer, records)
    keys = [hashlib.sha256(p.encode()).hexdigest() for p in prompts]
    per_conv: dict[int, list[int]] = {}
    for row, (c, _t) in enumerate(index):
        per_conv.setdefault(c, []).append(row)
    if len(per_conv) != len(records):
        raise InvalidInputError("every multi-turn record needs at least one user turn")
    todo = [c for c, rows in per_conv.items() if any(keys[r] not in found for r in rows)]
    new_keys: list[str] = []
    new_x: list[np.ndarray] = []
    done = 0
    enc = SentinelEncoder(lm.model, lm.tokenizer, layers, max_sessions=1, offsets={li: (offset,) for li in layers})
    for c in tqdm(todo, desc="conversations", disable=not progress, unit="conv"):
        msgs = to_messages(records[c].get("context"), turns=records[c]["turns"])
        users = [j for j, m in enumerate(msgs) if m["role"] == "user"]
        for j, row in zip(users, per_conv[c], strict=True):
            acts = enc.activation(msgs[: j + 1], session=c)
            found[keys[row]] = np.stack([acts[site_key(i, offset)] for i in layers]).astype(np.float32)
            new_keys.append(keys[row])
            new_x.append(found[keys[row]])
        enc.forget(c)
        done += 1
        if done % save_every == 0:
            _save_shard(cdir, prefix, new_keys, np.stack(new_x))
            new_keys, new_x = [], []
    if new_keys:
        _save_shard(cdir, prefix, new_keys, np.stack(new_x))
    return [np.stack([found[keys[r]] for r in per_conv[c]]) for c in sorted(per_conv)]
