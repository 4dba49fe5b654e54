"""Small talk then a request for personal data (probes.small_talk), and the hand-written check kept apart from it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from probes.datasets import labelled_conversation_problem
from probes.everyday import GENERIC_CONTEXTS, everyday_records, is_unframed
from probes.small_talk import OPENINGS, SECOND, small_talk_conversations, split_small_talk

CHECK = Path(__file__).parent / "own_data_conversations.jsonl"


def _user_turns(record: dict) -> list[str]:
    return [t["content"] for t in record["turns"] if t["role"] == "user"]


def test_conversations_are_deterministic_balanced_well_formed_and_unframed():
    a = small_talk_conversations()
    assert a == small_talk_conversations()
    assert [r["turns"] for r in a] != [r["turns"] for r in small_talk_conversations(seed=38)]
    assert Counter(r["label"] for r in a) == {0: 160, 1: 160}
    assert len({r["id"] for r in a}) == len(a)
    for r in a:
        assert labelled_conversation_problem(r) is None, r
        users = _user_turns(r)
        assert 2 <= len(users) <= 3 and users[0] in OPENINGS and all(u in SECOND for u in users[1:-1])
        # only the last turn carries the label; the opening never does
        assert r["turn_labels"] == [0] * (len(users) - 1) + [r["label"]]
        assert "{" not in users[-1] and users[-1][0].isupper()
        assert is_unframed(r) and (r["context"] is None or r["context"] in GENERIC_CONTEXTS)
        assert r["group"].startswith("small-talk-ask-" if r["label"] else "small-talk-own")


def test_check_pairs_one_opening_with_an_own_data_and_a_third_party_request_none_of_them_trained_on():
    rows = [json.loads(line) for line in CHECK.read_text().splitlines()]
    assert Counter(r["label"] for r in rows) == {0: 25, 1: 25}
    by_group: dict[str, list[dict]] = {}
    for r in rows:
        assert labelled_conversation_problem(r) is None, r
        by_group.setdefault(r["group"], []).append(r)
    for pair in by_group.values():
        benign, attack = sorted(pair, key=lambda r: r["label"])
        assert (benign["label"], attack["label"]) == (0, 1)
        assert _user_turns(benign)[:-1] == _user_turns(attack)[:-1] and benign["context"] == attack["context"]
        assert attack["turn_labels"][-1] == 1 and not any(attack["turn_labels"][:-1])
    trained = {u.lower() for r in small_talk_conversations(n=4000) for u in _user_turns(r)[-1:]}
    assert not trained & {_user_turns(r)[-1].lower() for r in rows}


def test_the_split_holds_out_the_templates_everyday_holds_out_and_no_template_is_on_both_sides():
    import random

    records = small_talk_conversations(n=2000)
    rng = random.Random(3)
    groups = sorted({r["group"] for r in everyday_records()})
    everyday_dev = set(rng.sample(groups, len(groups) // 5))
    train, dev = split_small_talk(records, everyday_dev)
    assert len(train) + len(dev) == len(records) and train and dev
    key = {id(r): r["group"].removeprefix("small-talk-") for r in records}
    train_keys, dev_keys = {key[id(r)] for r in train}, {key[id(r)] for r in dev}
    assert not train_keys & dev_keys
    held = {g.removeprefix("everyday-") for g in everyday_dev}
    assert not train_keys & held  # a template everyday evaluates never trains here
    shared = {k for k in dev_keys if not k.startswith("own-account-")}
    assert shared and shared <= held  # and a reused template evaluated here never trained everyday
    assert {k for k in dev_keys if k.startswith("own-account-")}  # own-account templates held out too
    assert {r["label"] for r in dev} == {0, 1}


def test_opening_copies_prepend_small_talk_and_keep_labels_and_groups():
    """`opening_copies` (session 37, for the drift probe: `train_default_probe.py`, on by default): each copy opens
    with one or two small-talk exchanges, keeps its label and group, and its turn labels gain a 0 per new user turn;
    the originals are untouched, and a record without turns is refused."""
    import pytest

    from probes.small_talk import opening_copies

    records = [{"id": f"c{i}", "label": i % 2, "group": f"g{i // 2}", "context": "norms",
                "turns": [{"role": "user", "content": f"ask {i}"}, {"role": "assistant", "content": "ok"},
                          {"role": "user", "content": f"then {i}"}], "turn_labels": [0, i % 2]} for i in range(40)]
    before = json.dumps(records)
    copies = opening_copies(records)
    assert json.dumps(records) == before and len(copies) == len(records)
    seconds = 0
    for r, q in zip(records, copies, strict=True):
        added = len(q["turns"]) - len(r["turns"])
        assert added in (2, 4) and q["turns"][added:] == r["turns"] and q["turns"][0]["content"] in OPENINGS
        seconds += added == 4 and q["turns"][2]["content"] in SECOND
        assert q["turn_labels"] == [0] * (added // 2) + r["turn_labels"]
        assert (q["label"], q["group"], q["id"]) == (r["label"], r["group"], r["id"] + "+opening")
        assert labelled_conversation_problem(q) is None
    assert 0 < seconds < len(records)  # some copies open with two exchanges
    with pytest.raises(ValueError, match="no 'turns'"):
        opening_copies([{"id": "x", "request": "hi", "label": 0}])
