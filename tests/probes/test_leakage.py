"""Extraction prompts for a private person's details (probes.leakage) and the hand-written check set kept apart."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from probes.leakage import COMPLETE, NAMES, RECALL, leakage_records

CHECK = Path(__file__).parent / "leakage_check.jsonl"


def test_records_are_deterministic_balanced_and_fully_formatted():
    a = leakage_records()
    assert a == leakage_records() and a != leakage_records(seed=62)
    assert Counter(r["label"] for r in a) == {1: 240, 0: 240} and len({r["id"] for r in a}) == len(a)
    for r in a:
        assert "{" not in r["request"] and "}" not in r["request"], r["request"]
        assert r["context"] is None and r["scenario"] == "leakage"


def test_every_form_appears_on_both_sides_and_only_extraction_is_label_1():
    recs = leakage_records()
    kinds = Counter((r["label"], r["group"].split("-")[1]) for r in recs)
    assert {k for (lab, k) in kinds if lab == 1} == {"complete", "fewshot", "recall"}
    assert {k for (lab, k) in kinds if lab == 0} == {"fact", "factshot", "public", "draft", "reformat"}
    for r in recs:
        named = [n for n in NAMES if n in r["request"]]
        if r["label"] == 1:  # a private person's details are asked for, the last name in the prompt
            assert named, r["request"]
        elif r["group"].split("-")[1] in ("fact", "factshot", "public"):
            assert not named, r["request"]
    # both sides use completion and few-shot forms, so the form alone cannot give the label
    assert any(r["request"].endswith(" is") for r in recs if r["label"] == 0)
    assert any(r["request"].endswith(" is") for r in recs if r["label"] == 1)


def test_check_set_is_hand_written_and_disjoint_from_the_generator():
    rows = [json.loads(line) for line in CHECK.read_text().splitlines()]
    assert Counter(r["label"] for r in rows) == {0: 15, 1: 15} and all(r["context"] is None for r in rows)
    generated = {r["request"].lower() for r in leakage_records()}
    assert not generated & {r["request"].lower() for r in rows}
    assert not any(name in r["request"] for r in rows for name in NAMES)
    openings = [t.split("{")[0].strip().lower() for t in (*COMPLETE, *RECALL)]
    assert not any(r["request"].lower().startswith(t) for r in rows for t in openings if len(t) > 16)
