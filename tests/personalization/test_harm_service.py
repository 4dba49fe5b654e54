"""ProfileService through the real settings store: persistence across processes, isolation, audit privacy."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import guardrails.detector as detector
from guardrails.errors import ConfigError, InvalidInputError
from guardrails.store import SettingsStore
from personalization import ModerationProfile, ProfileService
from personalization.profile import ModerationProfile as RealProfile

SECRET = "xyzzy-secret-crypto-pitch-4242"


@pytest.fixture(autouse=True)
def _real_section(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other test modules register a stand-in "moderation" model in-process; make sure ours is the one used.
    monkeypatch.setitem(detector._local["railguard.settings"], "moderation", RealProfile)


@pytest.fixture()
def store(tmp_path):
    s = SettingsStore(f"sqlite:///{tmp_path / 'harm.db'}")
    yield s
    s.close()


def test_every_operation_through_the_store(store):
    svc = ProfileService(store, "t1")
    assert svc.get("alice") == ModerationProfile()  # never written: default, and nothing stored
    assert store.get("t1", "alice").version == 0
    svc.block_new("alice", "crypto", examples=[SECRET], definition="crypto pitches")
    svc.extend("alice", "crypto", "Moon soon, buy SHIB today guys", n_variations=2)
    svc.unblock("alice", "spam")
    svc.set_threshold("alice", "crypto", 0.8)
    p = svc.get("alice")
    assert p.categories["crypto"].threshold == 0.8 and len(p.categories["crypto"].examples) == 4
    assert p.categories["spam"].action == "allow"
    assert [c["name"] for c in svc.list("alice")] == ["crypto", "negative", "spam", "toxic"]
    exported = svc.export_json("alice")
    svc.reset("alice")
    assert svc.get("alice") == ModerationProfile()
    svc.import_json("alice", exported)
    assert svc.get("alice") == p
    svc.remove("alice", "crypto")
    assert "crypto" not in svc.get("alice").categories
    assert store.get("t1", "alice").version == 7  # one audited version per write


@pytest.mark.parametrize("call", [
    lambda svc: svc.import_json("alice", '{"categories": {"empty": {}}}'),
    lambda svc: svc.import_json("alice", '{"categories": {"c": {"examples": ["\\u0000\\u0007"]}}}'),
    lambda svc: svc.import_json("alice", '{"categories": {"toxic\\n": {"definition": "d"}}}'),
    lambda svc: svc.import_json("alice", '{"categories": ' + "[" * 50_000 + "]" * 50_000 + "}"),
    lambda svc: svc.block_new("alice", "x", examples=None),
    lambda svc: svc.block_new("alice", "x", examples=["a"], threshold=True),
    lambda svc: svc.reblock("alice", "toxic", "nuke"),
    lambda svc: svc.extend("alice", "crypto", None),
])
def test_refused_operations_write_nothing(store, call):
    svc = ProfileService(store, "t1")
    svc.block_new("alice", "crypto", examples=["buy this coin"])
    before, audit = store.get("t1", "alice"), len(store.history("t1", "alice"))
    with pytest.raises((InvalidInputError, ConfigError)):
        call(svc)
    after = store.get("t1", "alice")
    assert (after.version, after.settings) == (before.version, before.settings)
    assert len(store.history("t1", "alice")) == audit


def test_audit_trail_holds_no_user_text(store):
    svc = ProfileService(store, "t1")
    svc.block_new("alice", "crypto", examples=[SECRET], actor="alice-app")
    hist = store.history("t1", "alice")
    assert hist and hist[0].actor == "alice-app"
    assert SECRET not in repr(hist)


def test_user_and_tenant_isolation(store):
    a, b = ProfileService(store, "t1"), ProfileService(store, "t2")
    a.block_new("alice", "crypto", examples=["buy coin"])
    a.unblock("bob", "toxic")
    b.block_new("alice", "gore", definition="graphic violence")
    assert set(a.get("alice").categories) == {"toxic", "spam", "negative", "crypto"}
    assert set(b.get("alice").categories) == {"toxic", "spam", "negative", "gore"}
    assert a.get("bob").categories["toxic"].action == "allow"
    assert a.get("carol") == ModerationProfile()
    assert store.get("t1", "carol").version == 0


def test_bad_operations_write_nothing(store):
    svc = ProfileService(store, "t1")
    svc.block_new("alice", "crypto", examples=["buy coin"])
    v = store.get("t1", "alice").version
    for call in (
        lambda: svc.block_new("alice", "empty"),
        lambda: svc.block_new("alice", "crypto", examples=["again"]),
        lambda: svc.block_new("alice", "huge", examples=["x" * 5000]),
        lambda: svc.unblock("alice", "unknown"),
        lambda: svc.import_json("alice", '{"categories": {"a": {"examples": [1]}}}'),
        lambda: svc.import_json("alice", "not json"),
        lambda: svc.block_new("alice", "wide", examples=["buy coin now"], generalize="everything"),
        lambda: svc.block_new("alice", "wide", examples=["buy coin now"], generalize=None),
        lambda: svc.import_json("alice", '{"categories": {"w": {"examples": ["x"], "generalize": 1}}}'),
        lambda: svc.import_json("alice", '{"categories": {' + ",".join(
            f'"c{i}": {{"definition": "d"}}' for i in range(10_000)) + "}}"),
    ):
        with pytest.raises((ConfigError, InvalidInputError)):
            call()
    assert store.get("t1", "alice").version == v
    # a raw write that bypasses the service is still validated by the store through ModerationProfile
    with pytest.raises(ConfigError):
        store.update_section("t1", "alice", "moderation", lambda s: {"categories": {"X Y": {}}}, actor="x")
    assert store.get("t1", "alice").version == v


def test_persistence_across_processes(tmp_path):
    db = tmp_path / "cross.db"
    code = textwrap.dedent(f"""
        from guardrails.store import SettingsStore
        from personalization import ProfileService
        with SettingsStore("sqlite:///{db}") as s:
            svc = ProfileService(s, "t1")
            svc.block_new("alice", "crypto", examples=["buy $DOGEX now"], definition="crypto shilling")
            svc.unblock("alice", "negative")
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    with SettingsStore(f"sqlite:///{db}") as s:
        p = ProfileService(s, "t1").get("alice")
    assert p.categories["crypto"].examples == ["buy $DOGEX now"]
    assert p.categories["negative"].action == "allow"


def test_service_needs_a_store():
    with pytest.raises(ConfigError):
        ProfileService(None)
