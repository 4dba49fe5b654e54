"""Context-free third-party requests (probes.everyday) and the hand-written check set kept apart from them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from probes.everyday import ASK, BENIGN_LAST, SENSITIVE, SNOOP_LAST, everyday_conversations, everyday_records

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


def test_conversations_label_only_the_last_turn_and_group_by_its_phrasing():
    convs = everyday_conversations()
    assert convs == everyday_conversations() and convs != everyday_conversations(seed=34)
    assert Counter(c["label"] for c in convs) == {0: 240, 1: 240}
    for c in convs:
        users = [t["content"] for t in c["turns"] if t["role"] == "user"]
        assert c["turns"][-1]["role"] == "user" and 2 <= len(users) <= 3
        assert c["turn_labels"] == [0] * (len(users) - 1) + [c["label"]]  # openings about the person are benign
        assert users[-1] in (SNOOP_LAST if c["label"] else BENIGN_LAST)
        assert not any("{" in u or "}" in u for u in users) and users[0][0].isupper()
        kind = "snoop" if c["label"] else "benign"
        assert c["group"].startswith(f"everyday-conv-{kind}-")
    assert len({c["group"] for c in convs}) == len(SNOOP_LAST) + len(BENIGN_LAST)  # every phrasing used


def test_hand_written_conversations_pair_an_opening_with_a_snooping_or_benign_last_turn():
    for name, pairs in (("context_free_conversations.jsonl", 12), ("context_free_conversations2.jsonl", 10)):
        rows = [json.loads(line) for line in (Path(__file__).parent / name).read_text().splitlines()]
        assert len(rows) == 2 * pairs and Counter(r["label"] for r in rows) == {0: pairs, 1: pairs}
        by_group: dict[str, list[dict]] = {}
        for r in rows:
            by_group.setdefault(r["group"], []).append(r)
            assert r["context"] is None and r["turn_labels"][-1] == r["label"] and not any(r["turn_labels"][:-1])
        for a, b in by_group.values():  # same opening, different last turn
            assert a["turns"][:-1] == b["turns"][:-1] and a["turns"][-1] != b["turns"][-1]
        generated = {t["content"].lower() for c in everyday_conversations() for t in c["turns"]}
        assert not generated & {t["content"].lower() for r in rows for t in r["turns"] if t["role"] == "user"}


def test_persona_copies_keep_label_and_group_and_never_use_a_held_out_prompt():
    """with_personas copies each record under a deployment-style system prompt (same label, turns, group: a record
    and its copy stay in one CV fold); the prompts the training script evaluates under, the demo agent's among
    them, are never used, so those numbers measure generalization to an unseen prompt."""
    import importlib.util

    from guardrails.demo import DEFAULT_SYSTEM_PROMPT
    from probes.everyday import GENERIC_CONTEXTS, TRAINING_PERSONAS, is_unframed, with_personas

    spec = importlib.util.spec_from_file_location("train_default_probe", Path(__file__).parents[2] / "scripts" /
                                                  "train_default_probe.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    held_out = set(script.HELD_OUT_SYSTEM_PROMPTS.values())
    assert DEFAULT_SYSTEM_PROMPT in held_out
    assert not held_out & set(TRAINING_PERSONAS) and not held_out & GENERIC_CONTEXTS
    recs = everyday_records()[:50] + everyday_conversations()[:30]
    copies = with_personas(recs)
    assert copies == with_personas(recs) and len(copies) == len(recs)
    for r, c in zip(recs, copies, strict=True):
        assert c["context"] in TRAINING_PERSONAS and is_unframed(c)
        assert c["id"] == r["id"] + "-persona"
        assert {k: v for k, v in c.items() if k not in ("id", "context")} == \
            {k: v for k, v in r.items() if k not in ("id", "context")}
    assert len({c["context"] for c in copies}) >= 10
