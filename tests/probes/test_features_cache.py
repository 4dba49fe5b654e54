"""Where the activation cache lives: a per-user directory, never a fixed shared path another user could seed."""

from __future__ import annotations

from pathlib import Path

import platformdirs

from probes.features import cached_capture, default_cache_dir


def test_probes_cache_env_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("RAILGUARD_CACHE_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("RAILGUARD_PROBES_CACHE", str(tmp_path / "acts"))
    assert default_cache_dir() == tmp_path / "acts"


def test_default_is_under_the_package_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("RAILGUARD_PROBES_CACHE", raising=False)
    monkeypatch.setenv("RAILGUARD_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "probes"


def test_default_without_env_is_the_user_cache_dir_not_a_shared_tmp_path(monkeypatch):
    monkeypatch.delenv("RAILGUARD_PROBES_CACHE", raising=False)
    monkeypatch.delenv("RAILGUARD_CACHE_DIR", raising=False)
    d = default_cache_dir()
    assert d == Path(platformdirs.user_cache_dir("railguard")) / "probes"
    assert d != Path("/tmp/probes_cache")


def test_cached_capture_writes_its_shards_to_the_default_dir(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv("RAILGUARD_PROBES_CACHE", raising=False)
    monkeypatch.setenv("RAILGUARD_CACHE_DIR", str(tmp_path))
    x = cached_capture(tiny, ["hello there", "my card number is 4242"], [1, 2], progress=False)
    assert x.shape[:2] == (2, 2)
    assert list((tmp_path / "probes").glob("act-*.npz"))
