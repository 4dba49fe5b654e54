"""Sentence prefixes of a user message: where the request probes also read.

Why: the probes read the state at the end of the user's turn, which summarises the *end* of the message. A
flagged request followed by a harmless sentence ("Thanks!", "Also, what is the next step?") was read as that
sentence: on our dev split, four such suffixes kept 2-33 % of the caught attacks. Scoring the message as it
stood at each sentence end as well (the same rendering, cut there) and taking the largest margin keeps them all.

A sentence ends at ``.``, ``!`` or ``?`` (closing quotes and brackets included) followed by whitespace or, typed
without a space, by a capital letter (``_END``), at a line break, or where a typed copy of one of the model's control
tokens starts. A full stop after a known abbreviation
("Dr.", "e.g.") or a single letter (an initial) ends none: cutting "send the notes to Dr." raised benign false
positives (dev FPR 0.131 -> 0.150). Only ends followed by at most ``MAX_TAIL`` characters are cut: cutting an
instruction off the data it is about ("Classify whether the person belongs to Democrats or Republicans." before a
list of opinions) flagged benign conversations (see ``MAX_TAIL``). A request followed by a longer remark is still
read as the remark on its first turn; on later turns, a tail repeated from an earlier user message (the same remark
or signature on every turn) is cut off whatever its length (:func:`repeated_tail_cut`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import accumulate

from guardrails.errors import InvalidInputError
from guardrails.text import unanswered_user_turns

#: Most sentence ends scored per message besides the whole message, the ones nearest its end (each adds the chat
#: template's few end-of-turn tokens to the turn's forward pass).
MAX_PREFIXES = 16
#: Only sentence ends with at most this many characters after them are cut: a request followed by a short
#: remark. A cut before a long remainder reads an instruction without the data it is about ("Classify whether the
#: person belongs to Democrats or Republicans." before a list of opinions): see the module docstring.
MAX_TAIL = 200

# A newline takes the whitespace after it: every end inside one whitespace run has the same cut and the same next
# sentence, and one end per newline made the scan quadratic ("hi" + "\n" * 10,000 + "b": 3.7 s; review, session 35).
# Typed without a space ("...treated for?Thanks!"), a "?" or "!" before a capitalised word ends a sentence too, and so
# does a full stop between a lower-case letter and a capitalised word ("...for.Thanks"), where the word ends at
# whitespace, punctuation or the end; file names, URLs, e-mail addresses, identifiers and decimals ("notes.txt",
# "?Id=5", "Anna.Schmidt@corp.de", "pd.DataFrame", "3.5") do not (session 40; no dev request changes). A run of marks
# is matched from its first mark only, and possessively, so a long run that ends no sentence costs one pass, not one
# per mark ("!" x 20,000 + "x": seconds before).
_CLOSE = "[\"'\u2019\u201d)\\]]*+"  # closing quotes and brackets after the mark
_WORD = r"[a-z]*(?=[\s,;:!?'\u2019]|\.(?:\s|$)|$)"  # the rest of a capitalised word after its capital
_END = re.compile(rf"(?<![.!?])[.!?]++{_CLOSE}(?=\s)|(?<![.!?])[!?]++{_CLOSE}(?=[A-Z]{_WORD})"
                  rf"|(?<=[a-z])\.(?=[A-Z][a-z]{_WORD})|\n\s*")
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
        if m.group() == "." and _is_abbreviation_end(text, m.end()):  # longer words are no abbreviation
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


#: A tail shared with an earlier user message is cut off when it holds at least this many characters
#: (:func:`repeated_tail_cut`); shorter ones are the sentence cuts' business.
MIN_REPEATED_TAIL = 24
#: How many of the latest earlier user messages :func:`repeated_tail_cut` compares the message with.
REPEAT_LOOKBACK = 8


def _is_abbreviation_end(text: str, end: int) -> bool:
    word = _WORD_BEFORE_DOT.search(text, max(0, end - 64), end)
    w = word.group(1).lower() if word else ""
    return w in _ABBREVIATIONS or (len(w) == 1 and w.isalpha())


def _shared_tail(a: str, b: str) -> int:
    """How many characters ``a`` and ``b`` end with in common."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:  # binary search on the length: str comparisons run in C
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid:] == b[len(b) - mid:]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def repeated_tail_cut(text: str, earlier: Sequence[str]) -> str | None:
    """The message cut at its first sentence end inside the tail it shares with one of the latest
    ``REPEAT_LOOKBACK`` earlier user messages (the same remark, signature or padding sent on every turn), when at
    least ``MIN_REPEATED_TAIL`` non-blank characters follow the cut; None when there is none.

    Why (session 39): a remark longer than ``MAX_TAIL`` is never cut off (a cut before a long remainder reads an
    instruction without its data), so one appended to every user turn hid the request from the per-turn probes, and
    its sameness on every turn flattened the drift: behind the 226-character evaluation remark the served decision
    caught 27 of 94 dev attack conversations; with this cut, 74 (AUROC 0.931 -> 0.996), at 1 of 171 benign ones
    flagged either way. A tail the user already sent is no data the request needs."""
    body = text.rstrip()
    if not body:
        return None
    shared = max((_shared_tail(body, e.rstrip()) for e in earlier[-REPEAT_LOOKBACK:] if e), default=0)
    if len(body) - shared <= 0 or shared < MIN_REPEATED_TAIL:
        return None
    start = len(body) - shared
    # the sentence end may sit on the tail's first characters ("...address? I have..." after "...help? I have...")
    for m in _END.finditer(body, max(0, start - 64)):
        if (m.end() < start and not body[m.end():start].isspace()) or (
                m.group() == "." and _is_abbreviation_end(body, m.end())):
            continue
        cut = body[: m.end()].rstrip()
        if cut.strip() and len(body[m.end():].strip()) >= MIN_REPEATED_TAIL:
            return cut
        return None
    return None


#: Most user messages a turn may hold after the assistant's last reply, the newest included. The privacy guard
#: reads each of them; a longer run is refused (fail closed) rather than read in part, or a request followed by
#: enough "ok" messages would go unread.
MAX_UNANSWERED = 32
#: Most sentence cuts read inside the turn's earlier messages together (the newest has its own ``MAX_PREFIXES``),
#: the ones nearest the end of the turn first.
MAX_EARLIER_CUTS = 32
#: What joins the user messages of one turn into the one message the probes read.
JOINER = "\n"


def joined_turns(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation with each run of user messages (no assistant reply between them) joined into one message
    by a line break and read again as the probes read a message (:func:`probes.capture.probe_text`). A system
    message inside a run is read before the run's joined message (the operator's words, where the turn starts)."""
    from .capture import probe_text

    out: list[dict[str, str]] = []
    systems: list[dict[str, str]] = []
    users: list[str] = []

    def flush() -> None:
        out.extend(systems)
        if users:
            text = JOINER.join(users)
            out.append({"role": "user", "content": probe_text(text) if len(users) > 1 else text})
        systems.clear()
        users.clear()

    for m in messages:
        if m["role"] == "assistant":
            flush()
            out.append(dict(m))
        elif m["role"] == "user":
            users.append(m["content"])
        elif users:  # a system message inside the run
            systems.append(dict(m))
        else:  # before the run's first user message: where it stands
            out.extend(systems)
            systems.clear()
            out.append(dict(m))
    flush()
    return out


def without_later_systems(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation without its system messages but the first (as the probes were trained: at most one system
    prompt, first, then the turns)."""
    return [m for i, m in enumerate(messages) if m["role"] != "system" or i == 0]


def turn_prefixes(messages: Sequence[dict[str, str]]) -> list[list[dict[str, str]]]:
    """The conversation as it stood at each earlier message of its last run of user messages (the turn sent since
    the assistant's last reply), each read joined (:func:`joined_turns`): what a client checking each message as it
    arrived had checked before this."""
    users = unanswered_user_turns([m["role"] for m in messages])
    return [joined_turns(messages[: i + 1]) for i in users[:-1]]


def joined_turn(messages: Sequence[dict[str, str]], *, sentences: bool = True, markers: Sequence[str] = (),
                limit: int = MAX_PREFIXES, max_chars: int | None = None) -> tuple[list[dict[str, str]], list[str]]:
    """The conversation with each run of user messages joined (:func:`joined_turns`), and the cuts of its last
    message the probes also read (prefixes of it, in order, distinct, none blank): its sentence cuts
    (``sentences``), where each of the turn's earlier messages ends, those messages' own sentence cuts
    (``MAX_EARLIER_CUTS`` at most, the latest first), and where a tail repeated from an earlier turn starts
    (:func:`repeated_tail_cut`, with ``sentences``).

    Why: the probes were trained on conversations whose user and assistant turns alternate. Two user messages in a
    row were read at the second: a request followed by a message "Thanks!" kept 0 of 60 dev attacks that are
    blocked as one message, and a benign request followed by a 107-character remark in a message of its own was
    flagged on 71 of 153 dev conversations (an unseen rendering read at the later turns' threshold; 0 of 153
    with an assistant reply between them). Joined, the turn is read as one message, like a client that sends it
    as one; each earlier message is read where it ends however long what follows it is (session 37). Earlier
    runs are joined too, so the next turn's conversation extends this one's (its KV cache is reused).

    Raises ``InvalidInputError`` when the turn holds more than ``MAX_UNANSWERED`` user messages, or more than
    ``max_chars`` characters (what the probe model could not read anyway), before any cut is copied."""
    from .capture import probe_text

    run_at = unanswered_user_turns([m["role"] for m in messages])
    run = [messages[i]["content"] for i in run_at]
    earlier = [m["content"] for m in messages[: run_at[0] if run_at else len(messages)] if m["role"] == "user"]
    if len(run) > MAX_UNANSWERED:
        raise InvalidInputError(f"{len(run)} user messages in a row without an assistant reply; the privacy guard "
                                f"reads at most {MAX_UNANSWERED} (send the assistant's replies with the conversation)")
    if max_chars is not None and sum(len(c) + len(JOINER) for c in run) > max_chars:
        raise InvalidInputError(f"the user's turn is longer than the {max_chars} characters the probe model reads")
    joined = joined_turns(messages)
    repeated = repeated_tail_cut(JOINER.join(run), earlier) if sentences and run else None
    if len(run) < 2:
        cuts = sentence_prefixes(run[-1], limit=limit, markers=markers) if sentences and run else []
        return joined, sorted([*cuts, repeated], key=len) if repeated and repeated not in cuts else cuts
    text, whole = JOINER.join(run), joined[-1]["content"]
    cuts = sentence_prefixes(text, limit=limit, markers=markers) if sentences else []
    cuts += [repeated] if repeated else []
    # where each earlier message ends: the running length of the messages and joiners before it, less its joiner
    ends = [e - len(JOINER) for e in accumulate(len(c) + len(JOINER) for c in run[:-1])]
    cuts += [text[:e] for e in ends]
    budget = MAX_EARLIER_CUTS if sentences else 0
    for k in range(len(run) - 2, -1, -1):
        if budget <= 0:
            break
        own = sentence_prefixes(run[k], limit=budget, markers=markers)
        budget -= len(own)
        start = ends[k] - len(run[k])
        cuts += [text[:start] + c for c in own]
    # read as the probes read a message: a cut the normalisation moves off the joined message is no prefix of it
    # (a repeated short message, "ok" x 20, is kept once), and reads nothing the others do not
    read = {probe_text(c).rstrip() for c in cuts}
    return joined, sorted((c for c in read if c.strip() and c != whole and whole.startswith(c)), key=len)
