"""Hostile and broken requests get the right 4xx and change nothing; tenants cannot see each other;
logs, metrics and the database never hold raw text or API keys."""

from __future__ import annotations

import logging
import sqlite3

import httpx
import pytest

from guardrails.client import ServiceUnknownUserError
from guardrails.service.observability import JsonFormatter

TABLES = ("user_settings", "settings_audit", "session_state", "railguard_tenants", "railguard_api_keys")


def snapshot(db_path) -> dict[str, list[tuple]]:
    """Every row of every table: 'nothing written' means this is identical before and after."""
    con = sqlite3.connect(db_path)
    try:
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}
    finally:
        con.close()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def tenant_key(service):
    tenant, key = service.new_tenant()
    with service.client(key) as c:
        c.put_settings("victim", {"guard": {"shadow": True}}, expected_version=0)
    return key


BAD_CHECK_BODIES = [
    (b"{bad json", 400),
    (b"\xff\xfe\x00garbage", 400),
    (b'{"user_id": "u", "text": "caf\xe9 \xff"}', 400),  # Latin-1 bytes: not UTF-8
    (b"[]", 422),
    (b'{"user_id": "u"}', 422),
    (b'{"user_id": "u", "text": "a", "messages": [{"role": "user", "content": "a"}]}', 422),
    (b'{"user_id": "u", "text": "   "}', 422),
    (b'{"user_id": "u", "text": "hi", "extra_field": 1}', 422),
    (b'{"user_id": "u", "messages": [{"role": "wizard", "content": "a"}]}', 422),
    (b'{"user_id": "u", "messages": []}', 422),
    (b'{"user_id": "bad\\u0000id", "text": "hi"}', 422),
    (b'{"user_id": 5, "text": "hi"}', 422),
    (b'{"user_id": "u", "text": "\\ud800"}', 422),
    (b'{"user_id": "u", "text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),  # nested past the parser
]


@pytest.mark.parametrize(("body", "status"), BAD_CHECK_BODIES)
def test_malformed_check_bodies(service, tenant_key, body, status):
    before = snapshot(service.db_path)
    r = httpx.post(f"{service.url}/v1/check/input", content=body,
                   headers={**_auth(tenant_key), "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["status"] == status and err["code"] and err["message"]
    if body.endswith(b'\xff"}'):
        assert err["code"] == "invalid_encoding"  # not the generic "error parsing the body"
    if b"[[[" in body:
        assert err["code"] == "invalid_json"  # valid UTF-8: not an encoding error (session 25 audit)
    assert snapshot(service.db_path) == before


def test_transport_level_rejections_write_nothing(service, tenant_key):
    before = snapshot(service.db_path)
    url = f"{service.url}/v1/users/victim/settings"
    cases = [
        # oversized, declared and chunked (no Content-Length: the server stops reading at the cap)
        (httpx.put(url, content=b'{"settings": {"guard": {}}, "x": "' + b"a" * (2 << 20) + b'"}',
                   headers={**_auth(tenant_key), "Content-Type": "application/json"}), 413),
        (httpx.put(url, content=iter([b"{" + b" " * 65536] * 40),
                   headers={**_auth(tenant_key), "Content-Type": "application/json"}), 413),
        # wrong or missing content type
        (httpx.put(url, content=b'{"settings": {"guard": {}}, "expected_version": 1}',
                   headers={**_auth(tenant_key), "Content-Type": "text/plain"}), 415),
        (httpx.put(url, content=b'{"settings": {"guard": {}}, "expected_version": 1}',
                   headers=_auth(tenant_key)), 415),
        (httpx.post(f"{service.url}/v1/check/input", data={"user_id": "u", "text": "hi"},
                    headers=_auth(tenant_key)), 415),
        # malformed settings writes
        (httpx.put(url, content=b"{nope", headers={**_auth(tenant_key), "Content-Type": "application/json"}), 400),
        (httpx.put(url, json={"settings": {"guard": {"shadow": "maybe"}}, "expected_version": 1},
                   headers=_auth(tenant_key)), 422),
        (httpx.put(url, json={"settings": {"nonsense": {}}, "expected_version": 1}, headers=_auth(tenant_key)), 422),
        (httpx.put(url, json={"settings": {"guard": {}}, "expected_version": 7}, headers=_auth(tenant_key)), 409),
        (httpx.put(url, json={"settings": {"guard": {}}, "expected_version": -1}, headers=_auth(tenant_key)), 422),
        (httpx.put(url, json={"settings": {"guard": {}}, "expected_version": True}, headers=_auth(tenant_key)), 422),
        (httpx.put(f"{url}/guard", json={"data": {"thresholds": {"pii": 3}}}, headers=_auth(tenant_key)), 422),
        (httpx.post(f"{service.url}/v1/check/bogus", json={"user_id": "u", "text": "hi"},
                    headers=_auth(tenant_key)), 422),
        # unusable user ids in the path: control characters, empty, over 256 characters
        (httpx.put(f"{service.url}/v1/users/bad%00id/settings", json={"settings": {}, "expected_version": 0},
                   headers=_auth(tenant_key)), 422),
        (httpx.put(f"{service.url}/v1/users//settings", json={"settings": {}, "expected_version": 0},
                   headers=_auth(tenant_key)), 422),
        (httpx.put(f"{service.url}/v1/users/{'x' * 300}/settings", json={"settings": {}, "expected_version": 0},
                   headers=_auth(tenant_key)), 422),
    ]
    for i, (resp, status) in enumerate(cases):
        assert resp.status_code == status, (i, resp.status_code, resp.text[:300])
        assert resp.json()["error"]["status"] == status
    assert snapshot(service.db_path) == before


@pytest.mark.parametrize("auth", [None, "Bearer rgk_0123456789abcdef.wrongsecret", "Bearer garbage",
                                  "Basic dXNlcjpwYXNz", "Bearer", "Bearer test-admin-key-3f9c2a"])
def test_missing_or_invalid_keys(service, tenant_key, auth):
    before = snapshot(service.db_path)
    headers = {"Authorization": auth} if auth else {}
    for method, path, body in [("POST", "/v1/check/input", {"user_id": "u", "text": "hi"}),
                               ("GET", "/v1/users/victim/settings", None),
                               ("PUT", "/v1/users/victim/settings", {"settings": {}, "expected_version": 1}),
                               ("DELETE", "/v1/users/victim/settings", None),
                               ("GET", "/v1/users/victim/audit", None),
                               ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                                 "user": "u"})]:
        r = httpx.request(method, service.url + path, json=body, headers=headers)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")
        assert r.headers.get("www-authenticate") == "Bearer"
    assert snapshot(service.db_path) == before
    assert service.upstream.bodies == [] or all(b["messages"][-1]["content"] != "x" for b in service.upstream.bodies)


def test_cross_tenant_isolation(service):
    _, key_a = service.new_tenant()
    tenant_b, key_b = service.new_tenant()
    with service.client(key_b) as b:
        b.put_settings("bob", {"guard": {"shadow": True, "disabled_detectors": ["pii"]}}, expected_version=0)
        b_before = b.get_settings("bob")
    before = snapshot(service.db_path)
    with service.client(key_a) as a:
        with pytest.raises(ServiceUnknownUserError):
            a.get_settings("bob")  # A's "bob" is a different (non-existent) user
        with pytest.raises(ServiceUnknownUserError):
            a.delete_settings("bob")
        with pytest.raises(ServiceUnknownUserError):
            a.delete_section("bob", "guard")
        assert a.audit("bob") == []
        r = httpx.put(f"{service.url}/v1/users/bob/settings", json={"settings": {"guard": {}}, "expected_version": 1},
                      headers=_auth(key_a))
        assert r.status_code == 409  # B's bob is at version 1; A's bob does not exist: A cannot reach B's row
        # B's settings do not leak into A's checks: pii is disabled for B's bob, not for A's
        assert a.check("mail x@example.com", user_id="bob").action.value == "redact"
    assert snapshot(service.db_path) == before
    with service.client(key_a) as a:  # A may create its own bob; B's bob is untouched
        a.put_settings("bob", {"guard": {}}, expected_version=0)
    with service.client(key_b) as b:
        assert b.get_settings("bob") == b_before
        assert [e.actor for e in b.audit("bob")] == [b.audit("bob")[0].actor]
        assert b.check("mail x@example.com", user_id="bob").shadow is True


def test_no_raw_text_or_keys_in_logs_audit_or_db(service, caplog):
    caplog.set_level(logging.INFO)
    secret_text = "my card is 4111 1111 1111 1111 and PAYLOAD-7c1e9d"
    tenant, key = service.new_tenant()
    with service.client(key) as c:
        c.check(secret_text, user_id="leaky", session_id="s-1")
        c.check([{"role": "user", "content": secret_text}], user_id="leaky", stage="tool_result")
        c.put_settings("leaky", {"guard": {"thresholds": {"pii.credit_card": 0.7}}}, expected_version=0)
        c.chat([{"role": "user", "content": secret_text}], user_id="leaky", session_id="s-1")
        httpx.post(f"{service.url}/v1/check/input", json={"user_id": "leaky", "text": secret_text, "bad": 1},
                   headers=_auth(key))
    records = caplog.records
    assert any(getattr(r, "fields", {}).get("event") == "check" for r in records)
    rendered = "\n".join([caplog.text, *(JsonFormatter().format(r) for r in records)])
    secret_part = key.split(".", 1)[1]
    for needle in ("PAYLOAD-7c1e9d", "4111", secret_part, "test-admin-key-3f9c2a", "upstream-secret"):
        assert needle not in rendered, needle
    # the audit API and every byte of the database (main file + WAL) hold no text and no key
    with service.client(key) as c:
        assert "PAYLOAD" not in "".join(a.model_dump_json() for a in c.audit("leaky"))
    blob = b"".join(p.read_bytes() for p in service.db_path.parent.iterdir() if p.name.startswith("service.db"))
    for needle in (b"PAYLOAD-7c1e9d", secret_part.encode(), key.encode(), b"test-admin-key-3f9c2a"):
        assert needle not in blob, needle
    # the upstream saw the redacted prompt, and our proxy's own key, never the tenant's
    last = service.upstream.bodies[-1]
    assert "4111" not in last["messages"][-1]["content"] and "user" not in last
    assert service.upstream.auth_headers[-1] == "Bearer upstream-secret"
