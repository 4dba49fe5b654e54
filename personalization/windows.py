"""Reading a long message whole: the sentence encoder reads 128 tokens, so a message is also scored as
overlapping windows of that size and each category keeps its worst window.

Why: the embedding backend used to score only the first 128 tokens of a message (about 500 characters), so a
harmful sentence after a benign paragraph was never read at all (review of session 34: "...benign text..." then
"You are a worthless idiot" scored toxic 0.02, allowed). Windows half-overlap, so any passage of up to half a
window (~60 tokens, a long sentence) lies whole inside one of them. The first window is the message itself
(read as before: its first 128 tokens plus the character n-grams of the whole text), so a message's score can
only go up, and messages that fit one window (nearly all chat messages, every text of the dev splits but a few)
cost and score exactly as before. A window is still a mean of up to 128 tokens: a short harmful sentence among
benign ones is diluted inside its window (README, Limits); windows only make sure it is read.

Cost grows with length, so a message is read up to `max_windows` windows (default 64: about 4,000 tokens or
16,000 characters, about one second on 2 CPU cores); the characters after that are reported as unread in the
finding's explanation, never dropped silently.
"""

from __future__ import annotations

from typing import Any, NamedTuple

#: windows read per message by default (the first is the message itself)
DEFAULT_MAX_WINDOWS = 64


class Windows(NamedTuple):
    """A message's texts to score (the message itself first) and how many of its characters none of them reads."""

    texts: list[str]
    unread_chars: int


def text_windows(tokenizer: Any, text: str, width: int, max_windows: int = DEFAULT_MAX_WINDOWS) -> Windows:
    """`text` cut into windows of `width` tokens (without special tokens) at a stride of half a window.

    A window starts at a word's first token (a start inside a word moves to the next word), and the last one ends
    at the text's last token. A text of at most `width` tokens is one window: itself.
    """
    if width < 2:
        raise ValueError("window width must be at least 2 tokens")
    if max_windows < 1:
        raise ValueError("max_windows must be at least 1")
    if len(text) <= width:  # a WordPiece token covers at least one character: it fits without tokenizing
        return Windows([text], 0)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
    offsets, words = enc["offset_mapping"], enc.word_ids()
    n = len(offsets)
    if n <= width:
        return Windows([text], 0)
    stride = width // 2
    starts: list[int] = []
    for s in [*range(stride, n - width, stride), n - width]:
        while 0 < s < n - 1 and words[s] is not None and words[s] == words[s - 1]:
            s += 1  # not inside a word: "##ing" alone reads as another word
        if not starts or s > starts[-1]:
            starts.append(s)
    unread = 0
    if len(starts) > max_windows - 1:
        starts = starts[: max_windows - 1]
        read_to = offsets[min(starts[-1] + width, n) - 1][1] if starts else offsets[width - 1][1]
        unread = len(text) - read_to
    return Windows([text] + [text[offsets[s][0] : offsets[min(s + width, n) - 1][1]] for s in starts], unread)
