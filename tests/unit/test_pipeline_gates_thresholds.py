"""Mutation-audit gaps (session 18): each test fails on a specific single-point mutant of the code it names."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from guardrails import Action
from guardrails.errors import InvalidInputError
from guardrails.pipeline import DetectorSlot, Guard


class FakeStore:
    def __init__(self, settings):
        self.settings = settings
    def get(self, tenant, user):
        return SimpleNamespace(settings=self.settings.get(user, {}))

def test_a_shadow_gate_never_skips_the_enforcing_detectors(keyword):
    gate = DetectorSlot(keyword("\x00", name="gate", gate=True), shadow=True)
    heavy = keyword("x", name="heavy")
    d = Guard([gate, heavy]).check("x\x00", user_id="u")
    assert heavy.calls == 1 and d.blocked

def test_a_gate_the_user_relaxed_never_skips_the_other_detectors(keyword):
    """The gate check ignored user thresholds while the decision applied them: a relaxed gate finding skipped every
    other detector and the decision was a bare allow (session 25 audit)."""
    gate, heavy = keyword("\x01", name="gate", gate=True), keyword("card", name="heavy")
    g = Guard([gate, heavy], store=FakeStore({"bob": {"guard": {"thresholds": {"gate": 2.0}}}}))
    d = g.check("my card\x01", user_id="bob")
    assert heavy.calls == 1 and d.blocked and {f.detector for f in d.findings if f.action is Action.BLOCK} == {
        "heavy"}
    assert g.check("my card\x01", user_id="alice").blocked and heavy.calls == 1  # alice's gate still blocks


def test_category_level_threshold_override(keyword):
    g = Guard([keyword("x")], store=FakeStore({"cat": {"guard": {"thresholds": {"keyword.x": 2.0}}},
                                               "other": {"guard": {"thresholds": {"keyword.y": 2.0}}}}))
    assert g.check("x", user_id="cat").action is Action.ALLOW
    assert g.check("x", user_id="other").action is Action.BLOCK

def test_message_count_ceiling(keyword):
    g = Guard([keyword("x")])
    g.check([{"role": "user", "content": "hi"}] * 1000, user_id="u")
    with pytest.raises(InvalidInputError):
        g.check([{"role": "user", "content": "hi"}] * 1001, user_id="u")


def test_screen_history_redacts_and_blocks_only_what_is_enforced():
    """Shadow decisions are alert-only in history screening too: a shadow guard reports the earlier card number
    but leaves the text as sent, and a shadow block stops nothing; an enforcing guard rewrites it."""
    from guardrails.detectors import PIIDetector

    history = [{"role": "user", "content": "my card is 4111 1111 1111 1111"},
               {"role": "assistant", "content": "noted"}, {"role": "user", "content": "thanks"}]
    for shadow in (True, False):
        screen = Guard([PIIDetector()], shadow=shadow).screen_history(history, user_id="u")
        assert [i for i, _ in screen.decisions] == [0], shadow
        assert ("4111 1111 1111 1111" in screen.messages[0]["content"]) is shadow
        assert screen.messages[1:] == history[1:] and screen.blocked is None
    assert history[0]["content"] == "my card is 4111 1111 1111 1111"  # the caller's list is never mutated
    blocking = Guard([PIIDetector(action="block")], shadow=True).screen_history(history, user_id="u")
    assert blocking.blocked is None and blocking.decisions and blocking.decisions[0][1].action is Action.BLOCK
    assert Guard([PIIDetector(action="block")]).screen_history(history, user_id="u").blocked is not None


def test_harm_score_equal_to_its_threshold_flags():
    """The harm detector flags at score >= threshold, the same boundary its calibration counted FPR with
    (personalization.heads: `neg >= t`) and the spine's per-user threshold gate uses."""
    import numpy as np

    from personalization import HarmDetector

    class Fixed:
        name = "fixed"

        def __init__(self, value):
            self.value = value

        def score(self, texts, profile):
            return {n: np.full(len(texts), self.value) for n in profile.categories}

    assert Guard([HarmDetector(Fixed(0.5))]).check("hello there", user_id="u").action is Action.BLOCK
    assert Guard([HarmDetector(Fixed(0.4999))]).check("hello there", user_id="u").action is Action.ALLOW


def test_an_endless_message_iterator_is_too_many_not_a_hang(keyword):
    import itertools

    with pytest.raises(InvalidInputError, match="too many messages"):
        Guard([keyword("x")]).check(itertools.repeat({"role": "user", "content": "hi"}), user_id="u")


async def test_a_hung_detector_only_exhausts_its_own_threads():
    """timeout_s stops the wait, not the work. Calls of a hung detector kept their threads in asyncio's shared
    default pool: after 6 of them every other detector (and the store reads) queued, timed out and fell to its
    fail mode, so a fail-open PII check let an e-mail through. Each detector now runs in its own pool; the caller's
    contextvars still reach the detector."""
    import asyncio
    import contextvars
    import threading

    from guardrails import BaseDetector
    from guardrails.detectors import PIIDetector

    release = threading.Event()
    who = contextvars.ContextVar("who", default="nobody")
    seen = []

    class Hung(BaseDetector):
        name = "hung"

        def predict(self, request):
            seen.append(who.get())
            release.wait(30)
            return []

    hung, other = Guard([Hung()], timeout_s=0.2), Guard([PIIDetector()], timeout_s=5)  # (room for a slow CI box)
    try:
        who.set("caller")
        stuck = await asyncio.gather(*(hung.acheck("x", user_id=f"u{i}") for i in range(12)))
        assert all(d.error and "TimeoutError" in d.error for d in stuck)
        d = await other.acheck("hi bob@example.com", user_id="u")
        assert d.action is Action.REDACT and d.error is None
        await asyncio.wait_for(asyncio.to_thread(lambda: None), 5)  # the default pool is free
        assert set(seen) == {"caller"}
        # The same guard, at the same time: the hung detector's calls (held until their timeout) must not hold
        # anything PII needs (a shared limit on live calls did: 3 of 8 PII checks timed out and allowed).
        both = Guard([Hung(), PIIDetector()], timeout_s=2)
        ds = await asyncio.gather(*(both.acheck("hi bob@example.com", user_id=f"v{i}") for i in range(8)))
        assert [d.action for d in ds] == [Action.REDACT] * 8
        assert all(f.category != "error" for d in ds for f in d.findings if f.detector == "pii")
    finally:
        release.set()


async def test_a_detector_stays_copyable_after_async_checks_and_its_pool_goes_with_it():
    """The pools live beside the detectors, not on them: a warmed-up detector can still be pickled or deep-copied
    (Ray, multiprocessing hand-off), and a dropped detector's pool is shut down."""
    import copy
    import gc
    import pickle

    from guardrails import detector as det_module
    from guardrails.detectors import PIIDetector

    pii = PIIDetector()
    assert (await Guard([pii]).acheck("mail bob@example.com", user_id="u")).action is Action.REDACT
    key = id(pii)
    assert key in det_module._EXECUTORS
    for clone in (copy.deepcopy(pii), pickle.loads(pickle.dumps(pii))):
        assert (await Guard([clone]).acheck("mail bob@example.com", user_id="u")).action is Action.REDACT
    pool = det_module._EXECUTORS[key][1]
    del pii, clone
    gc.collect()
    assert key not in det_module._EXECUTORS and pool._shutdown
