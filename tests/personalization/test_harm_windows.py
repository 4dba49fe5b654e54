"""Long messages are read whole by the embedding backend: half-overlapping windows of the encoder's 128 tokens,
each category keeping its worst window (`personalization.windows`); what a window cap leaves unread is reported.
Real shipped encoder and tokenizer (marked `model`)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from guardrails.decision import Action, Stage
from guardrails.detector import CheckRequest, PluginContext
from guardrails.errors import ConfigError
from personalization import profile as P
from personalization.embedding import EmbeddingBackend
from personalization.plugin import build_harm_detector
from personalization.windows import text_windows

pytestmark = pytest.mark.model

BENIGN = ("I went to the market this morning and bought some apples, pears and a loaf of bread for the week. "
          "The weather was lovely so we walked along the river afterwards and watched the boats go by. ")
AD = "Buy $MOONCOIN now before it 100x, join our Telegram for the next pump signal"
TAIL = "Also: buy $MOONCOIN today before it goes 100x, our Telegram has the next pump signal."


@pytest.fixture(scope="module")
def backend() -> EmbeddingBackend:
    return EmbeddingBackend()


@pytest.fixture(scope="module")
def tokenizer(backend: EmbeddingBackend):
    return backend.encoder.tokenizer


@pytest.fixture(scope="module")
def crypto() -> P.ModerationProfile:
    return P.block_new(P.ModerationProfile(), "crypto", examples=[AD], generalize="examples")


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def test_a_text_that_fits_is_its_own_only_window(tokenizer) -> None:
    for text in ["", "hi", BENIGN, BENIGN * 2]:
        assert n_tokens(tokenizer, text) <= 126
        assert text_windows(tokenizer, text, 126) == ([text], 0)


def first_window_end(tokenizer, text: str) -> int:
    """Where the encoder's own read of `text` (its first 126 tokens) ends, in characters."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return enc["offset_mapping"][125][1]


def test_every_passage_of_half_a_window_lies_whole_inside_one_window(tokenizer) -> None:
    rng = random.Random(3)
    words = (BENIGN * 3).split()
    for trial in range(20):
        filler = [rng.choice(words) for _ in range(rng.randint(150, 900))]
        at = rng.randint(0, len(filler))
        marker = (f"zebra{trial} quokka{trial} " * 6).strip()  # ~ 40 tokens, under the 63-token stride
        text = " ".join(filler[:at]) + " " + marker + " " + " ".join(filler[at:])
        win = text_windows(tokenizer, text, 126)
        assert win.unread_chars == 0 and win.texts[0] == text
        inside_first = text.index(marker) + len(marker) <= first_window_end(tokenizer, text)
        assert inside_first or any(marker in w for w in win.texts[1:])
        assert text.endswith(win.texts[-1])  # the last window ends at the end of the text
        for w in win.texts[1:]:
            assert w in text and n_tokens(tokenizer, w) <= 126  # a piece of the text, one window long


def test_windows_start_at_a_word_not_inside_one(tokenizer) -> None:
    text = " ".join(["unbelievably"] * 300)  # 5 tokens per word: most strides land inside a word
    win = text_windows(tokenizer, text, 126)
    for w in win.texts[1:-1]:  # the last one ends at the text's end, wherever it starts
        assert w.startswith("unbelievably")


def test_a_word_longer_than_the_stride_leaves_no_token_unread(tokenizer) -> None:
    """A start inside a word moved to the next word: a word of 64+ tokens (a 33-syllable Hangul word: 99 tokens)
    lost tokens to every window, unreported (review of session 34); moving back to the word's start instead
    pulled the window's end short of the next one's start."""
    for shift in (15, 30, 55):  # where the long word falls against the stride
        text = " ".join([f"hi{i}" for i in range(shift)] + ["각" * 33] + [f"hi{i}" for i in range(shift, shift + 300)])
        win = text_windows(tokenizer, text, 126, max_windows=64)
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                            verbose=False)["offset_mapping"]
        covered = {i for i, (_a, b) in enumerate(offsets) if b <= offsets[125][1]}  # the first window
        for w in win.texts[1:]:
            assert text.count(w) == 1
            at = text.index(w)
            covered |= {i for i, (a, b) in enumerate(offsets) if a >= at and b <= at + len(w)}
        assert covered == set(range(len(offsets))) and win.unread_chars == 0, shift


def test_a_short_text_of_many_tokens_is_windowed(tokenizer) -> None:
    """Hangul syllables are 2-3 tokens each: 105 characters were taken for one window by a character-count
    shortcut, and the end of such a message was never read (review of session 34)."""
    text = "각각각각각 " * 10 + " you are a worthless idiot and I hope you die"
    assert len(text) <= 126 < n_tokens(tokenizer, text)
    win = text_windows(tokenizer, text, 126)
    assert len(win.texts) == 2 and win.texts[-1].endswith("you die") and win.unread_chars == 0


def test_a_huge_text_is_tokenized_only_as_far_as_its_windows_reach(tokenizer) -> None:
    text = "".join(f"line{i} " + "word " * 50 + "\n" for i in range(20_000))  # ~5 MB, each window unique
    calls: list[int] = []

    def counting(t, **kw):
        calls.append(len(t))
        return tokenizer(t, **kw)

    win = text_windows(counting, text, 126, max_windows=8)
    assert max(calls) < 20_000 and len(win.texts) == 8
    assert len(win.texts[0]) < 1_000  # the first window is the span it reads, not 5 MB for the encoder to cut
    assert win.unread_chars == len(text.rstrip()) - (text.index(win.texts[-1]) + len(win.texts[-1]))


def test_a_window_cap_reports_what_it_left_unread(tokenizer) -> None:
    text = " ".join(f"word{i}" for i in range(1000))  # no repeats: each window occurs once in the text
    full = text_windows(tokenizer, text, 126, max_windows=64)
    capped = text_windows(tokenizer, text, 126, max_windows=4)
    assert full.unread_chars == 0 and len(full.texts) > 4
    assert capped.texts == full.texts[:4]
    last = capped.texts[-1]
    assert capped.unread_chars == len(text) - (text.index(last) + len(last)) > 0
    one = text_windows(tokenizer, text, 126, max_windows=1)
    assert one.texts == [text] and one.unread_chars == len(text) - first_window_end(tokenizer, text)
    with pytest.raises(ValueError):
        text_windows(tokenizer, text, 126, max_windows=0)


def test_the_end_of_a_long_message_is_read(backend: EmbeddingBackend, crypto: P.ModerationProfile) -> None:
    text = BENIGN * 8 + TAIL  # the ad starts after ~330 tokens: the encoder's first 128 never reach it
    assert n_tokens(backend.encoder.tokenizer, BENIGN * 8) > 300
    first_only = backend._score_pieces([text], crypto)["crypto"][0]
    scores, unread = backend.score_read([text], crypto)
    assert first_only < 0.5 <= scores["crypto"][0] and unread == [0]
    assert backend.score([text], crypto)["crypto"][0] == scores["crypto"][0]


def test_scores_only_go_up_and_short_texts_score_as_before(backend: EmbeddingBackend,
                                                           crypto: P.ModerationProfile) -> None:
    texts = [AD, "see you at lunch", BENIGN * 5 + TAIL, BENIGN * 3, TAIL + " " + BENIGN * 6]
    new = backend.score(texts, crypto)
    old = backend._score_pieces(texts, crypto)
    for name in crypto.categories:
        assert np.all(new[name] >= old[name] - 1e-6)
        assert np.allclose(new[name][[0, 1]], old[name][[0, 1]], atol=1e-6)
    assert new["crypto"][4] >= 0.5  # an ad at the start is still caught


def test_every_window_fits_the_encoder_as_cut_by_characters(tokenizer) -> None:
    """A window cut out by characters takes the whole Hangul syllable it starts or ends in: the last window of
    "각각 " * 25 + "idiot" re-tokenized to 127 tokens, and the encoder dropped "idiot", unreported (review)."""
    text = "각각 " * 25 + "idiot"
    win = text_windows(tokenizer, text, 126)
    assert win.texts[-1].endswith("idiot") and win.unread_chars == 0
    rng = random.Random(5)
    alphabet = ["각", "밥", "word", "unbelievably", "x1y2", "😀", "é", " ", " ", " "]
    for _ in range(60):
        t = "".join(rng.choice(alphabet) for _ in range(rng.randint(100, 600)))
        for w in text_windows(tokenizer, t, 126).texts[1:]:
            assert n_tokens(tokenizer, w) <= 126


def test_no_window_is_longer_than_piece_chars(tokenizer) -> None:
    """Giant words are one [UNK] token each: a 4 MB word was one window handed whole to the encoder and the
    character n-grams (16 such messages took 6 minutes: review). Windows hold at most PIECE_CHARS characters;
    what that leaves out is reported. A window longer than that is built from its tokens (session 36), so a giant
    word is read as what the encoder makes of it, [UNK]."""
    from personalization.windows import PIECE_CHARS

    one = "a" * 1_000_000
    win = text_windows(tokenizer, one, 126)
    assert win.texts == ["[UNK]"] and win.unread_chars == 0
    giants = " ".join(["b" * 150_000] * 20 + ["the end of it"] * 200)
    win = text_windows(tokenizer, giants, 126)
    assert all(len(w) <= PIECE_CHARS for w in win.texts) and win.unread_chars == 0  # each giant word: [UNK]
    assert win.texts[-1].endswith("the end of it")


def test_short_messages_sent_along_do_not_take_a_long_ones_windows(tokenizer) -> None:
    """An equal share of the turn's windows gave a long message 2 of 32 when 15 short ones came with it, so its
    end went unread (review); short ones need none beyond their first, and the long one gets the rest."""
    from personalization.windows import cut_texts

    long = BENIGN * 60  # more than 32 windows
    texts = [long] + [f"ok{i}" for i in range(15)]
    alone = cut_texts(tokenizer, [long], 126, 32, total_windows=31)
    together = cut_texts(tokenizer, texts, 126, 32, total_windows=31)
    assert together[0] == alone[0] and len(together[0].texts) == 32
    two = cut_texts(tokenizer, [long, long], 126, 32, total_windows=31)
    assert [len(c.texts) - 1 for c in two] == [15, 16] or [len(c.texts) - 1 for c in two] == [16, 15]
    assert sum(len(c.texts) - 1 for c in cut_texts(tokenizer, [long] * 5, 126, 32, total_windows=10)) == 10


def test_extra_windows_are_discounted_for_how_many_there_are() -> None:
    """A plain max over k windows flags benign long messages about k times as often; the extra windows' odds
    are divided by their number, while the first window (the message read as before) counts as it is."""
    from personalization.windows import worst_windows

    scores = {"toxic": np.array([0.2, 0.8, 0.3, 0.1, 0.6, 0.9, 0.55], np.float32)}
    out = worst_windows(scores, [1, 3, 3])
    odds = lambda p: p / (1 - p)  # noqa: E731
    assert out["toxic"][0] == pytest.approx(0.2)  # one window: as it was
    assert out["toxic"][1] == pytest.approx(0.8)  # its first window's score, above its extra windows' (0.3, 0.1)
    assert out["toxic"][2] == pytest.approx(max(0.6, odds(0.9) / 2 / (1 + odds(0.9) / 2)))
    # an exact 0 marks a counter-example's near-duplicate: it must stay 0, not become 1e-12 (a hit at threshold 0)
    zero = worst_windows({"c": np.zeros(3, np.float32)}, [3])
    assert zero["c"][0] == 0.0


def test_a_turns_windows_are_shared_out_among_its_messages(backend: EmbeddingBackend,
                                                         crypto: P.ModerationProfile) -> None:
    """Each of a turn's (up to 16) messages read up to max_windows windows: 16 long ones cost ~50 s on 2 cores.
    A turn now reads at most max_windows extra windows in all, shared out evenly."""
    texts = [BENIGN * 40] * 4
    _, alone = backend.score_read(texts[:1], crypto, total_windows=8)
    _, shared = backend.score_read(texts, crypto, total_windows=8)
    assert 0 < alone[0] < shared[0] == shared[3]  # 2 windows each instead of 8


def test_the_detector_says_what_a_window_cap_left_unread() -> None:
    ctx = PluginContext(store=None, config={"harm": {"max_windows": 1}})
    det = build_harm_detector(ctx)
    text = BENIGN * 8 + TAIL
    findings = det.predict(CheckRequest(stage=Stage.INPUT, user_id="u1", text=text, settings={}))
    assert findings and all("not read by the embedding backend" in f.explanation for f in findings)
    short = det.predict(CheckRequest(stage=Stage.INPUT, user_id="u1", text="see you at lunch", settings={}))
    assert all("not read" not in f.explanation for f in short)
    assert all(f.action is Action.ALLOW for f in short)


@pytest.mark.parametrize("bad", [0, -1, 10_001, 2.5, True, "64", None])
def test_max_windows_must_be_a_sane_integer(bad: object) -> None:
    with pytest.raises(ConfigError, match="max_windows"):
        build_harm_detector(PluginContext(store=None, config={"harm": {"max_windows": bad}}))


@pytest.mark.parametrize("pad", ["\n", " ", "\t", "\u200b", "\u00ad"])
def test_padding_the_tokenizer_drops_cannot_hide_a_message(pad: str) -> None:
    """Review, session 36: a 12-token insult behind 20,001 newlines (or spaces, tabs, zero-width spaces, soft
    hyphens) was one window, cut at PIECE_CHARS characters of the padding: the insult was never read (toxic 0.106,
    allowed), though the chat model reads it. What lies between two tokens now becomes one space when a window
    is longer than PIECE_CHARS; nothing is reported unread, since the tokenizer drops those characters anyway."""
    from personalization.windows import PIECE_CHARS

    det = build_harm_detector(PluginContext(store=None, config={}))
    toxic = "You are a worthless idiot and everyone hates you."

    def verdict(text: str) -> tuple[Action, str]:
        found = {f.category: f for f in det.predict(CheckRequest(stage=Stage.INPUT, user_id="u1", text=text,
                                                                 settings={}))}
        return found["toxic"].action, found["toxic"].explanation

    assert verdict(toxic)[0] is Action.BLOCK
    for text in (pad * (PIECE_CHARS + 1) + toxic, "hello there. " + pad * 25_000 + toxic,
                 toxic[:20] + pad * 30_000 + toxic[20:]):
        action, why = verdict(text)
        assert action is Action.BLOCK and "not read" not in why, (len(text), why)


def test_a_long_padded_span_keeps_its_tokens_and_reports_giant_words(tokenizer) -> None:
    from personalization.windows import PIECE_CHARS

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    for pad in ("\u200b", "\n", "\u00ad \t"):  # a gap, or characters a word's span takes in (zero-width ones)
        text = "a b" + pad * 30_000 + "c d"
        win = text_windows(tokenizer, text, 126)
        assert len(win.texts) == 1 and len(win.texts[0]) < 10 and win.unread_chars == 0
        assert ids(win.texts[0]) == ids(text)  # what the encoder reads: "a bc d" for zero-width spaces
    win = text_windows(tokenizer, "x" * 30_000 + " " * 30_000 + " tail", 126)  # one [UNK] giant word
    assert win == (["[UNK] tail"], 0)
    # review of the fix: zero-width padding inside a word of over 100 characters made it one [UNK] whose span
    # filled the piece, and the insult after it went unread (allowed, toxic 0.17)
    for pad in ("\u200b", "\u0301"):
        text = "x" * 50 + pad * 30_000 + "x" * 51 + " You are a worthless idiot"
        assert text_windows(tokenizer, text, 126) == (["[UNK] You are a worthless idiot"], 0)
    assert len(text_windows(tokenizer, "b" * 5 * PIECE_CHARS + " end", 126).texts[0]) <= PIECE_CHARS


def test_a_word_split_by_zero_width_characters_stays_one_word(tokenizer) -> None:
    """Review of the session-36 fix: a zero-width space between a word's pieces became a space, so each "##" piece
    read as a word of its own (up to 3 tokens): a 108-token message behind 20,001 zero-width spaces came out a
    150-token window, and the encoder never read its end ("... I will hurt you"), nothing reported unread."""
    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def split(word: str) -> str:
        return "\u200b".join(t.removeprefix("##") for t in tokenizer.convert_ids_to_tokens(ids(word)))

    words = "unbelievableness internationalization antidisestablishmentarianism characteristically".split()
    msg = " you are a worthless idiot and I will hurt you"
    one = "\u200b" * 20_001 + " ".join(split(w) for w in words * 7) + msg
    win = text_windows(tokenizer, one, 126)
    assert len(win.texts) == 1 and ids(win.texts[0]) == ids(one) and win.unread_chars == 0
    many = "the weather is nice today and we walk in the park. " * 30 + "\u200b" * 20_001 + \
        " ".join(split(w) for w in words * 6) + msg
    win = text_windows(tokenizer, many, 126)
    assert all(len(ids(t)) <= 126 for t in win.texts[1:]) and win.texts[-1].endswith("hurt you")
