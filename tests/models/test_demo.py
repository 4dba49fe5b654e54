"""The main job end to end: the scripted conversation through a real agent on the local model."""

from __future__ import annotations

import pytest

from guardrails.decision import Action, Stage
from guardrails.demo import run_demo, spine_turns

pytestmark = pytest.mark.model


def test_demo_spine_turns_allow_redact_block(db_url):
    results = run_demo(db_url=db_url, max_new_tokens=8, turns=spine_turns())
    assert [r.action for r in results] == [Action.ALLOW, Action.REDACT, Action.BLOCK]
    assert all(r.as_expected for r in results)
    redact = results[1]
    assert redact.decisions[0].stage is Stage.INPUT and "4111" not in (redact.decisions[0].redacted_text or "")
    block = results[2]
    assert [d.stage for d in block.decisions] == [Stage.INPUT]  # the model never ran
    assert block.reply.startswith("I'm sorry")
