"""Device and dtype policy for every model railguard loads: CUDA when present, CPU threads, and when bf16 is used.

Why one module: the sentinel, the fused hook, the encoders and the training scripts must agree on what
`RAILGUARD_CPU_BF16` and `RAILGUARD_NUM_THREADS` mean, and a typo in either must be a clear error.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from ..errors import ConfigError

log = logging.getLogger("railguard.models")


def resolve_device(device: str | None = None) -> str:
    """'auto'/None → cuda when available, else cpu. Also sets a sane CPU thread count once."""
    import torch

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not getattr(resolve_device, "_threads_set", False):
        # Leave one core for the event loop / server when we have several; never oversubscribe.
        # RAILGUARD_NUM_THREADS overrides (on a shared, loaded machine 1 thread is steadier).
        # the cores this process may run on (its cpuset or taskset; a CPU quota such as docker --cpus is not seen)
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        env = os.environ.get("RAILGUARD_NUM_THREADS", "").strip()
        if env and not (env.isascii() and env.isdigit() and 0 < int(env) <= 4096):
            raise ConfigError(f"RAILGUARD_NUM_THREADS={env[:60]!r} must be an integer from 1 to 4096")
        torch.set_num_threads(int(env) if env else (max(1, n - 1) if n > 2 else n))
        resolve_device._threads_set = True  # type: ignore[attr-defined]
    return device


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 instructions (AVX512-BF16 or AMX). Necessary, not sufficient, for bf16 to
    beat fp32 (`cpu_bf16_is_faster` measures); without them bf16 is emulated. Linux flags only; elsewhere False.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def encoder_autocast_bf16(device: str) -> bool:
    """Whether sentence encoders run under bf16 autocast: `RAILGUARD_CPU_BF16` = auto (default) | 1 | 0.

    "auto" measures instead of trusting CPU flags (`cpu_bf16_is_faster`): the same AVX512-BF16 flag came with
    169 -> 431 texts/s on one 2-core box (all-MiniLM-L6-v2, 880 short messages) and 180 -> 105 texts/s on another
    (Xeon, family 6 model 207, AMX not exposed to the VM), where the flag-based rule halved throughput.
    Embeddings under autocast: cosine to fp32 0.99998 mean / 0.99992 min, so calibrated thresholds carry over.
    CUDA encoders autocast where bf16 is native (compute capability 8.0+, `cuda_bf16_native`).
    """
    if device.startswith("cuda"):
        return cuda_bf16_native(device)
    setting = cpu_bf16_setting()
    return cpu_bf16_is_faster() if setting is None else setting


_BF16_MIN_SPEEDUP = 1.25
_bf16_lock = threading.Lock()
_bf16_choice: bool | None = None


def cpu_bf16_is_faster() -> bool:
    """Measured once per process (`_measure_cpu_bf16`), under a lock: encoders loaded concurrently never time
    against each other nor get different answers."""
    global _bf16_choice
    with _bf16_lock:
        if _bf16_choice is None:
            _bf16_choice = _measure_cpu_bf16()
        return _bf16_choice


def _measure_cpu_bf16() -> bool:
    """Does bf16 autocast beat fp32 on this CPU's cores (at the current torch thread count) by >= 1.25x?

    Needs native bf16 (AVX512-BF16 / AMX flags) first; then times a transformer feed-forward block shaped like
    MiniLM's (512 tokens x 384 -> 1536 -> 384), fp32 and autocast interleaved, medians of 5 after a warm-up
    (~0.1 s). Weights come from a private generator, so the global torch RNG is untouched. The margin keeps a
    noisy box from flipping a near-tie; the choice is logged.
    """
    if not cpu_has_native_bf16():
        return False
    import statistics
    import time

    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 384, generator=g)
    w1, w2 = torch.randn(1536, 384, generator=g) * 0.05, torch.randn(384, 1536, generator=g) * 0.05

    def seconds(bf16: bool) -> float:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            t0 = time.perf_counter()
            torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(x, w1)), w2)
            return time.perf_counter() - t0

    seconds(False), seconds(True)  # warm-up: oneDNN primitive creation
    fp32, bf16 = [], []
    for _ in range(5):
        fp32.append(seconds(False))
        bf16.append(seconds(True))
    speedup = statistics.median(fp32) / statistics.median(bf16)
    faster = speedup >= _BF16_MIN_SPEEDUP
    log.info("CPU bf16 autocast %s: measured %.2fx fp32 speed (needs %.2fx; RAILGUARD_CPU_BF16 overrides)",
             "on" if faster else "off", speedup, _BF16_MIN_SPEEDUP)
    return faster


def _switch(name: str) -> bool | None:
    """An auto/on/off environment switch: True for 1/true/yes/on, False for 0/false/no/off, None for auto (the
    default or empty). Anything else is a ConfigError naming the value: a typo must not silently pick a dtype."""
    env = os.environ.get(name, "auto").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("", "auto"):
        return None
    raise ConfigError(f"{name}={env!r} is not one of 1/true/yes/on, 0/false/no/off or auto")


def cpu_bf16_setting() -> bool | None:
    """`RAILGUARD_CPU_BF16` (see `_switch`)."""
    return _switch("RAILGUARD_CPU_BF16")


def encoder_int8(device: str) -> bool:
    """Whether the harm backend's sentence encoders run int8 Linear layers (`models.quantize`):
    `RAILGUARD_CPU_INT8` = 1 | 0 | auto (default; off).

    Opt-in, CPU only (CUDA encoders autocast to bf16). Measured on 2 AVX-512 cores: 1.2-1.7x texts/s and dev F1
    unchanged (spam / toxic / negative 0.946 / 0.973 / 0.894; 37 of 7,832 dev verdicts differ from fp32), but
    block-new from one example fell 0.923 -> 0.918, under its 0.92 target (toxic 0.967 -> 0.953; with the heads
    retrained in session 30, 44 of 7,832 verdicts differ and block-new falls 0.921 -> 0.917): a category
    learnt from one example leans on the base heads' exact scores. "1" on a CPU without the x86 int8 kernel is a
    ConfigError.
    """
    if not device.startswith("cpu"):
        return False
    from .quantize import int8_engine_available

    if _switch("RAILGUARD_CPU_INT8") is not True:
        return False
    if not int8_engine_available():
        raise ConfigError("RAILGUARD_CPU_INT8=1 but this torch build has no x86 int8 Linear kernel (fbgemm)")
    return True


def default_dtype(device: str) -> Any:
    """bf16 on CUDA (compute capability 8.0+, else fp32: `cuda_bf16_native`); on CPU fp32 unless
    `RAILGUARD_CPU_BF16=1` ("auto" keeps causal LMs fp32: probes are calibrated on fp32). bf16 serves them too
    (AVX512-BF16 box: cosine >= 0.9998 at the probe layer, 6 of 293 dev verdicts changed, sentinel 2x faster);
    `scripts/gpu_check --cpu-bf16` rehearses the CUDA path that way."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if cuda_bf16_native(device) else torch.float32
    return torch.bfloat16 if cpu_bf16_setting() is True else torch.float32


def cuda_bf16_native(device: str) -> bool:
    """bf16 tensor cores exist from compute capability 8.0 (Ampere) on; older GPUs (T4, V100) would emulate bf16
    slowly (recent torch reports it "supported" with emulation), so they run fp32 (fp16 would risk overflow in the
    probe layers' activations)."""
    import torch

    if not torch.cuda.is_available():  # nothing to ask (a CPU build): the rule for current GPUs
        return True
    return torch.cuda.get_device_capability(torch.device(device)) >= (8, 0)
