"""Who is talking: user and session ids from the LangGraph runtime context or the RunnableConfig.

Identity flows through context/config, never through globals. Order: `runtime.context` (the agent's
`context_schema`: dataclass, TypedDict, pydantic model or mapping with `user_id` / `session_id`), then
`configurable`, then `metadata`; the session falls back to LangGraph's `thread_id`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import InvalidInputError


@dataclass(frozen=True)
class Identity:
    """Whose turn it is. While a guarded model runs (`current_identity`), also the guard's ``tenant_id``, the user's
    stored ``settings`` and the guard's ``shadow`` flag (`for_serving`): what a prefill observer needs to give the
    verdict the guard's own check would (the tenant's drift state, the user's thresholds, shadow, opt-outs)."""

    user_id: str
    session_id: str | None = None
    tenant_id: str | None = None
    settings: Mapping[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)
    shadow: bool = False
    # reads `settings` when they are not given: only an observer that needs them pays the store read
    settings_source: Callable[[], Mapping[str, Any]] | None = field(default=None, compare=False, hash=False,
                                                                     repr=False)

    def user_settings(self) -> Mapping[str, Any]:
        """The user's stored settings: as given, else read now from `settings_source`, else none."""
        if self.settings is not None:
            return self.settings
        return self.settings_source() if self.settings_source is not None else {}


def for_serving(guard: Any, who: Identity) -> Identity:
    """``who`` with the ``guard``'s tenant, shadow flag and a way to read this user's stored settings (none
    without a store): set as `current_identity` while the guarded model runs. The store is read only when an
    observer asks (`Identity.user_settings`): a model call with no fused probe costs no read."""
    tenant = getattr(guard, "tenant_id", None)
    store = getattr(guard, "store", None)
    source = (lambda: store.get(tenant, who.user_id).settings) if store is not None and isinstance(tenant, str) \
        else None
    return replace(who, tenant_id=tenant if isinstance(tenant, str) else None, settings_source=source,
                   shadow=bool(getattr(guard, "shadow", False)))


#: Set by the middleware while the guarded model runs, so prefill observers (fused probes) know whose turn it is.
current_identity: ContextVar[Identity | None] = ContextVar("railguard_identity", default=None)


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def from_sources(context: Any = None, config: Mapping[str, Any] | None = None,
                 default_user_id: str | None = None) -> Identity:
    config = config or {}
    configurable = config.get("configurable") or {}
    metadata = config.get("metadata") or {}
    user = _get(context, "user_id") or configurable.get("user_id") or metadata.get("user_id") or default_user_id
    session = (_get(context, "session_id") or configurable.get("session_id") or metadata.get("session_id")
               or configurable.get("thread_id"))
    if not user:
        raise InvalidInputError(
            "no user_id: pass context=YourContext(user_id=...) to the agent, or "
            "config={'configurable': {'user_id': ...}}, or set default_user_id on the guard middleware"
        )
    return Identity(user_id=str(user), session_id=str(session) if session is not None else None)


def from_runtime(runtime: Any, default_user_id: str | None = None) -> Identity:
    """Identity inside an agent hook: runtime.context first, then the graph's RunnableConfig."""
    config: Mapping[str, Any] = {}
    try:
        from langgraph.config import get_config

        config = get_config()
    except (ImportError, RuntimeError):  # outside a graph run
        pass
    return from_sources(_get(runtime, "context"), config, default_user_id)
