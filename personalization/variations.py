"""Deterministic surface perturbations of a text (EDA-style), for `extend` and the variation protocol.

Why our own: the paper uses TextAttack's EasyDataAugmenter (WordNet synonyms + deletion/swap/insertion);
neither TextAttack nor WordNet is available offline here, so we keep the three lexical operations that need no
resources (random deletion, swap, insertion of a word from the text) plus character typos, which spammers and
trolls use to dodge filters. `pct` is the share of words touched, as in the paper (0.1 and 0.5).
"""

from __future__ import annotations

import random

_OPS = ("delete", "swap", "insert", "typo")


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 3:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:  # transpose
        return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]
    if kind == 1:  # drop a char
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]  # double a char


def perturb(text: str, pct: float = 0.1, *, seed: int = 0) -> str:
    """One variant of `text` with about `pct` of its words edited by a random operation."""
    rng = random.Random(f"{seed}:{text}")
    words = text.split()
    if len(words) < 2:
        return _typo(text, rng) if text else text
    n = max(1, round(pct * len(words)))
    for _ in range(n):
        op = rng.choice(_OPS)
        if op == "delete" and len(words) > 2:
            del words[rng.randrange(len(words))]
        elif op == "swap":
            i, j = rng.randrange(len(words)), rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
        elif op == "insert":
            words.insert(rng.randrange(len(words) + 1), rng.choice(words))
        else:
            i = rng.randrange(len(words))
            words[i] = _typo(words[i], rng)
    return " ".join(words)


def variations(text: str, n: int, pct: float = 0.1, *, seed: int = 0) -> list[str]:
    """`n` distinct variants (fewer if the text is too short to vary), never the text itself."""
    out: list[str] = []
    for k in range(n * 4):
        v = perturb(text, pct, seed=seed * 1000 + k)
        if v != text and v not in out:
            out.append(v)
        if len(out) == n:
            break
    return out
