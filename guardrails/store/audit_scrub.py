"""Rename the audit trail's old paths the way new writes name them (`audit_paths`).

Until session 35 an audit row showed every mapping key an identifier could be read as, user-chosen ones too: a
category made from "block posts about Jane Doe's divorce" left ``moderation.categories.posts-about-jane-doe-s-divorce
.action`` in the trail. Writes since then name such keys by their keyed hash (`name_hash`); rows written before kept
their names until the user was erased. A store now renames them when it first opens a database (a marker row in
``railguard_schema`` says it is done), and `SettingsStore.scrub_audit` (``railguard settings scrub-audit``) does it
again on demand, for rows an older worker wrote after that.

A path is renamed segment by segment, walking the registered section models as a new write would: schema field
names and the keys a model declares public stay, any other key becomes its hash, a segment already hashed stays.
Old names held no dot (``safe_segment`` hashed any key with one), so splitting at dots recovers the segments. A path
under a section no registered model describes (a plugin not installed in this process, or one that failed to load)
is left as it is, and the marker is not set while one remains: renaming it without its model would hash its schema
names too, for good (until then each opening reads the table again, in read transactions). Rows are read in
batches and only those that change are written, each batch in its own transaction (renaming twice changes
nothing), so other workers are not locked out of the database for the whole table; a failure keeps the batches
already committed, and the store opens as before.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..errors import StoreError, safe_segment
from .audit_paths import _Map, _step
from .schema import schema_info, settings_audit

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

log = logging.getLogger("railguard.store")

#: the marker row's component in ``railguard_schema``: the audit paths of every row are named by the models
MARKER = "audit_paths_named"
_HASHED = re.compile(r"#[0-9a-f]{12}")
_BATCH = 500


def rename_path(path: str, models: Mapping[str, type[BaseModel]]) -> str | None:
    """``path`` as a write today would name it (idempotent); None when its section has no model here."""
    if path.partition(".")[0] not in models:
        return None
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


def _renamed(changed: str, models: Mapping[str, type[BaseModel]]) -> tuple[str, set[str]]:
    """(a row's ``changed`` JSON renamed, the sections of the paths left for a model this process lacks)."""
    try:
        paths = json.loads(changed)
    except (ValueError, RecursionError):
        paths = None
    if not isinstance(paths, list):
        return "[]", set()  # unreadable: nothing in it may be shown (it could hold anything)
    out, unknown = [], set()
    for p in paths:
        if isinstance(p, str):  # anything else is no path: dropped
            new = rename_path(p, models)
            if new is None:
                unknown.add(safe_segment(p.partition(".")[0]))
            out.append(p if new is None else new)
    return json.dumps(out), unknown


class AuditScrubMixin:
    """The audit-renaming half of `SettingsStore` (which provides `_tx`, `_models` and `location`)."""

    location: str
    _models: dict[str, type[BaseModel]] | None
    #: rows the store's opening renamed (0 when the marker said it was done)
    audit_rows_renamed: int = 0

    if TYPE_CHECKING:
        def _tx(self, *, write: bool) -> AbstractContextManager[sa.Connection]: ...

    def scrub_audit(self) -> int:
        """Rename every audit row's paths as a write names them now; returns the rows rewritten. Sets the marker
        unless a row names a section no registered model describes (left as it is: a later process with that
        plugin renames it)."""
        counted = [0]
        self._scrub(counted)
        return counted[0]

    def _scrub(self, counted: list[int]) -> None:
        """Batches read in read transactions; only the rows that change are written, each batch's in its own
        transaction (``counted[0]`` grows as each commits); then the marker."""
        from .settings import section_models

        models = self._models = section_models()
        a, after, unknown = settings_audit.c, -1, set()
        while True:
            with self._tx(write=False) as conn:
                rows = conn.execute(sa.select(a.id, a.changed).where(a.id > after).order_by(a.id).limit(_BATCH)).all()
            if not rows:
                break
            changes = []
            for row_id, changed in rows:
                new, left = _renamed(changed, models)
                unknown |= left
                if new != changed:
                    changes.append((row_id, changed, new))
            if changes:
                with self._tx(write=True) as conn:
                    done = sum(conn.execute(sa.update(settings_audit).where(a.id == row_id, a.changed == old)
                                            .values(changed=new)).rowcount or 0  # (renamed meanwhile: left)
                               for row_id, old, new in changes)
                counted[0] += done
            after = rows[-1][0]
        if unknown:
            log.info("settings database at %r: audit paths under %d section(s) no registered model describes are "
                     "left as they are (%s)", self.location, len(unknown), ", ".join(sorted(unknown)))
            return
        with self._tx(write=True) as conn:
            if sa.inspect(conn).has_table(schema_info.name) and conn.execute(
                    sa.select(schema_info.c.version).where(schema_info.c.component == MARKER)).first() is None:
                try:
                    with conn.begin_nested():
                        conn.execute(schema_info.insert().values(component=MARKER, version=1))
                except IntegrityError:  # another instance opening at the same time set it first
                    pass

    def _scrub_at_open(self) -> None:
        """`scrub_audit` unless the marker says it was done (or the database has no ``railguard_schema`` table: a
        role that may not create it keeps no marker, and is left to the command). Any failure is warned about and
        the store opens as before; ``audit_rows_renamed`` counts the rows renamed until then."""
        counted = [0]
        try:
            with self._tx(write=False) as conn:
                if not sa.inspect(conn).has_table(schema_info.name) or conn.execute(
                        sa.select(schema_info.c.version).where(schema_info.c.component == MARKER)).first():
                    return
            self._scrub(counted)
        except Exception as exc:  # renaming old rows is never a reason not to open the store
            inner = exc.__cause__ if isinstance(exc, StoreError) and exc.__cause__ is not None else exc
            cause = type(getattr(inner, "orig", None) or inner).__name__
            log.warning("settings database at %r: could not rename old audit paths (%s: %s); run `railguard "
                        "settings scrub-audit` once it is mended", self.location, cause,
                        "the database refused it" if isinstance(exc, StoreError | SQLAlchemyError)
                        else "a section model or a row could not be read")
        finally:
            self.audit_rows_renamed = counted[0]
        if counted[0]:
            log.info("settings database at %r: renamed the paths of %d audit rows written before they were hashed",
                     self.location, counted[0])
