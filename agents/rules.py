"""Deterministic framing rules applied after the student parser's learned heads.

Why a rule layer instead of retraining: a handful of short idioms flip the meaning of a clause in a way the
heads (trained on simulator.py output) never saw -- "anything but X" is an exclusion although it contains no
negation word, "show me X again" re-enables X although the heads read "show me ... again" as a repeat of the
earlier "no X". These phrasings are unambiguous, so a small, auditable rule table fixes them without touching the
shipped artifacts. The rules read the *masked* clause (values replaced by ``X``/``YEAR``, see parser.mask), so
they only look at framing, exactly like the heads.
"""

from __future__ import annotations

import re

_V = r"(?:X|YEAR)"
#: Negation anywhere in a clause (a re-enable cue such as "again" does not re-enable under negation).
_NEG = re.compile(r"\b(?:no|not|never|nothing|none|without|dont|stop|less|fewer|hate|avoid|skip|hold|exclude"
                  r"|excluding|neither|nor)\b|n't\b|\bdo not\b")
#: (pattern, overrides): first match wins. Overrides replace head outputs (intent, polarity, kind).
_RULES: tuple[tuple[re.Pattern[str], dict[str, str]], ...] = (
    # "I don't hate horror anymore", "I no longer mind X", "stop excluding X": the earlier rule about X goes (read
    # by the heads as a negation of X, which excluded it)
    (re.compile(rf"\b(?:(?:do not|dont|don't|no longer)\s+(?:really\s+)?(?:hate|mind|dislike|exclude|block|filter"
                rf"|avoid)|stop (?:excluding|blocking|filtering|hiding|avoiding))\b.*{_V}"),
     {"intent": "retract"}),
    # "neither horror nor comedy" = exclude both (the heads read the two X with no "no" as wanted)
    (re.compile(rf"\bneither\b.*{_V}.*\bnor\b.*{_V}"),
     {"intent": "add", "polarity": "-", "kind": "hard"}),
    # "nothing but horror" = only horror
    (re.compile(rf"\bnothing (?:but|except|other than|apart from|besides)\b.*{_V}"),
     {"intent": "add", "polarity": "+", "kind": "hard"}),
    # "anything but horror", "everything except X", "whatever other than X" = exclude X
    (re.compile(rf"\b(?:anything|everything|something|whatever|all|any ?\w*) (?:but|except|other than|apart from"
                rf"|besides|save for)\b.*{_V}"),
     {"intent": "add", "polarity": "-", "kind": "hard"}),
    # "hold the horror", "skip the horror" (but not "skip the horror filter": that is about the filter)
    (re.compile(rf"^(?:\W*(?:please|and|just|also)\s+)*(?:hold|skip|leave out|cut out) (?:the |all |any )?{_V}"
                rf"(?! (?:filter|limit|ban|rule|restriction|exclusion|thing|setting)s?\b)"),
     {"intent": "add", "polarity": "-", "kind": "hard"}),
    # "nothing too violent", "not too dark": a degree of X is unwanted -> a penalty
    (re.compile(rf"^(?:\W*(?:please|and|but|also|just)\s+)*(?:nothing|not|none|no)\s+(?:too|very|overly|so|that"
                rf"|really|particularly|excessively)\s+{_V}"),
     {"intent": "add", "polarity": "-", "kind": "soft"}),
    # "nothing from before 1960", "nothing from X", "nothing with X": "nothing" opening a clause with a preposition
    # excludes (the heads read "nothing from YEAR" as wanted, like "movies from YEAR"); "nothing beats X" and
    # "nothing like X" are chat, left to the heads
    (re.compile(rf"^(?:\W*(?:please|and|but|also|just|so|ok|okay)\s+)*nothing (?:from|with|about|starring|featuring"
                rf"|by|released|made|set)\b.*{_V}"),
     {"intent": "add", "polarity": "-", "kind": "hard"}),
    # "never show me X", "stop recommending X", "keep X away (from me)": exclusions said as lasting (the heads read
    # some as a mere penalty); only as the clause's own request, not "stop recommending only X" (a lift of "only")
    (re.compile(rf"^(?:\W*(?:please|and|but|also|just|so|ok|okay)\s+)*(?:(?:please )?(?:never|don't ever|do not ever)"
                rf"(?: again)? (?:show|recommend|suggest|offer|give)|(?:please )?stop (?:recommending|showing"
                rf"|suggesting|offering|giving))\b(?!.*\bonly\b).*{_V}"
                rf"|^(?:\W*(?:please|and|but|also|just|so|ok|okay)\s+)*keep {_V}(?: \w+)? away"
                rf"(?: from [\w' ]{{1,30}})?\W*$"),
     {"intent": "add", "polarity": "-", "kind": "hard"}),
)
#: Permission said again is a lift too ("X is fine again", "you can show X again": the rule goes; wanting more X
#: is "show me X again", below).
_LIFT = re.compile(rf"^(?:\W*(?:please|and|also|just|ok|okay|actually|hey|hmm|so|but)\s+)*(?:(?:allow|unblock|unban"
                   rf"|unmute) {_V}|lift the {_V}(?: \w+)? (?:ban|filter|block|restriction|limit)s?"
                   rf"|{_V}(?: movies| films)? (?:is|are) (?:ok|okay|fine|allowed|alright|acceptable)"
                   rf"(?: now| again)?\W*$"
                   rf"|(?:you can|you may|feel free to) (?:show|include|recommend|suggest)(?: me)?(?: the| some)? {_V}"
                   rf"(?: movies| films)? again\b)")
#: "80s movies are fine too" after "nothing before 2000": the year bounds go (the heads had stored "only the 80s", a
#: narrower feed than either). A lift never narrows, so it may allow more than was named. Only for years: "dramas are
#: fine too" after "only comedies" asks to add, which a lift would not do ("romantic comedies are fine too" would
#: have dropped "only comedies").
_YEAR_LIFT = re.compile(r"^(?:\W*(?:please|and|also|just|ok|okay|actually|hey|hmm|so|but)\s+)*(?:YEAR ?)+"
                        r"(?: movies| films| stuff)? (?:is|are) (?:ok|okay|fine|allowed|alright|acceptable)"
                        r"(?: too| as well| also)\W*$")
#: "forget the 90s", "drop 1990", "scrap the year filter": the year bounds go. The heads read "forget YEAR" as a
#: wish, and stored "only the 90s" in place of the user's "nothing before 2000" (review, session 31).
_YEAR_FORGET = re.compile(r"^(?:\W*(?:please|and|also|just|ok|okay|actually|hey|hmm|so|but)\s+)*(?:forget|drop|scrap"
                          r"|cancel|undo|ditch|lose|remove|delete|clear)(?: about)?(?: the| my| that| this)?"
                          r" (?:YEAR ?)+(?: ?(?:movies|films|stuff))?(?: ?(?:rule|filter|limit|bound|cutoff|thing)s?)?"
                          r"\W*$")
#: "show me X again", "X again please", "bring back X", "put X back", "X is back": re-enable X (when not negated).
_REENABLE = re.compile(rf"{_V}.*\bagain\b|\bagain\b.*{_V}|\bbring (?:back )?(?:the |some )?{_V}(?: back)?\b"
                       rf"|\bput (?:the |some )?{_V} back\b|{_V} (?:is|are) back\b")


#: Filler words a wish may open with ("ok so show me X").
_WISH_LEAD = r"^(?:\W*(?:please|and|just|also|ok|okay|hey|hmm|actually|so)\s+)*"


#: "show me X", "give me X", "I want X" with no negation anywhere: X is wanted (the n-gram heads read "show me X"
#: as an exclusion, from "don't show me X" / "stop showing me X").
_ASK = re.compile(_WISH_LEAD + r"(?:show me|give me|i want"
                  r"|i'd like|i would like|i'd love|i would love)\b")


#: Anything in an "I want X" clause that may turn it into an exclusion keeps the heads' reading ("I want zero
#: horror", "I'd like horror gone", "show me horror rarely").
_ASK_BLOCKERS = re.compile(_NEG.pattern + r"|\b(?:zero|rarely|seldom|gone|removed|out|blocked|hidden|rid|banned"
                           r"|excluded|away|off|filtered|less|fewer|minus)\b")


#: "I want X gone", "I'd like X out", "I want X and Y gone": each X is excluded (the heads read the "I want" and
#: wanted X).
_ASK_GONE = re.compile(_WISH_LEAD + r"(?:i want|i'd like|i would like|i need)(?: all| the| any)?"
                       r" X(?:(?: movies| films)?(?:,| and| or)? X)*(?: movies| films)? (?:gone|out|removed|blocked"
                       r"|hidden|banned|excluded|away|off my (?:feed|list|recommendations))\b")


#: "i dont want X" as "i don't want X" (the heads read the apostrophe-less form as wanting X).
_DONT_WANT = re.compile(_WISH_LEAD + r"i (?:dont|don't|do not)"
                        r" (?:want|need)(?: to (?:see|watch))?(?: any| more| the)? X\b")


def asks_gone(masked: str) -> bool:
    """Whether a masked clause asks for its values gone ("i want X and X gone", "i'd like X out of my feed")."""
    return bool(_ASK_GONE.search(masked))


def framing_rules(masked: str, heads: dict[str, str]) -> dict[str, str]:
    """The heads' outputs for one masked clause, corrected by the idiom table (a new dict; input untouched)."""
    out = dict(heads)
    m = masked  # values are upper-case X / YEAR, the rest is folded (lower-case)
    for rx, over in _RULES:
        if rx.search(m):
            out.update(over)
            return out
    if _DONT_WANT.search(m):
        out.update({"intent": "add", "polarity": "-", "kind": "hard"})
        return out
    if _ASK_GONE.search(m):
        out.update({"intent": "add", "polarity": "-", "kind": "hard"})
        return out
    year_lift = bool(_YEAR_LIFT.search(m) or _YEAR_FORGET.search(m))
    if (year_lift or _LIFT.search(m)) and not _NEG.search(m.replace("X", " ").replace("YEAR", " ")):
        out["intent"] = "retract"
        if year_lift:
            out["retract_kind"] = "hard"  # the filters go; a boost for another decade ("more 90s movies") stays
        return out
    if _REENABLE.search(m) and not _NEG.search(m.replace("X", " ").replace("YEAR", " ")):
        # re-enabling replaces an earlier exclusion of the same value (same key, newest wins) with a mild boost;
        # "only X again" keeps its hard kind
        out.update({"intent": "add", "polarity": "+"})
        if not re.search(r"\bonly\b", m):
            out["kind"] = "soft"
        return out
    if _ASK.search(m) and out.get("intent") == "add" and not _ASK_BLOCKERS.search(m.replace("X", " ")
                                                                                   .replace("YEAR", " ")):
        out["polarity"] = "+"
    return out


_LEAD = r"^(?:\W*(?:please|and|just|ok|okay|so|hmm|actually)\s+)*"
_KIND = r"(?: movies| films| ones| stuff)?"
#: "not horror but comedy", "no horror, just comedy": the first value avoided, the bare one after "but" wanted (one
#: clause, as the bare value joins it; the heads applied one polarity to both and kept only horror-comedies).
_NOT_X_BUT_Y = re.compile(_LEAD + r"(?:(?:i want|show me|give me|i'd like)\s+)?(no|not)\s+X" + _KIND
                          + r"\s*,?\s*(?:but|just|only)\s+(?:some |more |lots of )?X" + _KIND + r"(?: please)?\W*$")
#: "comedies not horror", "comedy rather than horror", "comedy instead of horror", "comedy over horror".
_X_NOT_Y = re.compile(_LEAD + r"(?:(?:i want|show me|give me|i'd like|i'd rather have|i prefer)\s+)?"
                      r"(?:some |more )?X" + _KIND + r"\s*,?\s*(?:not|rather than|instead of|over|but not)\s+"
                      r"(?:the |any )?X" + _KIND + r"(?: please)?\W*$")
#: An exception to a rule on a value ("no horror except comedies", "unless it's a comedy"): not representable, so
#: refused (both values were excluded), as is one to a negation ("no movies unless they're comedies" excluded
#: comedies). "everything except X" names no rule before it: that is an exclusion of X.
EXCEPTION = re.compile(r"(?:\bX\b|\b(?:no|nothing|never|not|don't|dont|none)\b).*\b(?:except|unless|apart from"
                       r"|other than)\b.*\bX\b")


def contrast(masked: str) -> list[dict[str, str]] | None:
    """For a clause of two values said in contrast, each value's own reading, in order (soft: a preference said
    against another); None for any other clause."""
    m = _NOT_X_BUT_Y.search(masked)
    if m:
        return [{"intent": "add", "polarity": "-", "kind": "hard" if m.group(1) == "no" else "soft"},
                {"intent": "add", "polarity": "+", "kind": "soft"}]
    if _X_NOT_Y.search(masked):
        return [{"intent": "add", "polarity": "+", "kind": "soft"}, {"intent": "add", "polarity": "-", "kind": "soft"}]
    return None
