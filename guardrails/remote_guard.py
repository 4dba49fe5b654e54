"""`RemoteGuard`: a `Guard` look-alike backed by the railguard HTTP service (the clients in `guardrails.client`).

Also importable as `guardrails.client.RemoteGuard` and `guardrails.RemoteGuard`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .client import AsyncRailguardClient, RailguardClient
from .client_transport import PerLoop
from .decision import Decision, Stage
from .guard_types import HistoryScreen

__all__ = ["RemoteGuard"]


class RemoteGuard:
    """A `Guard` look-alike backed by the service: `check`/`acheck` return the same Decision, so the existing
    integrations run unchanged against a remote guard, e.g.
    `create_agent(model, tools, middleware=[RemoteGuard(url, api_key=key).middleware()])`.

    The async methods use one AsyncRailguardClient per running event loop (an async client's connections belong to
    the loop that opened them), so it works from several `asyncio.run` calls or sync-over-async bridges in turn;
    each is closed when its loop shuts down, or by `aclose()`/`close()`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, **client_kw: Any) -> None:
        self.client = RailguardClient(base_url, api_key, **client_kw)
        self._aclients: PerLoop[AsyncRailguardClient] = PerLoop(
            lambda: AsyncRailguardClient(base_url, api_key, **client_kw))

    @property
    def aclient(self) -> AsyncRailguardClient:
        """The async client of the running event loop (call from async code)."""
        return self._aclients.get()

    def check(self, content: Any, *, user_id: str, session_id: str | None = None,
              stage: Stage | str = Stage.INPUT, metadata: Mapping[str, Any] | None = None) -> Decision:
        return self.client.check(content, user_id=user_id, session_id=session_id, stage=stage, metadata=metadata)

    async def acheck(self, content: Any, *, user_id: str, session_id: str | None = None,
                     stage: Stage | str = Stage.INPUT, metadata: Mapping[str, Any] | None = None) -> Decision:
        return await self.aclient.check(content, user_id=user_id, session_id=session_id, stage=stage,
                                        metadata=metadata)

    def screen_history(self, messages: Sequence[Mapping[str, Any]], *, user_id: str,
                       session_id: str | None = None, include_last: bool = False) -> HistoryScreen:
        """Same contract as `Guard.screen_history`: the messages before the last one are screened by the service
        (the last is `check`'s, unless `include_last`), and the whole conversation comes back with them redacted."""
        if include_last:  # the service screens every message it is sent
            return self.client.screen_history([dict(m) for m in messages], user_id=user_id, session_id=session_id)
        earlier = [dict(m) for m in messages[:-1]]
        if not earlier:
            return HistoryScreen([dict(m) for m in messages], [], None)
        return _with_last(self.client.screen_history(earlier, user_id=user_id, session_id=session_id), messages)

    async def ascreen_history(self, messages: Sequence[Mapping[str, Any]], *, user_id: str,
                              session_id: str | None = None, include_last: bool = False) -> HistoryScreen:
        if include_last:
            return await self.aclient.screen_history([dict(m) for m in messages], user_id=user_id,
                                                     session_id=session_id)
        earlier = [dict(m) for m in messages[:-1]]
        if not earlier:
            return HistoryScreen([dict(m) for m in messages], [], None)
        screen = await self.aclient.screen_history(earlier, user_id=user_id, session_id=session_id)
        return _with_last(screen, messages)

    def middleware(self, **kwargs: Any) -> Any:
        """A langchain v1 AgentMiddleware running this remote guard at every stage (see GuardMiddleware)."""
        from .middleware.agent import GuardMiddleware

        return GuardMiddleware(self, **kwargs)

    def wrap(self, runnable: Any, **kwargs: Any) -> Any:
        """Guard a langchain-core Runnable with this remote guard (see GuardedRunnable)."""
        from .middleware.runnable import GuardedRunnable

        return GuardedRunnable(guard=self, inner=runnable, **kwargs)

    def close(self) -> None:
        """Close the sync client, and the async clients of event loops still running (on those loops)."""
        self.client.close()
        self._aclients.close()

    async def aclose(self) -> None:
        """Close every client: this event loop's async one at once, other running loops' on their loops."""
        self.client.close()
        await self._aclients.aclose()


def _with_last(screen: HistoryScreen, messages: Sequence[Mapping[str, Any]]) -> HistoryScreen:
    """The service's screen of the earlier messages, with the (unscreened) last message appended."""
    return HistoryScreen([*screen.messages, dict(messages[-1])], screen.decisions, screen.blocked)

