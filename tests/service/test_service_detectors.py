"""A plugin that fails to build: fatal by default (a fail-closed guard is never silently missing), or skipped
and reported under /readyz details when RAILGUARD_STRICT_DETECTORS=0."""

from __future__ import annotations

import pytest

import guardrails.detector as detector
from guardrails.errors import ConfigError
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
