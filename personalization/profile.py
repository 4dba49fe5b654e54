"""The per-user moderation profile (settings section ``moderation``); the pure operations on it are in
`personalization.profile_ops`.

Why a pydantic model: the store validates every write through it (entry point
``railguard.settings: moderation``), so a malformed or oversized profile is rejected before it reaches the
database instead of failing later inside a detector. Every operation here is pure (profile in, new profile
out) so it can run inside ``store.update_section(..., fn)`` and be unit-tested without a store.

Why unblock is a policy mask: the paper shows prompt-only unblocking is unreliable (0.09-0.93 success). Here
``unblock`` sets the category's action to ``allow``; detectors still score it (the demo shows the score) but
the finding can never enforce. That is deterministic whatever the backend says.

User-written definitions and examples are *data*. They are length-limited, stripped of control characters,
JSON-quoted inside ICL prompts and only embedded as vectors by the embedding backend; they never change
another category's score under the embedding backend, and never another user's profile.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from guardrails.errors import (
    ConfigError,
    InvalidInputError,
    describe_validation,
    safe_segment,
)

from .user_texts import MAX_EXAMPLES, clean_list, clean_text
from .user_texts import MAX_RAW_ITEMS as MAX_RAW_ITEMS  # re-exported: callers read the limits here
from .user_texts import MAX_TEXT_CHARS as MAX_TEXT_CHARS

Action = Literal["block", "warn", "allow"]
Generalize = Literal["auto", "examples"]

BASE_CATEGORIES: dict[str, str] = {
    # Level-2 definitions after the paper's taskDescription.py (wording ours).
    "toxic": "Hostile, offensive language: insults, slurs, harassment, hate toward people or groups.",
    "spam": "Unsolicited, often irrelevant messages: ads, prize claims, scams, premium-rate or phishing lures.",
    "negative": "Messages expressing sadness, anger or frustration that may affect others negatively.",
}
# Only toxicity blocks by default: spam and negative sentiment annotate (warn) until a user opts into blocking
# them ("block spam"). The encoder's spam/sentiment precision (see DATA.md) is too low to block everyone's
# messages on, and negative sentiment is rarely harm on its own.
BASE_DEFAULT_ACTION: dict[str, Action] = {"toxic": "block", "spam": "warn", "negative": "warn"}
RESERVED_NAMES = frozenset({"benign", "harmful", "none", "other"})

MAX_CATEGORIES = 64  # user + base; keeps ICL prompts and per-check work bounded
# Releases before session 25 checked MAX_CATEGORIES before adding the base categories back, so 64 user categories
# were stored as 67: such a profile is still read (and may shrink), but a write may not grow one past MAX_CATEGORIES.
LEGACY_MAX_CATEGORIES = MAX_CATEGORIES + len(BASE_CATEGORIES)
MAX_TOTAL_CHARS = 200_000  # whole profile: bounds store rows and prompt building
# Whole profile, examples + counter-examples + definitions: bounds the one-off cost of compiling a profile on its
# first check (every text is encoded, twice). Measured on 2 CPU cores: 61 categories x 100 texts took 14 s.
MAX_PROFILE_TEXTS = 512
# What releases before that limit could store (MAX_CATEGORIES x (2 x MAX_EXAMPLES + a definition)): such a profile
# is still read and may shrink, but a write may not grow a profile past MAX_PROFILE_TEXTS (see `_complete`).
LEGACY_MAX_PROFILE_TEXTS = MAX_CATEGORIES * (2 * MAX_EXAMPLES + 1)
NAME_RE = re.compile(r"[a-z][a-z0-9_\-]{0,47}")  # matched with fullmatch: "toxic\n" is not "toxic"


class Category(BaseModel):
    """One detectable category: what it means, examples of it and of what it is not, and the policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    definition: str = ""
    examples: list[str] = Field(default_factory=list)
    counter_examples: list[str] = Field(default_factory=list)
    action: Action = "block"
    # None: the backend's calibrated operating point (score 0.5 = target FPR on held-out benign text).
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, strict=True)  # strict: no True, no "0.7"
    # "auto": when a known concept (toxic / spam / negative) confidently recognises the user's examples, the
    # category also catches that concept's texts (at a strict operating point), the way an LLM generalises from
    # one example; "examples": only texts close to the user's own examples and definition.
    generalize: Generalize = "auto"

    @field_validator("definition", mode="before")
    @classmethod
    def _definition(cls, v: Any) -> str:
        return clean_text(v, what="definition")

    @field_validator("examples", "counter_examples", mode="before")
    @classmethod
    def _lists(cls, v: Any, info: Any) -> list[str]:
        return clean_list(v, what=info.field_name)

    @model_validator(mode="after")
    def _consistent(self) -> Category:
        both = set(self.examples) & set(self.counter_examples)
        if both:
            raise InvalidInputError(f"{len(both)} text(s) are both an example and a counter-example (contradiction)")
        return self

    def chars(self) -> int:
        return len(self.definition) + sum(map(len, self.examples)) + sum(map(len, self.counter_examples))


def _same_text(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold().strip()


def default_categories() -> dict[str, Category]:
    return {n: Category(definition=d, action=BASE_DEFAULT_ACTION[n]) for n, d in BASE_CATEGORIES.items()}


class ModerationProfile(BaseModel):
    """A user's moderation settings: the base taxonomy (toxic, spam, negative) plus user categories."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # the audit trail shows a user's own category name as its hash: it may carry their words (audit_paths)
    audit_public_keys: ClassVar[Mapping[str, frozenset[str]]] = {"categories": frozenset(BASE_CATEGORIES)}

    schema_version: Literal[1] = 1
    categories: dict[str, Category] = Field(default_factory=default_categories)

    @field_validator("schema_version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        if type(v) is not int:  # `true` equals 1 to a Literal; a version is an integer
            raise InvalidInputError(f"schema_version must be the integer 1, got {type(v).__name__}")
        return v

    @field_validator("categories", mode="before")
    @classmethod
    def _names(cls, v: Any, info: ValidationInfo) -> Any:
        if not isinstance(v, Mapping):
            raise InvalidInputError("categories must be an object of name → category")
        if len(v) > LEGACY_MAX_CATEGORIES:  # before any work; the exact limit is checked once bases are added
            raise InvalidInputError(f"{len(v)} categories; the limit is {MAX_CATEGORIES}")
        writing = isinstance(info.context, dict) and "previous" in info.context  # a write through the store
        out: dict[Any, Any] = {}
        for name, cat in v.items():  # a read takes a name an older release accepted as the name it meant
            out[check_name(name if writing else _legacy_name(name, v, out))] = cat
        return out

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> ModerationProfile:
        # Base categories are always present (possibly unblocked), so "absent" never silently means "allow".
        for name, cat in self.categories.items():  # a user category with nothing to learn from scores nothing
            if name not in BASE_CATEGORIES and not cat.examples and not cat.definition:
                raise InvalidInputError(f"category {name!r} needs at least one example or a definition")
        missing = {n: c for n, c in default_categories().items() if n not in self.categories}
        if missing:
            object.__setattr__(self, "categories", {**missing, **self.categories})
        total = sum(c.chars() for c in self.categories.values())
        if total > MAX_TOTAL_CHARS:
            raise InvalidInputError(f"profile holds {total} characters of text; the limit is {MAX_TOTAL_CHARS}")
        # A write through the store (context "previous": what it replaces) may keep what a profile already held
        # but never grow it past today's limits; a read accepts what earlier releases could store.
        ctx = info.context if isinstance(info.context, dict) else {}
        held = _size(ctx["previous"]) if "previous" in ctx else None
        if "previous" in ctx and not ctx.get("import"):  # a store write (an import checks on its own, with a typed
            # InvalidInputError): a case or Unicode-form contradiction entering now is refused, as block_new and
            # the imports do (the HTTP section PUT had let "Scam coin" and its counter-example "scam coin" in, which
            # silently disabled the example); what was stored stays
            before = ctx["previous"].get("categories", {}) if isinstance(ctx["previous"], Mapping) else {}
            for name, cat in self.categories.items():
                old = before.get(name) if isinstance(before, Mapping) else None
                if not isinstance(old, Mapping) or (old.get("examples"), old.get("counter_examples")) != (
                        cat.examples, cat.counter_examples):
                    check_contradictions(name, cat)
        cats_limit = LEGACY_MAX_CATEGORIES if held is None else max(MAX_CATEGORIES, held[0])
        if len(self.categories) > cats_limit:
            raise InvalidInputError(f"{len(self.categories)} categories with the base ones; the limit is "
                                    f"{MAX_CATEGORIES}")
        texts = _size(self)[1]
        if texts > (LEGACY_MAX_PROFILE_TEXTS if held is None else max(MAX_PROFILE_TEXTS, held[1])):
            raise InvalidInputError(f"profile holds {texts} examples, counter-examples and definitions; the limit is "
                                    f"{MAX_PROFILE_TEXTS}")
        return self

    def active(self) -> dict[str, Category]:
        """Categories whose findings may enforce (action ≠ allow)."""
        return {n: c for n, c in self.categories.items() if c.action != "allow"}


def _legacy_name(name: Any, given: Mapping[Any, Any], taken: Mapping[Any, Any]) -> Any:
    """A stored name from before names were matched whole ("dogs\\n" passed the old check) as the name it was
    meant to be; "-legacy" appended where that name is taken (or is a base or reserved name)."""
    if not (isinstance(name, str) and name.endswith("\n") and NAME_RE.fullmatch(name[:-1])):
        return name
    clash = set(given) | set(taken) | set(BASE_CATEGORIES) | RESERVED_NAMES
    if name[:-1] not in clash:
        return name[:-1]
    for n in range(1, len(given) + 2):  # never over a name the profile holds: that category would be lost
        alias = f"{name[:-1][:40 - len(str(n))]}-legacy{n if n > 1 else ''}"
        if alias not in clash:
            return alias
    raise InvalidInputError("no free name for a legacy category")  # unreachable: more candidates than names


def _size(data: Any) -> tuple[int, int]:
    """(categories, examples + counter-examples + definitions) of a profile or a stored profile dict, counted as
    read (base categories completed); (0, 0) for none or anything unreadable."""
    if not isinstance(data, ModerationProfile):
        if not isinstance(data, Mapping) or not data:
            return 0, 0
        try:
            data = ModerationProfile.model_validate(dict(data))
        except (ValidationError, InvalidInputError):
            return 0, 0
    cats = data.categories.values()
    return len(cats), sum(len(c.examples) + len(c.counter_examples) + bool(c.definition) for c in cats)


def check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise InvalidInputError(f"category name must be a string, got {type(name).__name__}")
    if not NAME_RE.fullmatch(name) or name in RESERVED_NAMES:
        raise InvalidInputError(
            f"invalid category name {safe_segment(name)!r}: lowercase letters, digits, '_' or '-', 1-48 chars, "
            f"starting with a letter, not one of {sorted(RESERVED_NAMES)}"
        )
    return name


def _validated(data: dict[str, Any], name: str) -> Category:
    try:
        return Category.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid category {name!r}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    """Where and what, never the offending value: errors must not echo a user's examples into logs or replies."""
    return describe_validation(exc, "profile")


def parse_profile(data: Any, *, new: bool = False, previous: Any = None) -> ModerationProfile:
    """Validate a stored dict (or None → default) into a profile, with typed errors. Stored data is read as earlier
    releases could write it; `new` (an import: data entering now) holds it to today's rules (whole-name matching,
    MAX_CATEGORIES, MAX_PROFILE_TEXTS), except that it may keep the size of the `previous` profile it replaces."""
    if not new and (data is None or data == {}):
        return ModerationProfile()
    if isinstance(data, ModerationProfile) and not new:
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"moderation profile must be an object, got {type(data).__name__}")
    try:
        context = {"previous": previous, "import": True} if new else None
        return ModerationProfile.model_validate(dict(data), context=context)
    except ValidationError as exc:
        raise ConfigError(f"invalid moderation profile: {_describe(exc)}") from None


def check_contradictions(name: str, cat: Category) -> None:
    """Refuse a text that is both an example and a counter-example as the encoder reads them (NFC, case-folded:
    MiniLM is uncased), not only byte for byte: "café scam" in NFC and NFD, or "Scam" and "scam", embed the same, so
    the counter-example would cap the example for good. Checked on data entering now (block_new, import); stored
    profiles are read as earlier releases wrote them (only identical texts were refused then)."""
    both = {_same_text(t) for t in cat.examples} & {_same_text(t) for t in cat.counter_examples}
    if both:
        raise InvalidInputError(f"category {name!r}: {len(both)} text(s) are both an example and a counter-example "
                                "(contradiction; they differ only in case or Unicode form)")


#: moved to `profile_ops` (session 39: this module had grown past 400 lines); still reachable here
_OPS = frozenset({"block_new", "set_action", "set_threshold", "unblock", "reblock", "extend", "remove", "reset",
                  "list_categories"})


def __getattr__(name: str) -> Any:
    """`import_json`, `export_json` and `load_profile_json` moved to `profile_io`, the operations to `profile_ops`;
    still reachable here."""
    if name in ("import_json", "export_json", "load_profile_json"):
        from . import profile_io

        return getattr(profile_io, name)
    if name in _OPS:
        from . import profile_ops

        return getattr(profile_ops, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
