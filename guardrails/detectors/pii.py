"""Built-in PII and secret detector: linear-time regexes, confirmed by checksums where the format has one.

Every pattern is built so that the regex engine cannot backtrack more than a small constant per start
position (bounded quantifiers, possessive groups, look-behinds that only let a match start at the beginning
of a run); multi-match bookkeeping (private-key blocks, digit runs) is done in Python in one pass. Scanning a
1 MB adversarial text therefore stays linear (see tests/unit/test_detectors_pii.py).

Matched values never leave this module except as `[REDACTED:<TYPE>]` placeholders: findings carry counts and
pattern kinds only.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..decision import Action, Finding, Stage
from ..detector import BaseDetector, CheckRequest
from ..errors import ConfigError
from .pii_checks import IBAN_LENGTHS, iban_ok, looks_random, luhn_ok, shannon_entropy

__all__ = ["ENTITIES", "PIIDetector", "PIIMatch", "iban_ok", "looks_random", "luhn_ok", "scan", "shannon_entropy"]

ENTITIES: tuple[str, ...] = ("email", "phone", "credit_card", "iban", "api_key")


@dataclass(frozen=True, slots=True)
class PIIMatch:
    """One located entity. `kind` is the pattern family (e.g. "aws_access_key"), never the value."""

    entity: str
    kind: str
    start: int
    end: int
    score: float


# --------------------------------------------------------------------------- patterns (all linear-time)

# PEM / PGP armour. Private-key blocks are secrets; other blocks (public keys, certificates) are claimed so
# their base64 body is not reported as high-entropy tokens, but produce no match.
_PEM_BEGIN = re.compile(r"-----BEGIN ((?:[A-Z0-9]{1,20} ){0,4}[A-Z0-9]{1,20})-----")
_PEM_END = re.compile(r"-----END (?:[A-Z0-9]{1,20} ){0,4}[A-Z0-9]{1,20}-----")
_PEM_MAX_BODY = 16_384  # an RSA-8192 private key is ~6.4k characters

# (kind, pattern, score, needs a digit in the secret part). Group 1, when present, is the secret itself.
_KEY_PATTERNS: tuple[tuple[str, re.Pattern[str], float, bool], ...] = (
    ("openai_key", re.compile(r"(?<![\w-])sk-[A-Za-z0-9_-]{20,}"), 0.95, True),
    ("github_token", re.compile(r"(?<![\w-])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"), 0.95, False),
    ("slack_token", re.compile(r"(?<![\w-])xox[abeoprs]-[A-Za-z0-9-]{10,}"), 0.95, True),
    ("aws_access_key", re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"), 0.95, False),
    ("google_api_key", re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])"), 0.95, False),
    ("bearer_token", re.compile(r"\b(?i:bearer)[ \t]+([A-Za-z0-9._~+/-]{16,}=*)"), 0.9, True),
)
_GENERIC_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{32,}")

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}+")
# A maximal run of digit groups joined by single spaces or dashes; card windows are picked inside it.
_DIGIT_RUN = re.compile(r"(?<![\w.,])\d++(?:[ -]\d++)*+")
# Dots only as 4-4-4-4 ("4111.1111.1111.1111"): a dot between other groups is a decimal point (0.4111111111111111)
_DOTTED_CARD = re.compile(r"(?<![\w.,])\d{4}(?:\.\d{4}){3}(?!\w|\.\d)")
_DIGITS = re.compile(r"\d+")
_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}(?![\w-])")
# NANP numbers: optional +1, the area code starts with 2-9. Not inside a longer digit-group run.
_US_PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:\+?1[ .-]?)?(?:\([2-9]\d{2}\)|[2-9]\d{2})[ .-]?\d{3}[ .-]?\d{4}"
    r"(?!\w)(?![ .-]\d)"
)
_INTL_PHONE = re.compile(r"(?<![\w+])\+[1-9]\d{0,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,6}+(?!\w)")


# --------------------------------------------------------------------------- scanners, in priority order

Scanner = Callable[[str], Iterator[PIIMatch]]


def _scan_pem_blocks(text: str) -> Iterator[PIIMatch]:
    """PEM/PGP blocks: BEGIN..END, or BEGIN..blank line (at most _PEM_MAX_BODY) when END is missing/far.

    Each END search starts after the previous block and its result is reused, so many BEGIN markers
    cannot make this quadratic. Non-private blocks yield claim-only matches (entity "").
    """
    pos, end_m, no_end = 0, None, False
    for m in _PEM_BEGIN.finditer(text):
        if m.start() < pos:
            continue
        if not no_end and (end_m is None or end_m.start() < m.end()):
            end_m = _PEM_END.search(text, m.end())
            no_end = end_m is None
        if end_m is not None and end_m.start() - m.end() <= _PEM_MAX_BODY:
            stop = end_m.end()
        else:
            limit = min(len(text), m.end() + _PEM_MAX_BODY)
            blank = text.find("\n\n", m.end(), limit)
            stop = limit if blank < 0 else blank
        if "PRIVATE KEY" in m.group(1):
            yield PIIMatch("api_key", "private_key", m.start(), stop, 1.0)
        else:
            yield PIIMatch("", "pem_public", m.start(), stop, 0.0)
        pos = stop


def _scan_prefixed_keys(text: str) -> Iterator[PIIMatch]:
    for kind, pattern, score, needs_digit in _KEY_PATTERNS:
        group = 1 if pattern.groups else 0
        for m in pattern.finditer(text):
            secret = m.group(group)
            if needs_digit and not any(c.isdigit() for c in secret):
                continue
            yield PIIMatch("api_key", kind, m.start(group), m.end(group), score)


def _scan_iban(text: str) -> Iterator[PIIMatch]:
    for m in _IBAN.finditer(text):
        cand = m.group()
        want = IBAN_LENGTHS.get(cand[:2])
        if want is None:
            continue
        # Map compact positions back to the text; the candidate may have swallowed a trailing word.
        positions = [i for i, c in enumerate(cand) if c != " "]
        if len(positions) < want:
            continue
        stop = m.start() + positions[want - 1] + 1
        if stop < len(text) and text[stop].isalnum():
            continue
        if iban_ok("".join(cand[i] for i in positions[:want])):
            yield PIIMatch("iban", "iban", m.start(), stop, 1.0)


def _card_shape_ok(lens: tuple[int, ...]) -> bool:
    """13-19 digits written as one block, 4-4-4-4(-1..4), or Amex/Diners 4-6-5 / 4-6-4."""
    if not 13 <= sum(lens) <= 19:
        return False
    if len(lens) == 1 or lens in ((4, 6, 5), (4, 6, 4)):
        return True
    return len(lens) >= 4 and all(x == 4 for x in lens[:-1]) and 1 <= lens[-1] <= 4


def _iin_ok(digits: str) -> bool:
    """Issuer prefixes of the major networks: 3 (Amex/Diners/JCB), 4 (Visa), 5, 6, and 2221-2720 (MC)."""
    return digits[0] in "3456" or 2221 <= int(digits[:4]) <= 2720


def _scan_cards(text: str) -> Iterator[PIIMatch]:
    for run in _DIGIT_RUN.finditer(text):
        end = run.end()
        if end < len(text) and (text[end].isalpha() or text[end] == "_"):
            continue
        groups = [(run.start() + g.start(), run.start() + g.end()) for g in _DIGITS.finditer(run.group())]
        lens = [e - s for s, e in groups]
        i = 0
        while i < len(groups):
            if lens[i] != 4 and not 13 <= lens[i] <= 19:  # no card shape starts with this group
                i += 1
                continue
            for j in range(min(i + 5, len(groups)) - 1, i - 1, -1):  # longest window first
                if not _card_shape_ok(tuple(lens[i : j + 1])):
                    continue
                window = groups[i : j + 1]
                digits = "".join(text[s:e] for s, e in window)
                if _iin_ok(digits) and luhn_ok(digits):
                    yield PIIMatch("credit_card", "credit_card", window[0][0], window[-1][1], 1.0)
                    i = j
                    break
            i += 1


def _scan_dotted_cards(text: str) -> Iterator[PIIMatch]:
    for m in _DOTTED_CARD.finditer(text):
        digits = m.group().replace(".", "")
        if _iin_ok(digits) and luhn_ok(digits):
            yield PIIMatch("credit_card", "credit_card", m.start(), m.end(), 1.0)


def _scan_email(text: str) -> Iterator[PIIMatch]:
    for m in _EMAIL.finditer(text):
        yield PIIMatch("email", "email", m.start(), m.end(), 0.9)


def _scan_phones(text: str) -> Iterator[PIIMatch]:
    for m in _US_PHONE.finditer(text):
        formatted = not m.group().isdigit()  # a bare 10/11-digit number is as likely an id as a phone
        yield PIIMatch("phone", "phone_us", m.start(), m.end(), 0.6 if formatted else 0.4)
    for m in _INTL_PHONE.finditer(text):
        cand = m.group()
        digits = sum(c.isdigit() for c in cand)
        if not 9 <= digits <= 15 or (cand[1] == "1" and digits != 11) or cand.count(".") == 1:
            continue  # too short/long, bad +1 length, or a signed decimal like +3.14159265
        yield PIIMatch("phone", "phone_intl", m.start(), m.end(), 0.7)


def _scan_generic_tokens(text: str) -> Iterator[PIIMatch]:
    for m in _GENERIC_TOKEN.finditer(text):
        if looks_random(m.group()):
            yield PIIMatch("api_key", "high_entropy_token", m.start(), m.end(), 0.7)


_SCANNERS: tuple[Scanner, ...] = (
    _scan_pem_blocks,
    _scan_prefixed_keys,
    _scan_iban,
    _scan_cards,
    _scan_dotted_cards,
    _scan_email,
    _scan_phones,
    _scan_generic_tokens,
)


# Written to dodge a scanner, read the same by a person: invisible characters are dropped and Unicode spaces and
# compatibility forms (fullwidth digits and @, ...) folded before scanning; matches map back to the text as given.
_INVISIBLE = frozenset("\u00ad\u180e\u200b\u200c\u200d\u2060\ufeff")
# what NFKC leaves as it is but the scan folds: the invisible characters and a few Unicode spaces
_STABLE_ODD = re.compile("[\u00ad\u180e\u200b\u200c\u200d\u2060\ufeff\x85\u1680\u2028\u2029]")


def _scanned_form(text: str) -> tuple[str, list[int] | None]:
    """The text the scanners read and, unless it is the text itself, each of its characters' index in ``text``."""
    if text.isascii() or (unicodedata.is_normalized("NFKC", text) and not _STABLE_ODD.search(text)):
        return text, None  # nothing to fold: the common case, decided in C
    chars: list[str] = []
    where: list[int] = []
    for i, c in enumerate(text):
        if c >= "\x80":
            if c in _INVISIBLE:
                continue
            folded = " " if c.isspace() else unicodedata.normalize("NFKC", c)
            c = folded if len(folded) == 1 else c
        chars.append(c)
        where.append(i)
    return "".join(chars), where


def scan(text: str) -> list[PIIMatch]:
    """All non-overlapping matches in `text`, sorted by position. Earlier scanners win overlaps, so a card
    number is never also counted as a phone number and a key inside a URL is counted once. A match spans the
    characters as written (a card number with zero-width characters between its digits is redacted whole)."""
    form, where = _scanned_form(text)
    claimed = bytearray(len(form))
    out: list[PIIMatch] = []
    for scanner in _SCANNERS:
        for m in scanner(form):
            if m.end > m.start and claimed.find(1, m.start, m.end) < 0:
                claimed[m.start : m.end] = b"\x01" * (m.end - m.start)
                if m.entity:
                    out.append(m if where is None else PIIMatch(m.entity, m.kind, where[m.start],
                                                                 where[m.end - 1] + 1, m.score))
    out.sort(key=lambda m: m.start)
    return out


# --------------------------------------------------------------------------- the detector


class PIIDetector(BaseDetector):
    """Finds e-mail addresses, phone numbers, payment cards, IBANs and API keys / private keys.

    Parameters (stored as given, validated on use, scikit-learn style):
        entities: entity types to report and redact (default: all of ENTITIES).
        action: what a finding at or above `threshold` asks for ("redact" by default; "warn"/"block").
        threshold: minimum match score that counts (validated matches score 1.0, bare phone numbers 0.4).
    """

    name = "pii"
    stages = frozenset(Stage)

    def __init__(self, entities: Iterable[str] | None = None, action: str = "redact", threshold: float = 0.5):
        self.entities = entities
        self.action = action
        self.threshold = threshold

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"entities": self.entities, "action": self.action, "threshold": self.threshold}

    def set_params(self, **params: Any) -> PIIDetector:
        for key, value in params.items():
            if key not in self.get_params():
                raise ConfigError(f"PIIDetector has no parameter {key!r}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"PIIDetector({args})"

    def _validated(self) -> tuple[frozenset[str], Action, float]:
        ents = ENTITIES if self.entities is None else self.entities
        ents = (ents,) if isinstance(ents, str) else tuple(ents)
        unknown = sorted(set(ents) - set(ENTITIES))
        if unknown:
            raise ConfigError(f"unknown PII entities {unknown}; expected a subset of {list(ENTITIES)}")
        try:
            action = Action(self.action)
        except ValueError:
            raise ConfigError(f"PII action must be one of {[a.value for a in Action]}") from None
        thr = self.threshold
        if isinstance(thr, bool) or not isinstance(thr, int | float) or not 0.0 <= thr <= 1.0:
            raise ConfigError(f"PII threshold must be a number in [0, 1], got {thr!r}")
        return frozenset(ents), action, float(thr)

    def scan(self, text: str) -> list[PIIMatch]:
        """Matches of the configured entity types (any score), sorted by position."""
        ents, _, _ = self._validated()
        return [m for m in scan(text) if m.entity in ents]

    def predict(self, request: CheckRequest) -> list[Finding]:
        _, action, thr = self._validated()
        by_entity: dict[str, list[PIIMatch]] = {}
        for m in self.scan(request.text):
            by_entity.setdefault(m.entity, []).append(m)
        findings = []
        for entity in ENTITIES:
            matches = by_entity.get(entity)
            if not matches:
                continue
            score = max(m.score for m in matches)
            hits = [m for m in matches if m.score >= thr]
            if hits:
                kinds = sorted({m.kind for m in hits} - {entity})
                explanation = f"{len(hits)} {entity} match(es)" + (f" ({', '.join(kinds)})" if kinds else "")
            else:
                explanation = f"{len(matches)} possible {entity} match(es) below threshold"
            findings.append(
                Finding(
                    detector=self.name,
                    category=entity,
                    score=score,
                    threshold=thr,
                    explanation=explanation,
                    action=action if hits else Action.ALLOW,
                )
            )
        return findings

    def redact(self, text: str) -> str:
        """Replace every match at or above threshold with `[REDACTED:<TYPE>]`. Idempotent."""
        _, _, thr = self._validated()
        parts: list[str] = []
        pos = 0
        for m in self.scan(text):
            if m.score >= thr:
                parts += [text[pos : m.start], f"[REDACTED:{m.entity.upper()}]"]
                pos = m.end
        parts.append(text[pos:])
        return "".join(parts)
