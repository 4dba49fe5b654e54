"""The Guard with a real SQLite settings store: per-user settings, isolation, unknown users, logs."""

from __future__ import annotations

import json
import logging

import pytest

from guardrails import Action, ConfigError, Guard
from guardrails.detectors import PIIDetector
from guardrails.store import SettingsStore


@pytest.fixture
def store(db_url):
    with SettingsStore(db_url) as s:
        yield s


def test_unknown_user_gets_defaults_and_nothing_is_written(store, keyword):
    d = Guard([keyword("x")], store=store).check("x", user_id="never-seen")
    assert d.action is Action.BLOCK
    assert not store.exists("default", "never-seen") and store.history("default", "never-seen") == []


def test_one_users_settings_never_affect_another(store, keyword):
    store.update_section("default", "lenient", "guard", lambda g: {**g, "disabled_detectors": ["keyword"]},
                         actor="test")
    store.update_section("default", "shadowed", "guard", lambda g: {**g, "shadow": True}, actor="test")
    g = Guard([keyword("x")], store=store)
    assert g.check("x", user_id="lenient").action is Action.ALLOW
    shadow = g.check("x", user_id="shadowed")
    assert shadow.shadow and shadow.enforced_action is Action.ALLOW
    strict = g.check("x", user_id="strict")
    assert strict.action is Action.BLOCK and not strict.shadow
    # same user id in another tenant is another user
    other_tenant = Guard([keyword("x")], store=store, tenant_id="acme")
    assert other_tenant.check("x", user_id="lenient").action is Action.BLOCK


def test_invalid_guard_settings_rejected_and_nothing_written(store):
    with pytest.raises(ConfigError):
        store.update_section("default", "u", "guard", lambda g: {**g, "thresholds": {"pii": 7.0}}, actor="t")
    with pytest.raises(ConfigError):
        store.update_section("default", "u", "no_such_section", lambda g: {"a": 1}, actor="t")
    assert store.get("default", "u").version == 0 and store.history("default", "u") == []


async def test_async_check_reads_settings(store, keyword):
    await store.aupdate_section("default", "a", "guard", lambda g: {**g, "disabled_detectors": ["keyword"]},
                                actor="t")
    g = Guard([keyword("x")], store=store)
    assert (await g.acheck("x", user_id="a")).action is Action.ALLOW
    assert (await g.acheck("x", user_id="b")).action is Action.BLOCK


def test_decision_logs_hold_hashes_not_text(store, caplog):
    secret = "my card is 4111 1111 1111 1111 and my email is jane.doe@example.com"
    with caplog.at_level(logging.INFO, logger="railguard.decision"):
        d = Guard([PIIDetector()], store=store).check(secret, user_id="alice", session_id="s1")
    assert d.action is Action.REDACT and "4111" not in d.redacted_text
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "railguard.decision"]
    assert records and records[0]["text_sha256"] == d.text_sha256
    logged = caplog.text
    for fragment in ("4111 1111", "jane.doe", "example.com", "my card"):  # not a bare "4111": hex digests
        assert fragment not in logged


def test_settings_naming_unknown_detectors_are_logged_once(store, keyword, caplog):
    # The store cannot refuse a typo'd detector name (it does not know the deployment's detectors); the Guard that
    # meets it says so, once per name, and never logs a free-text "name" in the clear.
    store.put("default", "alice", {"guard": {"disabled_detectors": ["kw", "keywrod", "my secret phrase"],
                                             "thresholds": {"pii.email": 0.9}}}, expected_version=0, actor="t")
    guard = Guard([keyword("zz", name="kw")], store=store)
    with caplog.at_level(logging.WARNING, logger="railguard"):
        guard.check("hello", user_id="alice")
        guard.check("hello again", user_id="alice")
    warnings = [r.getMessage() for r in caplog.records if "does not run" in r.getMessage()]
    assert len(warnings) == 1 and "keywrod" in warnings[0] and "pii" in warnings[0]
    assert "'kw'" not in warnings[0] and "my secret phrase" not in caplog.text and "#" in warnings[0]


def test_a_view_knows_its_guards_detectors_and_unavailable_ones(store, keyword, caplog):
    """A per-tenant view and a subset view (the text-only history screen) do not report as unknown a detector the
    Guard runs or lists as unavailable; a typo still is."""
    store.put("default", "alice", {"guard": {"disabled_detectors": ["kw", "other", "harm", "keywrod"]}},
              expected_version=0, actor="t")
    guard = Guard([keyword("zz", name="kw"), keyword("yy", name="other")], store=store)
    guard.unavailable = {"harm": "not installed"}
    tenant_view, subset = guard.view(tenant_id="default"), guard.view(guard.slots[:1])
    assert tenant_view.unavailable == {"harm": "not installed"} and subset.detector_names == ["kw"]
    with caplog.at_level(logging.WARNING, logger="railguard"):
        tenant_view.check("hello", user_id="alice")
        subset.check("hello", user_id="alice")
    warnings = [r.getMessage() for r in caplog.records if "does not run" in r.getMessage()]
    assert len(warnings) == 2 and all("keywrod" in w for w in warnings)
    assert not any(name in w for w in warnings for name in ("'other'", "'harm'", "'kw'"))


@pytest.mark.parametrize("tenant", ["", "t\n1", "x" * 257, None, 7])
def test_a_bad_tenant_id_is_a_config_error_at_construction(store, keyword, tenant):
    """A Guard or a view over a tenant id the store would refuse is refused when built, before any check."""
    with pytest.raises(ConfigError, match="tenant_id"):
        Guard([keyword("zz", name="kw")], store=store, tenant_id=tenant)
    if tenant is not None:  # view(tenant_id=None) keeps the Guard's tenant
        with pytest.raises(ConfigError, match="tenant_id"):
            Guard([keyword("zz", name="kw")], store=store).view(tenant_id=tenant)
