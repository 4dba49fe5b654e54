"""The CLI as a user runs it: subprocesses, one JSON object on stdout with --json, typed errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.model


def run(*args, db=None, env=None):
    cmd = [sys.executable, "-m", "guardrails.cli", *args]
    if db:
        cmd += ["--db", db]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env} if env else None)


def one_json(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def test_check_card_is_redacted(db_url):
    p = run("check", "--user", "alice", "--text", "my card is 4111 1111 1111 1111", "--json", db=db_url)
    assert p.returncode == 0, p.stderr
    d = one_json(p.stdout)
    assert d["action"] == "redact" and d["user_id"] == "alice" and d["stage"] == "input"
    assert any(f["category"] == "credit_card" and f["action"] == "redact" for f in d["findings"])
    assert "4111 1111" not in json.dumps(d["findings"])  # the number (a bare "4111" can occur in a digest)


def test_check_runs_without_movielens_and_says_what_it_left_out(db_url, tmp_path):
    """A pip install has no MovieLens: `check` runs every other guard and warns on stderr that the rec commands
    detector is not available; asking for that detector by name is a clean JSON error."""
    env = {"RAILGUARD_MOVIELENS": str(tmp_path / "no-movielens")}
    p = run("check", "--user", "alice", "--text", "my card is 4111 1111 1111 1111", "--json", db=db_url, env=env)
    assert p.returncode == 0, p.stderr
    d = one_json(p.stdout)
    assert d["action"] == "redact" and "commands" not in {f["detector"] for f in d["findings"]}
    assert "'commands' is not available" in p.stderr and "no-movielens" in p.stderr
    p = run("check", "--user", "alice", "--text", "no horror", "--detectors", "commands", "--json", db=db_url,
            env=env)
    assert p.returncode == 2 and "MovieLens" in one_json(p.stdout)["error"]


def test_check_bad_inputs_give_typed_errors(db_url, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 \xff")
    for args in (["--text", "   "], ["--file", str(bad)], ["--file", str(tmp_path / "missing.txt")], []):
        p = run("check", "--user", "alice", *args, "--json", "--detectors", "pii,validator", db=db_url)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "error" in one_json(p.stdout)
    p = run("check", "--user", "alice", "--text", "x", "--detectors", "nope", "--json", db=db_url)
    assert p.returncode == 2 and "unknown detector" in one_json(p.stdout)["error"]


def test_check_corrupt_db_is_a_clear_error(tmp_path):
    db = tmp_path / "corrupt.db"
    db.write_bytes(b"this is not a sqlite database" * 100)
    p = run("check", "--user", "a", "--text", "hello", "--json", "--detectors", "pii", db=f"sqlite:///{db}")
    assert p.returncode == 2 and "error" in one_json(p.stdout)
    assert "Traceback" not in p.stderr


def test_models_list_json():
    p = run("models", "list", "--json")
    assert p.returncode == 0
    names = {m["name"]: m for m in one_json(p.stdout)["models"]}
    assert names["smollm2-135m-instruct"]["installed"] == "yes"
    assert names["all-minilm-l6-v2"]["installed"] == "yes"
