"""Provenance of the shipped example bank (DATA.md, "Harm example bank"): every row is a train-split row of the
shared train files, verbatim, and none of it overlaps the shipped dev evaluation file. No model; hash sets only.

The shared data sits beside the repository (`../shared/data/harm`, as CI lays it out). Without it these tests fail:
provenance that cannot be checked is not checked."""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from personalization.bank import BANK_PATH
from personalization.evaluate import DEV_EVAL_PATH

HARM_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "harm"
TRAIN_FILES = ("sms_spam_train", "toxigen_demos", "davidson_train", "sst2_train")  # DATA.md "Sources"
FIELDS = ("id", "label", "task", "source", "text")


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _key(row: dict) -> str:
    return hashlib.sha256(json.dumps([row[f] for f in FIELDS], ensure_ascii=False).encode()).hexdigest()


@functools.cache
def _shared_keys() -> frozenset[str]:
    """Hashes of (id, label, task, source, text) of every row of the shared train files."""
    missing = [f"{name}.jsonl" for name in TRAIN_FILES if not (HARM_DIR / f"{name}.jsonl").is_file()]
    if missing:
        pytest.fail(f"shared harm data missing: {missing} not found in {HARM_DIR} (the repository's "
                    "../shared/data/harm, which CI provides); the bank's provenance cannot be checked without it")
    return frozenset(_key(r) for name in TRAIN_FILES for r in _read(HARM_DIR / f"{name}.jsonl"))


def _split(row_id: str) -> int:
    """DATA.md: sha1(id) % 5; 0 = dev, 1 = cal, 2-4 = train."""
    return int(hashlib.sha1(row_id.encode()).hexdigest(), 16) % 5


def test_every_bank_row_is_a_train_split_row_of_the_shared_files():
    """Each bank row is, field for field, a row of one of the four train files, from the train split, 12-400
    characters, no text twice, and the counts DATA.md states."""
    bank = _read(BANK_PATH)
    keys = _shared_keys()
    foreign = [r["id"] for r in bank if _key(r) not in keys]
    assert not foreign, f"{len(foreign)} bank rows are not verbatim rows of the shared train files: {foreign[:5]}"
    assert all(_split(r["id"]) >= 2 for r in bank), "a bank row comes from the dev or cal split"
    assert all(12 <= len(r["text"]) <= 400 for r in bank)
    assert len({r["text"] for r in bank}) == len(bank)
    assert Counter(r["label"] for r in bank) == {"spam": 300, "toxic": 300, "negative": 300, "benign": 600}
    assert Counter(r["task"] for r in bank if r["label"] == "benign") == {"spam": 200, "toxicity": 200,
                                                                          "sentiment": 200}


def test_bank_and_dev_eval_do_not_overlap():
    """The dev evaluation file is dev-split rows of the same files, and no bank text equals, or occurs inside, any of
    its texts (case-insensitive: the build drops train rows that occur inside a dev text, e.g. SST-2 sub-phrases)."""
    bank, dev = _read(BANK_PATH), _read(DEV_EVAL_PATH)
    keys = _shared_keys()
    assert all(_key(r) in keys and _split(r["id"]) == 0 for r in dev)
    assert not {r["id"] for r in bank} & {r["id"] for r in dev}
    dev_text = "\n".join(r["text"].lower() for r in dev)
    inside = [r["id"] for r in bank if r["text"].lower() in dev_text]
    assert not inside, f"bank rows whose text occurs in dev_eval.jsonl: {inside[:5]}"
