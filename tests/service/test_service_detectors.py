"""A plugin that fails to build: fatal by default (a fail-closed guard is never silently missing), or skipped
and reported under /readyz details when RAILGUARD_STRICT_DETECTORS=0. A plugin whose on-disk data this install
lacks (DataNotAvailableError: MovieLens for the rec commands) is left out and reported in both modes."""

from __future__ import annotations

import pytest

import guardrails.detector as detector
from guardrails.errors import ConfigError, DataNotAvailableError
from guardrails.service.app import _build_guard
from guardrails.store import SettingsStore


def _broken(ctx):
    raise RuntimeError("weights missing")


@pytest.fixture
def store(tmp_path):
    with SettingsStore(f"sqlite:///{tmp_path / 's.db'}") as s:
        yield s


def test_broken_plugin_is_fatal_by_default(store, monkeypatch):
    monkeypatch.setitem(detector._local["railguard.detectors"], "broken", _broken)
    monkeypatch.delenv("RAILGUARD_STRICT_DETECTORS", raising=False)
    with pytest.raises(ConfigError, match="broken"):
        _build_guard(None, store)


def test_broken_plugin_skipped_and_reported_when_not_strict(store, monkeypatch):
    monkeypatch.setitem(detector._local["railguard.detectors"], "broken", _broken)
    monkeypatch.setenv("RAILGUARD_STRICT_DETECTORS", "0")
    guard, failed = _build_guard(None, store)
    assert "broken" in failed and "weights missing" in failed["broken"]
    assert "broken" not in guard.detector_names and {"pii", "validator"} <= set(guard.detector_names)


def _no_data(ctx):
    raise DataNotAvailableError("movies.csv not found under /nowhere (set RAILGUARD_MOVIELENS)")


def test_plugin_without_its_data_is_left_out_and_reported(store, monkeypatch, caplog):
    monkeypatch.setitem(detector._local["railguard.detectors"], "needs_data", _no_data)
    monkeypatch.delenv("RAILGUARD_STRICT_DETECTORS", raising=False)
    with caplog.at_level("WARNING", logger="railguard.detector"):
        guard, failed = _build_guard(None, store)
    assert "needs_data" not in guard.detector_names and {"pii", "validator"} <= set(guard.detector_names)
    assert failed == guard.unavailable and "RAILGUARD_MOVIELENS" in failed["needs_data"]
    assert "'needs_data' is not available" in caplog.text
    with pytest.raises(DataNotAvailableError):  # asked for by name: it builds or the service does not start
        _build_guard(["pii", "needs_data"], store)
    monkeypatch.setitem(detector._local["railguard.detectors"], "broken", _broken)
    with pytest.raises(ConfigError, match="broken"):  # any other failure stays fatal
        _build_guard(None, store)


def test_fail_modes_come_from_the_environment(store, monkeypatch):
    """Each detector's fail mode is configurable in `railguard serve` too (RAILGUARD_FAIL_MODES; the review of
    session 30 found only Python callers could set one): a typo or an unknown detector stops the start-up, a
    detector left out for its data is no error."""
    monkeypatch.delenv("RAILGUARD_STRICT_DETECTORS", raising=False)
    monkeypatch.setenv("RAILGUARD_FAIL_MODES", "harm=closed, pii=closed")
    guard, _ = _build_guard(None, store)
    modes = {s.name: s.fail_mode for s in guard.slots}
    assert modes["harm"] == modes["pii"] == modes["privacy"] == "closed" and modes["validator"] == "open"
    for bad, match in (("harm=maybe", "RAILGUARD_FAIL_MODES"), ("harm", "RAILGUARD_FAIL_MODES"),
                       ("harm=open,harm=closed", "RAILGUARD_FAIL_MODES"), ("nosuch=closed", "nosuch")):
        monkeypatch.setenv("RAILGUARD_FAIL_MODES", bad)
        with pytest.raises(ConfigError, match=match):
            _build_guard(None, store)
    monkeypatch.setitem(detector._local["railguard.detectors"], "needs_data", _no_data)
    monkeypatch.setenv("RAILGUARD_FAIL_MODES", "needs_data=closed,harm=closed")
    guard, failed = _build_guard(None, store)
    assert "needs_data" in failed and {s.name: s.fail_mode for s in guard.slots}["harm"] == "closed"
    monkeypatch.setenv("RAILGUARD_STRICT_DETECTORS", "0")
    guard, _ = _build_guard(None, store)
    assert {s.name: s.fail_mode for s in guard.slots}["harm"] == "closed"
