"""SQLite specifics of the settings store: connection set-up, and what an erasure or a new database leaves
readable on disk."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

#: how long an erasure's checkpoint waits for the log's readers
CHECKPOINT_WAIT_MS = 1000


def private_file(path: Path) -> None:
    """The database's folder (created 0700) and file (created empty, 0600) before SQLite opens it: it holds users'
    example texts and preferences, and SQLite gives its -wal and -shm files the database file's mode. Existing
    folders and files keep their modes (the operator's choice). A symbolic link to a file not yet there creates
    its target so (O_EXCL refuses the link itself, and SQLite then created the target world-readable)."""
    target = Path(os.path.realpath(path))  # the path itself, or where a link there points
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def checkpoint(engine: Any, lock: Any) -> bool:
    """Copy the write-ahead log into the database file and empty it (``wal_checkpoint(TRUNCATE)``): after an
    erasure the log still holds the erased rows' pages (the file overwrites them: ``secure_delete``). It waits for
    the log's readers at most `CHECKPOINT_WAIT_MS`: under the store's 30 s busy_timeout a reader such as a backup
    held every other write of the service that long (review of session 33). Returns whether it completed; best
    effort, a failure is False."""
    done = False
    with contextlib.suppress(SQLAlchemyError), lock, engine.connect() as conn:
        timeout = int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0)
        try:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={min(timeout, CHECKPOINT_WAIT_MS)}")
            row = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
            done = row is not None and not row[0]  # (busy, log frames, checkpointed frames)
        finally:
            try:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={timeout}")
            except SQLAlchemyError:
                conn.invalidate()  # never back to the pool without its busy_timeout
                raise
    return done


def install_sqlite_hooks(engine: Any, busy_timeout_ms: int) -> None:
    """Every connection: the busy timeout, WAL, and BEGIN IMMEDIATE for a write transaction (SQLite would otherwise
    take the write lock only at the first write, and a read-then-write transaction could then fail to upgrade)."""
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # pysqlite must not emit its own (deferred) BEGIN
        cur = dbapi_conn.cursor()  # busy_timeout first: switching to WAL may itself wait for a lock
        # secure_delete: deleted rows (an erased user's texts) are overwritten in the file, not left in free pages
        for pragma in (f"busy_timeout={int(busy_timeout_ms)}", "journal_mode=WAL", "synchronous=NORMAL",
                       "foreign_keys=ON", "secure_delete=ON"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("railguard_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
