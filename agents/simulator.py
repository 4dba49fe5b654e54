"""User-command simulator: multi-clause commands built from the catalog schema with gold structured outputs.

Why: RecBot distils a teacher's trajectories into a student; we have no teacher LLM offline, so the "teacher"
is this programmatic simulator -- it knows the gold preferences because it writes the command from them. Values
are real MovieLens genres, tags (from tags.csv) and titles; framings, scope cues and connectives are varied.
Each sample carries clause-level framing labels (to train the heads) and command-level gold slots (to score).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .catalog import Catalog, clean_title
from .lexicon import GENRE_SYNONYMS, _key, build_lexicon

# (template, intent, polarity, kind); {v} = value surface form
_GT_FRAMES = [
    ("only {v}", "+", "hard"), ("just {v} please", "+", "hard"), ("nothing but {v}", "+", "hard"),
    ("show me only {v}", "+", "hard"), ("i only want {v}", "+", "hard"), ("exclusively {v}", "+", "hard"),
    ("stick to {v}", "+", "hard"), ("strictly {v} movies", "+", "hard"), ("{v} only", "+", "hard"),
    ("no {v}", "-", "hard"), ("never show me {v}", "-", "hard"), ("no more {v} ever", "-", "hard"),
    ("exclude {v}", "-", "hard"), ("i don't want any {v}", "-", "hard"), ("remove all {v}", "-", "hard"),
    ("block {v} movies", "-", "hard"), ("zero {v}", "-", "hard"), ("without {v}", "-", "hard"),
    ("skip {v} entirely", "-", "hard"), ("absolutely no {v}", "-", "hard"), ("filter out {v}", "-", "hard"),
    ("more {v}", "+", "soft"), ("i'd like more {v}", "+", "soft"), ("some {v} would be nice", "+", "soft"),
    ("i'm in the mood for {v}", "+", "soft"), ("a bit more {v}", "+", "soft"), ("i love {v}", "+", "soft"),
    ("give me more {v}", "+", "soft"), ("more {v} please", "+", "soft"), ("i feel like watching {v}", "+", "soft"),
    ("lean towards {v}", "+", "soft"), ("something {v}", "+", "soft"), ("i enjoy {v} movies", "+", "soft"),
    ("less {v}", "-", "soft"), ("fewer {v}", "-", "soft"), ("not so much {v}", "-", "soft"),
    ("tone down the {v}", "-", "soft"), ("i'm tired of {v}", "-", "soft"), ("cut back on {v}", "-", "soft"),
    ("a little less {v}", "-", "soft"), ("not in the mood for {v}", "-", "soft"),
    ("go easy on the {v}", "-", "soft"), ("i'm a bit sick of {v}", "-", "soft"), ("less {v} movies", "-", "soft"),
]
_LIKE_FRAMES = [
    ("more like {v}", "+"), ("movies similar to {v}", "+"), ("something like {v}", "+"),
    ("stuff in the vein of {v}", "+"), ("i want something similar to {v}", "+"), ("films like {v}", "+"),
    ("less like {v}", "-"), ("fewer movies like {v}", "-"), ("not so much stuff like {v}", "-"),
    ("nothing similar to {v}", "-"), ("less similar to {v}", "-"),
]
_CONTAINS_FRAMES = [
    ("no {v} movies", "-", "hard"), ("exclude {v}", "-", "hard"), ("i never want to see {v} again", "-", "hard"),
    ("no more {v}", "-", "hard"), ("only {v} movies", "+", "hard"), ("less {v}", "-", "soft"),
    ("more {v} movies", "+", "soft"),
]
# (template, gold [(op, value-expr)], polarity label, kind); y = year, d = decade start
_YEAR_FRAMES = [
    ("nothing before {y}", [("ge", "y")], "-", "hard"), ("no movies older than {y}", [("ge", "y")], "-", "hard"),
    ("only movies after {y}", [("ge", "y+1")], "+", "hard"),
    ("only films from before {y}", [("le", "y-1")], "+", "hard"),
    ("nothing after {y}", [("le", "y")], "-", "hard"), ("nothing newer than {y}", [("le", "y")], "-", "hard"),
    ("only stuff since {y}", [("ge", "y")], "+", "hard"), ("{y} or later", [("ge", "y")], "+", "hard"),
    ("only movies from the {d}s", [("ge", "d"), ("le", "d+9")], "+", "hard"),
    ("between {y} and {y2}", [("ge", "y"), ("le", "y2")], "+", "hard"),
    ("only films released in {y}", [("eq", "y")], "+", "hard"),
    ("no films made before {y}", [("ge", "y")], "-", "hard"),
    ("preferably after {y}", [("ge", "y+1")], "+", "soft"),
    ("more movies from the {d}s", [("ge", "d"), ("le", "d+9")], "+", "soft"),
    ("ideally before {y}", [("le", "y-1")], "+", "soft"),
    ("newer films after {y} if possible", [("ge", "y+1")], "+", "soft"),
    ("movies before {y} only", [("le", "y-1")], "+", "hard"),
]
_RETRACT_ATTR = [
    ("forget the year limit", "year"), ("drop the date filter", "year"), ("remove the decade restriction", "year"),
    ("never mind the release year thing", "year"), ("you can ignore the year rule now", "year"),
    ("forget my genre preferences", "genre"), ("clear the genre filters", "genre"),
]
_RETRACT_VALUE = [
    "forget what i said about {v}", "drop the {v} filter", "{v} is fine again", "stop filtering {v}",
    "undo the {v} thing", "never mind about {v}", "you can show {v} again", "cancel the {v} rule",
    "i changed my mind about {v}",
]
_RESET = ["reset my preferences", "start over", "clear all my filters", "forget everything i told you",
          "wipe my feed settings", "back to default recommendations", "reset everything"]
_NONE = ["thanks", "that looks great", "hmm let me think", "what is this one about", "ok cool", "hey",
         "nice picks", "hello there", "i watched that yesterday", "how does this work", "lol", "good morning"]
# chat that mentions a value without asking for anything: must stay "none"
_NONE_V = ["i watched a {v} movie yesterday", "my friend really likes {v}", "is {v} any good?",
           "what do you think about {v}?", "we talked about {v} at dinner", "the {v} one was great",
           "i saw {v} last week", "tell me a fun fact about {v}"]
_FREE = ["set in the ocean", "about growing old", "with lots of car chases", "about chefs",
         "with a strong female lead", "set on a farm", "about sibling rivalry", "with talking animals",
         "set in a small town", "about fighting against the odds"]
_FREE_FRAMES = [("something {v}", "+"), ("more movies {v}", "+"), ("i'd like films {v}", "+"),
                ("less stuff {v}", "-"), ("fewer movies {v}", "-")]
_SCOPES = [("", "default"), (" for now", "session"), (" tonight", "session"), (" just for this session", "session"),
           (" for the next feed", "next_feed"), (" just this time", "next_feed"), (" for the next batch", "next_feed"),
           (" from now on", "persistent"), (" forever", "persistent"), (" permanently", "persistent")]
_JOIN = [", ", " and ", "; ", ", and ", " but ", ". ", " also "]
_PREFIX = ["", "", "", "hey, ", "ok ", "please ", "actually ", "hmm, "]

Slot = tuple[str, str, str, str, str]


@dataclass
class Sample:
    text: str
    slots: set[Slot] = field(default_factory=set)
    scopes: dict[Slot, str] = field(default_factory=dict)
    clauses: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (clause text, head labels)


class CommandSimulator:
    """Draws commands; `rng` seed makes train and held-out splits reproducible."""

    def __init__(self, catalog: Catalog, seed: int = 0, popular: list[int] | None = None) -> None:
        self.catalog = catalog
        self.rng = random.Random(seed)
        lex = build_lexicon(catalog)
        self.tags = [t for t in lex.tags if catalog.tag_counts()[t] >= 4][:150]
        self.franchises = [v for k, v in lex.titles.items() if not v.endswith(")") and " " in k and len(k) >= 9]
        rows = popular if popular is not None else [i for i in range(len(catalog)) if len(catalog.tags[i]) >= 3]
        self.like_titles = [catalog.titles[i] for i in rows
                            if lex._title_map.get(_key(clean_title(catalog.titles[i])))
                            == catalog.titles[i]]

    def _value(self, kind: str) -> tuple[str, str, str]:
        """(attribute, surface, gold value)."""
        r = self.rng
        if kind == "genre":
            g = r.choice(list(GENRE_SYNONYMS))
            return "genre", r.choice(GENRE_SYNONYMS[g]), g
        t = r.choice(self.tags)
        return "tag", t, t

    def clause(self) -> tuple[str, list[Slot], dict[str, str]]:
        r = self.rng
        u = r.random()
        scope_txt, scope = r.choice(_SCOPES) if r.random() < 0.35 else ("", "default")
        if u < 0.42:
            frame, pol, kind = r.choice(_GT_FRAMES)
            attr, surf, gold = self._value("genre" if r.random() < 0.6 else "tag")
            if r.random() < 0.25:  # two values under one framing: "no horror or thriller"
                attr2, surf2, gold2 = self._value(attr)
                if gold2 != gold:
                    surf = f"{surf} {r.choice(['or', 'and', 'nor'])} {surf2}" if "{v}" in frame else surf
                    slots = [(attr, "eq", gold.lower(), pol, kind), (attr2, "eq", gold2.lower(), pol, kind)]
                    return frame.format(v=surf) + scope_txt, slots, _lab("add", pol, kind, scope)
            slots = [(attr, "eq", gold.lower(), pol, kind)]
            return frame.format(v=surf) + scope_txt, slots, _lab("add", pol, kind, scope)
        if u < 0.55 and self.like_titles:
            frame, pol = r.choice(_LIKE_FRAMES)
            t = r.choice(self.like_titles)
            surf = clean_title(t) if r.random() < 0.7 else clean_title(t).lower()
            slots = [("title", "like", t.lower(), pol, "soft")]
            return frame.format(v=surf) + scope_txt, slots, _lab("add", pol, "soft", scope)
        if u < 0.62 and self.franchises:
            frame, pol, kind = r.choice(_CONTAINS_FRAMES)
            f = r.choice(self.franchises)
            surf = f if r.random() < 0.6 else f.lower()
            slots = [("title", "contains", f.lower(), pol, kind)]
            return frame.format(v=surf) + scope_txt, slots, _lab("add", pol, kind, scope)
        if u < 0.80:
            frame, bounds, pol, kind = r.choice(_YEAR_FRAMES)
            y = r.randint(1950, 2015)
            env = {"y": y, "y2": min(y + r.randint(3, 20), 2018), "d": r.choice(range(1950, 2020, 10))}
            text = frame.format(y=env["y"], y2=env["y2"], d=env["d"] if r.random() < 0.5 else str(env["d"])[2:])
            slots = [("year", op, str(_resolve(expr, env)), "+", kind) for op, expr in bounds]
            return text + scope_txt, slots, _lab("add", pol, kind, scope)
        if u < 0.86:
            frame, pol = r.choice(_FREE_FRAMES)
            d = r.choice(_FREE)
            return frame.format(v=d), [("text", "like", d, pol, "soft")], _lab("add", pol, "soft", "default")
        if u < 0.93:
            if r.random() < 0.4:
                text, attr = r.choice(_RETRACT_ATTR)
                return text, [("retract", attr, "", "", "")], _lab("retract")
            attr, surf, gold = self._value("genre" if r.random() < 0.6 else "tag")
            return r.choice(_RETRACT_VALUE).format(v=surf), [("retract", attr, gold.lower(), "", "")], _lab("retract")
        if u < 0.96:
            return r.choice(_RESET), [("reset", "", "", "", "")], _lab("reset")
        if r.random() < 0.5:
            return r.choice(_NONE), [], _lab("none")
        _, surf, _ = self._value("genre" if r.random() < 0.6 else "tag")
        return r.choice(_NONE_V).format(v=surf), [], _lab("none")

    def sample(self, max_clauses: int = 3) -> Sample:
        r = self.rng
        n = r.choice([1, 1, 2, 2, 2, 3][: 2 * max_clauses])
        s = Sample(text="")
        parts: list[str] = []
        has_year = False
        for _ in range(n):
            text, slots, lab = self.clause()
            while has_year and any(sl[0] == "year" for sl in slots):  # one year clause per command
                text, slots, lab = self.clause()
            has_year = has_year or any(sl[0] == "year" for sl in slots)
            parts.append(text)
            s.clauses.append((text, lab))
            for sl in slots:
                s.slots.add(sl)
                if sl[0] not in ("retract", "reset"):
                    s.scopes[sl] = lab["scope"]
        joined = parts[0]
        for p in parts[1:]:
            joined += r.choice(_JOIN) + p
        joined = r.choice(_PREFIX) + joined
        if r.random() < 0.5:
            joined = joined[:1].upper() + joined[1:]
        s.text = joined
        return s

    def generate(self, n: int, max_clauses: int = 3) -> list[Sample]:
        return [self.sample(max_clauses) for _ in range(n)]


def _resolve(expr: str, env: dict[str, int]) -> int:
    """'y+1' -> env['y'] + 1 (the only expressions the year frames use)."""
    name, _, delta = expr.partition("+") if "+" in expr else expr.partition("-")
    off = int(delta) if delta else 0
    return env[name] + (off if "+" in expr else -off)


def _lab(intent: str, polarity: str | None = None, kind: str | None = None, scope: str | None = None) -> dict[str, str]:
    return {"intent": intent, "polarity": polarity, "kind": kind, "scope": scope}  # type: ignore[dict-item]
