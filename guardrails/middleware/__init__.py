"""Integrations: langchain v1 AgentMiddleware and a langchain-core-only Runnable wrapper."""

from .identity import Identity, current_identity, from_runtime, from_sources
from .runnable import GuardedRunnable

__all__ = ["GuardMiddleware", "GuardedRunnable", "Identity", "current_identity", "from_runtime", "from_sources"]


def __getattr__(name: str) -> object:
    # GuardMiddleware needs the optional `langchain` package; import it only when asked for.
    if name == "GuardMiddleware":
        from .agent import GuardMiddleware

        return GuardMiddleware
    raise AttributeError(name)
