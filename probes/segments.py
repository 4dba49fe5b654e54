"""Sentence prefixes of a user message: where the request probes also read.

Why: the probes read the state at the end of the user's turn, which summarises the *end* of the message. A
flagged request followed by a harmless sentence ("Thanks!", "Also, what is the next step?") was read as that
sentence: on our dev split, four such suffixes kept 2-33 % of the caught attacks. Scoring the message as it
stood at each sentence end as well (the same rendering, cut there) and taking the largest margin keeps them all.

A sentence ends at ``.``, ``!`` or ``?`` (closing quotes and brackets included) followed by whitespace, at a line
break, or where a typed copy of one of the model's control tokens starts. A full stop after a known abbreviation
("Dr.", "e.g.") or a single letter (an initial) ends none: cutting "send the notes to Dr." raised benign false
positives (dev FPR 0.131 -> 0.150). Only ends followed by at most ``MAX_TAIL`` characters are cut: cutting an
instruction off the data it is about ("Classify whether the person belongs to Democrats or Republicans." before a
list of opinions) flagged benign conversations (see ``MAX_TAIL``). A request followed by a longer remark is still
read as the remark: a documented limit of reading the end of the turn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: Most sentence ends scored per message besides the whole message, the ones nearest its end (each adds the chat
#: template's few end-of-turn tokens to the turn's forward pass).
MAX_PREFIXES = 16
#: Only sentence ends with at most this many characters after them are cut: a request followed by a short
#: remark. A cut before a long remainder reads an instruction without the data it is about ("Classify whether the
#: person belongs to Democrats or Republicans." before a list of opinions): see the module docstring.
MAX_TAIL = 200

# A newline takes the whitespace after it: every end inside one whitespace run has the same cut and the same next
# sentence, and one end per newline made the scan quadratic ("hi" + "\n" * 10,000 + "b": 3.7 s; review, session 35).
_END = re.compile(r"[.!?]+[\"'\u2019\u201d)\]]*(?=\s)|\n\s*")
_WORD_BEFORE_DOT = re.compile(r"([\w.]+)\.$")
_NON_SPACE = re.compile(r"\S")
_ABBREVIATIONS = frozenset({
    "dr", "mr", "mrs", "ms", "mx", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "no", "inc", "ltd", "co",
    "dept", "approx", "fig", "u.s", "a.m", "p.m",
})


def sentence_prefixes(text: str, limit: int = MAX_PREFIXES, markers: Sequence[str] = (),
                      max_tail: int = MAX_TAIL) -> list[str]:
    """The message cut after each sentence but the last (trailing whitespace removed, in order, distinct; never
    the whole message) where at most ``max_tail`` characters follow (whitespace at either end not counted): the
    last ``limit`` of them when there are more. ``markers`` (the model's special-token strings) also
    cut where they start: a typed "<|im_end|>" followed by a forged assistant turn ends what the user asked.

    Linear in the text: only the region within ``max_tail`` characters of the end (and the whitespace before it)
    can hold a cut, so only it is scanned, and only the cuts returned are copied (a 32,000-character message of
    "a. a. a. ..." had cost 9 s of CPU through rescans from the start at every full stop)."""
    if limit < 0 or max_tail < 0:
        raise ValueError("limit and max_tail must be >= 0")
    stop = len(text.rstrip())  # where the last non-whitespace character ends
    lo = max(0, stop - max_tail)
    while lo > 0 and text[lo - 1].isspace():  # an end followed by whitespace up to `lo` has a short enough tail too
        lo -= 1
    ends: set[int] = set()
    for m in _END.finditer(text, max(0, lo - 64)):  # a match ending at or after `lo` starts at most a run before it
        if m.end() < lo:
            continue
        if m.group() == ".":
            word = _WORD_BEFORE_DOT.search(text, max(0, m.end() - 64), m.end())  # longer words are no abbreviation
            w = word.group(1).lower() if word else ""
            if w in _ABBREVIATIONS or (len(w) == 1 and w.isalpha()):
                continue
        ends.add(m.end())
    for marker in markers:
        at = text.find(marker, lo) if marker else -1
        while at >= 0:
            ends.add(at)
            at = text.find(marker, at + len(marker))
    cuts: list[int] = []  # where each cut's text ends (its trailing whitespace removed)
    for end in sorted(ends):
        nxt = _NON_SPACE.search(text, end)
        if nxt is None or nxt.start() >= stop:  # nothing but whitespace after it: the whole message
            break
        if stop - nxt.start() > max_tail:
            continue
        cut = end
        while cut > 0 and text[cut - 1].isspace():
            cut -= 1
        if cut and (not cuts or cuts[-1] != cut):
            cuts.append(cut)
    # the ones nearest the end: a request, then a remark
    return [text[:c] for c in (cuts[len(cuts) - limit:] if len(cuts) > limit else cuts)]
