"""The texts a user writes into a moderation profile (examples, counter-examples, definitions): their limits,
how they are cleaned, and the variations `extend` may add. Used by `profile` (and re-exported there)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from guardrails.errors import InvalidInputError

__all__ = ["MAX_EXAMPLES", "MAX_RAW_ITEMS", "MAX_TEXT_CHARS", "as_texts", "clean_list", "clean_text",
           "with_variations"]

MAX_EXAMPLES = 50  # per list (examples, counter_examples)
# Items a list may hold before its duplicates are dropped: bounds the cleaning work (a write validates inside the
# store's write lock) and refuses nonsense early; an `extend` with variations stays far below it.
MAX_RAW_ITEMS = 20 * MAX_EXAMPLES
MAX_TEXT_CHARS = 2000  # per example / definition


def clean_text(value: Any, *, what: str) -> str:
    """Validate one user-written text: a string, ≤ MAX_TEXT_CHARS, control characters removed.

    Control characters are stripped (newlines/tabs kept) so a definition cannot smuggle terminal escapes or
    NULs into logs or prompts; the text is otherwise kept verbatim because it is data, not instructions.
    """
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidInputError(f"{what} is {len(value)} characters; the limit is {MAX_TEXT_CHARS}")
    if any("\ud800" <= c <= "\udfff" for c in value):  # no character: dropping it stored words the user never wrote
        raise InvalidInputError(f"{what} contains an unpaired surrogate (not valid Unicode text)")
    text = "".join(c for c in value if c in "\n\t" or unicodedata.category(c)[0] != "C")
    return text.strip()


def clean_list(values: Any, *, what: str) -> list[str]:
    """Cleaned texts in order, duplicates dropped (they add nothing but weight); at most MAX_EXAMPLES of them."""
    if isinstance(values, str | Mapping) or not isinstance(values, Iterable):
        raise InvalidInputError(f"{what} must be a list of strings")
    out: dict[str, None] = {}  # insertion-ordered set: membership in a list was quadratic in the item count
    for n, v in enumerate(values, 1):
        if n > MAX_RAW_ITEMS:
            raise InvalidInputError(f"{what} has more than {MAX_RAW_ITEMS} items")
        t = clean_text(v, what=f"an item of {what}")
        if t:
            out[t] = None
            if len(out) > MAX_EXAMPLES:
                raise InvalidInputError(f"{what} has more than {MAX_EXAMPLES} distinct items (the limit)")
    return list(out)


def as_texts(value: Any, what: str) -> list[Any]:
    """A lone string is one text; any other iterable but a mapping is a list of texts; anything else is an error."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise InvalidInputError(f"{what} must be a string or a list of strings, got {type(value).__name__}")
    return list(value)


def with_variations(texts: list[str], n_variations: object, *, seed: int = 0) -> list[str]:
    """``texts`` followed by ``n_variations`` generated variations of each. ``n_variations`` is an int in
    [0, MAX_EXAMPLES - 1]: more could never be stored (a list holds at most MAX_EXAMPLES texts, the text itself
    one of them; the documented 50 always failed), and generating 10^6 took 22 s before the limit refused them.
    A category's own examples count too: past the list's limit the write is refused. ProfileService calls this
    before its write transaction."""
    most = MAX_EXAMPLES - 1
    if isinstance(n_variations, bool) or not isinstance(n_variations, int) or not 0 <= n_variations <= most:
        raise InvalidInputError(f"n_variations must be an integer from 0 to {most}, got {n_variations!r}")
    if len(texts) * (1 + n_variations) > MAX_RAW_ITEMS:  # refused before generating what could never be stored
        raise InvalidInputError(f"{len(texts)} text(s) with {n_variations} variation(s) each make "
                                f"{len(texts) * (1 + n_variations)} items, more than the {MAX_RAW_ITEMS} one request "
                                f"may carry (a category keeps at most {MAX_EXAMPLES} distinct examples)")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInputError(f"seed must be an integer, got {type(seed).__name__}")
    if not n_variations:
        return texts
    from .variations import variations

    # a variation may come out longer than its text (a 1,995-character text was refused for a 2,028-character
    # variation the user never wrote): those are left out, never cut
    return texts + [v for t in texts for v in variations(t, n_variations, seed=seed) if len(v) <= MAX_TEXT_CHARS]
