"""`railguard rec ...` (typer app mounted by the spine through the `railguard.cli` entry point).

`--json` prints exactly one JSON object on stdout; progress and logs go to stderr (CONTRACT.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from guardrails.cli.output import emit_json, fail
from guardrails.errors import RailguardError

MAX_K = 1000  # a feed, not a catalog dump

app = typer.Typer(help="Command-driven recommendation policies (RecBot-style parser + planner).",
                  no_args_is_help=True)


def _fail(msg: str, as_json: bool) -> None:
    fail(msg, as_json=as_json)


@app.command("eval")
def eval_cmd(
    data: Path = typer.Option(..., "--data", help="rec scripts JSONL (CONTRACT format)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object on stdout"),
    parser: str = typer.Option("minilm", "--parser", help="student parser backend: minilm | bow"),
    semantic: bool = typer.Option(True, "--semantic/--no-semantic", help="encoder similarity in the Matcher"),
) -> None:
    """Apply each script's commands for its MovieLens user and check the top-10 feed."""
    from .evaluate import run_eval
    from .parser import BACKENDS

    if not data.exists():
        _fail(f"no such file: {data}", as_json)
    if parser not in BACKENDS:
        _fail(f"--parser must be one of {', '.join(BACKENDS)}", as_json)
    try:
        out = run_eval(data, backend=parser, semantic=semantic)
    except (RailguardError, ValueError, KeyError, FileNotFoundError) as exc:
        _fail(str(exc), as_json)
        return
    if as_json:
        emit_json(out)
    else:
        for k, v in out.items():
            print(f"{k:>20}: {v}")


@app.command("parse")
def parse_cmd(
    text: str = typer.Argument(..., help="a feed command, e.g. 'no horror, more like Amelie'"),
    parser: str = typer.Option("minilm", "--parser", help="student parser backend: minilm | bow"),
    as_json: bool = typer.Option(False, "--json",
                                 help="accepted for consistency with the other commands; parse always prints one "
                                      "JSON object"),
) -> None:
    """Show the structured preferences the student parser extracts as one JSON object (nothing is stored)."""
    from .parser import default_parser

    try:
        cmd = default_parser(parser).parse(text)
    except RailguardError as exc:
        _fail(f"{type(exc).__name__}: {exc}", True)
        return
    if cmd.is_empty:  # exit 0 (a valid answer), but say so: nothing in the text is a feed command
        print("note: no feed command understood in this text; nothing would change", file=sys.stderr)
    print(cmd.model_dump_json(indent=1, exclude={"text"}))


@app.command("recommend")
def recommend_cmd(
    user: int = typer.Option(..., "--user", help="MovieLens userId"),
    command: list[str] = typer.Option([], "--command", "-c", help="commands applied in order"),
    k: int = typer.Option(10, "--k", help=f"feed size (1-{MAX_K})"),
    as_json: bool = typer.Option(False, "--json",
                                 help="print the feed as one JSON object on stdout (items, titles, plan); "
                                      "default: one title a line, the plan's explanation on stderr"),
) -> None:
    """Top-k feed for a MovieLens user after some commands (in-memory policy; nothing persisted)."""
    from .catalog import load_catalog
    from .embeddings import ItemEmbeddings, get_encoder
    from .parser import default_parser
    from .planner import Planner
    from .policy import InMemoryStore, apply_command, load_policy
    from .recommender import default_recommender

    if not 1 <= k <= MAX_K:
        _fail(f"--k must be between 1 and {MAX_K}", as_json)
    try:
        cat = load_catalog()
        base = default_recommender(cat)
        if user not in base.user_index_:
            _fail(f"user {user} is not a MovieLens user (userId in ratings.csv)", as_json)
        store = InMemoryStore()
        for c in command:
            parsed = default_parser().parse(c)
            if parsed.is_empty:
                print(f"note: no feed command understood in {c!r}; it changes nothing", file=sys.stderr)
                continue
            report = apply_command(store, "cli", str(user), parsed, actor="cli", session_id="cli")
            print(f"applied {c!r}: {report.summary()}", file=sys.stderr)
        planner = Planner(cat, base, ItemEmbeddings(cat, get_encoder()))
        feed = planner.recommend(load_policy(store, "cli", str(user), session_id="cli"), user, k=k)
    except RailguardError as exc:
        _fail(f"{type(exc).__name__}: {exc}", as_json)
        return
    if as_json:
        print(feed.model_dump_json())
    else:
        print(feed.plan.explanation, file=sys.stderr)
        for t in feed.titles:
            print(t)
