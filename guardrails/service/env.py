"""The service's RAILGUARD_* environment, read and checked in one place.

`run_server` checks it in the parent process before uvicorn starts any worker, so a typo is one error line and a
non-zero exit, not a worker that dies at start-up and is replaced forever (`--workers N`) or a server that looks
ready and blocks every check. Every worker reads the same variables again through `ServiceEnv.from_environ()`.
Values of secrets (API keys, database URLs, which may hold a password) are never quoted in errors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import ConfigError

T = TypeVar("T")

DB = "RAILGUARD_DB_URL"
DETECTORS = "RAILGUARD_DETECTORS"  # comma-separated subset of registered detectors (default: all)
UPSTREAM = "RAILGUARD_UPSTREAM_URL"  # OpenAI-compatible base URL for /v1/chat/completions
UPSTREAM_KEY = "RAILGUARD_UPSTREAM_API_KEY"
MAX_BODY = "RAILGUARD_MAX_BODY_BYTES"
WARM_CHAT = "RAILGUARD_WARM_CHAT_MODEL"  # "1": load the local chat model before /readyz turns 200
KEEPALIVE = "RAILGUARD_SSE_KEEPALIVE_S"  # seconds between SSE keep-alive comments while buffering (0 = off)
UPSTREAM_TIMEOUT = "RAILGUARD_UPSTREAM_TIMEOUT_S"  # per network operation (default 120)
UPSTREAM_TOTAL = "RAILGUARD_UPSTREAM_TOTAL_TIMEOUT_S"  # whole upstream call (default 600; 0 = no bound)
STATE_TTL = "RAILGUARD_STATE_TTL_DAYS"  # idle session state is deleted after this many days (0 = never)
WARMUP = "RAILGUARD_WARMUP"  # before_serving (default) | background
STRICT = "RAILGUARD_STRICT_DETECTORS"  # 1 (default) | 0
NUM_THREADS = "RAILGUARD_NUM_THREADS"  # torch CPU threads per worker
LOG_LEVEL = "RAILGUARD_LOG_LEVEL"

WARMUP_MODES = ("before_serving", "background")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_SECRET = {DB, UPSTREAM_KEY}


@dataclass(frozen=True)
class ServiceEnv:
    db_url: str | None = None
    detectors: list[str] | None = None
    upstream_url: str | None = None
    upstream_api_key: str | None = field(default=None, repr=False)
    max_body_bytes: int = 1 << 20
    warm_chat_model: bool = False
    sse_keepalive_s: float | None = None
    upstream_timeout_s: float = 120.0
    upstream_total_timeout_s: float | None = 600.0
    state_ttl_days: float = 30.0
    warmup: str = "before_serving"
    strict_detectors: bool = True
    num_threads: int | None = None
    log_level: str = "info"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ServiceEnv:
        """Read every RAILGUARD_* variable the service uses; all bad values are reported in one ConfigError."""
        env = os.environ if environ is None else environ
        errors: list[str] = []

        def read(name: str, parse: Callable[[str], T], default: T, rule: str) -> T:
            raw = (env.get(name) or "").strip()
            if not raw:
                return default
            try:
                return parse(raw)
            except (ValueError, OverflowError):
                shown = "" if name in _SECRET else f", got {raw[:60]!r}"
                errors.append(f"{name} must be {rule}{shown}")
                return default

        names = [n.strip() for n in (env.get(DETECTORS) or "").split(",") if n.strip()] or None
        total = read(UPSTREAM_TOTAL, _number(zero_ok=True), 600.0, "a number of seconds >= 0 (0 = no bound)")
        keepalive = read(KEEPALIVE, _number(zero_ok=True), 0.0, "a number of seconds >= 0 (0 = off)")
        out = cls(
            db_url=(env.get(DB) or "").strip() or None,
            detectors=names,
            upstream_url=(env.get(UPSTREAM) or "").strip() or None,
            upstream_api_key=env.get(UPSTREAM_KEY) or None,
            max_body_bytes=read(MAX_BODY, _positive_int, 1 << 20, "a positive number of bytes"),
            warm_chat_model=read(WARM_CHAT, _flag, False, "0 or 1"),
            sse_keepalive_s=keepalive or None,
            upstream_timeout_s=read(UPSTREAM_TIMEOUT, _number(zero_ok=False), 120.0, "a number of seconds > 0"),
            upstream_total_timeout_s=total or None,
            state_ttl_days=read(STATE_TTL, _number(zero_ok=True), 30.0, "a number of days >= 0 (0 = keep forever)"),
            warmup=read(WARMUP, _choice(WARMUP_MODES), "before_serving", f"one of {', '.join(WARMUP_MODES)}"),
            strict_detectors=read(STRICT, _flag, True, "0 or 1"),
            num_threads=read(NUM_THREADS, _positive_int, None, "a positive integer"),
            log_level=read(LOG_LEVEL, _choice(LOG_LEVELS), "info", f"one of {', '.join(LOG_LEVELS)}"),
        )
        if errors:
            raise ConfigError("invalid service configuration: " + "; ".join(errors))
        return out

    def chat_kwargs(self) -> dict[str, Any]:
        """The ChatConfig fields this environment sets."""
        return {"upstream_url": self.upstream_url, "upstream_api_key": self.upstream_api_key,
                "warm_local_model": self.warm_chat_model, "sse_keepalive_s": self.sse_keepalive_s,
                "timeout_s": self.upstream_timeout_s, "total_timeout_s": self.upstream_total_timeout_s}


def _number(*, zero_ok: bool) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise ValueError(raw)
        return value

    return parse


def _positive_int(raw: str) -> int:
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(raw)
    return int(raw)


def _flag(raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ValueError(raw)
    return raw == "1"


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in options:
            raise ValueError(raw)
        return raw.lower()

    return parse
