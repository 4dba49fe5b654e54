"""Reading a long message whole: the sentence encoder reads 128 tokens, so a message is also scored as
overlapping windows of that size and each category keeps its worst window.

Why: the embedding backend used to score only the first 128 tokens of a message (about 500 characters), so a
harmful sentence after a benign paragraph was never read at all (review of session 34: an insult after eight
benign sentences scored toxic 0.08, allowed). Windows half-overlap, so a passage of up to about half a window
(~60 tokens, a long sentence) lies whole inside one of them. The first window is the message itself (read as
before: its first 128 tokens plus the character n-grams of the whole text), so messages that fit one window
(nearly all chat messages, all but 7 of the 7,832 dev texts) cost and score exactly as before. A window is still
a mean of up to 128 tokens: a short harmful sentence among benign ones is diluted inside its window (README,
Limits); windows make sure it is read. The extra windows' scores are discounted for how many there are
(`worst_windows`): a plain max over 14 windows flagged a quarter of long benign messages.

Cost grows with length, so a message is read up to `max_windows` windows (default 32: about 2,000 tokens or
8,000 characters); the characters after that are reported as unread in the finding's explanation, never dropped
silently. Only a prefix of a longer text is tokenized (a 4 MB text was tokenized whole, twice).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

#: windows read per message by default (the first is the message itself)
DEFAULT_MAX_WINDOWS = 32
#: no window is longer than this many characters (a text longer is not handed to the encoder whole as its first
#: window, only its first window's span; 16 messages of one 4 MB word each took 6 minutes)
PIECE_CHARS = 20_000
#: tokens a window cut out by characters may gain (a start or end inside a Hangul syllable: 2 each)
_SLACK = 6
#: tokens a window start moves back to reach its word's first token (more: it starts inside the word; a 99-token
#: Hangul word pulled a start back 95 tokens, and the window ended 95 tokens short of the next one's start)
_MOST_BACK = 8
#: characters a word piece spans at most (WordPiece reads words of up to 100 characters; longer ones are [UNK])
_WORD_CHARS = 100
#: tokens a character can become at most (Hangul syllables: 3 jamo after NFD; some Indic vowel signs: 2)
_TOKENS_PER_CHAR = 4


class Windows(NamedTuple):
    """A message's texts to score (the message itself first) and how many of its characters none of them reads."""

    texts: list[str]
    unread_chars: int


class _Tokens(NamedTuple):
    offsets: list[tuple[int, int]]
    words: list[int | None]
    ids: list[int]
    whole: bool  # the whole text was tokenized (not a prefix)


def _tokenize(tokenizer: Any, text: str, need: int) -> _Tokens:
    """Offsets, word ids and token ids of enough of `text` to place `need` tokens: a prefix, grown until it has
    them or is the whole text."""
    size = min(len(text), max(need * 8, 1024))
    while True:
        enc = tokenizer(text[:size], add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                        verbose=False)
        offsets = enc["offset_mapping"]
        if size >= len(text) or len(offsets) > need:
            return _Tokens(offsets, enc.word_ids(), enc["input_ids"], size >= len(text))
        size = min(len(text), size * 4)


def text_windows(tokenizer: Any, text: str, width: int, max_windows: int = DEFAULT_MAX_WINDOWS) -> Windows:
    """`text` cut into windows at a stride of half of `width` tokens (without special tokens).

    The first window is the text itself (the encoder reads its first `width` tokens); each further one spans
    `width - _SLACK` tokens, so that cut out of the text by characters (a cut inside a Hangul syllable takes the
    whole syllable) it still fits the encoder's `width`. A window starts at its word's first token when that is at
    most `_MOST_BACK` tokens back (else where the stride puts it, inside the word: no token is skipped), and the
    last one ends at the text's last token. A text of at most `width` tokens is one window: itself. At most
    `max_windows`; then `unread_chars` counts what follows the last one. No window is longer than `PIECE_CHARS`
    characters (a text of a few giant words); what that cuts off counts as unread too.
    """
    if width <= _SLACK + 1:
        raise ValueError(f"window width must be more than {_SLACK + 1} tokens")
    if max_windows < 1:
        raise ValueError("max_windows must be at least 1")
    if len(text) * _TOKENS_PER_CHAR <= width:  # fits without tokenizing
        return Windows([text], 0)
    stride, span = width // 2, width - _SLACK
    need = width + (max_windows - 1) * stride + 1  # one more: tells whether the cap leaves something unread
    tokens = _tokenize(tokenizer, text, need)
    offsets, words, whole = tokens.offsets, tokens.words, tokens.whole
    n = len(offsets)
    if whole and n <= width:
        if len(text) <= PIECE_CHARS:
            return Windows([text], 0)
        piece, unread = _span_text(tokenizer, text, tokens, 0, n)
        return Windows([piece], unread)
    starts: list[int] = []
    ends = [*range(stride, n - span, stride)] + ([n - span] if whole else [])
    for i, nominal in enumerate(ends):
        s, last = nominal, whole and i == len(ends) - 1
        while not last and s - 1 > (starts[-1] if starts else 0) and nominal - s < _MOST_BACK \
                and words[s] is not None and words[s] == words[s - 1]:
            s -= 1  # back to the word's first token: "##ing" alone reads as another word
        if not last and words[s] is not None and words[s] == words[s - 1]:
            s = nominal  # its word starts too far back: start inside it, where the stride put it
        if not starts or s > starts[-1]:
            starts.append(s)
    read_to = len(text)
    if len(starts) > max_windows - 1 or not whole:
        starts = starts[: max_windows - 1]
        read_to = offsets[min(starts[-1] + span, n) - 1][1] if starts else offsets[width - 1][1]
    pieces, cut = [text], 0
    if len(text) > PIECE_CHARS:
        pieces[0], cut = _span_text(tokenizer, text, tokens, 0, width)
    for s in starts:
        a, b = offsets[s][0], offsets[min(s + span, n) - 1][1]
        if b - a <= PIECE_CHARS:
            pieces.append(text[a:b])
        else:
            piece, unread = _span_text(tokenizer, text, tokens, s, min(s + span, n))
            pieces.append(piece)
            cut += unread  # giant words: what no window holds
    return Windows(pieces, max(0, len(text.rstrip()) - read_to) + cut)


def _span_text(tokenizer: Any, text: str, tokens: _Tokens, i: int, j: int) -> tuple[str, int]:
    """The text of tokens `i`..`j-1` when their span is longer than `PIECE_CHARS` characters, with what the
    tokenizer drops left out: a gap between two tokens (whitespace, zero-width and other format characters)
    becomes one space, and a token whose span is longer than any word piece's (`_WORD_CHARS`: such characters
    stretched it, or it is a giant word, one [UNK]) is its token's own text. So no run of them can push the tokens
    out of the piece. The piece is then cut at `PIECE_CHARS`, and the characters of tokens that cut leaves out
    are returned as unread.

    Why: a 12-token message behind 20,001 newlines or zero-width spaces was one window, cut at 20,000 characters
    of the padding: its words were never read; the same behind one 101-character word with 30,000 zero-width
    spaces inside it (reviews, session 36)."""
    parts: list[str] = []
    size, end, unread = 0, tokens.offsets[i][0], 0
    unk = getattr(tokenizer, "unk_token_id", None)
    for k in range(i, j):
        (a, b), token_id = tokens.offsets[k], tokens.ids[k]
        # a gap between two words becomes a space; inside one word (a zero-width character between its pieces)
        # nothing: a space made each "##" piece a word of its own, up to 3 tokens each, and a window of 108 tokens
        # grew to 150, past what the encoder reads, its end unread and unreported (review, session 36)
        same_word = k > i and tokens.words[k] is not None and tokens.words[k] == tokens.words[k - 1]
        if size and a > end and size < PIECE_CHARS and not same_word:
            parts.append(" ")
            size += 1
        a = max(a, end)  # tokens of one character (a Hangul syllable's jamo) share its span: read it once
        if b - a > _WORD_CHARS:  # a span no word piece has: it took in dropped characters, or is one giant word
            # its token's own text: [UNK] for a giant word (what the encoder reads of it anyway; a raw cut filled
            # the piece with the word, and any zero-width padding inside it, and pushed later tokens out)
            piece = str(tokenizer.convert_ids_to_tokens(token_id) if token_id != unk else tokenizer.unk_token)
            piece = piece.removeprefix("##")[: PIECE_CHARS - size]
            parts.append(piece)
            size, end = size + len(piece), b
            continue
        take = max(0, min(b - a, PIECE_CHARS - size))
        parts.append(text[a : a + take])
        size, unread, end = size + take, unread + max(0, b - a) - take, max(end, b)
    return "".join(parts), unread


def worst_windows(scores: dict[str, np.ndarray], counts: list[int]) -> dict[str, np.ndarray]:
    """Per text (its `counts[i]` windows contiguous in `scores`, itself first): the first window's score, or the
    best of its k extra windows after a discount of log(k) on the logit (its odds divided by k) if that is
    higher.

    Why the discount: each window is scored at the category's calibrated operating point, so a plain max over k
    windows of benign text flags about k times as often. On long messages joined from calibration-split benign
    texts (never dev), 300 per length: with about 3 windows a plain max flagged 6.7 % against 1.3 % for the first
    window alone and 2.0 % discounted; with about 9 windows 15 % against 2.0 % and 2.7 %. What it buys, with a
    calibration-split harmful text planted among 12 benign ones (150 each; first window alone -> discounted):
    spam caught 0.37 -> 0.79, toxic 0.29 -> 0.40 (benign flag rate 3.0 % -> 3.3 %); among 30: spam 0.19 -> 0.67,
    toxic 0.10 -> 0.10 (diluted in its window, then discounted), negative sentiment 0 either way (benign flag rate
    1.7 % -> 2.3 %). A plain max caught toxic 0.77 among 30, at the 15 %.
    """
    if all(k == 1 for k in counts):
        return scores
    first = np.cumsum([0, *counts[:-1]])
    extra_k = np.repeat(np.asarray(counts) - 1, counts)  # per piece: its text's number of extra windows
    is_first = np.zeros(len(extra_k), dtype=bool)
    is_first[first] = True
    out = {}
    for name, v in scores.items():
        p = np.clip(np.asarray(v, dtype=np.float64), 1e-12, 1 - 1e-12)
        odds = p / (1 - p) / np.where(is_first, 1, np.maximum(extra_k, 1))
        # an exact 0 stays 0: it marks a counter-example's near-duplicate, never a hit (`HarmDetector.findings`)
        discounted = np.where(is_first | (np.asarray(v) <= 0), v, odds / (1 + odds))
        out[name] = np.maximum.reduceat(discounted, first).astype(np.float32)
    return out


def cut_texts(tokenizer: Any, texts: list[str], width: int, max_windows: int,
              total_windows: int | None = None) -> list[Windows]:
    """`text_windows` of each text, with at most `total_windows` extra windows (beyond each text's first) over
    all of them: the texts needing fewest get all they need first, the rest share what is left equally. An equal
    share for every text let 15 short messages sent along hide a long one's end (2 windows of 32)."""
    cut = [text_windows(tokenizer, t, width, max_windows) for t in texts]
    extra = [len(c.texts) - 1 for c in cut]
    if total_windows is None or sum(extra) <= total_windows:
        return cut
    left, allow = max(0, total_windows), [0] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: extra[i])
    for rank, i in enumerate(order):
        allow[i] = min(extra[i], left // (len(order) - rank))
        left -= allow[i]
    return [c if allow[i] == extra[i] else text_windows(tokenizer, texts[i], width, allow[i] + 1)
            for i, c in enumerate(cut)]
