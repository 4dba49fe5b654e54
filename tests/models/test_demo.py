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


def test_full_demo_every_plugin_turn_as_scripted(db_url):
    """The main job with every plugin's scripted users: each turn's action is the one its script promises."""
    results = run_demo(db_url=db_url)  # the defaults `railguard demo` uses
    assert len(results) >= 10
    off = [(r.turn.user_id, r.turn.note, r.action.value, r.turn.expect) for r in results if r.as_expected is False]
    assert not off
    seen = {r.action for r in results}
    assert {Action.ALLOW, Action.REDACT, Action.BLOCK} <= seen
    assert {d.stage for r in results for d in r.decisions} >= {Stage.INPUT, Stage.OUTPUT}
    # with MovieLens beside the clone (as in CI) every registered detector runs, the rec commands one included
    assert {"commands", "privacy", "harm"} <= {f.detector for r in results for d in r.decisions for f in d.findings}


def test_demo_runs_without_a_detector_whose_data_is_missing(db_url, monkeypatch, caplog):
    """No MovieLens beside the clone: the demo runs every other detector and says which one it left out, as
    Guard.from_registry() does (listed in `unavailable`); asked for by name, the detector refuses to build."""
    from guardrails import detector as registry
    from guardrails.errors import DataNotAvailableError
    from guardrails.pipeline import Guard

    def no_movielens(_ctx):
        raise DataNotAvailableError("MovieLens movies.csv not found under /nowhere (set RAILGUARD_MOVIELENS)")

    monkeypatch.setitem(registry._local["railguard.detectors"], "commands", no_movielens)
    with caplog.at_level("WARNING", logger="railguard.demo"):
        results = run_demo(db_url=db_url, max_new_tokens=8, turns=spine_turns())
    assert [r.action for r in results] == [Action.ALLOW, Action.REDACT, Action.BLOCK]
    detectors = {f.detector for r in results for d in r.decisions for f in d.findings}
    assert "commands" not in detectors and {"pii", "validator"} <= detectors
    assert "without detector 'commands'" in caplog.text and "RAILGUARD_MOVIELENS" in caplog.text
    with pytest.raises(DataNotAvailableError):
        Guard.from_registry(["commands"])
    guard = Guard.from_registry()
    assert "commands" not in guard.detector_names and {"privacy", "harm", "pii"} <= set(guard.detector_names)
    assert list(guard.unavailable) == ["commands"] and "RAILGUARD_MOVIELENS" in guard.unavailable["commands"]


def test_demo_turns_carry_their_sessions_system_prompt(db_url, monkeypatch):
    """A session's system prompt (a deployment's role and norms) reaches the guard's detectors and the agent; a
    session that switches prompts mid-way is refused before any turn runs."""
    from guardrails.demo import DemoTurn
    from guardrails.detector import BaseDetector

    seen: list[tuple[str, ...]] = []

    class Recorder(BaseDetector):
        name = "recorder"
        stages = frozenset({Stage.INPUT})

        def predict(self, request):
            seen.append(tuple(m.content for m in request.messages if m.role == "system"))
            return []

    import guardrails.demo as demo_mod

    monkeypatch.setattr(demo_mod, "_demo_detectors", lambda store: [Recorder()])
    run_demo(db_url=db_url, max_new_tokens=2, turns=[
        DemoTurn(user_id="u", session_id="a", text="hello", system_prompt="You are a billing assistant."),
        DemoTurn(user_id="v", session_id="b", text="hello")])
    assert seen == [("You are a billing assistant.",), (demo_mod.DEFAULT_SYSTEM_PROMPT,)]
    seen.clear()
    with pytest.raises(ValueError, match="changes its system prompt"):
        run_demo(db_url=db_url, max_new_tokens=2, turns=[
            DemoTurn(user_id="u", session_id="a", text="hi", system_prompt="one"),
            DemoTurn(user_id="u", session_id="a", text="hi", system_prompt="two")])
    assert seen == []
