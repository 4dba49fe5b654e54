"""Audit rows written before session 35 named user-chosen keys verbatim (a category made from "block posts about
Jane Doe's divorce"); a store renames them as writes name them now, once, when it first opens the database, and
`railguard settings scrub-audit` does it again on demand."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from test_audit_paths import MODELS

from guardrails import name_hash
from guardrails.store import SettingsStore
from guardrails.store.audit_scrub import MARKER, rename_path
from guardrails.store.schema import schema_info, settings_audit

OLD = ["moderation.categories.posts-about-jane-doe-s-divorce.action", "moderation.categories.spam.threshold",
       "guard.thresholds.pii", "guard.shadow"]


def _old_row(store: SettingsStore, paths: list[str] | str, user: str = "alice") -> None:
    """An audit row as a release before session 35 wrote it (straight into the table)."""
    with store.engine.begin() as conn:
        conn.execute(sa.insert(settings_audit).values(
            tenant_id="default", user_id=user, actor="cli", version=1, at=datetime.now(UTC), op="put",
            changed=paths if isinstance(paths, str) else json.dumps(paths), digest=None))


def _unmark(store: SettingsStore) -> None:
    """The database as a release before the rename left it: no marker."""
    with store.engine.begin() as conn:
        conn.execute(sa.delete(schema_info).where(schema_info.c.component == MARKER))


def _marker(store: SettingsStore) -> bool:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(schema_info).where(schema_info.c.component == MARKER)).first() is not None


def test_a_path_is_renamed_as_a_write_names_it_and_renaming_twice_changes_nothing() -> None:
    h = name_hash
    assert rename_path("s.rules.jane-doe-divorce.labels.her-ex", MODELS) == \
        f"s.rules.{h('jane-doe-divorce')}.labels.{h('her-ex')}"
    assert rename_path("s.rules.builtin.on", MODELS) == "s.rules.builtin.on"  # declared public
    assert rename_path("s.limits.pii", MODELS) == "s.limits.pii"  # operator identifiers
    once = rename_path("s.rules.jane.on", MODELS)
    assert rename_path(once, MODELS) == once  # a hashed segment stays, and what is below it keeps its shape
    # a section no model here describes (a plugin not installed in this process): left for a process that has it
    assert rename_path("gone.alice-notes", MODELS) is None


def test_a_store_renames_old_audit_paths_once_when_it_first_opens_a_database(tmp_path) -> None:
    url = str(tmp_path / "s.db")
    with SettingsStore(url) as store:
        assert _marker(store)  # a new database: nothing to rename, marked done
        _unmark(store)  # a database from before the marker
        _old_row(store, OLD)
        _old_row(store, "not json", user="bob")
        _old_row(store, "[" * 100_000 + "]" * 100_000, user="bob")  # nested past the JSON parser's recursion
        _old_row(store, ["guard.shadow", 7, None], user="dan")  # a value that is no path: dropped, the rest kept
    with SettingsStore(url) as store:
        assert _marker(store) and store.audit_rows_renamed == 4
        got = store.history("default", "alice")[0].changed
        assert got == (f"moderation.categories.{name_hash('posts-about-jane-doe-s-divorce')}.action",
                       "moderation.categories.spam.threshold", "guard.thresholds.pii", "guard.shadow")
        assert [e.changed for e in store.history("default", "bob")] == [(), ()]  # unreadable: nothing is kept
        assert store.history("default", "dan")[0].changed == ("guard.shadow",)
        # an older worker writes another row after the marker: the command renames it, and only it
        _old_row(store, OLD[:1], user="carol")
        assert store.scrub_audit() == 1 and store.scrub_audit() == 0
        assert "jane" not in json.dumps([e.changed for u in ("alice", "bob", "carol")
                                         for e in store.history("default", u)])


def test_the_cli_renames_old_rows_and_refuses_a_missing_database(tmp_path) -> None:
    from typer.testing import CliRunner

    from guardrails.cli.app import app

    url = str(tmp_path / "s.db")
    with SettingsStore(url) as store:
        _old_row(store, OLD)  # written after the marker (an older worker)
    out = CliRunner().invoke(app, ["settings", "scrub-audit", "--db", url, "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout) == {"rows_renamed": 1}
    with SettingsStore(url) as store:  # a database never renamed: the command's own open does it, and counts it
        _unmark(store)
        _old_row(store, OLD, user="bob")
    first = CliRunner().invoke(app, ["settings", "scrub-audit", "--db", url, "--json"])
    assert json.loads(first.stdout) == {"rows_renamed": 1}
    again = CliRunner().invoke(app, ["settings", "scrub-audit", "--db", url, "--json"])
    assert json.loads(again.stdout) == {"rows_renamed": 0}
    missing = CliRunner().invoke(app, ["settings", "scrub-audit", "--db", str(tmp_path / "nope.db")])
    assert missing.exit_code != 0 and not (tmp_path / "nope.db").exists()


def test_a_section_without_a_model_here_is_left_and_the_marker_waits_for_it(tmp_path) -> None:
    url = str(tmp_path / "s.db")
    with SettingsStore(url) as store:
        _unmark(store)
        _old_row(store, ["gone-plugin.rules.builtin.on", *OLD[:1]])
    with SettingsStore(url) as store:
        assert not _marker(store)  # a later process with the plugin renames the rest
        jane = name_hash("posts-about-jane-doe-s-divorce")
        assert store.history("default", "alice")[0].changed == (
            "gone-plugin.rules.builtin.on", f"moderation.categories.{jane}.action")
        with store.engine.begin() as conn:
            conn.execute(sa.delete(settings_audit))
        assert store.scrub_audit() == 0 and _marker(store)


def test_a_failed_rename_leaves_the_rows_and_the_store_opens(tmp_path, caplog) -> None:
    url = str(tmp_path / "s.db")
    with SettingsStore(url) as store:
        with store.engine.begin() as conn:
            conn.execute(sa.delete(schema_info).where(schema_info.c.component == MARKER))
            conn.execute(sa.text("CREATE TRIGGER no_update BEFORE UPDATE ON settings_audit "
                                 "BEGIN SELECT RAISE(ABORT, 'read-only audit'); END"))
        _old_row(store, OLD)
    with SettingsStore(url) as store:
        assert store.audit_rows_renamed == 0 and not _marker(store)
        assert store.history("default", "alice")[0].changed == tuple(OLD)  # unchanged, not half-renamed
        store.put("default", "erin", {"guard": {"shadow": True}}, expected_version=0, actor="test")  # usable
    assert "could not rename old audit paths" in caplog.text


def test_batches_commit_one_by_one_and_a_failure_keeps_what_committed(tmp_path, monkeypatch, caplog) -> None:
    from guardrails.store import audit_scrub

    monkeypatch.setattr(audit_scrub, "_BATCH", 2)
    url = str(tmp_path / "s.db")
    with SettingsStore(url) as store:
        with store.engine.begin() as conn:
            conn.execute(sa.delete(schema_info).where(schema_info.c.component == MARKER))
            conn.execute(sa.text("CREATE TRIGGER no_x BEFORE UPDATE ON settings_audit WHEN old.user_id = 'x' "
                                 "BEGIN SELECT RAISE(ABORT, 'not x'); END"))
        for user in ("a", "b", "c", "x", "e"):  # batches (a, b), (c, x), (e)
            _old_row(store, OLD[:1], user=user)
    with SettingsStore(url) as store:
        assert store.audit_rows_renamed == 2 and not _marker(store)  # the first batch committed, then it stopped
        assert [store.history("default", u)[0].changed == tuple(OLD[:1]) for u in "abcxe"] == [
            False, False, True, True, True]
        with store.engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER no_x"))
        assert store.scrub_audit() == 3 and _marker(store)
    assert "could not rename old audit paths (IntegrityError: the database refused it)" in caplog.text


def test_a_section_model_that_cannot_be_read_does_not_stop_the_store_opening(tmp_path, monkeypatch, caplog) -> None:
    from guardrails.errors import ConfigError
    from guardrails.store import settings

    url = str(tmp_path / "s.db")
    with SettingsStore(url) as store:
        _unmark(store)
        _old_row(store, OLD)

    def broken() -> None:
        raise ConfigError("settings plugin 'x' is not a pydantic model class")

    monkeypatch.setattr(settings, "section_models", broken)
    with SettingsStore(url) as store:
        assert store.audit_rows_renamed == 0 and not _marker(store)
        assert store.history("default", "alice")[0].changed == tuple(OLD)
    assert "a section model or a row could not be read" in caplog.text
