"""`run_server`: uvicorn in front of `create_app`, configured from arguments and environment variables.

Workers are separate processes, so configuration travels by environment and every worker builds its own app
through the `app_from_env` factory (one code path for one worker or many). Each worker loads its own copy of
the detectors; state shared between workers (settings, audit, session state, tenants) lives in the database.
"""

from __future__ import annotations

import os
import tempfile

from fastapi import FastAPI

from ..errors import ConfigError
from .app import create_app
from .deps import ChatConfig
from .observability import configure_json_logging

ENV_DB = "RAILGUARD_DB_URL"
ENV_DETECTORS = "RAILGUARD_DETECTORS"  # comma-separated subset of registered detectors (default: all)
ENV_UPSTREAM = "RAILGUARD_UPSTREAM_URL"  # OpenAI-compatible base URL for /v1/chat/completions
ENV_UPSTREAM_KEY = "RAILGUARD_UPSTREAM_API_KEY"
ENV_MAX_BODY = "RAILGUARD_MAX_BODY_BYTES"
ENV_WARM_CHAT = "RAILGUARD_WARM_CHAT_MODEL"  # "1": load the local chat model before /readyz turns 200
ENV_KEEPALIVE = "RAILGUARD_SSE_KEEPALIVE_S"  # seconds between SSE keep-alive comments while buffering
ENV_UPSTREAM_TIMEOUT = "RAILGUARD_UPSTREAM_TIMEOUT_S"  # per network operation (default 120)
ENV_UPSTREAM_TOTAL = "RAILGUARD_UPSTREAM_TOTAL_TIMEOUT_S"  # whole upstream call (default 600; 0 = no bound)


def app_from_env() -> FastAPI:
    """The uvicorn factory (`guardrails.service.server:app_from_env`): builds the app from RAILGUARD_* vars."""
    from ..store import SettingsStore

    configure_json_logging(os.environ.get("RAILGUARD_LOG_LEVEL", "info"))
    names = [n.strip() for n in os.environ.get(ENV_DETECTORS, "").split(",") if n.strip()] or None
    chat = ChatConfig(upstream_url=os.environ.get(ENV_UPSTREAM) or None,
                      upstream_api_key=os.environ.get(ENV_UPSTREAM_KEY) or None,
                      warm_local_model=os.environ.get(ENV_WARM_CHAT, "") == "1",
                      sse_keepalive_s=float(os.environ.get(ENV_KEEPALIVE) or 0) or None,
                      timeout_s=_seconds(ENV_UPSTREAM_TIMEOUT, 120.0, zero_ok=False),
                      total_timeout_s=_seconds(ENV_UPSTREAM_TOTAL, 600.0) or None)
    return create_app(store=SettingsStore(os.environ.get(ENV_DB) or None), detectors=names, chat=chat,
                      max_body_bytes=int(os.environ.get(ENV_MAX_BODY, str(1 << 20))))


def _seconds(name: str, default: float, *, zero_ok: bool = True) -> float:
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 <= value < float("inf")) or (value == 0 and not zero_ok):
        raise ConfigError(f"{name} must be a number of seconds {'>= 0' if zero_ok else '> 0'}, got {raw!r}")
    return value


def run_server(host: str = "127.0.0.1", port: int = 8080, db_url: str | None = None, *, workers: int = 1,
               detectors: list[str] | None = None, upstream_url: str | None = None,
               admin_key: str | None = None, log_level: str = "info") -> None:
    """Serve until interrupted. Arguments override the RAILGUARD_* environment for every worker."""
    import uvicorn

    if db_url:
        os.environ[ENV_DB] = db_url
    if detectors:
        os.environ[ENV_DETECTORS] = ",".join(detectors)
    if upstream_url:
        os.environ[ENV_UPSTREAM] = upstream_url
    if admin_key:
        os.environ["RAILGUARD_ADMIN_KEY"] = admin_key
    os.environ["RAILGUARD_LOG_LEVEL"] = log_level
    if workers > 1 and not os.environ.get("RAILGUARD_NUM_THREADS"):
        # Each worker process runs its own torch thread pool: split the cores instead of oversubscribing them
        # (N workers x all-cores threads thrash, and the tail latency of every request grows with it).
        os.environ["RAILGUARD_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers are separate processes: prometheus-client's multiprocess mode (set before they import it)
        # lets /metrics on any worker report the sum over all of them. A fresh directory per server run.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="railguard-metrics-")
    configure_json_logging(log_level)
    # access_log off: uvicorn's line holds the raw path (user ids) and query; ours logs route templates.
    uvicorn.run("guardrails.service.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                access_log=False, log_config=None, log_level=log_level, timeout_graceful_shutdown=10,
                # longer than clients' pool expiry (httpx: 5 s), so a client never reuses a connection the
                # server is closing at that instant ("server disconnected" on a request it never read)
                timeout_keep_alive=30)
