"""Checksums and heuristics the PII scanner confirms matches with: Luhn for payment cards, ISO 7064 mod-97 for
IBANs, character entropy for generic secrets."""

from __future__ import annotations

import math
import re
from collections import Counter


def luhn_ok(digits: str) -> bool:
    """Luhn (mod-10) check used by every payment card number."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)  # any Unicode decimal digit (\d matches them too)
        if i & 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# ISO 13616 registry: country code -> total IBAN length.
IBAN_LENGTHS: dict[str, int] = {
    item[:2]: int(item[3:])
    for item in (
        "AD:24 AE:23 AL:28 AT:20 AZ:28 BA:20 BE:16 BG:22 BH:22 BI:27 BR:29 BY:28 CH:21 CR:22 CY:28 CZ:24 "
        "DE:22 DJ:27 DK:18 DO:28 EE:20 EG:29 ES:24 FI:18 FK:18 FO:18 FR:27 GB:22 GE:22 GI:23 GL:18 GR:27 "
        "GT:28 HR:21 HU:28 IE:22 IL:23 IQ:23 IS:26 IT:27 JO:30 KW:30 KZ:20 LB:28 LC:32 LI:21 LT:20 LU:20 "
        "LV:21 LY:25 MC:27 MD:24 ME:22 MK:19 MN:20 MR:27 MT:31 MU:30 NI:28 NL:18 NO:15 OM:23 PK:24 PL:28 "
        "PS:29 QA:29 RO:24 RS:22 RU:33 SA:24 SC:31 SD:18 SE:24 SI:19 SK:24 SM:27 SO:23 ST:25 SV:28 TL:23 "
        "TN:24 TR:26 UA:29 VA:22 VG:24 XK:20 YE:30"
    ).split()
}


def iban_ok(compact: str) -> bool:
    """ISO 7064 mod-97 check of an IBAN without spaces (uppercase)."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
    except ValueError:
        return False


def shannon_entropy(s: str) -> float:
    """Bits per character of the empirical character distribution of `s`."""
    n = len(s)
    if not n:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-fA-F_-]+")
_CLASS_SWITCH = re.compile(r"[A-Za-z][0-9]|[0-9][A-Za-z]")


def looks_random(token: str, min_entropy: float = 4.0) -> bool:
    """Generic secret heuristic for a run of [A-Za-z0-9_-]{32,}.

    Flags high-entropy strings that mix letters and digits throughout. Deliberately never flags UUIDs and
    hex digests (their alphabet caps entropy at 4 bits anyway, so this keeps the rule consistent), nor
    identifiers and slugs (words joined by `_`/`-`, camelCase names with a trailing number).
    """
    if len(token) < 32 or _UUID.fullmatch(token) or _HEX.fullmatch(token):
        return False
    if (token.count("_") + token.count("-")) * 10 > len(token):  # snake_case / kebab-case words
        return False
    digits = sum(c.isdigit() for c in token)
    if digits < 2 or digits == len(token) or len(_CLASS_SWITCH.findall(token)) < 3:
        return False
    return shannon_entropy(token) >= min_entropy
