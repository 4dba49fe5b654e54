"""Clauses of a feed command: where a command splits, what joins back, and which values are only its audience.

The student parser's heads read one clause at a time with its values masked (`mask`); `split_clauses` decides the
clauses ("no horror, and nothing before 1990" is two), and `without_audience` drops the values that only say who
or when a feed is for ("no horror for the kids"). Training (`agents.train`) splits and masks exactly the same way.
"""

from __future__ import annotations

import re

from .catalog import fold
from .lexicon import TIME_PHRASE, Lexicon, Span, tokenize
from .rules import asks_gone

__all__ = ["FILLER", "SCOPE_WORDS", "mask", "split_clauses", "without_audience"]

_SPLIT = re.compile(r"[,;!?]|\.(?=\s|$)|\s(?:and|but|or|also|plus|while|then|though|however)\s")
#: Words a value-only fragment may hold beside its values ("the comedies too"): such a fragment joins the clause before.
FILLER = {"movies", "movie", "films", "film", "the", "some", "any", "a", "an", "please", "stuff", "ones",
          "too", "as", "well", "either", "x", "year", "of", "them"}
#: Words that may make the predicate of "I want X and Y gone" (`rules.asks_gone` decides on the joined clause).
_GONE_WORDS = {"gone", "out", "removed", "blocked", "hidden", "banned", "excluded", "away", "off"}
#: Words that say how long or for when, not what ("for now", "this time", "forever").
SCOPE_WORDS = re.compile(r"\b(?:for now|right now|tonight|today|for this session|this session|for the next feed|"
                         r"next feed|this time|from now on|forever|always|permanently|anymore|any more|ever|"
                         r"for a week|this week|please)\b")


def mask(clause: str, spans: list[Span]) -> str:
    """Replace value spans by 'X' so the heads learn framing, not values."""
    out, last = [], 0
    for sp in sorted(spans, key=lambda s: s.start):
        if sp.start < last:
            continue
        out.append(clause[last:sp.start])
        out.append("YEAR" if sp.attr == "year" else "X")
        last = sp.end
    out.append(clause[last:])
    return re.sub(r"\s+", " ", "".join(out)).strip()


def _has_values(folded: str, text: str, piece: list[int], lex: Lexicon) -> bool:
    a, b = piece
    return bool(lex.spans(folded[a:b], text[a:b]))


def _masked_fragment(folded: str, text: str, piece: list[int], lex: Lexicon) -> str:
    a, b = piece
    frag = folded[a:b]
    return mask(frag, lex.spans(frag, text[a:b])).strip(" ,")


def split_clauses(text: str, lex: Lexicon) -> list[tuple[str, str]]:
    """(folded clause, original clause) pairs. Value-only fragments join the clause before them ("no horror, or
    thrillers"), and so does the rest of "I want X and Y gone"; a period said on its own ("for now", "tonight",
    "just this time") joins the clause it belongs to: the one after it when it opens the message, else the one
    before."""
    folded = fold(text)
    protect = [(s.start, s.end) for s in lex.spans(folded, text)]
    cuts = [0]
    for m in _SPLIT.finditer(folded):
        if not any(a < m.start() < b for a, b in protect):
            cuts += [m.start(), m.end()]
    cuts.append(len(folded))
    pieces = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
    merged: list[list[int]] = []
    lead: int | None = None  # start of a scope-only opening ("for now, no horror"): it joins the clause after it
    for n, (a, b) in enumerate(pieces):
        frag = folded[a:b]
        if not frag.strip():
            continue
        sp = lex.spans(frag, text[a:b])
        rest = [t[2] for t in tokenize(SCOPE_WORDS.sub(" ", TIME_PHRASE.sub(" ", mask(frag, sp).lower())))]
        # "for now", "tonight", "this week", "just this time": a period or scope said on its own
        # ("only for tonight" is left alone: the heads read its "only" as a wish)
        scope_only = (not sp and all(w in ("just", "but", "though") for w in rest)
                      and bool(SCOPE_WORDS.search(frag) or TIME_PHRASE.search(frag)))
        if lead is not None:
            a, lead = lead, None
        elif scope_only and n + 1 < len(pieces) and (not merged or not _has_values(folded, text, merged[-1], lex)):
            lead = a  # "for now, no horror", "hmm, for now, no horror"
            continue
        elif scope_only and merged:  # "no horror, for now": the scope closes the clause before it
            merged[-1][1] = b
            continue
        bare = bool(sp) and all(w in FILLER for w in rest)
        # "I want horror and comedy gone": joined at a plain "and"/"or" when the whole reads as wanting them gone
        gone_tail = (bool(sp) and bool(merged) and any(w in _GONE_WORDS for w in rest)
                     and folded[merged[-1][1]:a].strip() in ("and", "or")
                     and asks_gone(_masked_fragment(folded, text, [merged[-1][0], b], lex)))
        if (bare or gone_tail) and merged:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(folded[a:b].strip(), text[a:b].strip()) for a, b in merged]


#: "... for the kids" / "... for date night" (not "in the mood for X", "looking for X", "I'm up for X": a wish;
#: not "except for X")
_FOR_AUDIENCE = re.compile(r"(?<!mood )(?<!looking )(?<!search )(?<!searching )(?<!up )(?<!go )(?<!ask )(?<!asking )"
                           r"(?<!except )(?<!but )(?<!save )\bfor (?:the |my |our |your |a |an )?$")
_CLAUSE_END = re.compile(r"^(?:\s*(?:movies?|films?|please|pls|tonight|today|too|again|now)\b)*\W*$")


def without_audience(clause: str, spans: list[Span], polarity: str) -> list[Span]:
    """Spans less the audience or occasion of a clause that names something else: "no more horror movies for the
    kids" excludes horror, not children's films; "only comedies for date night" is no filter on the film "Date
    Night" (a title ending the clause). A wish keeps children's films ("only comedies for kids": the parent wants
    them); alone, the audience is the request ("something for the kids")."""
    def audience(sp: Span) -> bool:
        if not _FOR_AUDIENCE.search(clause[:sp.start]):
            return False
        if sp.attr == "title":
            return bool(_CLAUSE_END.match(clause[sp.end:]))
        return sp.attr == "genre" and sp.value == "Children" and polarity == "-"

    kept = [sp for sp in spans if not audience(sp)]
    return kept if kept else spans
