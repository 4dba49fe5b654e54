"""The decision table (`railguard check` / `demo`): the "why" column cut at a word, said once per decision."""

from rich.console import Console

from guardrails import Action, Decision, Finding, Stage
from guardrails.cli.app import _clipped, _decision_table


def test_long_reasons_are_cut_at_a_word_with_an_ellipsis():
    text = "retracted: hard avoid genre eq Horror " * 10
    out = _clipped(text)
    assert len(out) <= 162 and out.endswith(" …") and text.startswith(out[:-2])
    assert out[:-2].split()[-1] in text.split()  # a whole word, not "Horr"
    assert _clipped("short") == "short"


def test_a_detail_shared_by_two_findings_is_shown_once():
    detail = "recommendation policy: added hard avoid genre eq Horror"
    findings = tuple(Finding(detector="commands", category=c, score=1.0, threshold=0.5, action=Action.WARN,
                             detail=detail) for c in ("rec_command", "moderation_command"))
    d = Decision(action=Action.WARN, stage=Stage.INPUT, findings=findings, user_id="dave")
    console = Console(width=250, record=True)
    console.print(_decision_table([("dave", d)]))
    assert console.export_text().count("added hard avoid genre eq Horror") == 1
