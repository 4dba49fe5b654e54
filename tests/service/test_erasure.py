"""Erasing one user (a data-subject erasure request): the store, the HTTP route, the clients (the privacy
detector's caches: tests/probes/test_plugin.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from fastapi.testclient import TestClient

from guardrails import Guard
from guardrails.client import AsyncRailguardClient, RailguardClient
from guardrails.errors import InvalidInputError
from guardrails.service import create_app
from guardrails.store import SettingsStore
from tests.service.conftest import ThreadServer


def _fill(store: SettingsStore, tenant: str, user: str) -> None:
    store.update_section(tenant, user, "guard", lambda g: {**g, "shadow": True}, actor="t")
    store.update_section(tenant, user, "guard", lambda g: {**g, "shadow": False}, actor="t")
    store.put_state(tenant, user, "s1", "velocity", {"turn": 1})
    store.put_state(tenant, user, "s2", "velocity", {"turn": 4})


def test_the_store_erases_settings_state_and_audit_of_one_user_only(tmp_path):
    with SettingsStore(tmp_path / "e.db") as store:
        for tenant, user in (("t", "erin"), ("t", "bob"), ("other", "erin")):
            _fill(store, tenant, user)
        assert store.erase_user("t", "erin") == {"settings": 1, "session_state": 2, "audit": 2}
        assert store.get("t", "erin").version == 0 and store.history("t", "erin") == []
        assert store.get_state("t", "erin", "s2", "velocity") is None
        for tenant, user in (("t", "bob"), ("other", "erin")):  # another user, the same id in another tenant
            assert store.get(tenant, user).version == 2 and len(store.history(tenant, user)) == 2
            assert store.get_state(tenant, user, "s2", "velocity") == {"turn": 4}
        assert store.erase_user("t", "erin") == {"settings": 0, "session_state": 0, "audit": 0}
        with pytest.raises(InvalidInputError):
            store.erase_user("t", "")
        assert asyncio.run(store.aerase_user("t", "bob"))["audit"] == 2


def test_the_erase_route_and_both_clients(tmp_path, caplog):
    store = SettingsStore(tmp_path / "svc.db")
    try:
        app = create_app(Guard([], store=store), store)
        _, key = app.state.rg.keys.create_tenant("t")
        _, other_key = app.state.rg.keys.create_tenant("u")
        for tenant in ("t", "u"):
            _fill(store, tenant, "erin-7f3q")
        with caplog.at_level(logging.INFO, logger="railguard.service"), TestClient(app) as tc:
            r = tc.post("/v1/users/erin-7f3q/erase", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200 and r.json() == {"erased": {"settings": 1, "session_state": 2,
                                                                   "audit": 2}}, r.text
            assert tc.post("/v1/users/erin-7f3q/erase").status_code == 401
        assert store.get("u", "erin-7f3q").version == 2  # another tenant's user of the same id: untouched
        records = [rec.fields for rec in caplog.records if getattr(rec, "fields", {}).get("event") == "user_erased"]
        assert len(records) == 1 and "erin-7f3q" not in str(records[0]) and records[0]["user_sha256"]
        with ThreadServer(app) as srv:
            _fill(store, "t", "erin-7f3q")
            with RailguardClient(srv.url, api_key=key) as c:
                assert c.erase_user("erin-7f3q") == {"settings": 1, "session_state": 2, "audit": 2}

            async def run() -> dict[str, int]:
                async with AsyncRailguardClient(srv.url, api_key=other_key) as ac:
                    return await ac.erase_user("erin-7f3q")

            assert asyncio.run(run()) == {"settings": 1, "session_state": 2, "audit": 2}
    finally:
        store.close()
