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
