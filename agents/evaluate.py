"""`rec eval`: apply each script's commands for its MovieLens user, then check the top-10 feed (CONTRACT.md).

Protocol (why): each user's most recent 20% of ratings is held out and the base recommender is trained on the
rest, so recall@10 is measured on items the models never saw. Targets are the held-out items rated >= 4 that
satisfy the case's hard checks ("command-consistent"); the same targets score the plain base ranker.
Between two commands a feed is served, so ``next_feed``-scoped preferences expire exactly as in the product.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from guardrails.jsonl import read_jsonl

from .catalog import Catalog, load_catalog, load_ratings
from .embeddings import ItemEmbeddings, get_encoder
from .planner import Planner
from .policy import InMemoryStore, apply_command, load_policy, mark_feed_served
from .recommender import PureSVDRecommender
from .schema import CommandError

HARD_ATTRS = {"genre", "year", "title"}


def temporal_split(ratings: np.ndarray, frac: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the latest `frac` of ratings (by timestamp) form the test part."""
    r = ratings[np.lexsort((ratings["ts"], ratings["user"]))]
    test = np.zeros(len(r), bool)
    users, starts, counts = np.unique(r["user"], return_index=True, return_counts=True)
    for s, c in zip(starts, counts, strict=True):
        n = max(1, int(c * frac))
        test[s + c - n: s + c] = True
    return r[~test], r[test]


_OPS = {"genre": {"includes", "excludes", "eq"}, "title": {"includes", "excludes", "eq"},
        "tag": {"includes", "excludes", "eq"}, "year": {"ge", "le", "eq"}}


def load_cases(path: str | Path) -> list[dict[str, Any]]:
    out = []
    for n, d in read_jsonl(path):
        if not isinstance(d.get("commands"), list) or "user_id" not in d:
            raise CommandError(f"line {n}: a rec script needs user_id and commands")
        if not all(isinstance(c, str) for c in d["commands"]):
            raise CommandError(f"line {n}: commands must be strings")
        if isinstance(d["user_id"], bool) or not isinstance(d["user_id"], int):
            raise CommandError(f"line {n}: user_id must be an integer MovieLens userId")
        checks = d.get("checks", [])
        if not isinstance(checks, list):
            raise CommandError(f"line {n}: checks must be a list")
        for c in checks:
            if not isinstance(c, dict) or c.get("attr") not in _OPS or c.get("op") not in _OPS[c["attr"]] \
                    or "value" not in c:
                raise CommandError(f"line {n}: each check needs attr (genre|year|tag|title), a valid op and a value")
            if c["value"] is None or (isinstance(c["value"], str) and not c["value"].strip()):
                raise CommandError(f"line {n}: a check's value must not be null or empty")
            if c["attr"] == "year" and (isinstance(c["value"], bool) or not isinstance(c["value"], int)):
                raise CommandError(f"line {n}: a year check's value must be an integer")
            if c["attr"] != "year" and not isinstance(c["value"], str):
                # a list or a number never equals a title/genre/tag, so an "excludes" check would always hold
                raise CommandError(f"line {n}: a {c['attr']} check's value must be a string")
        if d.get("kind", "hard") not in ("hard", "soft"):
            raise CommandError(f"line {n}: kind must be 'hard' or 'soft'")
        out.append({**d, "_line": n})
    if not out:  # scoring nothing is not a result (probes eval and harm eval refuse it too)
        raise CommandError(f"{path}: no rec scripts")
    return out


def check_against_catalog(cases: list[dict[str, Any]], catalog: Catalog, users: set[int]) -> None:
    """A script naming a user or genre the data does not have would pass its checks trivially: refuse it."""
    genres = {g.lower() for gs in catalog.genres for g in gs}
    for d in cases:
        if d["user_id"] not in users:
            raise CommandError(f"line {d['_line']}: user_id {d['user_id']} is not a MovieLens user")
        for c in d.get("checks", []):
            if c["attr"] == "genre" and str(c["value"]).lower() not in genres:
                raise CommandError(f"line {d['_line']}: unknown genre {c['value']!r}; known: {sorted(genres)}")


def run_eval(path: str | Path, *, backend: str = "minilm", semantic: bool = True,
             catalog: Catalog | None = None) -> dict[str, Any]:
    """The `rec eval` metrics for the rec scripts JSONL at ``path`` (CONTRACT format; see the module docstring).

    Trains the base recommender on the temporal split of the MovieLens ratings ($RAILGUARD_MOVIELENS, else the
    shared copy; ``DataNotAvailableError`` when absent), parses each script's commands with the ``backend``
    student parser ("minilm" or "bow"), applies them for its user and checks the top-10 feed. ``semantic``: use
    encoder similarity in the planner's matcher; ``catalog``: a preloaded MovieLens catalog.

    Returns the CONTRACT keys (``n``, ``hard_satisfaction``, ``soft_satisfaction``, ``recall_at_10``,
    ``base_recall_at_10``, ``parser_ms_p50``; None where nothing was measured) plus counts and timing. Malformed
    scripts, or ones naming a user or genre MovieLens lacks, raise ``CommandError`` before any scoring; a command
    the parser or policy refuses is counted in ``command_errors`` and named in ``command_error_details`` (the first
    20: script and command index, and the error).
    """
    from .parser import default_parser

    t_start = time.time()
    catalog = catalog or load_catalog()
    train, test = temporal_split(load_ratings())
    base = PureSVDRecommender().fit(train, item_ids=catalog.item_ids)
    emb = ItemEmbeddings(catalog, get_encoder()) if semantic else None
    planner = Planner(catalog, base, emb)
    parser = default_parser(backend, catalog)
    cases = load_cases(path)
    check_against_catalog(cases, catalog, {int(u) for u in np.unique(np.concatenate([train["user"], test["user"]]))})
    hard_ok: list[bool] = []
    soft_share: list[float] = []
    recall: list[float] = []
    base_recall: list[float] = []
    parse_ms: list[float] = []
    errors = short = 0
    details: list[dict[str, Any]] = []

    def refused(case_i: int, command_i: int, exc: CommandError) -> None:
        nonlocal errors
        errors += 1
        if len(details) < 20:
            details.append({"case": case_i, "command": command_i, "error": str(exc)})

    for case_i, case in enumerate(cases):
        uid = int(case["user_id"])
        store = InMemoryStore()
        user = str(uid)
        for j, text in enumerate(case["commands"]):
            if j:
                mark_feed_served(store, "eval", user, actor="eval")
            t0 = time.perf_counter()
            try:
                cmd = parser.parse(text)
            except CommandError as exc:
                refused(case_i, j, exc)
                continue
            finally:
                parse_ms.append((time.perf_counter() - t0) * 1000)
            try:
                apply_command(store, "eval", user, cmd, actor="eval", session_id="eval")
            except CommandError as exc:
                refused(case_i, j, exc)
        policy = load_policy(store, "eval", user, session_id="eval")
        feed = planner.recommend(policy, uid, k=10)
        rows = [catalog.index[m] for m in feed.items]
        short += len(rows) < 10
        checks = case.get("checks", [])
        for c in checks:
            sat = [catalog.check(i, c["attr"], c["op"], c["value"]) for i in rows]
            if c["attr"] in HARD_ATTRS:
                hard_ok.append(bool(rows) and all(sat))
            else:
                soft_share.append(float(np.mean(sat)) if rows else 0.0)
        held = test[(test["user"] == uid) & (test["rating"] >= 4.0)]["item"]
        hard_checks = [c for c in checks if c["attr"] in HARD_ATTRS]
        targets = {int(m) for m in held if int(m) in catalog.index and all(
            catalog.check(catalog.index[int(m)], c["attr"], c["op"], c["value"]) for c in hard_checks)}
        if targets:
            denom = min(10, len(targets))
            recall.append(len(targets & set(feed.items)) / denom)
            base_recall.append(len(targets & set(base.recommend(uid, 10))) / denom)
    mean = lambda xs: round(float(np.mean(xs)), 4) if xs else None  # noqa: E731
    return {
        "n": len(cases),
        "hard_satisfaction": mean(hard_ok),
        "soft_satisfaction": mean(soft_share),
        "recall_at_10": mean(recall),
        "base_recall_at_10": mean(base_recall),
        "parser_ms_p50": round(statistics.median(parse_ms), 2) if parse_ms else None,
        "n_hard_checks": len(hard_ok), "n_soft_checks": len(soft_share), "n_recall_cases": len(recall),
        "short_feeds": short, "command_errors": errors,
        "command_error_details": details, "parser_backend": backend, "semantic": semantic,
        "seconds": round(time.time() - t_start, 1),
    }
