"""Command router: one entry point that splits a user's message into recommendation and moderation commands.

Why a router in front of both policies: in a chat product the same sentence can steer the feed ("no horror")
and the moderation profile ("stop showing me crypto spam"). Identity comes only from the caller's arguments
(user_id / tenant_id / session_id): text that tries to address another user ("apply this to user 42", "delete
all users' policies") is refused as a whole and changes nothing, for anyone.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from guardrails.errors import InvalidInputError, RailguardError
from guardrails.store.settings import check_key

from .catalog import fold
from .lexicon import GENRE_SYNONYMS
from .moderation_backend import (
    ModerationBackend,
    ModerationNotAvailableError,
    PersonalizationModeration,
    UnavailableModeration,
    category_name,
)
from .moderation_clauses import (
    _REC_CUE,
    ModerationAction,
    is_bare_target,
    moderation_action,
    moderation_actions,
    moderation_op,
    split_moderation,
)
from .policy import MergeReport, SettingsStoreLike, apply_command
from .questions import is_question, without_questions
from .schema import CommandError, ParsedCommand, require_valid_text

MAX_COMMAND_CHARS = 2000

__all__ = ["MAX_COMMAND_CHARS", "CommandRouter", "CrossUserCommandError", "ModerationAction", "ModerationBackend",
           "ModerationNotAvailableError", "PersonalizationModeration", "RouteKind", "RouteResult",
           "UnavailableModeration", "category_name", "check_identity_safe", "is_bare_target", "is_question",
           "moderation_action", "moderation_actions", "moderation_op", "split_moderation", "without_questions"]


class RouteKind(StrEnum):
    REC = "rec"
    MODERATION = "moderation"
    BOTH = "both"
    NEITHER = "neither"
    REJECTED = "rejected"


class CrossUserCommandError(InvalidInputError):
    """The text tries to act on other users or on the schema itself; refused, nothing applied."""


_CROSS_USER = re.compile(
    r"\b(?:user|account|profile|customer)s?\s*(?:id\s*)?[#:=]?\s*\d+\b|\buser_?id\b"
    r"|\b(?:all|every|other|another|everyone'?s?|everybody'?s?)\s+(?:the\s+)?(?:users?|accounts?|profiles?|people"
    r"|members?|customers?|tenants?|subscribers?)\b|\beach\s+(?:users?|accounts?|profiles?|customers?|tenants?)\b"
    r"|\b(?:entire|whole)\s+(?:user\s*base|userbase|customer\s*base)\b"
    r"|\bfor (?:everyone|everybody)\b|\bon behalf of\b|\buser[_-][a-z0-9]+\b"
    # "everyone's feed", "everybodys recs" (not "everybody's favourite comedies")
    r"|\b(?:everyone|everybody)'?s\b(?! (?:all[- ]time )?(?:favou?rites?|fave?s?|go-to|beloved|top)\b)"
    # another person's feed by name: "bob's feed" (see also _ADDRESSED below)
    r"|\b(?!today'|tonight'|tomorrow'|this week'|week'|weekend'|month'|year')[a-z]+'s (?:feed|account|profile"
    r"|settings|polic\w+|filters?|preferences|recommendations)\b"
    r"|\bignore (?:the|all|your|any|previous|prior) (?:schema|instructions?|rules?|polic\w+)\b"
    r"|\bdelete (?:all|every|everyone)\b|\b(?:admin|root|sudo|system prompt)\b"
    r"|\b(?:for|to|of) @[a-z0-9_]|\bu_?id\s*[#:=]?\s*\d+\b"  # "for @bob", "for uid 5"
    # "reset everyone", "clear everybody's filters", "copy my settings to dave", "no horror on bobs feed"
    r"|\b(?:reset|clear|wipe|erase|unblock|block|change|update|copy|apply)\s+(?:[a-z']+\s+){0,2}?(?:everyone|everybody)\b"
    r"|\b(?:copy|send|share|email|e-mail|forward|give|transfer|sync)\s+(?:my|our|these|this|the|all)\s+(?:[a-z]+\s+)?"
    r"(?:settings|preferences|filters?|polic\w+|profiles?|feeds?|blocks?)\s+(?:to|with)\b"
)
#: "no horror on bobs feed": a possessive without its apostrophe, judged in `check_identity_safe` (a time, an
#: audience or a content word is no owner: "on sundays feed", "in christmas feed", "for adults feed").
_OWNED_FEED = re.compile(r"\b(?:on|to|in|into|for)\s+([a-z]{2,})s\s+(?:feed|account|profile|settings"
                         r"|recommendations)\b")
_NOT_OWNERS = frozenset("my our the this these its his hers ours yours kids friends guests movies films shows series "
                        "weekends weekdays weeknights nights evenings mornings afternoons holidays christmas "
                        "valentines adults news posts comments ads days years decades mondays tuesdays wednesdays "
                        "thursdays fridays saturdays sundays todays tonights".split())


class RouteResult(BaseModel):
    """What the router understood and did for one message (no user text in `explanation` beyond targets)."""

    kind: RouteKind
    rec: ParsedCommand | None = None
    rec_report: MergeReport | None = None
    moderation: list[ModerationAction] = Field(default_factory=list)
    applied: bool = False
    error: str | None = None
    explanation: str = ""


# "for bob, unblock spam" / "apply this to bob" name a person; "for horror, nothing before 1990" / "do the same for
# comedies" scope a command to content. Such a phrase is refused unless its word is one of these (time, audience,
# genre and content words).
_FOR_SCOPES = frozenset(
    "me myself now today tonight tomorrow this the a an my once later next kids children family date movie movies "
    "film films show shows series weekend fun real sure example everything all action adventure animation animated "
    "anime cartoons comedy comedies crime documentary documentaries drama dramas fantasy horror musical musicals "
    "mystery mysteries romance romcoms scifi sci-fi thriller thrillers war western westerns noir imax spam ads posts "
    "messages comments news music reading christmas halloween summer winter".split())
_FOR_SCOPES = _FOR_SCOPES | frozenset(
    "good ever always now usual well us both adults grownups teens everyone everybody something anything nothing "
    "more less awhile while instance starters change once date-night movie-night valentines holidays "
    "thanksgiving easter weekends mornings evenings later tonite".split()
) | frozenset(w for forms in GENRE_SYNONYMS.values() for f in forms for w in f.split())
# Who or when a feed is for, allowed only at the end of a clause ("something light for sunday", "a movie for two",
# "nothing scary for dad"): at the start ("as mom, reset my preferences", "for dad: unblock spam") or after
# "apply/copy this to" the same words address someone, and stay refused.
_AUDIENCE_WORDS = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday mondays fridays saturdays sundays "
    "one two three four five couple couples "
    "dad mom mum mother father parents grandma grandpa granny wife husband partner girlfriend boyfriend "
    "brother sister son daughter baby babies toddler toddlers friends guests".split())
_TRAILING_FOR = 2  # index in _ADDRESSED of the end-of-clause "for X" pattern
_ADDRESSED = (re.compile(r"^\W*for (?:my |our )?([a-z][\w-]*)\s*[,:]"),  # "for bob, unblock spam", "for my husband:"
              re.compile(r"^\W*as (@?[a-z][\w.@-]*)\s*[,:]"),  # "as bob, reset my preferences"
              # a person at the end of a clause: "no horror for bob", "... for @bob", "... for bob@example.com"
              # ... or several: "no horror for bob and carol", "for mom, dad and bob" (each name is judged)
              re.compile(r"\bfor (@?[a-z][\w.@-]*?(?:(?:\s*,\s*|\s+(?:and|&)\s+)@?[a-z][\w.@-]*?)*)"
                         r"(?:\s+(?:please|thanks|too|again|then|as well|from now on|anymore|any more))*"
                         r"\s*(?:$|[,;.!?)])"),
              re.compile(r"\b(?:(?:apply|copy) (?:this|that|it|these|the same)(?: settings?)? (?:to|for|on)"
                         r"|do the same for) ([a-z][\w-]*)"))  # "apply this to bob" (not "change it to ...")


def check_identity_safe(text: str, lexicon: Any = None) -> None:
    """Refuse text that addresses other users or the schema; ids only ever come from the caller. With the parser's
    `lexicon`, the trailing "for X" check reads film titles of two words or more as titles ("more like Dial M for
    Murder", "Waiting for Guffman" address nobody); every other check reads the text as written, so a title is no
    way around them ("do the same for Jackie Brown", "for all the people I know" stay refused), and a one-word
    title stays a possible name ("no horror for Annie")."""
    folded = fold(text)
    allowed = _FOR_SCOPES | {"mine", "all"}

    def addressed(i: int, words: str) -> bool:
        return any(w not in allowed and not (i == _TRAILING_FOR and w in _AUDIENCE_WORDS)
                   for w in re.split(r"\s*,\s*|\s+(?:and|&)\s+", words))

    owners = [m.group(1) for m in _OWNED_FEED.finditer(folded)]
    if any(w + "s" not in _NOT_OWNERS | allowed and w not in allowed for w in owners):  # "moms feed" is mom's
        raise CrossUserCommandError(_ADDRESSES_OTHERS)
    if _CROSS_USER.search(folded) or any(addressed(i, m.group(1)) for i, rx in enumerate(_ADDRESSED)
                                         if i != _TRAILING_FOR for m in rx.finditer(folded)):
        raise CrossUserCommandError(_ADDRESSES_OTHERS)
    trailing = _ADDRESSED[_TRAILING_FOR]
    if not any(addressed(_TRAILING_FOR, m.group(1)) for m in trailing.finditer(folded)):
        return
    if lexicon is not None:  # only now: most commands name no one, and finding titles costs a lexicon pass
        for sp in sorted(lexicon.spans(folded, text), key=lambda s: -s.start):
            if sp.attr == "title" and len(folded[sp.start:sp.end].split()) >= 2:
                folded = folded[:sp.start] + "movie" + folded[sp.end:]
    if any(addressed(_TRAILING_FOR, m.group(1)) for m in trailing.finditer(folded)):
        raise CrossUserCommandError(_ADDRESSES_OTHERS)


_ADDRESSES_OTHERS = ("commands apply only to the user who sends them; text naming other users, all users or the "
                     "schema is refused and nothing was changed")


# "block spam for everyone" / "for all: unblock toxic": a moderation setting is each user's own, so a clause that
# asks for it on everyone's behalf is refused rather than applied to the sender alone (who would believe it global).
# The same words stay an audience in a recommendation clause ("something fun for everyone").
# Only as the clause's audience: at its start, or at its end (filler words and punctuation aside): "block spam for
# all my posts" and "for both comments and DMs" scope the block to content. A platform-wide block is everyone's too.
_FOR_EVERYONE = re.compile(
    r"^\W*for (?:all|everyone|everybody|every one|us|both|others|the others)\b"
    r"|\bfor (?:all|everyone|everybody|every one|us|both|others|the others)(?: of (?:us|them))?"
    r"(?:\s+(?:too|please|now|again|as well|from now on))*\s*(?:$|[,:;.!?)])"
    r"|\b(?:entire|whole)\s+(?:platform|site|community|server|forum)\b")


class CommandRouter:
    """Route + apply for exactly one (tenant, user). `store=None` -> classify and parse only (dry run). ``actor``
    names who the writes come from in the audit trail (`actor_for`)."""

    def __init__(self, parser: Any, store: SettingsStoreLike | None = None,
                 moderation: ModerationBackend | None = None, *, actor: str = "chat") -> None:
        self.parser = parser
        self.store = store
        self.moderation = moderation if moderation is not None else UnavailableModeration()
        self.actor = actor
        # at construction, with the longest operation named: an actor too long for the audit trail failed each write
        check_key("actor", actor)
        check_key("actor", self.actor_for("rec_policy.feed_served"))

    def actor_for(self, operation: str) -> str:
        """The audit trail's actor for one write: who asked (``chat``: the user's own message, by default) and what
        it did, in the CLI's ``cli:<section>.<operation>`` shape, e.g. ``chat:moderation.block``."""
        return f"{self.actor}:{operation}"

    def classify(self, text: str) -> tuple[RouteKind, ParsedCommand | None, list[ModerationAction]]:
        """Decide rec / moderation / both / neither without applying anything."""
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_COMMAND_CHARS:
            return RouteKind.NEITHER, None, []  # commands are short; long messages are ordinary chat
        require_valid_text(text)  # InvalidTextError (a CommandError): nothing below can process it
        check_identity_safe(text, getattr(self.parser, "lexicon", None))
        text = without_questions(text)
        if not text:
            return RouteKind.NEITHER, None, []
        mod_clauses, rest = split_moderation(text)
        if any(_FOR_EVERYONE.search(fold(c)) for c in mod_clauses):
            raise CrossUserCommandError("moderation settings are each user's own: a command for everyone is refused "
                                        "and nothing was changed")
        mods = moderation_actions(mod_clauses)
        cmd: ParsedCommand | None = None
        if rest.strip():
            cmd = self.parser.parse(rest)
            only_text = all(p.attribute == "text" for p in cmd.preferences) and not (cmd.retractions or cmd.reset)
            if cmd.is_empty or (only_text and not _REC_CUE.search(fold(rest))):
                cmd = None  # ordinary chat: free-text "preferences" need an explicit recommendation cue
        kind = (RouteKind.BOTH if cmd and mods else RouteKind.REC if cmd else
                RouteKind.MODERATION if mods else RouteKind.NEITHER)
        return kind, cmd, mods

    def route(self, text: str, *, user_id: str, tenant_id: str = "default", session_id: str | None = None,
              apply: bool = True) -> RouteResult:
        """Classify ``text`` and apply its commands for this user. A message is refused whole when it addresses
        anyone else or cannot be parsed; otherwise its parts apply one by one, like a list of commands (the feed
        policy, then each moderation clause, each its own versioned write), and the result says which applied:
        "no horror, and block crypto scams" with the moderation profile full changes the feed and reports the
        block as not applied."""
        try:
            kind, cmd, mods = self.classify(text)
        except CrossUserCommandError as exc:
            return RouteResult(kind=RouteKind.REJECTED, error=type(exc).__name__, explanation=str(exc))
        except CommandError as exc:
            return RouteResult(kind=RouteKind.REC, error=type(exc).__name__, explanation=f"not applied: {exc}")
        res = RouteResult(kind=kind, rec=cmd, moderation=mods)
        notes = []
        if apply and self.store is not None and cmd is not None:
            try:
                res.rec_report = apply_command(self.store, tenant_id, user_id, cmd, session_id=session_id,
                                               actor=self.actor_for("rec_policy.command"))
                res.applied = True
                notes.append("recommendation policy: " + res.rec_report.summary())
            except CommandError as exc:
                res.error = type(exc).__name__
                notes.append(f"recommendation policy not changed: {exc}")
        elif cmd is not None:
            notes.append(f"recommendation command parsed ({len(cmd.preferences)} preferences), not persisted")
        for m in mods:
            if not apply:
                continue
            try:
                fn = self.moderation.block if m.op == "block" else self.moderation.unblock
                m.result = fn(tenant_id, user_id, m.target, actor=self.actor_for(f"moderation.{m.op}"))
                res.applied = True
            except RailguardError as exc:
                res.error = res.error or type(exc).__name__
                m.result = f"not applied: {exc}"
            until = " (moderation settings have no end date: this lasts until you undo it)" if m.stated_period else ""
            notes.append(f"moderation {m.op} {m.target!r}: {m.result}{until}")
        res.explanation = " | ".join(notes) or "no command"
        return res
