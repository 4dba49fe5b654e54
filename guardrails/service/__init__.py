"""HTTP service (`railguard serve`, extra `server`): checks per stage, per-user settings, tenants and keys,
an OpenAI-compatible guarded proxy, health/readiness/metrics. See `create_app` and `run_server`.

Exports are lazy so `guardrails.client` can import `guardrails.service.wire` without FastAPI installed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ChatConfig", "KeyRing", "Principal", "app_from_env", "create_app", "run_server"]
_WHERE = {"create_app": "app", "ChatConfig": "deps", "KeyRing": "auth", "Principal": "auth",
          "app_from_env": "server", "run_server": "server"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(name)
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
