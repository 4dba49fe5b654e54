"""`railguard settings`: one user's stored settings from the command line, through the same registered operations
the HTTP service runs (one versioned, audited write each; bad input writes nothing; users kept apart)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from guardrails.cli.app import app
from guardrails.store import SettingsStore

PITCH = "Get in early on $DOGEX, 50x guaranteed, pump starts at 9pm!"


@pytest.fixture
def db(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'settings.db'}"


def _run(*args: str) -> tuple[int, dict]:
    res = CliRunner().invoke(app, [*args, "--json"])
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stdout  # exactly one JSON object, whatever the outcome
    return res.exit_code, json.loads(lines[0])


def _stored(db: str, user: str):
    store = SettingsStore(db)
    try:
        return store.get("default", user) if store.exists("default", user) else None
    finally:
        store.close()


def test_apply_show_and_audit(db):
    code, out = _run("settings", "apply", "moderation", "block", "--user", "alice", "--db", db,
                     "--input", json.dumps({"name": "crypto", "examples": [PITCH]}))
    assert code == 0 and out["version"] == 1 and out["settings"]["categories"]["crypto"]["examples"] == [PITCH]
    code, out = _run("settings", "apply", "moderation", "unblock", "--user", "alice", "--db", db,
                     "--input", '{"name": "spam"}')
    assert code == 0 and out["version"] == 2
    code, shown = _run("settings", "show", "--user", "alice", "--db", db, "--section", "moderation")
    assert code == 0 and shown["settings"]["moderation"]["categories"]["spam"]["action"] == "allow"
    code, audit = _run("settings", "audit", "--user", "alice", "--db", db)
    assert code == 0 and [e["version"] for e in audit["entries"]] == [2, 1]
    assert all(e["actor"].startswith("cli:moderation.") for e in audit["entries"]) and PITCH not in json.dumps(audit)
    assert _stored(db, "bob") is None  # nobody else was written


def test_a_feed_command_from_the_command_line(db):
    code, out = _run("settings", "apply", "rec_policy", "command", "--user", "alice", "--db", db,
                     "--input", '{"text": "no more horror"}')
    assert code == 0
    assert [(p["value"], p["polarity"]) for p in out["settings"]["preferences"]] == [("Horror", "-")]


@pytest.mark.parametrize("args, match", [
    (["moderation", "block", "--input", '{"name": "crypto", "colour": 1}'], "Extra inputs are not permitted"),
    (["moderation", "block", "--input", "{name: crypto"], "not JSON"),
    (["moderation", "unblock_everything_for_everyone"], "has no operation"),
    (["nosuch", "block"], "no operations for section"),
    (["guard", "block"], "no operations for section"),  # the spine's own section takes no plugin operations
    (["moderation", "unblock", "--input", '{"name": "nosuch"}'], "nosuch"),
    (["rec_policy", "command", "--input", '{"text": "what year was Fargo released?"}'], "no feed preference"),
    # json.loads would keep the last key and store "allow"
    (["moderation", "block", "--input", '{"name": "crypto", "examples": ["x"], "action": "block", "action": "allow"}'],
     "duplicate keys"),
])
def test_bad_input_writes_nothing(db, args, match):
    code, out = _run("settings", "apply", *args, "--user", "alice", "--db", db)
    assert code == 2 and match in out["error"]
    assert _stored(db, "alice") is None


def test_erase_asks_for_confirmation_then_forgets(db):
    # (a reset no longer creates a user: it has nothing stored to reset)
    for user in ("alice", "bob"):
        _run("settings", "apply", "moderation", "unblock", "--user", user, "--db", db, "--input", '{"name": "spam"}')
    code, out = _run("settings", "erase", "--user", "alice", "--db", db)
    assert code == 2 and "--yes" in out["error"] and _stored(db, "alice") is not None
    code, out = _run("settings", "erase", "--user", "alice", "--db", db, "--yes")
    assert code == 0 and out["removed"]["settings"] == 1 and out["removed"]["audit"] == 1
    code, out = _run("settings", "show", "--user", "alice", "--db", db)
    assert code == 2 and "no settings stored" in out["error"]
    assert _stored(db, "bob") is not None  # only alice


def test_operations_are_listed_and_bad_ids_refused(db):
    code, ops = _run("settings", "operations")
    assert code == 0 and {"block", "unblock"} <= set(ops["moderation"]) and "command" in ops["rec_policy"]
    code, out = _run("settings", "show", "--user", "a\u0000b", "--db", db)
    assert code == 2 and "user_id" in out["error"]


@pytest.mark.parametrize("content, match", [
    (b'{"name": "u8", "examples": ["\xff"]}', "not valid UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"null", "must be a JSON object"),
    (b'["crypto"]', "must be a JSON object"),
])
def test_an_unreadable_input_file_is_one_json_error(db, tmp_path, content, match):
    f = tmp_path / "input.json"
    f.write_bytes(content)
    code, out = _run("settings", "apply", "moderation", "block", "--user", "alice", "--db", db,
                     "--input-file", str(f))
    assert code == 2 and match in out["error"] and _stored(db, "alice") is None


def test_input_from_stdin(db):
    res = CliRunner().invoke(app, ["settings", "apply", "moderation", "block", "--user", "alice", "--db", db,
                                   "--input-file", "-", "--json"], input='{"name": "crypto", "examples": ["x y z"]}')
    assert res.exit_code == 0 and json.loads(res.stdout)["settings"]["categories"]["crypto"]["examples"] == ["x y z"]


def test_the_audit_names_the_operation(db):
    _run("settings", "apply", "moderation", "unblock", "--user", "alice", "--db", db, "--input", '{"name": "spam"}')
    _, audit = _run("settings", "audit", "--user", "alice", "--db", db)
    assert [e["actor"] for e in audit["entries"]] == ["cli:moderation.unblock"]


@pytest.mark.parametrize("command", [["show"], ["audit"], ["erase", "--yes"]])
def test_reading_a_missing_database_is_an_error_and_creates_nothing(tmp_path, command):
    missing = tmp_path / "typo" / "settings.db"
    code, out = _run("settings", *command, "--user", "alice", "--db", f"sqlite:///{missing}")
    assert code == 2 and "no settings database" in out["error"] and not missing.parent.exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_is_refused(url):
    code, out = _run("settings", "apply", "moderation", "reset", "--user", "alice", "--db", url)
    assert code == 2 and "in-memory" in out["error"]


def test_showing_an_unknown_section_is_an_error(db):
    _run("settings", "apply", "moderation", "unblock", "--user", "alice", "--db", db, "--input", '{"name": "spam"}')
    code, out = _run("settings", "show", "--user", "alice", "--db", db, "--section", "nosuch")
    assert code == 2 and "unknown section" in out["error"] and "moderation" in out["error"]


# ---- review of session 33 ----------------------------------------------------------------------------------
def test_an_input_the_operation_refuses_creates_no_database(tmp_path):
    new = tmp_path / "new" / "settings.db"
    code, out = _run("settings", "apply", "moderation", "set_threshold", "--user", "alice", "--db",
                     f"sqlite:///{new}", "--input", '{"name": "spam", "threshold": 1.5}')
    assert code == 2 and "threshold" in out["error"] and not new.exists()


def test_an_input_file_may_start_with_a_bom(db, tmp_path):
    f = tmp_path / "bom.json"
    f.write_bytes(b'\xef\xbb\xbf{"name": "spam"}')
    code, out = _run("settings", "apply", "moderation", "unblock", "--user", "alice", "--db", db,
                     "--input-file", str(f))
    assert code == 0 and out["settings"]["categories"]["spam"]["action"] == "allow"


def test_check_refuses_an_endless_or_oversized_file_before_reading_it_all(tmp_path):
    """`--file /dev/zero` was read whole: all the memory, then a MemoryError traceback."""
    code, out = _run("check", "--user", "a", "--file", "/dev/zero", "--detectors", "pii")
    assert code == 2 and "larger than" in out["error"]
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:
        fh.truncate(16_000_001)  # sparse: more bytes than 4,000,000 characters can take in UTF-8
    code, out = _run("check", "--user", "a", "--file", str(big), "--detectors", "pii")
    assert code == 2 and "larger than" in out["error"]


def test_demo_refuses_a_reply_cap_below_one_before_writing_anything(tmp_path):
    db = tmp_path / "demo.db"
    res = CliRunner().invoke(app, ["demo", "--max-new-tokens", "0", "--json", "--db", f"sqlite:///{db}"])
    assert res.exit_code == 2 and "Traceback" not in res.output and not db.exists()


def test_an_endless_input_file_is_a_typed_error(db):
    code, out = _run("settings", "apply", "moderation", "unblock", "--user", "alice", "--db", db,
                     "--input-file", "/dev/zero")
    assert code == 2 and "larger than" in out["error"] and _stored(db, "alice") is None
