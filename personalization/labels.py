"""What every ICL adapter shares: the chat messages type, and turning a model's reply into one label."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from guardrails.errors import DetectorError

Messages = list[dict[str, str]]
MAX_REPLY_BYTES = 1 << 20  # a label reply is a few bytes; anything near this is not a chat completion


def parse_label(text: str, labels: Sequence[str]) -> str:
    """Map a model reply to one label: JSON {"label": ...}, exact match, or the one label the reply names
    without negating it ("it is benign, not spam"); a reply naming several is a DetectorError."""
    if not isinstance(text, str | None):
        raise DetectorError(f"model reply must be text, got {type(text).__name__}")
    s = (text or "").strip()
    try:
        obj = json.loads(s)
    except (ValueError, TypeError, RecursionError):  # not JSON: prose, a 5000-digit number, "[" * 10**5
        obj = None
    if isinstance(obj, dict):  # the structured answer asked for: its "label" string, nothing read elsewhere in it
        if not isinstance(obj.get("label"), str):
            raise DetectorError("model reply is a JSON object without a string \"label\"")
        s = obj["label"].strip()
    low = s.lower().strip(" .'\"`*")
    for lab in labels:
        if low == lab.lower():
            return lab
    # a label is named as a whole word: "spam" is not named inside "crypto-spam" (a user category's name)
    said: set[str] = set()
    for lab in labels:  # the negation right before a mention only; a label said once un-negated counts
        for m in re.finditer(rf"(?<![\w-]){re.escape(lab.lower())}(?![\w-])", low):
            if not _NEGATED.search(low, max(0, m.start() - _NEGATION_CHARS), m.start()):
                said.add(lab)
                break  # (a reply naming one label 100,000 times rescanned the reply before each: quadratic)
        if len(said) > 1:
            break
    if len(said) == 1:
        return said.pop()
    if said:  # "spam? No. benign": guessing would be a coin flip the fail mode should decide instead
        raise DetectorError(f"model reply names several labels ({len(said)}); refusing to guess")
    # the count, not the names: a user category's name may carry their words, and errors reach decisions and logs
    raise DetectorError(f"model reply is none of the {len(labels)} labels")


_NEGATED = re.compile(r"(?:\bnot|\bno|n't|\bnever)\s+(?:a\s+|an\s+|the\s+)?$")
#: how far before a mention a negation is looked for ("not ", "isn't the " and the spaces between)
_NEGATION_CHARS = 64


def one_hot(label: str, labels: Sequence[str]) -> dict[str, float]:
    return {lab: float(lab == label) for lab in labels}
