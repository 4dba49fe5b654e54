"""`railguard settings`: read and change one user's stored settings from the command line.

The same store (`--db`, else `RAILGUARD_DB_URL`, else the default SQLite file) and the same operations the HTTP
service offers (`POST /v1/users/{u}/settings/{section}/{operation}`, registered by plugins under
``railguard.settings_operations``): an operator blocks a category for one user, looks at what a user has set, or
reads who changed it when, without a running service. Every change is one versioned, audited write (actor "cli").

    railguard settings apply --user alice moderation block --input '{"name": "crypto", "examples": ["..."]}'
    railguard settings apply --user alice rec_policy command --input '{"text": "no more horror"}'
    railguard settings show --user alice --section moderation --json
    railguard settings audit --user alice
    railguard settings erase --user alice --yes
    railguard settings scrub-audit
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import RailguardError
from ..jsonio import loads_unique
from ..jsonl import read_bounded
from .output import JsonOpt, emit_json, err_console, fail

settings_app = typer.Typer(help="Read and change one user's stored settings (moderation, feed policy, guard).",
                           no_args_is_help=True)

UserOpt = Annotated[str, typer.Option("--user", help="End-user id.")]
TenantOpt = Annotated[str, typer.Option("--tenant", help="Tenant the user belongs to.")]
DbOpt = Annotated[str | None, typer.Option(
    "--db", help="SQLAlchemy URL or SQLite file of the settings store (default: $RAILGUARD_DB_URL, else the "
                 "user data dir's settings.db).")]
ACTOR = "cli"


def _open(db: str | None, user: str | None, *, create: bool) -> Any:
    """The store, after the user id is checked. An in-memory database would forget the change as the command ends,
    so it is refused; a command that only reads (or erases) refuses a SQLite file that does not exist rather than
    creating an empty one at a mistyped path."""
    from ..store import SettingsStore
    from ..store.sql import resolve_url
    from ..text import check_id

    if user is not None:
        check_id(user, "user_id")
    url = resolve_url(db)
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if path in ("", ":memory:") or url.query.get("mode") == "memory":
            raise RailguardError("an in-memory database keeps nothing after this command: give a file or server URL")
        if not create and not Path(path).is_file():
            raise RailguardError(f"no settings database at {path}")
    return SettingsStore(url.render_as_string(hide_password=False))


_MAX_INPUT = 1 << 24  # an operation's input (a profile's texts are limited far below this)


def _payload(text: str | None, file: Path | None) -> Any:
    """The operation's input: a JSON object from --input, --input-file (- for stdin), or {} when neither."""
    import sys

    if text is not None and file is not None:
        raise RailguardError("give at most one of --input or --input-file")
    try:
        # utf-8-sig: a BOM (Windows tools) is not data, as the JSONL readers take it
        # bounded: `--input-file /dev/zero` filled the memory (review of session 33)
        source = sys.stdin.buffer if str(file) == "-" else file
        raw = (text if text is not None
               else read_bounded(source, _MAX_INPUT, name="the operation's input").decode("utf-8-sig")
               if source is not None else "{}")
        value = loads_unique(raw)
    except UnicodeDecodeError:
        raise RailguardError("the operation's input is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise RailguardError(f"the operation's input is not JSON (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise RailguardError("the operation's input is nested too deeply") from None
    if not isinstance(value, dict):
        raise RailguardError(f"the operation's input must be a JSON object, got {type(value).__name__}")
    return value


@settings_app.command("show")
def show(user: UserOpt, tenant: TenantOpt = "default", db: DbOpt = None,
         section: Annotated[str | None, typer.Option("--section", help="Only this section.")] = None,
         as_json: JsonOpt = False) -> None:
    """A user's settings (every section, or one) and their version."""
    try:
        if section is not None:
            from ..store import section_models

            known = sorted(section_models())
            if section not in known:
                fail(f"unknown section {section!r}; sections: {known}", as_json=as_json)
        with _open(db, user, create=False) as store:
            if not store.exists(tenant, user):
                fail(f"no settings stored for this user in tenant {tenant!r}", as_json=as_json)
            stored = store.get(tenant, user)
    except (RailguardError, OSError) as exc:
        fail(str(exc), as_json=as_json)
    body: dict[str, Any] = {"user_id": user, "tenant_id": tenant, "version": stored.version,
                            "settings": stored.settings if section is None else
                            {section: stored.settings.get(section, {})}}
    if as_json:
        emit_json(body)
        return
    Console().print_json(json.dumps(body, default=str))


@settings_app.command("apply")
def apply(section: Annotated[str, typer.Argument(help="Settings section, e.g. moderation or rec_policy.")],
          operation: Annotated[str, typer.Argument(help="Operation name (see `railguard settings operations`).")],
          user: UserOpt, tenant: TenantOpt = "default", db: DbOpt = None,
          input_json: Annotated[str | None, typer.Option(
              "--input", help='The operation\'s input, a JSON object (default {}), e.g. \'{"name": "spam"}\'.')] = None,
          input_file: Annotated[Path | None, typer.Option(
              "--input-file", help="Read the input from this file (- for stdin).")] = None,
          as_json: JsonOpt = False) -> None:
    """Run one registered operation on a user's section, in one atomic, versioned, audited write (actor
    cli:SECTION.OPERATION); bad input changes nothing. Inputs: `railguard settings operations --json`."""
    from ..store import run_operation, section_operations

    try:
        payload = _payload(input_json, input_file)
        known = section_operations()
        if section not in known:
            fail(f"no operations for section {section!r}; sections with operations: {sorted(known)}",
                 as_json=as_json)
        if operation not in known[section]:
            fail(f"section {section!r} has no operation {operation!r}; known: {sorted(known[section])}",
                 as_json=as_json)
        known[section][operation].parse(payload)  # refused before the store opens: a bad input creates no file
        with _open(db, user, create=True) as store:
            saved = run_operation(store, tenant, user, section, known[section][operation], payload,
                                  actor=f"{ACTOR}:{section}.{operation}")
    except (RailguardError, OSError) as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        emit_json({"user_id": user, "tenant_id": tenant, "version": saved.version,
                   "section": section, "settings": saved.settings.get(section, {})})
        return
    err_console.print(f"{escape(section)}.{escape(operation)} applied for {escape(user)}: version {saved.version}")


@settings_app.command("operations")
def operations(as_json: JsonOpt = False) -> None:
    """The operations each section offers, with their input schemas (--json)."""
    from ..store import section_operations

    try:
        known = section_operations()
    except RailguardError as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        emit_json({s: {n: {"summary": op.summary, "input": op.body.model_json_schema()}
                       for n, op in sorted(ops.items())} for s, ops in sorted(known.items())})
        return
    table = Table("section", "operation", "input fields", "what")
    for s, ops in sorted(known.items()):
        for n, op in sorted(ops.items()):
            table.add_row(s, n, ", ".join(op.body.model_fields), op.summary)
    Console().print(table)


@settings_app.command("audit")
def audit(user: UserOpt, tenant: TenantOpt = "default", db: DbOpt = None,
          limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Newest entries to show.")] = 20,
          as_json: JsonOpt = False) -> None:
    """Who changed this user's settings when, newest first (changed paths and digests, never values)."""
    try:
        with _open(db, user, create=False) as store:
            entries = store.history(tenant, user, limit=limit)
    except (RailguardError, OSError) as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        emit_json({"entries": [e.model_dump(mode="json") for e in entries]})
        return
    table = Table("version", "when", "actor", "op", "changed")
    for e in entries:
        shown = ", ".join(e.changed[:3]) + (f" (+{len(e.changed) - 3} more)" if len(e.changed) > 3 else "")
        table.add_row(str(e.version), f"{e.at:%Y-%m-%d %H:%M:%S}", escape(e.actor), escape(str(e.op)), escape(shown))
    Console().print(table)


@settings_app.command("scrub-audit")
def scrub_audit(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """Rename old audit paths as writes name them now: a user-chosen key (a category made from a chat command) as
    its hash. A store does it once when it first opens a database; run this after an older railguard wrote to it."""
    try:
        with _open(db, None, create=False) as store:
            renamed = store.audit_rows_renamed + store.scrub_audit()  # (a first open renames them itself)
    except (RailguardError, OSError) as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        emit_json({"rows_renamed": renamed})
        return
    err_console.print(f"renamed the paths of {renamed} audit rows")


@settings_app.command("erase")
def erase(user: UserOpt, tenant: TenantOpt = "default", db: DbOpt = None,
          yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False,
          as_json: JsonOpt = False) -> None:
    """Forget a user in the store: settings, session state and audit trail, in one transaction. A running service
    over the same database also caches per-user detector state: erase through it (`POST /v1/users/{u}/erase`)."""
    if not yes:
        fail("erasing a user cannot be undone: add --yes", as_json=as_json)
    try:
        with _open(db, user, create=False) as store:
            removed = store.erase_user(tenant, user)
    except (RailguardError, OSError) as exc:
        fail(str(exc), as_json=as_json)
    if as_json:
        emit_json({"user_id": user, "tenant_id": tenant, "removed": removed})
        return
    err_console.print(f"erased {escape(user)}: {removed}")
