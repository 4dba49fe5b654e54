"""Rule-based slot extraction for the student parser: genres, MovieLens tags, titles, years, scope cues.

Why rules for values: the values must come from the catalog (a genre name, a real tag, a real title, a year),
so matching against catalog-derived lexicons is exact and fast; the learned heads (parser.py) only decide the
framing (intent, polarity, hard/soft, scope), which is where paraphrase variety lives.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from .catalog import GENRES, Catalog, clean_title, fold

GENRE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "Action": ("action", "action movies", "action films", "actioners"),
    "Adventure": ("adventure", "adventures", "adventure movies"),
    "Animation": ("animation", "animated", "animated movies", "cartoons", "cartoon"),
    "Children": ("children's", "childrens", "children", "kids movies", "kids", "kid movies", "family movies"),
    "Comedy": ("comedy", "comedies", "comedic"),
    "Crime": ("crime", "crime movies", "crime films"),
    "Documentary": ("documentary", "documentaries", "docs"),
    "Drama": ("drama", "dramas"),
    "Fantasy": ("fantasy", "fantasy movies"),
    "Film-Noir": ("film-noir", "film noir", "noir"),
    "Horror": ("horror", "horror movies", "horror films", "scary movies"),
    "IMAX": ("imax",),
    "Musical": ("musicals", "musical"),
    "Mystery": ("mystery", "mysteries", "whodunits", "whodunnits"),
    "Romance": ("romance", "romances", "romantic", "romantic movies", "romcoms", "rom-coms", "love stories"),
    "Sci-Fi": ("sci-fi", "scifi", "sci fi", "science fiction", "science-fiction"),
    "Thriller": ("thriller", "thrillers"),
    "War": ("war movies", "war films", "war"),
    "Western": ("western", "westerns"),
}
#: Phrases naming films that have *all* of several genres. The policy schema has no conjunction, so the parser
#: expands them (parser._genre_values): wanting them = wanting each genre (hard: the filters intersect; soft: the
#: boosts add up on films with both); a hard exclusion keeps only the first genre -- the narrowest rule that
#: still guarantees none of them is shown (see README, "Known limitations").
COMPOUND_GENRES: dict[str, str] = {
    form: "Romance+Comedy" for form in ("romantic comedies", "romantic comedy", "romcoms", "romcom", "rom-coms",
                                        "rom-com", "rom coms", "rom com")
}
_TAG_STOP = {
    "bad", "movies", "family", "race", "class", "future", "dialogue", "writing", "memory", "train", "fun",
    "unique", "interesting", "death", "books", "smart", "sweet", "moving", "food", "awesome", "overrated",
    "boring", "predictable", "sequel", "remake", "remade", "television", "business", "president", "blind",
    "imdb top 250", "oscar (best actress)", "shakespeare sort of", "1970s", "masterpiece", "great acting",
    "photography", "cinematography", "06 oscar nominated best movie - animation", "good dialogue", "dance",
    "music", "soundtrack", "good soundtrack", "great soundtrack", "police", "classic", "sad", "epic", "weird",
    "silly", "movie business", "show business", "hollywood", "court", "space", "nonlinear",
}
#: Words naming attributes the schema does not have -> UnknownAttributeError when no known value is present.
UNKNOWN_ATTR = re.compile(
    r"\b(actor|actress|starring|director|directed by|runtime|minutes long|hours? long|under \d+ (?:minutes|hours)"
    r"|language|subtitles?|dubbed|budget|price|cost|box office|rated r|pg-13|age rating|imdb rating|country)\b"
)
#: A rating threshold ("4+ stars", "8/10", "a rating above 4"): the catalog has no rating attribute. Without it
#: such a clause became a free-text wish ("4+ star movies") that matched words, not ratings.
RATING_ASKED = re.compile(
    r"\b\d+(?:\.\d+)?\s*\+?\s*-?\s*stars?\b(?!\s+(?:wars|trek)\b)|\b\d+(?:\.\d+)?\s*(?:/|out of)\s*(?:5|10|100)\b"
    r"|\b(?:ratings?|rated|scores?|scored)\s+(?:of\s+)?(?:(?:above|below|over|under|at least|at most|higher than"
    r"|lower than|more than|less than|greater than)\s+)?\d(?:\.\d+)?(?:\s*(?:stars?|/|out of|points?|\+|or (?:more"
    r"|higher|better|above|less|lower|below)))?(?=\W*$|\s+(?:from|in|and|or|but|only|please)\b)|\bstar ratings?\b"
)
#: A number that names no year the catalog can hold ("from 12345", "since 0") where a year would stand: the number
#: ends the clause (a few closing words aside), so "movies in 35 mm" or "from 5 continents" are no years.
BAD_YEAR = re.compile(r"\b(?:(?:from|after|before|since|until|till|year|than)\s+(?!0\d)(\d{1,3}|\d{5,})"
                      r"|in\s+(\d{5,}))s?"
                      r"(?:\s+(?:on|onwards?|and (?:later|after|earlier|before)|or (?:later|earlier)))?"
                      r"(?:\s+(?:please|pls|thanks|thank you|only|then))*\W*$")
_YEAR_TOKEN = re.compile(r"\b(\d{4})s?\b")
_DECADE = re.compile(r"\b(?:the\s+)?(?:(19|20)?(\d)0)'?s\b")
_WORD_DECADES = {"twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960,
                 "seventies": 1970, "eighties": 1980, "nineties": 1990}
_RANGE = re.compile(r"\b(?:between|from)\s+(\d{4})\s*(?:and|to|-|–|until|till)\s*(\d{4})\b"
                    r"|\b(\d{4})\s*[-–]\s*(\d{4})\b")
_LE_EXCL = re.compile(r"\b(?:before|older than|earlier than|prior to|pre-?)\s*(\d{4}|'\d\d)\b")
_LE_INCL = re.compile(r"\b(?:until|up to|till|no later than|through)\s+(\d{4}|'\d\d)\b"
                      r"|(?<![\w'])(\d{4}|'\d\d)\s+or\s+(?:earlier|older|before)\b")
_GE_EXCL = re.compile(r"\b(?:after|newer than|later than|more recent than|post-?)\s*(\d{4}|'\d\d)\b")
_GE_INCL = re.compile(r"\b(?:since|no earlier than|starting)\s+(\d{4}|'\d\d)\b"
                      r"|(?<![\w'])(\d{4}|'\d\d)\s+(?:or|and)\s+(?:later|newer|after|onwards?)\b"
                      r"|\bfrom\s+(\d{4}|'\d\d)\s+on(?:wards?)?\b")
_EQ = re.compile(r"\b(?:from|in|of|released in|made in|year)\s+(\d{4})\b")
# A decade after a bound word is one bound, not "only that decade": "before the 90s" = up to 1989, "after the 80s" =
# from 1990, "since the 90s" / "80s or later" = from 1990 / 1980, "until the 90s" = up to 1999. (decade, op, which
# end of the decade, offset)
_DEC = r"((?:the\s+)?(?:(?:19|20)?\d0'?s|" + "|".join(_WORD_DECADES) + r"))\b"
_DECADE_BOUNDS = (
    (re.compile(rf"\b(?:before|older than|earlier than|prior to|pre-?)\s*{_DEC}"), "le", 0, -1),
    (re.compile(rf"\b(?:until|up to|till|no later than|through)\s+{_DEC}|\b{_DEC}\s+or\s+(?:earlier|older|before)\b"),
     "le", 9, 0),
    (re.compile(rf"\b(?:after|newer than|later than|more recent than|post-?)\s*{_DEC}"), "ge", 9, 1),
    (re.compile(rf"\b(?:since|no earlier than|starting)\s+{_DEC}"
                rf"|\b{_DEC}\s+(?:or|and)\s+(?:later|newer|after|onwards?)\b|\bfrom\s+{_DEC}\s+on(?:wards?)?\b"),
     "ge", 0, 0),
)


def _year_value(text: str) -> int:
    """1990 for "1990"; a year written short after a bound word ("before '85") is the latest such year not in the
    future ('05 is 2005, '29 is 1929 until 2029)."""
    if text.startswith("'"):
        yy = int(text[1:])
        return (2000 if yy <= datetime.now(UTC).year % 100 else 1900) + yy
    return int(text)


def _decade_start(text: str) -> int:
    """1990 for "the 90s", "1990s", "90's" or "nineties"."""
    word = text.removeprefix("the").strip()
    if word in _WORD_DECADES:
        return _WORD_DECADES[word]
    m = _DECADE.search(text)
    assert m is not None  # the caller's pattern matched a decade here
    return int((m.group(1) or ("20" if m.group(2) in "012" else "19")) + m.group(2) + "0")


#: Fuzzy genre matching (typos): only single words of >= 5 letters, only at difflib ratio >= 0.88 -- "horor",
#: "comdies", "thriler" match; "eastern" (0.857 to "western") and "mastery" (0.857 to "mystery") do not.
FUZZY_MIN_LEN, FUZZY_CUTOFF = 5, 0.88
_FUZZY_DENY = frozenset({"auction", "auctions", "carton", "cartons", "actions", "crimea", "warrior", "warriors"})
#: An audience named with a possessive ("for my kids", "with our children"): reserved, never read as a genre value.
#: Without one ("movies for kids") the words keep naming the Children genre.
_AUDIENCE = re.compile(r"\b(?:(?:for|with) (?:my|our)|(?:from|to|around) (?:my|our|the)) (?:own )?(?:little )?"
                       r"(?:kids?|children|child|family|son|sons"
                       r"|daughters?|ones|toddlers?|teens?|teenagers?|grandkids|grandchildren)\b")
_TOKEN = re.compile(r"[\w][\w'.&-]*[\w]|[\w]")


def tokenize(text: str) -> list[tuple[int, int, str]]:
    """(start, end, token) over a folded string; the unit of lexicon lookup."""
    return [(m.start(), m.end(), m.group(0)) for m in _TOKEN.finditer(text)]


def _key(phrase: str) -> str:
    return " ".join(t[2] for t in tokenize(fold(phrase)))


@dataclass(frozen=True)
class Span:
    """A value found in a clause: slot type, canonical value, operator hint, character span."""

    attr: str
    value: str | int
    op: str
    start: int
    end: int


_SIMILAR_CUE = re.compile(r"(?:(?:more|something|anything|stuff|movies?|films?|ones?|things?|less|fewer) like"
                          r"|similar to|vein of|along the lines of|reminds? me of)[\s(\"']+$")
#: Words after "like" that are not the film of that name ("horror, like always", "something like these").
_NOT_A_TITLE_AFTER_LIKE = frozenset(
    "always again before after usual forever never these those there other others yesterday today tonight tomorrow"
    " something anything everything nothing whatever lately recently normal family friends crazy"
    " mine yours theirs myself yourself".split())


@dataclass
class Lexicon:
    genres: list[tuple[str, str]]  # (folded surface form, canonical genre), longest first
    tags: list[str]  # folded tags, longest first
    titles: dict[str, str]  # folded surface form -> canonical title (with year) or franchise name

    def __post_init__(self) -> None:
        self._genre_map = {_key(g): c for g, c in self.genres}
        self._tag_set = {_key(t): t for t in self.tags}
        self._title_map = {_key(t): v for t, v in self.titles.items()}
        self._fuzzy_forms = sorted(k for k in self._genre_map if " " not in k and len(k) >= FUZZY_MIN_LEN)

    def _lowercase_title_ok(self, before: str, ph: str) -> bool:
        """A lowercase one-word title names the film after "more like", "similar to" & co. ("more like fargo"),
        unless it is short, a common word ("like always") or a tag ("i'd like vampires" is the verb and a tag)."""
        return (bool(_SIMILAR_CUE.search(before)) and len(ph) >= 5 and ph not in _NOT_A_TITLE_AFTER_LIKE
                and ph not in self._tag_set)

    @staticmethod
    def _find(tokens: list[tuple[int, int, str]], table: dict[str, str], max_n: int = 8) -> list[tuple[int, int, str]]:
        """n-gram dictionary lookup over tokens (O(tokens x n), independent of lexicon size)."""
        out = []
        for i in range(len(tokens)):
            for n in range(min(max_n, len(tokens) - i), 0, -1):
                k = " ".join(t[2] for t in tokens[i:i + n])
                if k in table:
                    out.append((tokens[i][0], tokens[i + n - 1][1], k))
        return out

    def spans(self, clause: str, original: str | None = None) -> list[Span]:
        """All non-overlapping value spans in a folded clause. Priority: years > titles > tags > genres."""
        found: list[Span] = []
        taken: list[tuple[int, int]] = []

        def free(a: int, b: int) -> bool:
            return all(b <= s or a >= e for s, e in taken)

        def add(sp: Span) -> None:
            found.append(sp)
            taken.append((sp.start, sp.end))

        for m in _AUDIENCE.finditer(clause):  # "no horror for my kids": who watches, not the Children genre
            taken.append((m.start(), m.end()))
        for sp in year_spans(clause):
            add(sp)
        like_cue = re.compile(r"(?:like|similar to|such as|vein of|along the lines of|reminds? me of|than)[\s(\"']+$")
        toks = tokenize(clause)
        for a, b, ph in sorted(self._find(toks, self._title_map, 14), key=lambda t: t[0] - t[1]):
            if not free(a, b):
                continue
            cued = bool(like_cue.search(clause[:a]))
            capital = original is not None and a > 0 and original[a:a + 1].isupper()
            if " " not in ph and not (capital or self._lowercase_title_ok(clause[:a], ph)):
                continue  # one-word titles ("Heat", "Up", "More") only with a capital letter mid-sentence, or
                # lowercase after "more like" & co. (_lowercase_title_ok)
            if " " in ph and not (cued or capital) and len(ph) < 9:
                continue
            full = self._title_map[ph]
            value = full if cued else (clean_title(full) if full.endswith(")") else full)
            add(Span("title", value, "like" if cued else "contains", a, b))
        for a, b, ph in sorted(self._find(toks, self._tag_set), key=lambda t: t[0] - t[1]):
            if free(a, b):
                add(Span("tag", self._tag_set[ph], "eq", a, b))
        for a, b, ph in sorted(self._find(toks, self._genre_map, 3), key=lambda t: t[0] - t[1]):
            if free(a, b):
                add(Span("genre", self._genre_map[ph], "eq", a, b))
        for a, b, tok in toks:  # typos of genre names ("no horor", "more comedys"): conservative fuzzy match
            if len(tok) >= FUZZY_MIN_LEN and tok.isalpha() and tok not in _FUZZY_DENY and free(a, b):
                close = difflib.get_close_matches(tok, self._fuzzy_forms, n=1, cutoff=FUZZY_CUTOFF)
                if close:
                    add(Span("genre", self._genre_map[close[0]], "eq", a, b))
        return sorted(found, key=lambda s: s.start)


def year_spans(clause: str) -> list[Span]:
    """Year bounds as written (before the polarity flip): ranges, decades, before/after/since/in."""
    out: list[Span] = []
    used: list[tuple[int, int]] = []

    def ok(m: re.Match[str]) -> bool:
        return all(m.end() <= s or m.start() >= e for s, e in used)

    for m in _RANGE.finditer(clause):
        a, b = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        out += [Span("year", int(a), "ge", m.start(), m.end()), Span("year", int(b), "le", m.start(), m.end())]
        used.append((m.start(), m.end()))
    for rx, op, end, offset in _DECADE_BOUNDS:
        for m in rx.finditer(clause):
            if ok(m):
                y = _decade_start(next(g for g in m.groups() if g)) + end + offset
                out.append(Span("year", y, op, m.start(), m.end()))
                used.append((m.start(), m.end()))
    for rx, op, delta in ((_LE_EXCL, "le", -1), (_LE_INCL, "le", 0), (_GE_EXCL, "ge", 1), (_GE_INCL, "ge", 0)):
        for m in rx.finditer(clause):
            if ok(m):
                y = _year_value(next(g for g in m.groups() if g))
                out.append(Span("year", y + delta, op, m.start(), m.end()))
                used.append((m.start(), m.end()))
    for m in _DECADE.finditer(clause):
        if ok(m):
            century = m.group(1) or ("20" if m.group(2) in "012" else "19")
            d = int(century + m.group(2) + "0")
            out += [Span("year", d, "ge", m.start(), m.end()), Span("year", d + 9, "le", m.start(), m.end())]
            used.append((m.start(), m.end()))
    for word, d in _WORD_DECADES.items():
        for m in re.finditer(rf"\b{word}\b", clause):
            if ok(m):
                out += [Span("year", d, "ge", m.start(), m.end()), Span("year", d + 9, "le", m.start(), m.end())]
                used.append((m.start(), m.end()))
    for m in _EQ.finditer(clause):
        if ok(m):
            out.append(Span("year", int(m.group(1)), "eq", m.start(), m.end()))
            used.append((m.start(), m.end()))
    for m in _YEAR_TOKEN.finditer(clause):  # bare years left over ("1990 onward" etc. handled above)
        if ok(m) and 1800 <= int(m.group(1)) <= 3999:
            out.append(Span("year", int(m.group(1)), "eq", m.start(), m.end()))
            used.append((m.start(), m.end()))
    return out


def flip_year(sp: Span) -> Span | None:
    """'nothing before 1990' = want >= 1990: negate a bound. Negated equality/decades are not expressible."""
    if sp.op == "ge":
        return Span("year", int(sp.value) - 1, "le", sp.start, sp.end)
    if sp.op == "le":
        return Span("year", int(sp.value) + 1, "ge", sp.start, sp.end)
    return None


_COUNT = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "ten": 10,
          "a couple of": 2, "a couple": 2, "couple of": 2, "couple": 2, "a few": 3, "few": 3, "several": 3}
_UNIT = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30),
         "year": timedelta(days=365)}
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
#: A period ends its clause, or is followed by more framing: "for a day off" or "today's picks" name no period.
_ENDS = (r"(?=\s*(?:$|[,.;:!?)]|(?:and|but|or|please|pls|plz|too|also|then|though|starting|from now|okay|ok"
         r"|thanks?|thx|either|because|since|as|so|while|when|if|until|anyway|now)\b))")
_COUNTED = r"(\d{1,3}|" + "|".join(sorted(_COUNT, key=len, reverse=True)) + r")"


def _counted(m: re.Match[str]) -> timedelta:
    n = int(m.group(1)) if m.group(1).isdigit() else _COUNT.get(m.group(1), 0)
    return n * _UNIT[m.group(2)]


#: Stated periods, each with how long it lasts from now (the first that matches wins).
_PERIODS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], timedelta] | None], ...] = (
    # "for two days", "over / in / within the next two days" ("over 2 hours" is a length, "in two days" a start:
    # neither)
    (re.compile(r"\b(?:for (?:the )?(?:next |coming |following )?|(?:over|during|in|within) the (?:next|coming"
                r"|following) )"
                + _COUNTED + r" (hour|day|week|month|year)s?\b" + _ENDS), _counted),
    (re.compile(r"\b(?:for|over|during|in|within) the (?:next|coming|following|rest of the) (hour|day|week|month"
                r"|year)\b"
                + _ENDS),
     lambda m: _UNIT[m.group(1)] if m.group(1) != "day" else timedelta(days=1)),
    (re.compile(r"\b(?:for )?(?:tonight|today|this (?:evening|afternoon|morning))\b" + _ENDS),
     lambda m: timedelta(hours=12)),
    (re.compile(r"\b(?:until|till|til|through) tomorrow\b" + _ENDS), lambda m: timedelta(days=1)),
    (re.compile(r"\b(?:this|for the|over the) weekend\b" + _ENDS), lambda m: timedelta(days=3)),
    (re.compile(r"\b(?:this|for the|for a) (week|month|year)\b" + _ENDS), lambda m: _UNIT[m.group(1)]),
    (re.compile(r"\b(?:until|till|til|through) (" + "|".join(_WEEKDAYS) + r")\b" + _ENDS), None),  # see expiry_for
)
#: A stated period never outlives this (a typo like "for 900 months" is not a 75-year rule).
MAX_PERIOD = timedelta(days=365)
#: Any stated period: framing, not part of a value ("no films with car chases for two days").
TIME_PHRASE = re.compile("|".join(f"(?:{rx.pattern})" for rx, _ in _PERIODS))


def expiry_for(text: str, now: datetime) -> datetime | None:
    """Explicit time cues ("tonight", "for the next two days", "until Friday") -> an absolute expiry (dropped on
    load once past), at most MAX_PERIOD ahead; None when the text states no period."""
    for rx, length in _PERIODS:
        m = rx.search(text)
        if m is None:
            continue
        if length is None:  # "until friday": up to that day (a week ahead when it is today)
            ahead = (_WEEKDAYS.index(m.group(1)) - now.weekday()) % 7 or 7
            return now + timedelta(days=ahead)
        span = length(m)
        return now + min(span, MAX_PERIOD) if span > timedelta(0) else None
    return None


@lru_cache(maxsize=2)
def build_lexicon(catalog: Catalog, min_title_support: int = 0) -> Lexicon:
    """Lexicons from the catalog: genre synonyms, tags on >= 3 films, titles + franchise prefixes."""
    genres = sorted(((fold(s), g) for g, ss in GENRE_SYNONYMS.items() for s in ss if g in GENRES),
                    key=lambda t: -len(t[0]))
    genres = sorted(genres + [(fold(s), g) for s, g in COMPOUND_GENRES.items()], key=lambda t: -len(t[0]))
    genre_forms = {s for s, _ in genres}
    tags = [t for t, n in catalog.tag_counts().items()
            if n >= 3 and t not in _TAG_STOP and t not in genre_forms and len(t) >= 3 and not t.isdigit()]
    tags.sort(key=lambda t: -len(t))
    titles: dict[str, str] = {}
    prefix_count: dict[str, int] = {}
    sup = catalog.support if catalog.support is not None else [1] * len(catalog)
    rich = [i for i in range(len(catalog)) if sup[i] >= 2 or catalog.tags[i]]
    rich.sort(key=lambda i: -int(sup[i]))  # most-rated title wins a shared name ("Twilight" -> 2008)
    for i in rich:
        ct = fold(clean_title(catalog.titles[i]))
        if len(ct) >= 3 and not ct.isdigit() and ct not in genre_forms and ct not in tags:
            titles.setdefault(ct, catalog.titles[i])
        pre = re.split(r":| - | \d+$| part | and the ", ct)[0].strip()
        if pre and pre != ct:
            prefix_count[pre] = prefix_count.get(pre, 0) + 1
    for pre, n in prefix_count.items():
        if n >= 2 and len(pre) >= 4 and pre not in genre_forms and pre not in titles:
            titles[pre] = pre.title()
    return Lexicon(genres=genres, tags=tags, titles=titles)
