"""Generated direct abuse for the toxic head (personalization.direct_abuse) and the head's per-row weights."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from guardrails.errors import ConfigError
from personalization.direct_abuse import BENIGN, TOXIC, direct_abuse_records
from personalization.heads import BaseHeads

CHECKS = [Path(__file__).parents[1] / "personalization" / f"toxicity_check{n}.jsonl" for n in ("", "2", "3", "4", "5")]


def test_records_are_deterministic_balanced_unique_and_grouped_by_template():
    a = direct_abuse_records()
    assert a == direct_abuse_records() and a != direct_abuse_records(seed=42)
    assert Counter(r["label"] for r in a) == {"toxic": 900, "benign": 900}
    assert len({r["id"] for r in a}) == len(a) and len({r["text"] for r in a}) == len(a)
    for r in a:
        assert r["task"] == "toxicity" and "{" not in r["text"] and "}" not in r["text"], r
        kind, t = r["group"].split("-")[1:]
        assert kind == ("toxic" if r["label"] == "toxic" else "benign")
        assert 0 <= int(t) < len(TOXIC if kind == "toxic" else BENIGN)
    assert {r["group"] for r in a} == {f"abuse-toxic-{i}" for i in range(len(TOXIC))} | {
        f"abuse-benign-{i}" for i in range(len(BENIGN))}


#: Check 4 was written before the generator's third version, which was then written knowing which of its rows the
#: second version missed; three of its short texts are now generated verbatim, so it is a development check, not a
#: blind one. Checks 1-3 and 5 were each written before the version they judge and share no text with it.
CHECK4_GENERATED = {"what a moron", "you are an angel.", "what a day"}


def test_hand_written_checks_are_disjoint_from_generated_text():
    generated = {r["text"].lower() for r in direct_abuse_records()}
    seen: set[str] = set()
    for path in CHECKS:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        texts = {r["text"].lower() for r in rows}
        shared = CHECK4_GENERATED if path.name == "toxicity_check4.jsonl" else set()
        assert texts & generated == shared and not texts & seen
        assert Counter(r["label"] for r in rows)["toxic"] == Counter(r["label"] for r in rows)["benign"]
        seen |= texts


def test_row_weight_must_be_one_positive_weight_per_row():
    E = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    y = ["toxic", "benign"] * 4
    heads = BaseHeads(use_lexical=False)
    for bad in ([1.0] * 7, [1.0] * 7 + [0.0]):
        with pytest.raises(ConfigError, match="row_weight"):
            heads.fit(E, ["t"] * 8, y, E, ["t"] * 8, y, row_weight=bad)
