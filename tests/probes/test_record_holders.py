"""Agents holding personal records in their prompt (probes.record_holders) and the hand-written check set kept apart."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from probes.record_holders import ASK, ASK_ALL, ASK_WHERE, BUSINESSES, record_holder_records

CHECK = Path(__file__).parent / "record_holder_check.jsonl"


def _check_rows() -> list[dict]:
    return [json.loads(line) for line in CHECK.read_text().splitlines()]


def test_records_are_deterministic_balanced_and_fully_formatted():
    a = record_holder_records()
    assert a == record_holder_records() and a != record_holder_records(seed=52)
    assert Counter(r["label"] for r in a) == {1: 24 * len(BUSINESSES), 0: 24 * len(BUSINESSES)}
    assert len({r["id"] for r in a}) == len(a)
    for r in a:
        for text in (r["context"], r["request"]):
            assert "{" not in text and "}" not in text, text
        assert r["scenario"] == "record_holder" and r["group"] == f"record_holder-{r['id'].split('-')[1]}"
        assert (r["label"] == 1) == (r["kind"] == "snoop")


def test_every_prompt_holds_several_people_and_snooping_names_one_of_them_or_all():
    whole_list = 0
    for r in record_holder_records(per_business=6):
        assert 2 <= len(r["people"]) <= 3 and all(name in r["context"] for name in r["people"]), r
        if r["label"] == 1:
            _, _, role, fields, _ = BUSINESSES[r["group"].removeprefix("record_holder-")]
            if r["request"] in {t.format(field=f, role=role) for t in ASK_ALL for f, _ in fields}:
                whole_list += 1
            else:
                assert any(name.split()[0] in r["request"] for name in r["people"]), r
    assert 0 < whole_list < 0.3 * 6 * len(BUSINESSES)


def test_safe_requests_share_the_prompts_but_ask_for_no_one_s_record():
    recs = record_holder_records(per_business=8)
    snoop_ctx = {r["context"].split(".")[0] for r in recs if r["label"] == 1}
    safe = [r for r in recs if r["label"] == 0]
    assert {r["context"].split(".")[0] for r in safe} == snoop_ctx  # same businesses on both sides
    for r in safe:
        assert not any(name.split()[0] in r["request"] for name in r["people"]), r["request"]
    assert {r["kind"] for r in safe} == {"service", "own", "general"}


def test_check_set_is_hand_written_for_other_agents_and_disjoint_from_training_text():
    rows = _check_rows()
    assert Counter(r["label"] for r in rows) == {0: 32, 1: 32} and len({r["id"] for r in rows}) == len(rows)
    assert len({r["kind"] for r in rows}) == 8 and all(r["context"] for r in rows)
    generated = record_holder_records()
    assert not {r["request"].lower() for r in generated} & {r["request"].lower() for r in rows}
    # none of the check set's agents is a business the generator knows
    trained_roles = {role_line.split(" of ")[-1] for role_line, *_ in BUSINESSES.values()}
    assert not any(role in r["context"] for r in rows for role in trained_roles)
    # no check request opens like a generated template (a fixed opening longer than 16 characters: "Give me the" is
    # everyday English, "Could you read me the" a template)
    openings = [t.split("{")[0].strip().lower() for t in (*ASK, *ASK_ALL, *ASK_WHERE)]
    assert not any(r["request"].lower().startswith(t) for r in rows for t in openings if len(t) > 16)


def test_conversations_name_a_listed_person_early_and_ask_by_pronoun_last():
    from probes.record_holders import record_holder_conversations

    convs = record_holder_conversations()
    assert convs == record_holder_conversations() and len({c["id"] for c in convs}) == len(convs)
    assert Counter(c["label"] for c in convs) == {0: 12 * len(BUSINESSES), 1: 12 * len(BUSINESSES)}
    for c in convs:
        users = [t["content"] for t in c["turns"] if t["role"] == "user"]
        assert c["turns"][-1]["role"] == "user" and len(users) == len(c["turn_labels"]) in (2, 3)
        assert c["turn_labels"] == [0] * (len(users) - 1) + [c["label"]]
        assert any(n.split()[0] in users[-2] for n in c["people"]), users  # the mention names a listed person
        assert not any(n.split()[0] in users[-1] for n in c["people"]), users  # the last turn only by pronoun
        assert "{" not in " ".join(users) and c["group"].startswith("record_holder-")


def test_conversation_check_set_is_hand_written_for_other_agents():
    from probes.record_holders import record_holder_conversations

    rows = [json.loads(line) for line in (Path(__file__).parent / "record_holder_conversations.jsonl").open()]
    assert Counter(r["label"] for r in rows) == {0: 10, 1: 10}
    trained_roles = {role_line.split(" of ")[-1] for role_line, *_ in BUSINESSES.values()}
    assert not any(role in r["context"] for r in rows for role in trained_roles)
    generated = {t["content"].lower() for c in record_holder_conversations() for t in c["turns"]}
    assert not generated & {t["content"].lower() for r in rows for t in r["turns"] if t["role"] == "user"}
