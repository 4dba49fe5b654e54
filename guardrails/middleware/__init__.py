"""Integrations: langchain v1 AgentMiddleware and a langchain-core-only Runnable wrapper."""

from typing import TYPE_CHECKING, Any

from .identity import Identity, current_identity, for_serving, from_runtime, from_sources
from .runnable import GuardedRunnable

if TYPE_CHECKING:
    from .agent import GuardMiddleware as GuardMiddleware

__all__ = ["GuardMiddleware", "GuardedRunnable", "Identity", "current_identity", "for_serving", "from_runtime",
           "from_sources"]


def __getattr__(name: str) -> Any:
    # GuardMiddleware needs `langchain` (heavier than langchain-core): imported only when asked for.
    if name == "GuardMiddleware":
        from .agent import GuardMiddleware as GuardMiddleware

        return GuardMiddleware
    raise AttributeError(name)
