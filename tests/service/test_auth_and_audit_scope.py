"""Mutation-audit gaps (session 18): each test fails on a specific single-point mutant of the code it names."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from guardrails.errors import ConfigError
from guardrails.service.auth import KeyRing
from guardrails.store import SettingsStore


def test_known_key_id_with_wrong_secret_is_rejected(tmp_path):
    ring = KeyRing(sa.create_engine(f"sqlite:///{tmp_path / 'k.db'}"))
    _, key = ring.create_tenant("acme")
    forged = key.rsplit(".", 1)[0] + ".not-the-secret"
    assert KeyRing(ring.engine).verify(forged) is None  # uncached (database) path
    assert ring.verify(key).tenant_id == "acme"  # caches the key id
    assert ring.verify_cached(forged) is None and ring.verify(forged) is None  # cached path

def test_revocation_reaches_another_worker_within_the_ttl(tmp_path):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'k.db'}")
    a, b = KeyRing(eng, cache_ttl_s=0.05), KeyRing(eng, cache_ttl_s=0.05)
    kid, key = a.create_tenant("acme")
    assert b.verify(key) is not None
    assert a.revoke(kid)
    time.sleep(0.1)
    assert b.verify_cached(key) is False and b.verify(key) is None

def test_history_is_per_user(tmp_path):
    with SettingsStore(f"sqlite:///{tmp_path / 's.db'}") as s:
        s.put("default", "alice", {"guard": {"shadow": True}}, expected_version=0, actor="t")
        s.put("default", "bob", {"guard": {"shadow": True}}, expected_version=0, actor="t")
        s.put("default", "bob", {"guard": {"shadow": False}}, expected_version=1, actor="t")
        assert [e.user_id for e in s.history("default", "alice")] == ["alice"]


@pytest.mark.parametrize("ttl", [float("nan"), float("inf"), -1.0, True, "5"])
def test_a_key_cache_ttl_that_never_expires_is_refused(tmp_path, ttl):
    # NaN or inf kept a revoked key valid forever in every other worker's cache.
    with pytest.raises(ConfigError, match="key_cache_ttl_s"):
        KeyRing(sa.create_engine(f"sqlite:///{tmp_path / 'k.db'}"), cache_ttl_s=ttl)
