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
            assert r.status_code == 200 and r.json() == {"erased": {"settings": 1, "session_state": 2, "audit": 2,
                                                                   "detectors": {}}}, r.text
            assert tc.post("/v1/users/erin-7f3q/erase").status_code == 401
            bare = tc.build_request("POST", "/v1/users/nobody/erase", headers={"Authorization": f"Bearer {key}"})
            bare.headers.pop("content-length", None)  # `curl -X POST` sends no body and no Content-Length
            assert tc.send(bare).status_code == 200
        assert store.get("u", "erin-7f3q").version == 2  # another tenant's user of the same id: untouched
        records = [rec.fields for rec in caplog.records if getattr(rec, "fields", {}).get("event") == "user_erased"]
        assert len(records) == 2 and "erin-7f3q" not in str(records) and records[0]["user_sha256"]
        with ThreadServer(app) as srv:
            _fill(store, "t", "erin-7f3q")
            with RailguardClient(srv.url, api_key=key) as c:
                assert c.erase_user("erin-7f3q") == {"settings": 1, "session_state": 2, "audit": 2, "detectors": {}}

            async def run() -> dict[str, int]:
                async with AsyncRailguardClient(srv.url, api_key=other_key) as ac:
                    return await ac.erase_user("erin-7f3q")

            assert asyncio.run(run()) == {"settings": 1, "session_state": 2, "audit": 2, "detectors": {}}
    finally:
        store.close()


class _Forgetful:
    """A caching detector: remembers users per tenant; `fail` makes forgetting raise."""

    name, fail = "forgetful", False

    def __init__(self) -> None:
        from guardrails import Stage

        self.stages = frozenset({Stage.INPUT})
        self.seen: set[tuple[str, str]] = set()
        self.settings_seen: list[dict] = []

    def predict(self, request):
        self.seen.add((request.tenant_id, request.user_id))
        return []

    async def apredict(self, request):
        return self.predict(request)

    def forget_user(self, tenant_id, user_id, settings=None):
        if self.fail:
            raise RuntimeError("cache backend down")
        self.settings_seen.append(dict(settings or {}))
        gone = {k for k in self.seen if k == (tenant_id, user_id)}
        self.seen -= gone
        return len(gone)


def test_detectors_forget_through_the_tenant_view_and_a_failure_erases_nothing(tmp_path):
    from guardrails.errors import DetectorError

    det = _Forgetful()
    store = SettingsStore(tmp_path / "views.db")
    try:
        app = create_app(Guard([det], store=store), store)
        _, key = app.state.rg.keys.create_tenant("t")
        _, other = app.state.rg.keys.create_tenant("u")
        _fill(store, "t", "erin")
        with TestClient(app, raise_server_exceptions=False) as tc:
            for k in (key, other):
                assert tc.post("/v1/check/input", headers={"Authorization": f"Bearer {k}"},
                               json={"user_id": "erin", "text": "hi"}).status_code == 200
            det.fail = True
            r = tc.post("/v1/users/erin/erase", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code >= 500 and store.get("t", "erin").version == 2  # nothing half-erased
            det.fail = False
            r = tc.post("/v1/users/erin/erase", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200 and r.json()["erased"]["detectors"] == {"forgetful": 1}, r.text
        assert det.seen - {("__readyz__", "__readyz__")} == {("u", "erin")}  # the same id, another tenant: kept
        assert det.settings_seen[-1]["guard"]["shadow"] is False  # what the store held, read before erasing
        det.fail = True
        with pytest.raises(DetectorError):
            Guard([det], store=store).erase_user("bob")
    finally:
        store.close()
