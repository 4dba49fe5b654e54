"""Strict JSON reading for settings and operation inputs: a duplicate key is an error, not "the last one wins".

``json.loads`` keeps the last of two equal keys, so ``{"action": "block", "action": "allow"}`` would store
"allow" with no word to the caller. Every place that reads a user's settings from JSON (HTTP bodies, the CLI's
``settings apply``, profile import) goes through :func:`loads_unique` instead.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from .errors import InvalidInputError, safe_segment


class DuplicateKeyError(InvalidInputError):
    """A JSON object names the same key twice."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):  # one pass: counting each key (list.count) is quadratic in the key count
        dupes = sorted(safe_segment(k) for k, c in Counter(k for k, _ in pairs).items() if c > 1)
        more = f" and {len(dupes) - 5} more" if len(dupes) > 5 else ""
        raise DuplicateKeyError(f"duplicate keys in a JSON object: {dupes[:5]}{more}")
    return out


def loads_unique(text: str | bytes) -> Any:
    """``json.loads`` that raises :class:`DuplicateKeyError` (an ``InvalidInputError``) on a repeated key; other
    errors are ``json.loads``'s own (``ValueError`` / ``RecursionError``). Key names in the message are shown as
    identifiers or hashes (`safe_segment`), never as free text."""
    return json.loads(text, object_pairs_hook=_unique)
