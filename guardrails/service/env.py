"""The service's RAILGUARD_* environment, read and checked in one place.

`run_server` checks it in the parent process before uvicorn starts any worker, so a typo is one error line and a
non-zero exit, not a worker that dies at start-up and is replaced forever (`--workers N`) or a server that looks
ready and blocks every check. Every worker reads the same variables again through `ServiceEnv.from_environ()`.
Values of secrets (API keys, database URLs, which may hold a password) are never quoted in errors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..decision import FAIL_MODES_ENV, parse_fail_modes
from ..errors import ConfigError

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
FAIL_MODES = FAIL_MODES_ENV  # per-detector fail mode, e.g. "harm=closed,commands=open"

WARMUP_MODES = ("before_serving", "background")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_SECRET = {DB, UPSTREAM_KEY, UPSTREAM}  # never quoted in errors (a URL may hold a password)


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
    fail_modes: dict[str, str] | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *,
                     only: Iterable[str] | None = None) -> ServiceEnv:
        """Read the RAILGUARD_* variables the service uses; all bad values are reported in one ConfigError.
        `only`: read just these fields (the rest keep their defaults), for a caller that needs a few of them."""
        env = os.environ if environ is None else environ
        wanted = None if only is None else set(only)
        if wanted is not None and not wanted <= set(_FIELDS):
            raise ValueError(f"unknown ServiceEnv field(s): {sorted(wanted - set(_FIELDS))}")
        errors: list[str] = []
        values: dict[str, Any] = {}
        for name, (var, parse, rule) in _FIELDS.items():
            if wanted is not None and name not in wanted:
                continue
            raw = (env.get(var) or "").strip()
            if not raw:
                continue
            try:
                values[name] = parse(raw)
            except (ValueError, OverflowError):
                shown = "" if var in _SECRET else f", got {raw[:60]!r}"
                errors.append(f"{var} must be {rule}{shown}")
        if errors:
            raise ConfigError("invalid service configuration: " + "; ".join(errors))
        if values.get("sse_keepalive_s") == 0:
            values["sse_keepalive_s"] = None
        if values.get("upstream_total_timeout_s") == 0:
            values["upstream_total_timeout_s"] = None
        return cls(**values)

    def chat_kwargs(self) -> dict[str, Any]:
        """The ChatConfig fields this environment sets."""
        return {"upstream_url": self.upstream_url, "upstream_api_key": self.upstream_api_key,
                "warm_local_model": self.warm_chat_model, "sse_keepalive_s": self.sse_keepalive_s,
                "timeout_s": self.upstream_timeout_s, "total_timeout_s": self.upstream_total_timeout_s}


def _number(*, zero_ok: bool, most: float = 1e9) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        if not raw.isascii() or "_" in raw:  # float() also reads "٣" and "1_0"
            raise ValueError(raw)
        value = float(raw)
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok) or value > most:
            raise ValueError(raw)
        return value

    return parse


def _positive_int(most: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= most:
            raise ValueError(raw)
        return int(raw)

    return parse


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _flag(raw: str) -> bool:
    if raw.lower() not in _TRUE + _FALSE:
        raise ValueError(raw)
    return raw.lower() in _TRUE


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() not in options:
            raise ValueError(raw)
        return raw.lower()

    return parse


def _names(raw: str) -> list[str] | None:
    return [n.strip() for n in raw.split(",") if n.strip()] or None


def _text(raw: str) -> str:
    return raw


def _http_url(raw: str) -> str:
    """An http(s) URL with a host: "notaurl" started the service and failed every proxied chat with a 502."""
    import httpx

    try:
        ok = raw.startswith(("http://", "https://")) and bool(httpx.URL(raw).host)
    except (httpx.InvalidURL, ValueError, TypeError):
        ok = False
    if not ok:
        raise ValueError("not an http(s) URL")
    return raw


# field -> (variable, parser, what a valid value is)
_FIELDS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "db_url": (DB, _text, "a database URL"),
    "detectors": (DETECTORS, _names, "comma-separated detector names"),
    "upstream_url": (UPSTREAM, _http_url, "an http(s) URL with a host"),
    "upstream_api_key": (UPSTREAM_KEY, _text, "an API key"),
    "max_body_bytes": (MAX_BODY, _positive_int(1 << 30), "a number of bytes from 1 to 1073741824"),
    "warm_chat_model": (WARM_CHAT, _flag, "1/0 (or true/false, yes/no, on/off)"),
    "sse_keepalive_s": (KEEPALIVE, _number(zero_ok=True), "a number of seconds >= 0 (0 = off)"),
    "upstream_timeout_s": (UPSTREAM_TIMEOUT, _number(zero_ok=False), "a number of seconds > 0"),
    "upstream_total_timeout_s": (UPSTREAM_TOTAL, _number(zero_ok=True), "a number of seconds >= 0 (0 = no bound)"),
    "state_ttl_days": (STATE_TTL, _number(zero_ok=True, most=36_500),
                       "a number of days from 0 (keep forever) to 36500"),
    "warmup": (WARMUP, _choice(WARMUP_MODES), f"one of {', '.join(WARMUP_MODES)}"),
    "strict_detectors": (STRICT, _flag, "1/0 (or true/false, yes/no, on/off)"),
    "num_threads": (NUM_THREADS, _positive_int(4096), "an integer from 1 to 4096"),
    "log_level": (LOG_LEVEL, _choice(LOG_LEVELS), f"one of {', '.join(LOG_LEVELS)}"),
    "fail_modes": (FAIL_MODES, parse_fail_modes, "comma-separated name=open|closed (e.g. harm=closed)"),
}
