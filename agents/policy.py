"""Per-user recommendation policy ("rec_policy" settings section) and its deterministic memory rules.

Why code, not the model: RecBot leaves memory consolidation to the LLM; here the parser only proposes a
`ParsedCommand` and these pure functions decide what the stored policy becomes, so the result is reproducible,
testable and auditable. Rules, in order:

1. drop expired on load (``expires_at`` past, ``session`` scope from another session);
2. ``reset`` clears everything; retractions delete by reference (attribute and/or value);
3. preservation: a preference identical to an active one is a no-op (keeps the old id and timestamp);
4. resolution: same key (attribute + value; for years: the bound) with a new polarity, kind, weight or
   scope overwrites the old one -- newest wins; a new year bound also drops older bounds it contradicts;
5. integration: anything else is appended (compatible preferences accumulate).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from .schema import MAX_PREFS, ParsedCommand, Preference, canonical_alternatives, now_utc

#: How long a "for now" (session-scoped) preference lasts unless it names its own time ("this week"): a session id
#: is not a promise that the session ends, and without one the wish would never end (other sessions' wishes are
#: kept while they live).
SESSION_TTL = timedelta(hours=12)

SECTION = "rec_policy"


class RecPolicy(BaseModel):
    """The ``rec_policy`` settings section. Validated by the spine store on every write (entry point)."""

    model_config = ConfigDict(extra="forbid")

    preferences: list[Preference] = Field(default_factory=list, max_length=MAX_PREFS)
    feeds_served: int = Field(default=0, ge=0)

    def active(self, now: datetime | None = None, session_id: str | None = None) -> RecPolicy:
        """A copy without expired preferences (rule 1). Session-scoped prefs survive only in their session."""
        now = now or now_utc()
        keep = [p for p in self.preferences if _alive(p, now, session_id)]
        return RecPolicy(preferences=keep, feeds_served=self.feeds_served)

    def hard(self) -> list[Preference]:
        return [p for p in self.preferences if p.kind == "hard"]

    def soft(self) -> list[Preference]:
        return [p for p in self.preferences if p.kind == "soft"]


def _expired(p: Preference, now: datetime) -> bool:
    if p.expires_at is not None:
        return p.expires_at <= now
    # a session wish stored before they got an expiry ends as it would now
    return p.scope == "session" and p.created_at + SESSION_TTL <= now


def _alive(p: Preference, now: datetime, session_id: str | None) -> bool:
    if _expired(p, now):
        return False
    if p.scope == "session" and p.session_id is not None and session_id is not None:
        return p.session_id == session_id
    return True


class MergeReport(BaseModel):
    """What a command did to the policy, for explanations and tests (descriptions only, no user ids)."""

    added: list[str] = Field(default_factory=list)
    replaced: list[str] = Field(default_factory=list)
    preserved: list[str] = Field(default_factory=list)
    retracted: list[str] = Field(default_factory=list)
    unmatched_retractions: list[str] = Field(default_factory=list)
    dropped: list[str] = Field(default_factory=list)  # the oldest preferences past MAX_PREFS
    expired: int = 0
    reset: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.retracted or self.reset or self.expired or self.dropped)

    def summary(self) -> str:
        parts = []
        for name in ("added", "replaced", "preserved", "retracted", "unmatched_retractions", "dropped"):
            items = getattr(self, name)
            if items:
                parts.append(f"{name.replace('_', ' ')}: {'; '.join(items)}")
        if self.reset:
            parts.insert(0, "reset all preferences")
        return " | ".join(parts) or "no change"


def _same_content(a: Preference, b: Preference) -> bool:
    # whether it expires counts ("no horror" after "no horror this week" is a new, lasting rule), when not: a wish
    # said again is the same wish (its expiry is extended, see merge)
    fields = ("polarity", "kind", "attribute", "operator", "value", "weight", "scope", "any_of")
    return all(getattr(a, f) == getattr(b, f) for f in fields) and (a.expires_at is None) == (b.expires_at is None)


def _year_conflicts(new: Preference, old: Preference) -> bool:
    """Does a new year bound supersede an old one of the same kind? Same bound, eq vs anything, or an empty range.
    A soft year wish ("a few more after 2010") never removes a hard bound ("nothing before 1990"), nor the
    reverse: the filter and the boost stand together."""
    if old.attribute != "year" or old.kind != new.kind:
        return False
    if new.operator == "eq" or old.operator == "eq" or new.operator == old.operator:
        return True
    lo, hi = (new, old) if new.operator == "ge" else (old, new)
    return int(lo.value) > int(hi.value)


def _hard_filter_conflicts(new: Preference, old: Preference) -> bool:
    """"Only comedies" after an earlier "only horror": a new positive hard filter on a categorical attribute
    supersedes the older positive hard filters on it (newest wins), instead of stacking into an AND that the
    user never asked for. Filters given together in one command ("comedies and romances") are not touched."""
    return (new.attribute != "year" and new.kind == "hard" and new.polarity == "+"
            and old.attribute == new.attribute and old.kind == "hard" and old.polarity == "+")


def _whole_sets(hit: list[Preference], prefs: list[Preference]) -> list[Preference]:
    """``hit`` and the other members of any set of alternatives (``any_of``) it touches: a retraction or a new
    keep-only filter that removes one alternative removes its set ("only horror or comedy", then "comedy is fine
    again": keeping Horror alone would narrow the feed the user just widened)."""
    sets = {p.any_of for p in hit if p.any_of is not None}
    return hit + [p for p in prefs if p.any_of in sets and p not in hit] if sets else hit


def merge(
    policy: RecPolicy,
    command: ParsedCommand,
    *,
    now: datetime | None = None,
    session_id: str | None = None,
) -> tuple[RecPolicy, MergeReport]:
    """Apply one parsed command to a policy. Pure: returns the new policy and a report, mutates nothing.

    Raises ContradictoryCommandError (nothing applied) when the command contradicts itself.
    """
    command.check_consistent()
    command = canonical_alternatives(command)  # whoever made it: set ids name their sets
    now = now or now_utc()
    report = MergeReport()
    unexpired = [p for p in policy.preferences if not _expired(p, now)]
    report.expired = len(policy.preferences) - len(unexpired)
    # another session's "for now" wishes are not this command's to change: kept as they are (they used to be
    # dropped by any write from another session)
    others = [p for p in unexpired if not _alive(p, now, session_id)]
    prefs = [p for p in unexpired if _alive(p, now, session_id)]
    if command.reset:  # everything the user said, in any session (a reset that left another device's wishes
        report.reset = True  # in place had reported "reset all preferences")
        report.retracted.extend(p.describe() for p in others + prefs)
        prefs, others = [], []
    for r in command.retractions:  # an explicit retraction reaches another session's wishes too
        hit = _whole_sets([p for p in prefs if r.matches(p)], prefs)
        hit_elsewhere = _whole_sets([p for p in others if r.matches(p)], others)
        if not hit and not hit_elsewhere:
            report.unmatched_retractions.append(f"{r.attribute or '*'}={r.value if r.value is not None else '*'}")
        report.retracted.extend(p.describe() for p in hit + hit_elsewhere)
        prefs = [p for p in prefs if p not in hit]
        others = [p for p in others if p not in hit_elsewhere]
    earlier = list(prefs)  # what stood before this command; only these can be superseded by it
    kept: list[Preference] = []  # ...and not those this command states again ("only horror dramas" after "only
    # horror comedies" keeps Horror: Drama used to supersede it, leaving only dramas)
    for new in command.preferences:
        if new.scope == "session":  # bound to the session it was said in, for SESSION_TTL unless it says how long
            new = new.model_copy(update={"session_id": new.session_id or session_id,
                                         "expires_at": new.expires_at or now + SESSION_TTL})
        # only what stood before this command is superseded: two parts of one command stand together ("only
        # movies from 1995, nothing after 2000" had kept only the second; "only horror, and lots more horror" only
        # the wish); a command that contradicts itself is refused by check_consistent
        same = [p for p in prefs if p.key == new.key and p in earlier]
        said_again = [p for p in same if _same_content(p, new)]
        # said again: kept as it is, with any other-kind rule on the same value ("only horror or comedy", "less
        # horror", then the set again keeps the wish)
        if len(said_again) == 1 and all(p.kind != new.kind for p in same if p is not said_again[0]):
            report.preserved.append(new.describe())
            old = said_again[0]
            kept.append(old)
            if old.expires_at is not None and new.expires_at is not None and new.expires_at > old.expires_at:
                prefs[prefs.index(old)] = old.model_copy(update={"expires_at": new.expires_at})  # said again: later
            continue
        if new.kind == "soft":  # "less horror" after "only horror or comedy": the set stays, the wish joins it
            same = [p for p in same if p.any_of is None]  # (replacing Horror alone left "only comedy")
        elif new.polarity == "+":  # a new keep-only filter on one alternative replaces its whole set
            same = [p for p in _whole_sets(same, prefs) if p not in kept]
        if new.attribute == "year":
            same = [p for p in prefs if _year_conflicts(new, p) and p in earlier]
        superseded = [p for p in earlier
                      if p in prefs and p not in same and p not in kept and _hard_filter_conflicts(new, p)]
        same += [p for p in _whole_sets(superseded, prefs) if p not in same and p not in kept]
        report.replaced.extend(p.describe() for p in same)
        ids = {id(p) for p in same}
        prefs = [p for p in prefs if id(p) not in ids]
        prefs.append(new)
        report.added.append(new.describe())
    prefs = others + prefs
    if len(prefs) > MAX_PREFS:  # bounded state: the oldest soft wishes go first, hard rules only after them
        order = sorted(range(len(prefs)), key=lambda i: (prefs[i].kind == "hard", i))
        gone = set(order[: len(prefs) - MAX_PREFS])
        report.dropped.extend(prefs[i].describe() for i in sorted(gone))
        prefs = [p for i, p in enumerate(prefs) if i not in gone]
    return RecPolicy(preferences=prefs, feeds_served=policy.feeds_served), report


def consume_next_feed(policy: RecPolicy) -> RecPolicy:
    """After a feed is served, ``next_feed``-scoped preferences have done their job and are dropped."""
    keep = [p for p in policy.preferences if p.scope != "next_feed"]
    return RecPolicy(preferences=keep, feeds_served=policy.feeds_served + 1)


# ----------------------------------------------------------------------------------------------- persistence
class SettingsStoreLike(Protocol):
    """The slice of guardrails.store.SettingsStore this module needs (so tests can pass a fake)."""

    def get(self, tenant_id: str, user_id: str) -> Any: ...

    def update_section(
        self, tenant_id: str, user_id: str, section: str, fn: Callable[[dict[str, Any]], dict[str, Any]], *,
        actor: str,
    ) -> Any: ...


def load_policy(
    store: SettingsStoreLike, tenant_id: str, user_id: str, *, now: datetime | None = None,
    session_id: str | None = None,
) -> RecPolicy:
    """Read a user's policy with expired preferences dropped (rule 1). Missing section -> empty policy."""
    stored = store.get(tenant_id, user_id)
    settings = getattr(stored, "settings", None) or {}
    return RecPolicy.model_validate(settings.get(SECTION, {})).active(now, session_id)


def apply_command(
    store: SettingsStoreLike, tenant_id: str, user_id: str, command: ParsedCommand, *, actor: str,
    now: datetime | None = None, session_id: str | None = None,
) -> MergeReport:
    """Merge a command into exactly this user's stored policy (versioned + audited by the store)."""
    out: dict[str, MergeReport] = {}

    def fn(section: dict[str, Any]) -> dict[str, Any]:
        new, rep = merge(RecPolicy.model_validate(section or {}), command, now=now, session_id=session_id)
        out["report"] = rep
        return new.model_dump(mode="json")

    store.update_section(tenant_id, user_id, SECTION, fn, actor=actor)
    return out["report"]


def mark_feed_served(store: SettingsStoreLike, tenant_id: str, user_id: str, *, actor: str) -> None:
    store.update_section(
        tenant_id, user_id, SECTION,
        lambda s: consume_next_feed(RecPolicy.model_validate(s or {})).model_dump(mode="json"), actor=actor,
    )


class _Stored(BaseModel):
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    version: int = 0


class InMemoryStore:
    """Minimal stand-in with the SettingsStore get/update_section API (tests, `rec eval`, notebooks).

    Validates the section through RecPolicy on every write, as the real store does via the entry point.
    """

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], _Stored] = {}
        self._lock = threading.Lock()
        self.audit: list[tuple[str, str, str, int]] = []

    def get(self, tenant_id: str, user_id: str) -> _Stored:
        with self._lock:
            return self._data.get((tenant_id, user_id), _Stored()).model_copy(deep=True)

    def update_section(
        self, tenant_id: str, user_id: str, section: str, fn: Callable[[dict[str, Any]], dict[str, Any]], *,
        actor: str,
    ) -> _Stored:
        with self._lock:
            cur = self._data.get((tenant_id, user_id), _Stored())
            data = fn(dict(cur.settings.get(section, {})))
            if section == SECTION:
                data = RecPolicy.model_validate(data).model_dump(mode="json")
            settings = {**cur.settings, section: data}
            new = _Stored(settings=settings, version=cur.version + 1)
            self._data[(tenant_id, user_id)] = new
            self.audit.append((tenant_id, user_id, actor, new.version))
            return new.model_copy(deep=True)
