"""MovieLens item catalog: titles, release year (parsed from the title), genres, user tags, item text.

Why a separate module: the Filter, the checks of `rec eval`, the simulator and the parser's lexicons must all
read attributes the same way (e.g. tags matched case-insensitively, year = last "(YYYY)" in the title).
"""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from guardrails.errors import DataNotAvailableError

from .schema import Preference, UnknownAttributeError

GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
_YEAR = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
# Tags that describe the user's workflow, not the film: useless as preferences.
_JUNK_TAGS = {"in netflix queue", "netflix queue", "to see", "seen", "watched", "dvd", "bd-r", "clv"}


def default_data_dir() -> Path:
    """`RAILGUARD_MOVIELENS` overrides; else the shared copy next to the repository."""
    env = os.environ.get("RAILGUARD_MOVIELENS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[1]
    for cand in (here.parent / "shared/data/recsys/ml-latest-small", here / "data/recsys/ml-latest-small"):
        if cand.exists():
            return cand
    return here.parent / "shared/data/recsys/ml-latest-small"


def fold(text: str) -> str:
    """Lowercase + strip accents ("Amélie" -> "amelie") so commands match catalog strings; a typographic apostrophe
    is the plain one ("Schindler’s List", "before ’85"; a replacement of the same length)."""
    nfkd = unicodedata.normalize("NFKD", text.replace("\u2019", "'"))
    return "".join(c for c in nfkd if not unicodedata.combining(c)).lower()


def clean_title(title: str) -> str:
    """'Matrix, The (1999)' -> 'The Matrix'; drops the year and alternate-title parentheses."""
    t = _YEAR.sub("", title).strip()
    t = re.sub(r"\s*\([^)]*\)\s*$", "", t).strip()
    m = re.match(r"^(.*), (The|A|An|Les|La|Le|L'|Il|Das|Der|Die)$", t)
    if m:
        t = f"{m.group(2)} {m.group(1)}"
    return t


@dataclass(eq=False)
class Catalog:
    """Column-oriented item table. `attributes` lists what this catalog can be filtered on."""

    item_ids: np.ndarray
    titles: list[str]
    years: np.ndarray  # int, -1 when unknown
    genres: list[frozenset[str]]
    tags: list[frozenset[str]]
    attributes: frozenset[str] = frozenset({"genre", "year", "tag", "title", "text"})
    support: np.ndarray | None = None  # number of ratings per item (popularity; disambiguates titles)
    index: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.support is None:
            self.support = np.zeros(len(self.item_ids), dtype=np.int64)
        self.index = {int(m): i for i, m in enumerate(self.item_ids)}
        self.folded_titles = [fold(t) for t in self.titles]
        self.lower_genres = [frozenset(g.lower() for g in gs) for gs in self.genres]

    def __len__(self) -> int:
        return len(self.item_ids)

    def item_text(self, i: int) -> str:
        """What the encoder sees for the Matcher: title + genres + user tags."""
        tags = ", ".join(sorted(self.tags[i])[:12])
        return f"{clean_title(self.titles[i])}. Genres: {', '.join(sorted(self.genres[i]))}. Tags: {tags}"

    def require(self, attribute: str) -> None:
        if attribute not in self.attributes:
            raise UnknownAttributeError(
                f"this catalog has no {attribute!r} attribute (available: {sorted(self.attributes)})"
            )

    def tag_counts(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for ts in self.tags:
            c.update(ts)
        return c

    # ---------------------------------------------------------------- rule checks shared by Filter and eval
    def mask(self, pref: Preference) -> np.ndarray:
        """Boolean mask of items that *have* the preference's attribute value (polarity ignored)."""
        self.require(pref.attribute)
        n = len(self)
        v = pref.value
        if pref.attribute == "year":
            y = self.years
            known = y >= 0
            if pref.operator == "ge":
                return known & (y >= int(v))
            if pref.operator == "le":
                return known & (y <= int(v))
            return known & (y == int(v))
        if pref.attribute == "genre":  # case-insensitive, exactly like check() (rec eval's semantics)
            gv = str(v).strip().lower()
            return np.fromiter((gv in lg for lg in self.lower_genres), bool, n)
        if pref.attribute == "tag":
            tv = fold(str(v))
            return np.fromiter((tv in t for t in self.tags), bool, n)
        if pref.attribute == "title":
            # a title named as a whole word or words (plural allowed): "no more Her" had hidden Father of the Bride
            # and The Brothers McMullen, "no Saw" The Texas Chainsaw Massacre (review, session 31)
            rx = title_pattern(str(v))
            return np.fromiter((rx.search(t) is not None for t in self.folded_titles), bool, n)
        return np.zeros(n, bool)  # free text: no rule

    def check(self, i: int, attr: str, op: str, value: Any) -> bool:
        """CONTRACT check semantics for one item: includes/excludes/ge/le/eq on genre, year, tag, title."""
        if attr == "year":
            y = int(self.years[i])
            if y < 0:
                return False
            return {"ge": y >= int(value), "le": y <= int(value), "eq": y == int(value)}.get(op, False)
        if attr == "genre":
            has = str(value).strip().lower() in self.lower_genres[i]
        elif attr == "tag":
            has = fold(str(value)) in self.tags[i]
        elif attr == "title":
            has = fold(str(value)) in self.folded_titles[i]
        else:
            raise UnknownAttributeError(f"unknown check attribute {attr!r}")
        if op in ("includes", "eq"):
            return has
        if op == "excludes":
            return not has
        raise UnknownAttributeError(f"operator {op!r} not valid for {attr!r}")


def title_pattern(value: str) -> re.Pattern[str]:
    """The folded titles a title preference names: ``value`` as whole words, a plural ending allowed."""
    return re.compile(rf"(?<![a-z0-9]){re.escape(fold(value))}(?:e?s)?(?![a-z0-9])")


def parse_year(title: str) -> int:
    m = _YEAR.search(title.strip())
    return int(m.group(1)) if m else -1


_MALFORMED = (KeyError, ValueError, TypeError, AttributeError, IndexError, csv.Error, UnicodeDecodeError)


@lru_cache(maxsize=4)
def load_catalog(data_dir: str | None = None) -> Catalog:
    """Load movies.csv + tags.csv (cached per process; ~0.2 s). Missing or malformed files are a
    DataNotAvailableError (a cut or damaged movies.csv was an AttributeError traceback)."""
    d = Path(data_dir) if data_dir else default_data_dir()
    if not (d / "movies.csv").exists():
        raise DataNotAvailableError(f"MovieLens movies.csv not found under {d} (set RAILGUARD_MOVIELENS)")
    try:
        return _read_catalog(d)
    except _MALFORMED as exc:
        raise DataNotAvailableError(f"MovieLens data under {d} is malformed ({type(exc).__name__}); "
                                    "re-download ml-latest-small") from None


def _read_catalog(d: Path) -> Catalog:
    ids, titles, years, genres = [], [], [], []
    with open(d / "movies.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            ids.append(int(row["movieId"]))
            titles.append(row["title"].strip())
            years.append(parse_year(row["title"]))
            gs = row["genres"].split("|")
            genres.append(frozenset(g for g in gs if g in GENRES))
    tagsets: dict[int, set[str]] = defaultdict(set)
    if (d / "tags.csv").exists():
        with open(d / "tags.csv", encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                t = fold(row["tag"].strip())
                if t and t not in _JUNK_TAGS:
                    tagsets[int(row["movieId"])].add(t)
    pos = {m: i for i, m in enumerate(ids)}
    support = np.zeros(len(ids), dtype=np.int64)
    if (d / "ratings.csv").exists():
        with open(d / "ratings.csv", encoding="utf-8", newline="") as f:
            for rec in csv.reader(f):
                i = pos.get(int(rec[1])) if rec[1].isdigit() else None
                if i is not None:
                    support[i] += 1
    return Catalog(
        item_ids=np.asarray(ids, dtype=np.int64), titles=titles, years=np.asarray(years, dtype=np.int64),
        genres=genres, tags=[frozenset(tagsets.get(m, ())) for m in ids], support=support,
    )


def load_ratings(data_dir: str | None = None) -> np.ndarray:
    """ratings.csv as a structured array (user, item, rating, ts)."""
    d = Path(data_dir) if data_dir else default_data_dir()
    if not (d / "ratings.csv").exists():
        raise DataNotAvailableError(f"MovieLens ratings.csv not found under {d} (set RAILGUARD_MOVIELENS)")
    try:
        raw = np.loadtxt(d / "ratings.csv", delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
        if raw.shape[1] != 4:
            raise ValueError("expected 4 columns")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DataNotAvailableError(f"MovieLens ratings.csv under {d} is malformed ({type(exc).__name__}); "
                                    "re-download ml-latest-small") from None
    out = np.zeros(len(raw), dtype=[("user", "i8"), ("item", "i8"), ("rating", "f4"), ("ts", "i8")])
    out["user"], out["item"], out["rating"], out["ts"] = raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3]
    return out
