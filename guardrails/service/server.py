"""`run_server`: uvicorn in front of `create_app`, configured from arguments and environment variables.

Workers are separate processes, so configuration travels by environment and every worker builds its own app
through the `app_from_env` factory (one code path for one worker or many). Each worker loads its own copy of
the detectors; state shared between workers (settings, audit, session state, tenants) lives in the database.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import timedelta

from fastapi import FastAPI

from ..errors import ConfigError
from . import env as E
from .app import create_app
from .deps import ChatConfig
from .env import ServiceEnv
from .observability import configure_json_logging


def app_from_env() -> FastAPI:
    """The uvicorn factory (`guardrails.service.server:app_from_env`): builds the app from RAILGUARD_* vars
    (`guardrails.service.env`; a bad value is a ConfigError naming every offending variable)."""
    from ..store import SettingsStore

    env = ServiceEnv.from_environ()
    configure_json_logging(env.log_level)
    # the lifespan prunes session state (hourly, with this TTL): the store need not do it on writes too
    return create_app(store=SettingsStore(env.db_url, state_ttl=None), detectors=env.detectors,
                      chat=ChatConfig(**env.chat_kwargs()), max_body_bytes=env.max_body_bytes,
                      state_ttl=timedelta(days=env.state_ttl_days))


def run_server(host: str = "127.0.0.1", port: int = 8080, db_url: str | None = None, *, workers: int = 1,
               detectors: list[str] | None = None, upstream_url: str | None = None,
               admin_key: str | None = None, log_level: str = "info") -> None:
    """Serve until interrupted. Arguments override the RAILGUARD_* environment for every worker.

    The configuration is checked, and the store opened once, here in the parent before any worker starts: a bad
    value or an unreachable database raises (ConfigError / StoreError) instead of workers that die at start-up
    and are replaced forever."""
    import uvicorn

    from ..store import SettingsStore

    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if not 0 <= port <= 65535:  # else the bind fails with OverflowError, after the workers were set up
        raise ConfigError(f"port must be 0-65535, got {port}")
    if db_url:
        os.environ[E.DB] = db_url
    if detectors:
        os.environ[E.DETECTORS] = ",".join(detectors)
    if upstream_url:
        os.environ[E.UPSTREAM] = upstream_url
    if admin_key:
        os.environ["RAILGUARD_ADMIN_KEY"] = admin_key
    os.environ[E.LOG_LEVEL] = log_level
    env = ServiceEnv.from_environ()
    if env.detectors:
        from ..detector import discover

        registered = discover("railguard.detectors")
        unknown = [n for n in env.detectors if n not in registered]
        if unknown:
            raise ConfigError(f"unknown detector(s) {unknown}; registered: {sorted(registered)}")
    SettingsStore(env.db_url).close()  # reachable, writable, a schema this version understands
    if workers > 1 and env.num_threads is None:
        # Each worker process runs its own torch thread pool: split the cores instead of oversubscribing them
        # (N workers x all-cores threads thrash, and the tail latency of every request grows with it).
        os.environ[E.NUM_THREADS] = str(max(1, (os.cpu_count() or 1) // workers))
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers are separate processes: prometheus-client's multiprocess mode (set before they import it)
        # lets /metrics on any worker report the sum over all of them. A fresh directory per server run.
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="railguard-metrics-")
    configure_json_logging(env.log_level)
    try:
        # access_log off: uvicorn's line holds the raw path (user ids) and query; ours logs route templates.
        uvicorn.run("guardrails.service.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                    access_log=False, log_config=None, log_level=env.log_level, timeout_graceful_shutdown=10,
                    # longer than clients' pool expiry (httpx: 5 s), so a client never reuses a connection the
                    # server is closing at that instant ("server disconnected" on a request it never read)
                    timeout_keep_alive=30)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
