"""Rename the audit trail's old paths the way new writes name them (`audit_paths`).

Until session 35 an audit row showed every mapping key an identifier could be read as, user-chosen ones too: a
category made from "block posts about Jane Doe's divorce" left ``moderation.categories.posts-about-jane-doe-s-divorce
.action`` in the trail. Writes since then name such keys by their keyed hash (`name_hash`); rows written before kept
their names until the user was erased. A store now renames them once, when it first opens a database (a marker row
in ``railguard_schema`` says it is done), and `scrub_audit` (``railguard settings scrub-audit``) does it again on
demand, for rows an older worker wrote after that.

A path is renamed segment by segment, walking the registered section models as a new write would: schema field
names and the keys a model declares public stay, any other key becomes its hash, a segment already hashed stays.
Old names held no dot (``safe_segment`` hashed any key with one), so splitting at dots recovers the segments.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from .audit_paths import _Map, _step
from .schema import schema_info, settings_audit

log = logging.getLogger("railguard.store")

#: the marker row's component in ``railguard_schema``: the audit paths of every row are named by the models
MARKER = "audit_paths_named"
_HASHED = re.compile(r"#[0-9a-f]{12}")
_BATCH = 500


def rename_path(path: str, models: Mapping[str, type[BaseModel]]) -> str:
    """``path`` as a write today would name it (idempotent: a renamed path is returned unchanged)."""
    shape: Any = models
    out = []
    for segment in path.split("."):
        if _HASHED.fullmatch(segment):  # already a hash; below it, a mapping's values keep their shape
            out.append(segment)
            shape = shape.values if isinstance(shape, _Map) else None
            continue
        named, shape = _step(shape, segment)
        out.append(named)
    return ".".join(out)


def _rename_rows(conn: sa.Connection, models: Mapping[str, type[BaseModel]]) -> int:
    """Rewrite every audit row whose paths a write today would name otherwise; returns how many were rewritten."""
    a, done, after = settings_audit.c, 0, -1
    while True:
        rows = conn.execute(sa.select(a.id, a.changed).where(a.id > after).order_by(a.id).limit(_BATCH)).all()
        if not rows:
            return done
        for row_id, changed in rows:
            try:
                paths = json.loads(changed)
            except ValueError:
                paths = None
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                new = "[]"  # unreadable: nothing in it may be shown (it could hold anything)
            else:
                new = json.dumps([rename_path(p, models) for p in paths])
            if new != changed:
                conn.execute(sa.update(settings_audit).where(a.id == row_id).values(changed=new))
                done += 1
        after = rows[-1][0]


def scrub_audit(conn: sa.Connection, models: Mapping[str, type[BaseModel]]) -> int:
    """Inside a write transaction: rename every audit row's paths and set the marker. Returns the rows rewritten."""
    done = _rename_rows(conn, models)
    if sa.inspect(conn).has_table(schema_info.name) and conn.execute(
            sa.select(schema_info.c.version).where(schema_info.c.component == MARKER)).first() is None:
        conn.execute(schema_info.insert().values(component=MARKER, version=1))
    return done


def scrub_once(conn: sa.Connection, models: Mapping[str, type[BaseModel]], location: str) -> int:
    """At a store's opening: `scrub_audit` unless the marker says it was done. A role that may not update the
    audit table is warned about and the store opens as before; a database used unversioned (no ``railguard_schema``
    table: a role that may not create it) has nowhere to keep the marker and is left to the command."""
    if not sa.inspect(conn).has_table(schema_info.name):
        return 0
    try:
        with conn.begin_nested():
            if conn.execute(sa.select(schema_info.c.version).where(schema_info.c.component == MARKER)).first():
                return 0
            done = scrub_audit(conn, models)
    except DBAPIError as exc:
        log.warning("settings database at %r: could not rename old audit paths (%s); run `railguard settings "
                    "scrub-audit` with a role that may update the audit table", location,
                    type(getattr(exc, "orig", exc)).__name__)
        return 0
    if done:
        log.info("settings database at %r: renamed the paths of %d audit rows written before they were hashed",
                 location, done)
    return done
