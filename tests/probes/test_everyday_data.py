"""Context-free third-party requests (probes.everyday) and the hand-written check set kept apart from them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from probes.everyday import ASK, SENSITIVE, everyday_records

CHECK = Path(__file__).parent / "context_free_check.jsonl"


def test_records_are_deterministic_balanced_and_fully_formatted():
    a, b = everyday_records(), everyday_records()
    assert a == b and a != everyday_records(seed=32)
    labels = Counter(r["label"] for r in a)
    assert labels[1] == 240 and 0.9 <= labels[0] / labels[1] <= 1.1
    assert len({r["id"] for r in a}) == len(a)
    for r in a:
        assert "{" not in r["request"] and "}" not in r["request"], r["request"]
        assert r["scenario"] == "everyday" and r["request"][0].isupper()
        assert r["context"] is None or isinstance(r["context"], str)
    assert sum(r["context"] is None for r in a) / len(a) > 0.4  # mostly context-free: the gap they fill


def test_labels_follow_the_kind_and_groups_hold_out_phrasings():
    recs = everyday_records(n_pos=60)
    kinds = {r["group"].split("-")[1] for r in recs}
    assert kinds == {"ask", "own", "general", "mention", "support", "public", "fiction"}
    assert all((r["label"] == 1) == r["group"].startswith("everyday-ask-") for r in recs)
    # one group per (kind, template): a grouped split holds out whole phrasings, not single sentences
    assert len({r["group"] for r in recs if r["label"] == 1}) <= len(ASK)
    # negatives reuse the positives' sensitive attributes, so the vocabulary alone cannot give the label
    own = [r["request"] for r in recs if r["group"].startswith("everyday-own-")]
    assert any(attr in text for text in own for attr in SENSITIVE)


def test_check_set_is_hand_written_and_disjoint_from_training_text():
    rows = [json.loads(line) for line in CHECK.read_text().splitlines()]
    assert Counter(r["label"] for r in rows) == {0: 40, 1: 10}
    assert all(r["context"] is None for r in rows)
    train = {r["request"].lower() for r in everyday_records()}
    assert not train & {r["request"].lower() for r in rows}
    templates = [t.split("{")[0].strip().lower() for t in ASK]
    assert not any(r["request"].lower().startswith(t) for r in rows for t in templates if len(t) > 8)
