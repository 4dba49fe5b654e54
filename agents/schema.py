"""Structured-preference schema for command-driven recommendation (RecBot's P = {P+, P-} x {hard, soft}).

Why a closed schema: everything downstream (memory rules, Filter, checks in `rec eval`) must be deterministic
code, so the parser -- rule-based student or LLM -- may only emit values this module accepts. Anything else is
rejected here with a typed error instead of reaching the planner.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from guardrails.errors import InvalidInputError

Polarity = Literal["+", "-"]
Kind = Literal["hard", "soft"]
Attribute = Literal["genre", "year", "tag", "title", "text"]
Operator = Literal["eq", "ge", "le", "contains", "like"]
Scope = Literal["next_feed", "session", "persistent"]

ATTRIBUTES: tuple[str, ...] = ("genre", "year", "tag", "title", "text")
#: Which operators make sense per attribute. `like` = "similar to" (soft semantic match), `contains` = substring.
ALLOWED_OPS: dict[str, frozenset[str]] = {
    "genre": frozenset({"eq"}),
    "year": frozenset({"eq", "ge", "le"}),
    "tag": frozenset({"eq"}),
    "title": frozenset({"contains", "like"}),
    "text": frozenset({"like"}),
}
#: Release years outside this window cannot match any film; "movies from 3020" is rejected, not silently empty.
MIN_YEAR, MAX_YEAR = 1870, 2030
MAX_VALUE_LEN = 200
MAX_PREFS = 64


class CommandError(InvalidInputError):
    """A command that cannot be applied as stated (base of the agent's typed input errors)."""


class ContradictoryCommandError(CommandError):
    """One command asks for X and not-X at once ("only horror, no horror"): nothing is applied."""


class UnknownAttributeError(CommandError):
    """The command names an attribute the schema or the catalog does not have."""


class InvalidTextError(CommandError):
    """The command text cannot be processed at all (e.g. a lone surrogate: not encodable as UTF-8)."""


def require_valid_text(text: str) -> None:
    """Raise InvalidTextError for text that is not valid Unicode (lone surrogates from a bad decoder)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTextError("command text is not valid Unicode (it contains a lone surrogate)") from None


def with_entity_kinds(text: str, pad: str = "") -> str:
    """``text`` with each e-mail address, phone, card or IBAN number (the PII scan's matches) replaced by its kind,
    ``pad`` on either side: what the feed policy and chat category names keep of personal data."""
    from guardrails.detectors.pii import scan  # local: a regex module, loaded when a command carries text

    out, last = [], 0
    for m in scan(text):
        out += [text[last:m.start], f"{pad}{m.entity}{pad}"]
        last = m.end
    return "".join([*out, text[last:]]) if out else text


def _title_key(value: str | int) -> str:
    """'Amelie (Fabuleux destin d'Amélie Poulain, Le) (2001)' and 'Amelie' name the same film for a retraction."""
    from .catalog import clean_title, fold  # local: catalog imports this module

    return fold(clean_title(str(value))).strip()


def alternatives_id(values: list[tuple[str, str | int]]) -> str:
    """The ``any_of`` id of a set of (attribute, value) alternatives: the same set named again gets the same id
    (so repeating "only horror or comedy" preserves the filters instead of replacing them)."""
    names = sorted({f"{attr}={str(value).strip().lower()}" for attr, value in values})
    return hashlib.sha1("|".join(names).encode()).hexdigest()[:12]


def now_utc() -> datetime:
    return datetime.now(UTC)


class Preference(BaseModel):
    """One explicit user preference. Hard = checkable by rule (filter); soft = scored (boost/penalty)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:10])
    polarity: Polarity
    kind: Kind
    attribute: Attribute
    operator: Operator = "eq"
    value: str | int
    weight: float = Field(default=1.0, ge=0.0, le=2.0)
    scope: Scope = "persistent"
    expires_at: datetime | None = None
    session_id: str | None = None  # bound at apply time for scope == "session"
    #: Hard keep-only filters sharing an ``any_of`` id are alternatives: "only horror or comedy" keeps an item with
    #: either genre (the facet convention). Filters without one, or in different sets, must all hold.
    any_of: str | None = Field(default=None, pattern=r"^[0-9a-f]{1,16}$")
    source: str = Field(default="", max_length=500)
    created_at: datetime = Field(default_factory=now_utc)

    @model_validator(mode="after")
    def _consistent(self) -> Preference:
        if self.operator not in ALLOWED_OPS[self.attribute]:
            raise ValueError(f"operator {self.operator!r} not allowed for attribute {self.attribute!r}")
        if self.attribute == "year":
            if not isinstance(self.value, int) or isinstance(self.value, bool):
                raise ValueError("year value must be an integer")
            if not MIN_YEAR <= self.value <= MAX_YEAR:
                raise ValueError(f"year {self.value} outside [{MIN_YEAR}, {MAX_YEAR}]")
            if self.polarity != "+":
                raise ValueError("year constraints are stored positively (use ge/le)")
        else:
            if not isinstance(self.value, str) or not self.value.strip():
                raise ValueError(f"{self.attribute} value must be a non-empty string")
            if len(self.value) > MAX_VALUE_LEN:
                raise ValueError("value too long")
        if self.attribute == "text" and self.kind != "soft":
            raise ValueError("free-text preferences are soft only (not checkable by rule)")
        if self.operator == "like" and self.kind != "soft":
            raise ValueError("'like' (similarity) preferences are soft only")
        if self.any_of is not None and (self.kind, self.polarity) != ("hard", "+"):
            raise ValueError("only hard keep-only filters can be alternatives (any_of)")
        if self.any_of is not None and self.attribute == "year":
            raise ValueError("year bounds cannot be alternatives (any_of)")
        return self

    @property
    def key(self) -> tuple[str, str]:
        """Identity used by the memory rules: attribute + normalised value (polarity-agnostic)."""
        if self.attribute == "year":
            return ("year", self.operator)
        return (self.attribute, str(self.value).strip().lower())

    def describe(self) -> str:
        """Short human-readable form for explanations (never logged with user ids)."""
        word = {"+": "want", "-": "avoid"}[self.polarity]
        either = " (or one of the others in its set)" if self.any_of else ""
        return f"{self.kind} {word} {self.attribute} {self.operator} {self.value}{either}"

    def slot(self) -> tuple[str, str, str, str, str]:
        """(attribute, operator, value, polarity, kind): the unit the parser is scored on."""
        return (self.attribute, self.operator, str(self.value).lower(), self.polarity, self.kind)


class Retraction(BaseModel):
    """"Forget the year limit": delete active preferences by reference (attribute and/or value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attribute: Attribute | None = None
    value: str | int | None = None
    kind: Kind | None = None  # only filters ("hard") or only boosts ("soft"); None: both
    source: str = ""

    @model_validator(mode="after")
    def _has_target(self) -> Retraction:
        if self.attribute is None and self.value is None:
            raise ValueError("a retraction needs an attribute or a value (use reset=True to clear all)")
        return self

    def matches(self, pref: Preference) -> bool:
        if self.attribute is not None and pref.attribute != self.attribute:
            return False
        if self.kind is not None and pref.kind != self.kind:
            return False
        if self.value is None:
            return True
        if str(pref.value).strip().lower() == str(self.value).strip().lower():
            return True
        # titles are stored as the user named them ("Amelie") or, for "more like", as the full catalog title
        return pref.attribute == "title" and _title_key(pref.value) == _title_key(self.value)

    def slot(self) -> tuple[str, str, str, str, str]:
        return ("retract", str(self.attribute or ""), str(self.value or "").lower(), "", "")


def canonical_alternatives(cmd: ParsedCommand) -> ParsedCommand:
    """``cmd`` with each set of alternatives given the id of the set it names (`alternatives_id`), whatever ids
    its producer used: an LLM's "1" reused across commands would otherwise join unrelated filters into one set.
    A "set" of one filter is no set."""
    groups: dict[str, list[tuple[str, str | int]]] = {}
    for p in cmd.preferences:
        if p.any_of is not None:
            groups.setdefault(p.any_of, []).append((p.attribute, p.value))
    if not groups:
        return cmd
    ids = {g: alternatives_id(values) if len(values) > 1 else None for g, values in groups.items()}
    prefs = [p.model_copy(update={"any_of": ids[p.any_of]}) if p.any_of is not None else p for p in cmd.preferences]
    return cmd.model_copy(update={"preferences": prefs})


class ParsedCommand(BaseModel):
    """Everything one user message asks of the recommendation policy. Produced by either parser backend."""

    model_config = ConfigDict(extra="forbid")

    preferences: list[Preference] = Field(default_factory=list, max_length=MAX_PREFS)
    retractions: list[Retraction] = Field(default_factory=list, max_length=MAX_PREFS)
    reset: bool = False
    text: str = Field(default="", exclude=True)

    @property
    def is_empty(self) -> bool:
        return not (self.preferences or self.retractions or self.reset)

    def slots(self) -> set[tuple[str, str, str, str, str]]:
        out = {p.slot() for p in self.preferences} | {r.slot() for r in self.retractions}
        if self.reset:
            out.add(("reset", "", "", "", ""))
        return out

    def check_consistent(self) -> None:
        """Raise ContradictoryCommandError when one message states the same key both ways."""
        seen: dict[tuple[str, str], Preference] = {}
        for p in self.preferences:
            if p.attribute == "year":
                continue
            other = seen.get(p.key)
            if other is not None and other.polarity != p.polarity:
                raise ContradictoryCommandError(
                    f"contradictory command: both want and avoid {p.attribute} {p.value!r}; nothing applied"
                )
            seen[p.key] = p
        years = [p for p in self.preferences if p.attribute == "year" and p.kind == "hard"]
        lo = max((int(p.value) for p in years if p.operator in ("ge", "eq")), default=None)
        hi = min((int(p.value) for p in years if p.operator in ("le", "eq")), default=None)
        if lo is not None and hi is not None and lo > hi:
            raise ContradictoryCommandError(f"contradictory year range {lo}..{hi}; nothing applied")
