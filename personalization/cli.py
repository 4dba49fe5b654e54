"""`railguard harm ...`: evaluation commands (CONTRACT.md) plus small profile utilities.

With `--json` exactly one JSON object goes to stdout; logs and progress go to stderr. Errors a user can cause
(bad file, bad flag) exit with code 2 and, under `--json`, a JSON `{"error": ...}` object.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from guardrails.cli.output import PLOT_SUFFIXES, emit_json, fail, output_path_problem
from guardrails.errors import ConfigError, RailguardError
from guardrails.jsonl import read_bounded

app = typer.Typer(help="Personalized harm detection: evaluate backends and personalization protocols.",
                  no_args_is_help=True)


def _emit(obj: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(obj)
    else:
        for k, v in obj.items():
            if not isinstance(v, dict):
                typer.echo(f"{k:>36}: {v:.4f}" if isinstance(v, float) else f"{k:>36}: {v}")
        for k, v in obj.items():
            if isinstance(v, dict):
                typer.echo(f"{k}: {json.dumps(v, sort_keys=True, default=str)}")


def _fail(msg: str, as_json: bool) -> None:
    fail(msg, as_json=as_json)


def _quiet() -> None:
    import logging
    import os
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _backend(kind: str, model: str | None, base_url: str | None, k: int, retrieval: str) -> Any:
    from .plugin import build_backend

    if kind != "icl" and (model or base_url):
        raise ConfigError("--model and --base-url apply to the icl backend (add --backend icl)")
    cfg: dict[str, Any] = {"backend": kind, **({"k": k, "retrieval": retrieval} if kind == "icl" else {})}
    if model:
        cfg["model"] = model
    if base_url:
        cfg["base_url"] = base_url
    return build_backend(cfg)


@app.command("eval")
def eval_cmd(
    data: Path = typer.Option(..., "--data", help="harm JSONL: {id, text, label}"),
    backend: str = typer.Option("embedding", "--backend", help="embedding | icl"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
    plot: Path | None = typer.Option(None, "--plot", help="write a ROC / PR curve PNG"),
    limit: int | None = typer.Option(None, "--limit", help="evaluate the first N rows only"),
    model: str | None = typer.Option(None, "--model", help="ICL: local model name/path or remote model id"),
    base_url: str | None = typer.Option(None, "--base-url", help="ICL: OpenAI-compatible endpoint"),
    k: int = typer.Option(8, "--k", help="ICL: number of bank demonstrations"),
    retrieval: str = typer.Option("random", "--retrieval", help="ICL: random | lexical | semantic"),
    profile: Path | None = typer.Option(None, "--profile", help="moderation profile JSON (default profile)"),
    only: list[str] = typer.Option([], "--only", help="keep only these categories active (overrides --scope)"),
    scope: str = typer.Option("labels", "--scope",
                              help="labels: only categories the file annotates may flag (the paper's per-dataset "
                                   "protocol); profile: every active category of the profile"),
    calibrate: int = typer.Option(0, "--calibrate", help="ICL: calibrate base categories on N benign bank texts"),
) -> None:
    """Binary harmful-vs-benign metrics (the paper's protocol) for one backend on one file."""
    _quiet()
    from .evaluate import evaluate, load_jsonl, scope_to_labels
    from .profile import ModerationProfile
    from .profile_io import import_json

    if backend not in ("embedding", "icl"):
        _fail(f"unknown backend {backend!r}; use embedding or icl", as_json)
    if scope not in ("labels", "profile"):
        _fail(f"unknown scope {scope!r}; use labels or profile", as_json)
    if limit is not None and limit < 1:
        _fail("--limit must be ≥ 1", as_json)
    problem = output_path_problem(plot, suffixes=PLOT_SUFFIXES) if plot is not None else None
    if problem:  # before the scoring, not after it
        _fail(f"--plot: {problem}", as_json)
    try:
        rows = load_jsonl(data)[:limit] if limit else load_jsonl(data)
        # bytes: strict UTF-8; bounded (a profile is far smaller than 64 MB): /dev/zero filled the memory
        prof = import_json(read_bounded(profile, 1 << 26)) if profile else ModerationProfile()
        used = "profile"
        if only:
            from .profile_ops import set_action

            unknown = sorted(set(only) - set(prof.categories))
            if unknown:
                _fail(f"--only names unknown categories {unknown}; known: {sorted(prof.categories)}", as_json)
            for name in prof.categories:
                if name not in only:
                    prof = set_action(prof, name, "allow")
            used = "only"
        elif scope == "labels":
            prof, used = scope_to_labels(prof, {str(r["label"]) for r in rows})
        be = _backend(backend, model, base_url, k, retrieval)
        if calibrate and hasattr(be, "calibrate"):
            be.calibrate(calibrate)
        out = evaluate(rows, be, prof, plot=plot)
        out["icl_calibration_texts"] = calibrate if backend == "icl" else None
        out["scope"] = used
    except (RailguardError, OSError) as exc:
        _fail(str(exc), as_json)
    out["data"] = str(data)
    _emit(out, as_json)


@app.command("personalize-eval")
def personalize_eval_cmd(
    as_json: bool = typer.Option(False, "--json", help="one JSON object on stdout"),
    data: Path | None = typer.Option(None, "--data", help="held-out harm JSONL (default: shipped dev set)"),
    backend: str = typer.Option("embedding", "--backend", help="embedding | icl"),
    max_per_label: int = typer.Option(150, "--max-per-label",
                                      help="texts sampled per label from the data (benign: 3x as many)"),
    shots: list[int] = typer.Option([], "--shots", help="also report block-new success from N examples"),
    no_variation: bool = typer.Option(False, "--no-variation", help="skip the (slower) variation protocol"),
) -> None:
    """Block-new (1 example), unblock (policy mask) and variation protocols."""
    _quiet()
    from .evaluate import load_jsonl, personalize_eval

    if max_per_label < 1:
        _fail("--max-per-label must be ≥ 1", as_json)
    if any(n < 1 for n in shots):
        _fail("--shots must be ≥ 1", as_json)
    if backend not in ("embedding", "icl"):
        _fail(f"unknown backend {backend!r}; use embedding or icl", as_json)
    try:
        rows = load_jsonl(data) if data else None
        if rows is not None and all(str(r.get("label")) == "benign" for r in rows):
            _fail(f"{data}: no harmful label (spam, toxic, negative) in the data; nothing to personalize", as_json)
        out = personalize_eval(_backend(backend, None, None, 8, "random"), rows, max_per_label=max_per_label,
                               shots=tuple(shots), variation=not no_variation)
    except (RailguardError, OSError) as exc:
        _fail(str(exc), as_json)
    _emit(out, as_json)


@app.command("profile-template")
def profile_template(
    as_json: bool = typer.Option(False, "--json",
                                 help="accepted for consistency with the other commands; the template is always "
                                      "printed as one JSON object"),
) -> None:
    """Print the default moderation profile as JSON (a starting point for `--profile` or import)."""
    from .profile import ModerationProfile
    from .profile_io import export_json

    typer.echo(export_json(ModerationProfile()))
