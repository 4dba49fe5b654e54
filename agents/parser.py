"""Parser agent, student backend: rule-based value slots + small learned heads for the framing.

Why this split (simulation-augmented distillation, RecBot §1.4, scaled down): a command's *values* must be
catalog values (lexicon.py finds them exactly); what varies across paraphrases is the *framing* -- is this an
addition, a retraction or a reset, want or avoid, must-have or nice-to-have, for how long. Four logistic-
regression heads read the clause with its values masked ("no X movies for now") and decide that. They are
trained on simulator.py output (features: MiniLM embedding + hashed word n-grams; or n-grams only when no
encoder is available), and shipped as a float16 .npz in agents/data/ -- no pickle.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from scipy import sparse
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression

from guardrails.errors import ConfigError

from .catalog import Catalog
from .clauses import FILLER, SCOPE_WORDS, mask, split_clauses, without_audience
from .embeddings import TextEncoder
from .lexicon import BAD_YEAR, RATING_ASKED, TIME_PHRASE, UNKNOWN_ATTR, Lexicon, Span, expiry_for, flip_year, tokenize
from .rules import EXCEPTION, contrast, framing_rules
from .schema import (
    MAX_PREFS,
    MAX_YEAR,
    MIN_YEAR,
    CommandError,
    ParsedCommand,
    Preference,
    Retraction,
    UnknownAttributeError,
    alternatives_id,
    now_utc,
    require_valid_text,
    with_entity_kinds,
)

DATA_DIR = Path(__file__).with_name("data")
_THREAD_LOCK = threading.Lock()
HEADS = ("intent", "polarity", "kind", "scope")
MAX_COMMAND_CHARS = 2000
_FRAMING = re.compile(
    r"^(?:(?:ok|okay|hey|hmm|actually|so|well|i(?:'d| would)? (?:like|love|want)|give me|show me|i want|"
    r"i'm in the mood for|in the mood for|"
    r"more|less|fewer|something|anything|some|stuff|movies?|films?|no|not|nothing|please|also|only|just|"
    r"a bit|a little|lots of|that are|that|which are|which|ones)\s+)+"
)
_RETRACT_ATTR = (("year", r"\b(year|date|decade|era|release|old|age|recent)\b"),
                 ("genre", r"\bgenres?\b"), ("tag", r"\b(tags?|mood|vibe|theme)\b"), ("title", r"\btitles?\b"))


@contextmanager
def _few_threads(n_texts: int) -> Iterator[None]:
    """One intra-op thread for a handful of short clauses.

    Why: measured on a shared 2-core box, MiniLM on 1-3 clauses takes p50 18 ms with one torch thread and
    160 ms with two (thread hand-off dominates tiny matrices, and oversubscription makes it worse). Batches
    larger than 8 texts keep the process setting.
    """
    if n_texts > 8:
        yield
        return
    import torch

    with _THREAD_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


#: A minus sign on a number that follows no digit or letter ("before -1990", "after −5"; not "1990-2000").
_SIGNED_NUMBER = re.compile(r"(?<![\w.])[-\u2212\u2013](?:(?:1[89]|20)\d\ds?|\d0s)\b")  # a year or a decade
#: Words that ask for a reset of the policy; the intent head's "reset" stands only with one of them.
_RESET_SAID = re.compile(r"\b(?:reset|clear|wipe|erase|start (?:over|fresh|again|from scratch)|from scratch"
                         r"|forget (?:everything|it all|all (?:of )?(?:that|this|my)\b)|(?:delete|remove|undo|drop) "
                         r"(?:all|everything)|back to (?:the )?(?:defaults?|normal))\b")
#: ... and not negated ("don't reset anything", "never clear my preferences", "no need to start over").
_RESET_DENIED = re.compile(r"\b(?:don'?t|do not|doesn'?t|never|not|no need|without|stop|no)\b")


class Featurizer:
    """Hashed word 1-2 grams (stateless) optionally concatenated with a sentence embedding."""

    def __init__(self, encoder: TextEncoder | None, n_features: int = 2**13) -> None:
        self.encoder = encoder
        self.hasher = HashingVectorizer(n_features=n_features, ngram_range=(1, 2), alternate_sign=False,
                                        norm="l2", token_pattern=r"(?u)\b\w[\w']*\b")

    def transform(self, texts: list[str]) -> sparse.csr_matrix:
        bow = self.hasher.transform(texts).astype(np.float32)
        if self.encoder is None:
            return sparse.csr_matrix(bow)
        uniq = sorted(set(texts))  # masked clauses repeat a lot: embed each distinct one once
        with _few_threads(len(uniq)):
            emb = np.asarray(self.encoder.encode(uniq), dtype=np.float32)
        pos = {t: i for i, t in enumerate(uniq)}
        dense = emb[[pos[t] for t in texts]]
        return sparse.hstack([sparse.csr_matrix(dense), bow], format="csr")


class StudentParser(BaseEstimator):
    """Compact local parser. ``fit(masked_clauses, labels)`` trains the heads; ``parse(text)`` runs it.

    ``backend`` = "minilm" (embedding + n-grams) or "bow" (n-grams only; no model needed).
    """

    def __init__(self, backend: str = "minilm", C: float = 4.0) -> None:
        self.backend = backend
        self.C = C
        self.encoder: TextEncoder | None = None
        self.catalog: Catalog | None = None
        self.lexicon: Lexicon | None = None

    # -------------------------------------------------------------------------------------- training
    def _featurizer(self) -> Featurizer:
        if self.backend == "minilm" and self.encoder is None:
            from .embeddings import get_encoder

            self.encoder = get_encoder()
        return Featurizer(self.encoder if self.backend == "minilm" else None)

    def fit(self, X: list[str], y: dict[str, list[str | None]]) -> StudentParser:
        """X: masked clauses; y: head name -> labels (None entries are skipped for that head)."""
        feats = self._featurizer().transform(list(X))
        self.heads_: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
        for h in HEADS:
            idx = [i for i, v in enumerate(y[h]) if v is not None]
            clf = LogisticRegression(C=self.C, max_iter=2000)
            clf.fit(feats[idx], [y[h][i] for i in idx])
            self.heads_[h] = (clf.coef_.astype(np.float32), clf.intercept_.astype(np.float32),
                              [str(c) for c in clf.classes_])
        return self

    def predict_heads(self, masked: list[str]) -> list[dict[str, str]]:
        feats = self._featurizer().transform(masked)
        out: list[dict[str, str]] = [{} for _ in masked]
        for h, (W, b, classes) in self.heads_.items():
            logits = np.asarray(feats @ W.T) + b
            if len(classes) == 2:
                pred = (logits[:, 0] > 0).astype(int)
            else:
                pred = logits.argmax(axis=1)
            for i, p in enumerate(pred):
                out[i][h] = classes[int(p)]
        return out

    def save(self, path: Path | str) -> None:
        arrays: dict[str, Any] = {}
        meta: dict[str, Any] = {"backend": self.backend, "C": self.C, "heads": {}}
        for h, (W, b, classes) in self.heads_.items():
            arrays[f"{h}_W"], arrays[f"{h}_b"] = W.astype(np.float16), b.astype(np.float32)
            meta["heads"][h] = classes
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: Path | str | None = None, backend: str = "minilm", *,
             catalog: Catalog | None = None, encoder: TextEncoder | None = None) -> StudentParser:
        path = Path(path) if path else DATA_DIR / f"student_{backend}.npz"
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            self = cls(backend=meta["backend"], C=meta["C"])
            self.heads_ = {h: (z[f"{h}_W"].astype(np.float32), z[f"{h}_b"], classes)
                           for h, classes in meta["heads"].items()}
        self.encoder = encoder
        if catalog is not None:
            self.bind(catalog)
        return self

    def bind(self, catalog: Catalog) -> StudentParser:
        from .lexicon import build_lexicon

        self.catalog, self.lexicon = catalog, build_lexicon(catalog)
        return self

    # --------------------------------------------------------------------------------------- parsing
    def analyse(self, text: str) -> list[tuple[str, str, list[Span]]]:
        """(folded clause, original clause, spans) per clause -- shared by parse() and training."""
        if self.lexicon is None:
            from .catalog import load_catalog

            self.bind(load_catalog())
        assert self.lexicon is not None
        return [(c, o, self.lexicon.spans(c, o)) for c, o in split_clauses(text, self.lexicon)]

    def parse(self, text: str, *, now: datetime | None = None) -> ParsedCommand:
        """Text -> validated ParsedCommand. Raises CommandError subclasses for unusable commands."""
        if not isinstance(text, str) or not text.strip():
            raise CommandError("empty command")
        if len(text) > MAX_COMMAND_CHARS:
            raise CommandError(f"command longer than {MAX_COMMAND_CHARS} characters")
        require_valid_text(text)  # a lone surrogate would crash the encoder's tokenizer
        if any(not re.search(r"\d\s*$", text[:m.start()]) for m in _SIGNED_NUMBER.finditer(text)):
            # "nothing before -1990" was read as "only 1990" (a range "1990 -2000" is no sign)
            raise CommandError("a year cannot be negative; nothing was changed")
        now = now or now_utc()
        clauses = self.analyse(text)
        if not clauses:
            return ParsedCommand(text=text)
        # a stated period is left out of what the framing heads read (trained on a few time phrases, they took
        # "X for now" as avoiding X): its length comes from the text (expiry_for), and it sets the scope
        masked = [re.sub(r"\s+", " ", TIME_PHRASE.sub(" ", mask(c, s))).strip() for c, _, s in clauses]
        preds = self.predict_heads(masked)
        cmd = ParsedCommand(text=text)
        for (clause, orig, spans), m, hp in zip(clauses, masked, preds, strict=True):
            if spans and EXCEPTION.search(m):
                raise CommandError("exceptions ('except', 'unless', 'other than') are not supported; nothing was "
                                   "changed: say what to leave out and what to keep as two commands")
            sides = contrast(m) if len(spans) == 2 else None
            try:
                if sides is not None:  # "not horror but comedy": each value its own reading
                    for sp, side in zip(sorted(spans, key=lambda s: s.start), sides, strict=True):
                        self._apply_clause(cmd, clause, orig, [sp], {**hp, "scope": "default", **side}, now)
                    continue
                hp = framing_rules(m, hp) if spans else hp
                # the heads read the audience masked like any value (as trained); only its value is dropped
                self._apply_clause(cmd, clause, orig, without_audience(clause, spans, hp["polarity"]), hp, now)
            except ValidationError as exc:
                raise CommandError(f"cannot use {orig!r}: {exc.errors()[0]['msg']}") from None
        if (cmd.preferences or cmd.retractions) and any(RATING_ASKED.search(c) for c, _, _ in clauses):
            # a rating in a clause of its own next to one that applies ("rated 9 or more from the 90s" split in two):
            # the years alone had been kept
            raise UnknownAttributeError("the command asks for a rating, which this catalog does not have (known: "
                                        "genre, year, tag, title)")
        if len(cmd.preferences) > MAX_PREFS or len(cmd.retractions) > MAX_PREFS:  # appended past the model's bound
            raise CommandError(f"a command may state at most {MAX_PREFS} preferences; split it up")
        cmd.check_consistent()
        return cmd

    def _apply_clause(self, cmd: ParsedCommand, clause: str, orig: str, spans: list[Span],
                      hp: dict[str, str], now: datetime) -> None:
        intent = hp["intent"]
        if intent == "none":
            return
        if intent == "reset":
            # A reset wipes the whole policy: only when the clause asks for one in so many words, not negated. The
            # intent head read "show my settings", "don't reset anything" and "copy my settings to dave" as resets
            # (review, session 31); such a clause changes nothing.
            cmd.reset = cmd.reset or (bool(_RESET_SAID.search(clause)) and not _RESET_DENIED.search(clause))
            return
        for sp in spans:
            if sp.attr == "year" and not MIN_YEAR <= int(sp.value) <= MAX_YEAR:
                raise CommandError(f"year {sp.value} is outside the catalog's range {MIN_YEAR}-{MAX_YEAR}")
        if intent == "retract":
            if spans:
                seen = set()
                keys = [("year", None) if sp.attr == "year" else (sp.attr, v)
                        for sp in spans for v in _genre_values(sp, "+", "soft")]
                for key in keys:
                    if key not in seen:
                        seen.add(key)
                        cmd.retractions.append(Retraction(attribute=key[0], value=key[1],  # type: ignore[arg-type]
                                                          kind=hp.get("retract_kind")))  # type: ignore[arg-type]
                return
            for attr, rx in _RETRACT_ATTR:
                if re.search(rx, clause):
                    cmd.retractions.append(Retraction(attribute=attr))  # type: ignore[arg-type]
                    return
            return  # "forget that": nothing identifiable -> defined no-op
        polarity, kind = hp["polarity"], hp["kind"]
        scope = hp["scope"] if hp["scope"] != "default" else ("persistent" if kind == "hard" else "session")
        expires = expiry_for(clause, now)
        if expires is not None:  # a stated period outlasts one feed; one of a day or more holds across sessions
            scope = "persistent" if expires - now >= timedelta(days=1) else "session"
        weight = 0.5 if _MILD.search(clause) else 1.5 if _STRONG.search(clause) else 1.0
        # no `source`: the policy keeps what a command means, not the user's words (raw text, control characters
        # and personal data included, had been stored with every preference; nothing read it)
        common = dict(scope=scope, expires_at=expires, weight=weight)
        if RATING_ASKED.search(clause):  # with a genre or year too: "only 5 star comedies" had kept the genre alone
            raise UnknownAttributeError(
                f"{orig!r} asks for a rating, which this catalog does not have (known: genre, year, tag, title)")
        if not spans:
            if UNKNOWN_ATTR.search(clause):
                raise UnknownAttributeError(
                    f"{orig!r} refers to an attribute this catalog does not have (known: genre, year, tag, title)")
            if (bad := BAD_YEAR.search(TIME_PHRASE.sub(" ", clause))) is not None:
                raise CommandError(f"{bad.group(1) or bad.group(2)} is not a year in the catalog's range "
                                   f"{MIN_YEAR}-{MAX_YEAR}")
            value = SCOPE_WORDS.sub(" ", TIME_PHRASE.sub(" ", clause))
            value = _FRAMING.sub("", re.sub(r"\s+", " ", value).strip()).strip(" .,!")
            # "only" / "just" left of "only for today" is no wish of its own (it was stored as a free-text wish "only")
            useful = [t[2] for t in tokenize(value) if t[2] not in FILLER and t[2] not in ("only", "just")]
            if len(value) >= 3 and useful and intent == "add":
                cmd.preferences.append(Preference(polarity=polarity, kind="soft", attribute="text",  # type: ignore[arg-type]
                                                  operator="like", value=with_entity_kinds(value),
                                                  **common))  # type: ignore[arg-type]
            return
        ranges = {(sp.start, sp.end) for sp in spans if sp.attr == "year" and sp.op == "ge"} & {
            (sp.start, sp.end) for sp in spans if sp.attr == "year" and sp.op == "le"}
        if polarity == "-" and ranges:  # "no 80s movies": negating both bounds of a range would leave nothing
            raise CommandError(f"{orig!r}: excluding a single decade or range of years is not supported; "
                               "use a bound such as 'nothing before 1990'")
        either = _alternatives(clause, orig, spans) if (polarity, kind) == ("+", "hard") else None
        for sp in spans:
            if sp.attr == "year":
                ysp = flip_year(sp) if polarity == "-" else sp
                if ysp is None:  # "nothing from 1995" / "no 80s movies": a hole in the range is not expressible
                    raise CommandError(f"{orig!r}: excluding a single year or decade is not supported; "
                                       "use a bound such as 'nothing before 1990'")
                cmd.preferences.append(Preference(polarity="+", kind=kind, attribute="year",  # type: ignore[arg-type]
                                                  operator=ysp.op, value=int(ysp.value), **common))  # type: ignore[arg-type]
            else:
                k = "soft" if sp.op == "like" else kind
                for v in _genre_values(sp, polarity, k):
                    alternative = either if k == "hard" else None
                    cmd.preferences.append(Preference(polarity=polarity, kind=k, attribute=sp.attr,  # type: ignore[arg-type]
                                                      operator=sp.op, value=v, any_of=alternative, **common))  # type: ignore[arg-type]


#: Joins two keep-only values into alternatives: "horror or comedy", "comedies, romances and dramas",
#: "horror/comedy" (the facet convention: values of one list are either-or). Values side by side ("horror
#: comedies", "sci-fi thrillers") narrow each other instead: an item needs both.
_EITHER = re.compile(r"(?:,|/|&|\b(?:or|and)\b)")


def _alternatives(clause: str, orig: str, spans: list[Span]) -> str | None:
    """The ``any_of`` id when a keep-only clause lists its values as alternatives; None when they narrow each other
    (or there is only one). A clause mixing both ("horror comedies or dramas") is refused: the schema has no
    nested either-or, and intersecting all three would keep almost nothing."""
    ordered = sorted((sp for sp in spans if sp.op != "like"), key=lambda sp: sp.start)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if (a.attr == "year") != (b.attr == "year") and re.search(r"\bor\b|/", clause[a.end:b.start]):
            raise CommandError(f"{orig!r}: a year range as an alternative to other values ('horror or 90s "
                               "movies') is not supported; ask for each on its own")
    values = [sp for sp in ordered if sp.attr != "year"]
    if len(values) < 2:
        return None
    joins = [bool(_EITHER.search(clause[a.end:b.start])) for a, b in zip(values, values[1:], strict=False)]
    compound = any("+" in str(sp.value) for sp in values if sp.attr == "genre")
    if not any(joins):
        return None
    if not all(joins) or compound:
        raise CommandError(f"{orig!r}: a mix of alternatives and combined values (such as 'horror comedies or "
                           "dramas') is not supported; ask for the alternatives alone ('horror or drama')")
    return alternatives_id([(sp.attr, v) for sp in values for v in _genre_values(sp, "+", "hard")])


def _genre_values(sp: Span, polarity: str, kind: str) -> list[str | int]:
    """A compound genre ("romantic comedies" -> "Romance+Comedy", lexicon.COMPOUND_GENRES) as schema values."""
    if sp.attr != "genre" or "+" not in str(sp.value):
        return [sp.value]
    parts: list[str | int] = list(str(sp.value).split("+"))
    return parts[:1] if (polarity, kind) == ("-", "hard") else parts


#: Degree words setting a soft preference's weight; "not much horror" is mild, not the strongest penalty.
_MILD = re.compile(r"\b(?:a bit|a little|slightly|somewhat|bit|not (?:too |that |so )?(?:much|many|a lot))\b")
_STRONG = re.compile(r"\b(?:a lot|much|way|lots)\b")
_default: dict[str, StudentParser] = {}
BACKENDS = ("minilm", "bow")  # the shipped student parsers (DATA_DIR/student_<backend>.npz)


def default_parser(backend: str = "minilm", catalog: Catalog | None = None) -> StudentParser:
    """The shipped student parser bound to the MovieLens catalog (cached per process); ``backend``: one of
    ``BACKENDS``."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown parser backend {str(backend)[:40]!r}; use one of {list(BACKENDS)}")
    if backend not in _default:
        from .catalog import load_catalog

        _default[backend] = StudentParser.load(backend=backend, catalog=catalog or load_catalog())
    return _default[backend]
