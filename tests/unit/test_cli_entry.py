"""The console entry point: under --json every outcome, usage errors included, is exactly one JSON object."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv, match", [
    (["check", "--text", "hi", "--json"], "Missing option '--user'"),
    (["nosuch", "--json"], "No such command 'nosuch'"),
    (["check", "--user", "u", "--text", "hi", "--stage", "sideways", "--json"], "sideways"),
    (["check", "--user", "u", "--text", "hi", "--json=1"], "does not take a value"),  # printed nothing on stdout
    # an empty subset ran the check with no detector at all and allowed everything (session 25 audit)
    (["check", "--user", "u", "--text", "mail bob@example.com", "--detectors", ",,", "--json"], "no detector"),
])
def test_usage_errors_under_json_print_one_json_object(argv, match):
    res = subprocess.run([sys.executable, "-m", "guardrails.cli", *argv], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and match in json.loads(lines[0])["error"]


def test_without_json_a_usage_error_prints_nothing_on_stdout():
    res = subprocess.run([sys.executable, "-m", "guardrails.cli", "check", "--text", "hi"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == "" and "Missing option '--user'" in res.stderr


@pytest.mark.parametrize("name", ["missing[/x].jsonl", "missing[red].jsonl"])
def test_error_messages_are_printed_verbatim_not_as_rich_markup(tmp_path, name):
    """A path (or an install hint such as `railguard[server]`) holding brackets used to be read as rich markup:
    `[/x]` crashed the CLI with MarkupError, `[red]` vanished from the message."""
    res = subprocess.run([sys.executable, "-m", "guardrails.cli", "harm", "eval", "--data", str(tmp_path / name)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "MarkupError" not in res.stderr
    assert name in res.stderr.replace("\n", "")
