"""The settings store's tables and its schema version.

A database remembers which schema version wrote it (table ``railguard_schema``). A store opening a database
written by a *newer* railguard refuses it with a StoreError instead of reading or writing rows whose meaning may
have changed (a downgrade, or an old worker left running beside upgraded ones); an older or unversioned database
(every release so far wrote schema 1) is brought to this version when it is opened.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from ..errors import StoreError

log = logging.getLogger("railguard.store")

#: The schema this code reads and writes. Bump it (with a migration in `ensure_schema`) when a table changes.
SCHEMA_VERSION = 1
_COMPONENT = "settings_store"

metadata = sa.MetaData()
# Timestamps are written as aware UTC; SQLite returns them naive, the models re-attach UTC on read.
UTCDateTime = sa.DateTime(timezone=True)


def _pk(*names: str) -> list[sa.Column[Any]]:
    return [sa.Column(n, sa.String(256), primary_key=True) for n in names]


user_settings = sa.Table(
    "user_settings", metadata, *_pk("tenant_id", "user_id"),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("settings", sa.Text, nullable=False),  # canonical JSON, section -> data
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
settings_audit = sa.Table(  # append-only; sqlite_autoincrement: ids are never reused, so the order is stable
    "settings_audit", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    *(sa.Column(n, sa.String(256), nullable=False) for n in ("tenant_id", "user_id", "actor")),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("op", sa.String(16), nullable=False),
    sa.Column("changed", sa.Text, nullable=False),  # JSON list of dotted paths: never values
    sa.Column("digest", sa.String(64), nullable=True),  # sha256 of the new canonical settings; null on delete
    sa.Index("ix_settings_audit_user", "tenant_id", "user_id", "id"),
    sqlite_autoincrement=True,
)
session_state = sa.Table(
    "session_state", metadata, *_pk("tenant_id", "user_id", "session_id", "key"),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # pruning deletes by age: without it every prune scans the whole table under the write lock
    sa.Index("ix_session_state_updated_at", "updated_at"),
)

erasure_log = sa.Table(  # one row per erasure, naming nobody: other processes see that one happened (erasures.py)
    "railguard_erasures", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sqlite_autoincrement=True,
)


schema_info = sa.Table(
    "railguard_schema", metadata,
    sa.Column("component", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)


#: pg_advisory_xact_lock key (any constant bigint) under which railguard creates tables on PostgreSQL
_DDL_LOCK_KEY = 0x7261696C6775  # "railgu"


def serialize_ddl(conn: sa.Connection) -> None:
    """Make concurrent table creation safe: instances starting together on a fresh PostgreSQL database each ran
    CREATE TABLE and all but one failed (duplicate key in pg_type). A transaction-scoped advisory lock queues
    them; on SQLite the store's write transaction (BEGIN IMMEDIATE) already holds the file lock."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_DDL_LOCK_KEY)))


def _permission_denied(exc: DBAPIError) -> bool:
    """The CREATE was refused for lack of rights (PostgreSQL SQLSTATE 42501), not failed for another reason."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) == "42501" or isinstance(orig, PermissionError) or \
        "permission denied" in str(orig).lower()


def ensure_schema(conn: sa.Connection, location: str) -> int:
    """Create missing tables and check (or record) the schema version, inside the caller's write transaction.

    A database from a release before the version table, opened by a role that may read and write the existing
    tables but not create new ones (PostgreSQL 15+ gives ordinary roles no CREATE on ``public``), is used as it is,
    unversioned, with a warning: refusing it would break an upgrade that needs no new table."""
    serialize_ddl(conn)
    existing = set(sa.inspect(conn).get_table_names())
    data_tables = [t for t in metadata.sorted_tables if t not in (schema_info, erasure_log)]
    if erasure_log.name not in existing and {t.name for t in data_tables} <= existing:
        _create_optional(conn, location, erasure_log, f"the {erasure_log.name} table",
                         "other processes will not learn of erasures")
    if not {t.name for t in data_tables} <= existing:
        metadata.create_all(conn)  # a new database (or one missing tables): whoever opens it must be able to create
    elif schema_info.name not in existing:
        try:
            with conn.begin_nested():
                schema_info.create(conn)
        except DBAPIError as exc:
            if not _permission_denied(exc):
                raise
            log.warning("settings database at %r: cannot create the %s table (%s); using it unversioned",
                        location, schema_info.name, type(getattr(exc, "orig", exc)).__name__)
            return SCHEMA_VERSION
    _ensure_indexes(conn, location)
    row = conn.execute(sa.select(schema_info.c.version).where(schema_info.c.component == _COMPONENT)).first()
    if row is None:
        try:
            with conn.begin_nested():  # two instances creating one database: the second insert loses the race
                conn.execute(schema_info.insert().values(component=_COMPONENT, version=SCHEMA_VERSION))
        except IntegrityError:
            row = conn.execute(sa.select(schema_info.c.version).where(schema_info.c.component == _COMPONENT)).one()
    found = SCHEMA_VERSION if row is None else int(row.version)
    if found > SCHEMA_VERSION:
        raise StoreError(f"settings database at {location!r} has schema version {found}, written by a newer "
                         f"railguard (this one reads version {SCHEMA_VERSION}); upgrade railguard to use it")
    if found < SCHEMA_VERSION:  # no older schema exists yet; migrations go here, oldest first
        conn.execute(schema_info.update().where(schema_info.c.component == _COMPONENT)
                     .values(version=SCHEMA_VERSION))
    return found


def _create_optional(conn: sa.Connection, location: str, item: sa.Table | sa.Index, what: str,
                     without: str) -> None:
    """Add a table or index an older release did not have and no row's meaning depends on (no schema version: an
    older railguard reads the database as before); a role that may not create it is warned about, and the store
    works `without` it."""
    try:
        with conn.begin_nested():
            item.create(conn, checkfirst=True)
    except DBAPIError as exc:
        if not _permission_denied(exc):
            raise
        log.warning("settings database at %r: cannot create %s (%s); %s", location, what,
                    type(getattr(exc, "orig", exc)).__name__, without)


def _ensure_indexes(conn: sa.Connection, location: str) -> None:
    """Indexes added after a table was first created; without them the store still works, only slower."""
    for table in (session_state,):
        for index in table.indexes:
            _create_optional(conn, location, index, f"index {index.name}", "pruning will scan the table")
