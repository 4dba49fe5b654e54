"""SQLite file hygiene for the settings store: what an erasure or a new database leaves readable on disk."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

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
