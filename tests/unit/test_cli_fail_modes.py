"""`railguard check --fail-mode` / $RAILGUARD_FAIL_MODES: each detector's fail mode from the command line (only
Python callers could set one before session 30)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import guardrails.detector as detector
from guardrails.cli.app import app
from guardrails.decision import parse_fail_modes
from guardrails.detector import BaseDetector


class _Flaky(BaseDetector):
    name = "flaky"

    def predict(self, request):
        raise RuntimeError("backend down")


def _check(*extra: str) -> tuple[int, dict]:
    res = CliRunner().invoke(app, ["check", "--user", "u", "--text", "hello there", "--json", *extra])
    return res.exit_code, json.loads([ln for ln in res.stdout.splitlines() if ln.strip()][-1])


def test_parse_fail_modes():
    assert parse_fail_modes(" harm=closed , commands=open,") == {"harm": "closed", "commands": "open"}
    assert parse_fail_modes("") == {}
    for bad in ("harm", "harm=shut", "=closed", "harm=open,harm=closed"):
        with pytest.raises(ValueError, match="name=open|closed"):
            parse_fail_modes(bad)


def test_a_failing_detector_blocks_only_when_its_fail_mode_is_closed(monkeypatch, tmp_path):
    monkeypatch.setitem(detector._local["railguard.detectors"], "flaky", lambda ctx: _Flaky())
    monkeypatch.delenv("RAILGUARD_FAIL_MODES", raising=False)
    db = ["--db", f"sqlite:///{tmp_path / 's.db'}", "--detectors", "flaky"]
    code, out = _check(*db)
    assert code == 0 and out["action"] == "allow" and "flaky" in out["error"]  # open by default
    code, out = _check(*db, "--fail-mode", "flaky=closed")
    assert code == 0 and out["action"] == "block"
    monkeypatch.setenv("RAILGUARD_FAIL_MODES", "flaky=closed")
    assert _check(*db)[1]["action"] == "block"
    assert _check(*db, "--fail-mode", "flaky=open")[1]["action"] == "allow"  # the option wins
    for bad, match in (("flaky=shut", "--fail-mode"), ("nosuch=closed", "nosuch")):
        code, out = _check(*db, "--fail-mode", bad)
        assert code == 2 and match in out["error"]
