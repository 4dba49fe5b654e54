"""Context-free third-party requests (probes.everyday) and the hand-written check set kept apart from them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from probes.everyday import ASK, SENSITIVE, everyday_records

CHECKS = {name: Path(__file__).parent / name for name in
          ("context_free_check.jsonl", "context_free_check2.jsonl", "context_free_check3.jsonl")}
CHECK_SIZES = {"context_free_check.jsonl": {0: 40, 1: 10}, "context_free_check2.jsonl": {0: 40, 1: 30},
               "context_free_check3.jsonl": {0: 35, 1: 25}}


def test_records_are_deterministic_balanced_and_fully_formatted():
    a, b = everyday_records(), everyday_records()
    assert a == b and a != everyday_records(seed=32)
    labels = Counter(r["label"] for r in a)
    assert labels[1] == 360 and 0.9 <= labels[0] / labels[1] <= 1.1
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


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_check_sets_are_hand_written_and_disjoint_from_training_text(name):
    rows = [json.loads(line) for line in CHECKS[name].read_text().splitlines()]
    assert Counter(r["label"] for r in rows) == CHECK_SIZES[name]
    assert all(r["context"] is None for r in rows) and len({r["id"] for r in rows}) == len(rows)
    train = {r["request"].lower() for r in everyday_records()}
    assert not train & {r["request"].lower() for r in rows}
    # no check sentence starts like a generated one (a template's fixed opening of more than 8 characters)
    templates = [t.split("{")[0].strip().lower() for t in ASK]
    assert not any(r["request"].lower().startswith(t) for r in rows for t in templates if len(t) > 8)


def test_check_sets_do_not_repeat_each_other():
    texts = [json.loads(line)["request"].lower() for p in CHECKS.values() for line in p.read_text().splitlines()]
    assert len(set(texts)) == len(texts)
