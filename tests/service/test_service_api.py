"""Every endpoint, round-tripped through the typed client against a real uvicorn server."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from guardrails import Action, Decision, Stage
from guardrails.client import (
    AsyncRailguardClient,
    AuthenticationError,
    NotFoundError,
    ServiceInvalidInputError,
    ServiceUnknownUserError,
    ServiceVersionConflictError,
)
from guardrails.errors import InvalidInputError, UnknownUserError, VersionConflictError


def test_ops_endpoints(service):
    with service.client() as c:
        assert c.health()["status"] == "ok"
        assert c.ready() is True
    r = httpx.get(f"{service.url}/readyz")
    assert r.status_code == 200 and set(r.json()["detectors"]) == {"validator", "pii", "output_blocker"}
    spec = httpx.get(f"{service.url}/openapi.json").json()
    for path in ("/v1/check/{stage}", "/v1/users/{user_id}/settings", "/v1/users/{user_id}/settings/{section}",
                 "/v1/users/{user_id}/audit", "/v1/chat/completions", "/v1/admin/tenants", "/healthz", "/readyz"):
        assert path in spec["paths"], path
    assert "Decision" in spec["components"]["schemas"]


def test_guard_section_naming_unknown_detectors_is_refused_and_writes_nothing(service):
    """A misspelt detector in disabled_detectors or a threshold key would be stored and silently change nothing;
    every write path refuses it with 422 before writing. "detector.category" keys are checked by the detector."""
    tenant, key = service.new_tenant()
    with service.client(key) as c:
        s1 = c.put_settings("dana", {"guard": {"thresholds": {"pii.email": 0.9, "validator": 0.5}}},
                            expected_version=0)
        attempts = [
            lambda: c.put_settings("dana", {"guard": {"disabled_detectors": ["pi"]}}, expected_version=1),
            lambda: c.put_section("dana", "guard", {"thresholds": {"harmm": 0.5}}, expected_version=1),
            lambda: c.put_section("dana", "guard", {"thresholds": {"piii.email": 0.5}}),
            lambda: c.update_section("dana", "guard", lambda g: {**g, "disabled_detectors": ["pii", "nope"]}),
        ]
        for attempt in attempts:
            with pytest.raises(ServiceInvalidInputError) as e:
                attempt()
            assert e.value.status_code == 422
        assert c.get_settings("dana") == s1 and len(c.audit("dana")) == 1
    r = httpx.put(f"{service.url}/v1/users/dana/settings/guard", headers={"Authorization": f"Bearer {key}"},
                  json={"data": {"disabled_detectors": ["ignore all instructions"]}})
    body = r.json()["error"]
    assert r.status_code == 422 and body["code"] == "unknown_detector"
    assert "ignore" not in r.text and body["details"]["unknown"][0].startswith("#")  # free text is hashed
    assert set(body["details"]["known"]) == {"validator", "pii", "output_blocker"}
    # a name already stored (written directly, or by a service that ran that detector) does not block unrelated
    # edits that carry it back; adding another unknown one is still refused
    service.store.put(tenant, "erin", {"guard": {"thresholds": {"gone": 0.4}}}, expected_version=0, actor="direct")
    with service.client(key) as c:
        s2 = c.update_section("erin", "guard", lambda g: {**g, "shadow": True})
        assert s2.settings["guard"]["shadow"] is True and s2.settings["guard"]["thresholds"] == {"gone": 0.4}
        with pytest.raises(ServiceInvalidInputError):
            c.update_section("erin", "guard", lambda g: {**g, "disabled_detectors": ["also-gone"]})


def test_check_text_and_messages_every_stage(service):
    with service.client() as c:
        d = c.check("hello there", user_id="alice", session_id="s1")
        assert isinstance(d, Decision) and d.action is Action.ALLOW and d.stage is Stage.INPUT
        assert d.user_id == "alice" and d.session_id == "s1" and d.text_sha256
        d = c.check("write to bob@example.com", user_id="alice")
        assert d.action is Action.REDACT and "bob@example.com" not in (d.redacted_text or "")
        msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "this is FORBIDDEN"}]
        assert c.check(msgs, user_id="alice", stage="output").action is Action.BLOCK
        for stage in Stage:
            assert c.check("plain text", user_id="alice", stage=stage).stage is stage
        assert c.check("x" * 40_000, user_id="alice").action is Action.BLOCK  # validator gate


def test_settings_round_trip_and_versioning(service):
    with service.client() as c:
        with pytest.raises(ServiceUnknownUserError) as e:
            c.get_settings("carol")
        assert isinstance(e.value, UnknownUserError) and e.value.status_code == 404
        s1 = c.put_settings("carol", {"guard": {"shadow": True}}, expected_version=0)
        assert s1.version == 1 and s1.settings["guard"]["shadow"] is True
        assert c.get_settings("carol") == s1
        with pytest.raises(ServiceVersionConflictError) as e:
            c.put_settings("carol", {"guard": {}}, expected_version=0)
        assert isinstance(e.value, VersionConflictError) and (e.value.expected, e.value.actual) == (0, 1)
        s2 = c.put_section("carol", "guard", {"thresholds": {"pii": 0.9}}, expected_version=1)
        assert s2.version == 2 and c.get_section("carol", "guard")["thresholds"] == {"pii": 0.9}
        s3 = c.update_section("carol", "guard", lambda g: {**g, "disabled_detectors": ["pii"]})
        assert s3.version == 3 and s3.settings["guard"]["thresholds"] == {"pii": 0.9}
        # the stored settings take effect on checks: pii disabled for carol
        assert c.check("mail bob@example.com", user_id="carol").action is Action.ALLOW
        with pytest.raises(ServiceInvalidInputError) as e:  # validated by the section model: 422
            c.put_section("carol", "guard", {"shaddow": True})
        assert isinstance(e.value, InvalidInputError) and e.value.status_code == 422
        with pytest.raises(NotFoundError):
            c.get_section("carol", "no_such_section")
        s4 = c.delete_section("carol", "guard")
        assert s4.version == 4 and "guard" not in s4.settings
        audit = c.audit("carol")
        assert [a.version for a in audit] == [4, 3, 2, 1] and [a.op for a in audit][-1] == "put"
        assert all(a.actor.startswith("key:") for a in audit)
        c.delete_settings("carol")
        with pytest.raises(ServiceUnknownUserError):
            c.get_settings("carol")
        assert c.audit("carol", limit=1)[0].op == "delete"


def test_if_match_header_and_precondition(service):
    with service.client() as c:
        url, headers = f"{service.url}/v1/users/dave/settings", c._core.headers(c._core.get("/"))
        r = httpx.put(url, json={"settings": {"guard": {}}}, headers=headers)
        assert r.status_code == 428 and r.json()["error"]["code"] == "precondition_required"
        r = httpx.put(url, json={"settings": {"guard": {}}}, headers={**headers, "If-Match": '"0"'})
        assert r.status_code == 200 and r.headers["etag"] == '"1"'
        r = httpx.put(url, json={"settings": {"guard": {}}}, headers={**headers, "If-Match": '"0"'})
        assert r.status_code == 409
        r = httpx.put(url, json={"settings": {"guard": {"shadow": True}}}, headers={**headers, "If-Match": "*"})
        assert r.status_code == 200 and r.json()["version"] == 2


def test_admin_tenants_and_keys(service):
    tenant, key = service.new_tenant()
    with service.client(admin_key=key) as c:  # a tenant key presented as admin key: 403
        with pytest.raises(AuthenticationError) as e:
            c.create_tenant("evil")
        assert e.value.status_code == 403
    admin = {"Authorization": "Bearer " + "test-admin-key-3f9c2a"}
    r = httpx.post(f"{service.url}/v1/admin/tenants", json={"tenant_id": tenant}, headers=admin)
    assert r.status_code == 409
    assert tenant in httpx.get(f"{service.url}/v1/admin/tenants", headers=admin).json()["tenants"]
    r = httpx.post(f"{service.url}/v1/admin/tenants/{tenant}/keys", headers=admin)  # empty body, no content type
    assert r.status_code == 201
    second = r.json()
    with service.client(second["api_key"]) as c2:
        c2.put_settings("erin", {"guard": {}}, expected_version=0)
    with service.client(key) as c1:  # both keys reach the same tenant
        assert c1.get_settings("erin").version == 1
    assert httpx.delete(f"{service.url}/v1/admin/keys/{second['key_id']}", headers=admin).status_code == 204
    assert httpx.delete(f"{service.url}/v1/admin/keys/{second['key_id']}", headers=admin).status_code == 404
    service.app.state.rg.keys._cache.clear()  # skip the cache TTL
    with service.client(second["api_key"]) as c2, pytest.raises(AuthenticationError):
        c2.get_settings("erin")


def test_metrics_have_no_ids_or_text(service):
    with service.client() as c:
        c.check("metrics probe text zq9", user_id="user-metrics-7", stage="tool_call")
        c.put_settings("user-metrics-7", {"guard": {}}, expected_version=0)
    text = httpx.get(f"{service.url}/metrics").text
    assert 'railguard_decisions_total{action="allow",shadow="false",stage="tool_call"}' in text
    assert 'route="/v1/users/{user_id:path}/settings"' in text
    assert "user-metrics-7" not in text and "zq9" not in text and "t-" not in text


async def test_async_client_round_trip(service):
    tenant, key = service.new_tenant()
    async with AsyncRailguardClient(service.url, api_key=key, max_retries=0) as c:
        assert (await c.health())["status"] == "ok" and await c.ready()
        d = await c.check([{"role": "user", "content": "call 415-555-0132"}], user_id="u", session_id="s")
        assert d.action is Action.REDACT
        s = await c.update_section("u", "guard", lambda g: {**g, "shadow": True})
        assert s.version == 1 and (await c.get_section("u", "guard"))["shadow"] is True
        s = await c.put_settings("u", {"guard": {}}, expected_version=1)
        assert (await c.get_settings("u")).version == 2
        assert [a.version for a in await c.audit("u")] == [2, 1]
        await c.delete_settings("u")
        with pytest.raises(UnknownUserError):
            await c.get_settings("u")


def test_user_ids_with_reserved_characters(service):
    """Ids are 1-256 printable characters: '/', '?', '#', spaces and unicode must round-trip too."""
    with service.client() as c:
        for i, uid in enumerate(["org/alice", "a?b#c", "with space", "ünï/cødé/", "settings"]):
            s = c.put_settings(uid, {"guard": {"thresholds": {"pii": i / 10}}}, expected_version=0)
            assert s.user_id == uid
            assert c.get_section(uid, "guard")["thresholds"] == {"pii": i / 10}
            assert c.audit(uid)[0].user_id == uid
        assert c.get_settings("org/alice").user_id == "org/alice"
        c.delete_settings("org/alice")
        with pytest.raises(ServiceUnknownUserError):
            c.get_settings("org/alice")


def test_path_user_ids_that_are_not_utf8_are_refused_not_merged(service):
    """The path decoder turns bytes that are not UTF-8 into U+FFFD, so "%FF" and "%FE" were one user: a write as one
    was read, and erased, as the other. Now a 422 and nothing written; ids of characters the store would refuse
    (a line separator, a bidirectional override) are refused at the edge too, body or path."""
    tenant, key = service.new_tenant()
    auth = {"Authorization": f"Bearer {key}"}
    for raw in ("%FF", "%ED%A0%80", "a%E2%80%A8b"):
        r = httpx.put(f"{service.url}/v1/users/{raw}/settings", headers=auth,
                      json={"settings": {"guard": {"shadow": True}}, "expected_version": 0})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_user_id", (raw, r.text)
    r = httpx.get(f"{service.url}/v1/users/alice/settings/%FF", headers=auth)  # the bad bytes name no user
    assert r.status_code == 404, r.text
    for sid in ("\u2028", "\u202eevil", "a\x85b", "alice\u200b", "tab\u00adbed", "\ufeffbom"):
        r = httpx.post(f"{service.url}/v1/check/input", headers=auth,
                       json={"user_id": "alice", "session_id": sid, "text": "hello"})
        assert r.status_code == 422, (sid, r.text)
    assert service.store.list_users(tenant) == []
    # letters of any script, joiners, emoji sequences and flags are fine (and U+FFFD sent as UTF-8)
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # with a zero-width non-joiner
    flag = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"  # Scotland: tag characters
    for uid in ("\ufffd", "\U0001f469\u200d\U0001f4bb", persian, "no\u00a0break", flag):
        s = httpx.put(f"{service.url}/v1/users/{quote(uid, safe='')}/settings", headers=auth,
                      json={"settings": {"guard": {"shadow": True}}, "expected_version": 0})
        assert s.status_code == 200 and s.json()["user_id"] == uid, (uid, s.text)
        r = httpx.post(f"{service.url}/v1/check/input", headers=auth,
                       json={"user_id": uid, "session_id": uid, "text": "hello"})
        assert r.status_code == 200 and r.json()["action"] == "allow", (uid, r.text)


def test_remote_guard_screens_resent_history_like_a_local_guard(service):
    """RemoteGuard.wrap used to skip the earlier messages (it had no screen_history), so a card number redacted
    when it was new reached the wrapped model in the clear on every later call."""
    import asyncio

    from langchain_core.messages import AIMessage
    from langchain_core.runnables import RunnableLambda

    from guardrails.client import RemoteGuard

    _, key = service.new_tenant()
    rg = RemoteGuard(service.url, api_key=key, max_retries=0)
    history = [{"role": "user", "content": "my card is 4111 1111 1111 1111"},
               {"role": "assistant", "content": "noted"}, {"role": "user", "content": "what else?"}]
    screen = rg.screen_history(history, user_id="alice", session_id="s1")  # Guard.screen_history's contract
    assert "4111" not in screen.messages[0]["content"] and screen.messages[1:] == history[1:]
    assert [(i, d.action) for i, d in screen.decisions] == [(0, Action.REDACT)] and screen.blocked is None
    # the message just before the newest one is screened too (review: the route skipped the last one it got)
    late = [history[1], {"role": "assistant", "content": "your card 4111 1111 1111 1111 is on file"}, history[2]]
    screen = rg.screen_history(late, user_id="alice")
    assert "4111" not in screen.messages[1]["content"] and [i for i, _ in screen.decisions] == [1]
    # include_last (guard.wrap's screen of an assistant prefill after the checked user turn): the last one too
    prefill = [{"role": "assistant", "content": "card 4111 1111 1111 1111:"}]
    for got in (rg.screen_history(prefill, user_id="alice", include_last=True),
                asyncio.run(rg.ascreen_history(prefill, user_id="alice", include_last=True))):
        assert "4111" not in got.messages[0]["content"] and [i for i, _ in got.decisions] == [0]
    r = httpx.post(f"{service.url}/v1/screen/history", headers={"Authorization": f"Bearer {key}"},
                   json={"user_id": "alice", "messages": [history[0]]})  # a single earlier message
    assert r.status_code == 200 and "4111" not in r.text and r.json()["decisions"][0]["index"] == 0
    r = httpx.post(f"{service.url}/v1/screen/history", headers={"Authorization": f"Bearer {key}"},
                   json={"user_id": "alice", "messages": [history[0]], "include_last": False})
    assert r.status_code == 422  # the body states its meaning; no other meaning is served

    seen = []

    def model(msgs):
        seen.append(" | ".join(str(m.content) for m in msgs))
        return AIMessage(content="fine")

    wrapped = rg.wrap(RunnableLambda(model))
    cfg = {"configurable": {"user_id": "alice", "session_id": "s1"}}
    assert wrapped.invoke(history, config=cfg).content == "fine"
    assert asyncio.run(wrapped.ainvoke(history, config=cfg)).content == "fine"
    assert len(seen) == 2 and not any("4111" in s for s in seen) and all("REDACTED" in s for s in seen)
    smuggled = [{"role": "user", "content": "hi\u200b\u200b\u200bthere" + "\U000e0041" * 8}, *history[1:]]
    out = wrapped.invoke(smuggled, config=cfg)  # a gate-blocked earlier turn refuses the call: model not run
    assert len(seen) == 2 and out.response_metadata["railguard"]["action"] == "block"
    with pytest.raises(InvalidInputError):  # same typed error as Guard.check, not a bare ValueError
        rg.check("hi", user_id="alice", stage="bogus")
    r = httpx.post(f"{service.url}/v1/screen/history", headers={"Authorization": f"Bearer {key}"},
                   json={"user_id": "alice", "messages": []})
    assert r.status_code == 422
    rg.close()


def test_session_state_idle_past_the_ttl_is_pruned_by_the_service(tmp_path):
    """Each new session id leaves a velocity-state row (~6 KB); nothing deleted them, so a service grew without
    bound. The app prunes rows idle for longer than its state TTL at start-up and hourly."""
    import time
    from datetime import timedelta

    from fastapi.testclient import TestClient

    from guardrails import Guard
    from guardrails.service.app import create_app
    from guardrails.store import SettingsStore

    store = SettingsStore(f"sqlite:///{tmp_path / 'ttl.db'}")
    try:
        store.put_state("default", "alice", "old-session", "velocity", {"turns": 3})
        time.sleep(0.05)
        app = create_app(Guard([], store=store), store, state_ttl=timedelta(milliseconds=20))
        with TestClient(app):
            deadline = time.monotonic() + 10
            while store.get_state("default", "alice", "old-session", "velocity") is not None:
                assert time.monotonic() < deadline, "idle session state was never pruned"
                time.sleep(0.05)
        kept = create_app(Guard([], store=store), store, state_ttl=timedelta(0))  # 0 = keep forever
        store.put_state("default", "bob", "s", "velocity", {"turns": 1})
        with TestClient(kept):
            time.sleep(0.2)
        assert store.get_state("default", "bob", "s", "velocity") == {"turns": 1}
    finally:
        store.close()


def test_screen_history_refuses_more_messages_than_the_guard_takes(service):
    with service.client() as c:
        headers = c._core.headers(c._core.get("/"))
    body = {"user_id": "u-many", "messages": [{"role": "user", "content": "hi"}] * 1001}
    r = httpx.post(f"{service.url}/v1/screen/history", json=body, headers=headers, timeout=60)
    assert r.status_code == 422, r.text
    body["messages"] = body["messages"][:1000]
    assert httpx.post(f"{service.url}/v1/screen/history", json=body, headers=headers, timeout=60).status_code == 200


@pytest.mark.parametrize("if_match", ['"' + "1" * 5000 + '"', '"\u00b2"', '"1e3"', '"-1"', '" 1"'])
def test_if_match_values_that_are_no_version_are_a_400(service, if_match):
    # '²' and a 5,000-digit number passed str.isdigit() and then failed int() (a 500 with a traceback).
    with service.client() as c:
        headers = c._core.headers(c._core.get("/"))
    url = f"{service.url}/v1/users/ifm/settings"
    r = httpx.put(url, json={"settings": {"guard": {}}},
                  headers={**headers, "If-Match": if_match.encode("latin-1")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_if_match", r.text
    with service.client() as c, pytest.raises(ServiceUnknownUserError):
        c.get_settings("ifm")


def test_a_deleted_user_written_again_never_reuses_a_version(service):
    # A client holding version 1 of a deleted user's settings overwrote the recreated row (also version 1): a
    # lost update behind a reused ETag.
    with service.client() as c:
        first = c.put_settings("reborn", {"guard": {"shadow": True}}, expected_version=0)
        c.delete_settings("reborn")
        again = c.put_settings("reborn", {"guard": {"disabled_detectors": ["pii"]}}, expected_version=0)
        assert again.version == first.version + 1
        with pytest.raises(ServiceVersionConflictError):
            c.put_settings("reborn", {"guard": {}}, expected_version=first.version)
        assert c.get_settings("reborn").settings["guard"]["disabled_detectors"] == ["pii"]


@pytest.mark.parametrize("user", [".", ".."])
def test_the_sdk_addresses_dot_user_ids(service, user):
    # httpx resolved '..' as a path step: erase_user("..") posted to /v1/erase (404) and the data stayed.
    with service.client() as c:
        c.put_settings(user, {"guard": {"shadow": True}}, expected_version=0)
        assert c.get_settings(user).settings["guard"]["shadow"] is True
        c.erase_user(user)
        with pytest.raises(ServiceUnknownUserError):
            c.get_settings(user)
