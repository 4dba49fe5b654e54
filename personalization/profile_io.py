"""A moderation profile as JSON: `export_json` writes the format `import_json` reads (the user's own data)."""

from __future__ import annotations

import json
from typing import Any

from guardrails.errors import InvalidInputError
from guardrails.jsonio import loads_unique

from .profile import MAX_TOTAL_CHARS, ModerationProfile, check_contradictions, parse_profile


def export_json(profile: ModerationProfile) -> str:
    """The whole profile as indented JSON with sorted keys (non-ASCII kept), the format `import_json` reads.
    It holds the user's own example texts: treat it as user data, never log it (`list_categories` is safe)."""
    return json.dumps(profile.model_dump(mode="json"), ensure_ascii=False, indent=2, sort_keys=True)


def import_json(text: str | bytes, *, previous: Any = None) -> ModerationProfile:
    """Parse an exported profile, held to today's limits except that it may keep the size of the `previous`
    profile it replaces (`ProfileService.import_json` passes the user's stored one)."""
    profile = parse_profile(load_profile_json(text), new=True, previous=previous)
    for name, cat in profile.categories.items():
        check_contradictions(name, cat)
    return profile


def load_profile_json(text: str | bytes) -> dict[str, Any]:
    """The JSON object of an exported profile, not yet validated as one. Duplicate keys are refused (they would
    silently overwrite); so is anything but an object with ``categories`` (``null`` or ``{}`` would import as the
    default profile, wiping the user's: `export_json` never writes either)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")  # strict: replacement characters would be stored as the user's text
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"profile JSON is not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(text, str) or len(text) > 4 * MAX_TOTAL_CHARS:
        raise InvalidInputError("profile JSON must be a string of reasonable size")

    try:
        data = loads_unique(text)
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        raise InvalidInputError(f"profile is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInputError("profile JSON is nested too deeply") from None
    if not isinstance(data, dict) or "categories" not in data:
        raise InvalidInputError("profile JSON must be an object with 'categories' (what export_json writes)")
    return data
