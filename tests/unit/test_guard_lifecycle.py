"""`Guard.close()` / `aclose()` / `with` / `async with`: detectors' resources released, detectors still usable."""

from __future__ import annotations

import asyncio
import logging

import pytest

from guardrails import Action, Guard, Stage
from guardrails import detector as det_module
from guardrails.decision import Finding
from guardrails.detector import BaseDetector, CheckRequest


class Holding(BaseDetector):
    """Counts closes; `sync_only` has close() but no aclose(); `broken` raises when closed."""

    stages = frozenset({Stage.INPUT})

    def __init__(self, name: str, *, sync_only: bool = False, broken: bool = False) -> None:
        self.name, self.broken = name, broken
        self.closed = self.aclosed = 0
        if not sync_only:
            self.aclose = self._aclose  # type: ignore[method-assign]

    def predict(self, request: CheckRequest) -> list[Finding]:
        return [Finding(detector=self.name, category="x", score=0.0, threshold=0.5, action=Action.ALLOW)]

    def close(self) -> None:
        self.closed += 1
        if self.broken:
            raise RuntimeError("close failed")

    async def _aclose(self) -> None:
        self.aclosed += 1
        if self.broken:
            raise RuntimeError("aclose failed")


def test_close_reaches_every_detector_even_after_one_fails(caplog):
    a, bad, c = Holding("a"), Holding("bad", broken=True), Holding("c")
    guard = Guard([a, bad, c])
    with caplog.at_level(logging.WARNING, logger="railguard.guard"):
        guard.close()
    assert (a.closed, bad.closed, c.closed) == (1, 1, 1)
    assert "closing detector 'bad' failed: RuntimeError" in caplog.text
    with Guard([a]) as g:
        assert g.check("hello", user_id="u").action is Action.ALLOW
    assert a.closed == 2


async def test_aclose_prefers_aclose_and_falls_back_to_close():
    a, sync_only, bad = Holding("a"), Holding("s", sync_only=True), Holding("bad", broken=True)
    async with Guard([a, sync_only, bad]) as g:
        assert (await g.acheck("hello", user_id="u")).action is Action.ALLOW
    assert (a.aclosed, a.closed) == (1, 0)
    assert sync_only.closed == 1 and bad.aclosed == 1


async def test_close_releases_the_worker_threads_and_the_detector_works_again():
    d = Holding("pooled")
    guard = Guard([d])
    await guard.acheck("hello", user_id="u")  # BaseDetector.apredict runs in the detector's own pool
    pool = det_module._EXECUTORS[id(d)][1]
    await guard.aclose()
    assert id(d) not in det_module._EXECUTORS and pool._shutdown
    assert (await guard.acheck("again", user_id="u")).action is Action.ALLOW  # a fresh pool
    assert det_module._EXECUTORS[id(d)][1] is not pool
    guard.close()
    assert id(d) not in det_module._EXECUTORS


def test_views_sharing_detectors_can_close_independently():
    """The service's tenant views share detector objects: closing one view leaves the others working."""
    d = Holding("shared")
    base = Guard([d])
    view = Guard(base.slots, tenant_id="t2")
    view.close()
    assert asyncio.run(base.acheck("hi", user_id="u")).action is Action.ALLOW
    assert base.check("hi", user_id="u").action is Action.ALLOW
    base.close()


@pytest.mark.parametrize("closer", ["close", "aclose"])
def test_a_guard_without_detectors_closes(closer):
    g = Guard([])
    out = getattr(g, closer)()
    if closer == "aclose":
        asyncio.run(out)
