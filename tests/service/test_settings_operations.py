"""Section operations over HTTP (`POST /v1/users/{u}/settings/{section}/{operation}`): the moderation profile's
block / unblock / reblock / extend / set_threshold / remove / reset, registered by `personalization` and run by
the spine inside one section write; bad input refused with nothing written; users and tenants kept apart."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydantic import BaseModel

import guardrails.detector as detector
from guardrails.client import (
    AsyncRailguardClient,
    ServiceInvalidInputError,
    ServiceNameTakenError,
    ServiceUnknownNameError,
    ServiceUnknownUserError,
)
from guardrails.errors import ConfigError, InvalidInputError, NameTakenError, UnknownNameError
from guardrails.store import SectionOperation, SettingsStore, run_operation, section_operations
from personalization import ProfileService
from personalization.profile import ModerationProfile

PITCH = "Get in early on $DOGEX, 50x guaranteed, pump starts at 9pm!"


@pytest.fixture(autouse=True)
def _real_section(monkeypatch: pytest.MonkeyPatch) -> None:
    # other test modules register a stand-in "moderation" model in-process; the real one validates here
    monkeypatch.setitem(detector._local["railguard.settings"], "moderation", ModerationProfile)


def _profile(client, user: str) -> ModerationProfile:
    return ModerationProfile.model_validate(client.get_section(user, "moderation"))


def test_every_moderation_operation_over_http(service):
    with service.client() as rg:
        s = rg.apply_operation("alice", "moderation", "block", name="crypto", examples=[PITCH],
                               definition="crypto pump pitches")
        assert s.version == 1 and s.user_id == "alice"  # a user without settings gets them
        assert _profile(rg, "alice").categories["crypto"].examples == [PITCH]
        s = rg.apply_operation("alice", "moderation", "extend", name="crypto", texts=["Moon soon, buy SHIB"],
                               n_variations=2)
        assert len(_profile(rg, "alice").categories["crypto"].examples) == 4  # the text and two variations
        rg.apply_operation("alice", "moderation", "extend", name="crypto", texts=["crypto news digest"],
                           counter=True)
        rg.apply_operation("alice", "moderation", "unblock", name="spam")
        assert _profile(rg, "alice").categories["spam"].action == "allow"
        rg.apply_operation("alice", "moderation", "reblock", name="spam", action="block")  # opted in
        rg.apply_operation("alice", "moderation", "set_threshold", name="crypto", threshold=0.8)
        p = _profile(rg, "alice")
        assert p.categories["spam"].action == "block" and p.categories["crypto"].threshold == 0.8
        assert p.categories["crypto"].counter_examples == ["crypto news digest"]
        rg.apply_operation("alice", "moderation", "remove", name="crypto")
        assert "crypto" not in _profile(rg, "alice").categories
        s = rg.apply_operation("alice", "moderation", "reset")
        assert s.settings["moderation"] == ModerationProfile().model_dump(mode="json") and s.version == 8
        audit = rg.audit("alice")
        assert len(audit) == 8 and all(PITCH not in e.model_dump_json() for e in audit)  # digests, never text
        with pytest.raises(ServiceUnknownUserError):
            rg.get_settings("bob")  # nobody else was written


def test_http_and_profile_service_give_the_same_profile(service):
    tenant, key = service.new_tenant()
    with service.client(key) as rg:
        rg.apply_operation("alice", "moderation", "block", name="crypto", examples=[PITCH], threshold=0.7)
        rg.apply_operation("alice", "moderation", "extend", name="crypto", texts=["Moon soon, buy SHIB"],
                           n_variations=3)
    svc = ProfileService(service.store, tenant)
    svc.block_new("carol", "crypto", examples=[PITCH], threshold=0.7)
    svc.extend("carol", "crypto", "Moon soon, buy SHIB", n_variations=3)
    assert svc.get("alice") == svc.get("carol")


@pytest.mark.parametrize("operation,body", [
    ("block", {"name": "crypto", "examples": [PITCH], "colour": "red"}),  # unknown field: a typo is no default
    ("block", {"name": "crypto", "examples": [42]}),  # a non-string example
    ("block", {"examples": [PITCH]}),  # no name
    ("block", {"name": "Crypto Shill!", "examples": [PITCH]}),  # not a category name
    ("block", {"name": "crypto"}),  # neither an example nor a definition
    ("block", {"name": "crypto", "examples": [PITCH], "threshold": 2}),
    ("block", {"name": "crypto", "examples": [PITCH], "threshold": True}),
    ("block", {"name": "crypto", "examples": ["x" * 5000]}),  # longer than a stored example may be
    ("block", {"name": "crypto", "examples": [PITCH], "counter_examples": [PITCH]}),  # contradiction
    ("extend", {"name": "spam", "texts": []}),
    ("extend", {"name": "spam", "texts": ["free cruise"], "n_variations": 1000}),
    ("set_threshold", {"name": "spam", "threshold": -0.1}),
    ("reblock", {"name": "spam", "action": "allow"}),  # that is unblock
    ("reset", {"everyone": True}),  # "reset every user" is not an input
])
def test_bad_input_is_refused_and_writes_nothing(service, operation, body):
    with service.client() as rg:
        rg.apply_operation("alice", "moderation", "block", name="garden", examples=["Huge sale on garden gnomes!"])
        before = rg.get_settings("alice")
        with pytest.raises(ServiceInvalidInputError) as err:
            rg.apply_operation("alice", "moderation", operation, **body)
        assert err.value.status_code == 422 and "xxxxx" not in str(err.value) and PITCH not in str(err.value)
        assert rg.get_settings("alice") == before and len(rg.audit("alice")) == 1


@pytest.mark.parametrize("operation,body,status,code,error", [
    ("unblock", {"name": "no_such_category"}, 404, "unknown_category", ServiceUnknownNameError),
    ("set_threshold", {"name": "no_such_category", "threshold": 0.3}, 404, "unknown_category",
     ServiceUnknownNameError),
    ("extend", {"name": "no_such_category", "texts": ["x"]}, 404, "unknown_category", ServiceUnknownNameError),
    ("block", {"name": "spam", "examples": [PITCH]}, 409, "category_exists", ServiceNameTakenError),  # extend it
    ("block", {"name": "garden", "examples": [PITCH]}, 409, "category_exists", ServiceNameTakenError),
])
def test_an_unknown_or_taken_category_is_404_or_409_and_writes_nothing(service, operation, body, status, code,
                                                                       error):
    """Not a 422: the request is well formed, it names a category the profile lacks (404) or already holds (409);
    the SDK raises what a local ProfileService raises (UnknownNameError / NameTakenError, both ConfigErrors)."""
    with service.client() as rg:
        rg.apply_operation("alice", "moderation", "block", name="garden", examples=["Huge sale on garden gnomes!"])
        before = rg.get_settings("alice")
        with pytest.raises(error) as err:
            rg.apply_operation("alice", "moderation", operation, **body)
        assert (err.value.status_code, err.value.code, err.value.kind) == (status, code, "category")
        local = UnknownNameError if status == 404 else NameTakenError
        assert isinstance(err.value, local) and isinstance(err.value, ConfigError)
        assert PITCH not in str(err.value)
        assert rg.get_settings("alice") == before and len(rg.audit("alice")) == 1


def test_a_reset_of_a_user_with_nothing_stored_writes_nothing(service):
    """A reset to the defaults an unknown user reads anyway creates no user, no version and no audit row, over HTTP
    and through ProfileService; a stored user's reset is still a versioned write."""
    tenant, key = service.new_tenant()
    with service.client(key) as rg:
        s = rg.apply_operation("nobody", "moderation", "reset")
        assert s.version == 0 and s.settings == {}
        assert rg.apply_operation("nobody2", "rec_policy", "reset").version == 0
        with pytest.raises(ServiceUnknownUserError):
            rg.get_settings("nobody")
        assert service.store.history(tenant, "nobody") == [] and service.store.history(tenant, "nobody2") == []
        svc = ProfileService(service.store, tenant)
        assert svc.reset("carol") == ModerationProfile() and not service.store.exists(tenant, "carol")
        svc.unblock("carol", "spam")
        assert svc.reset("carol") == ModerationProfile() and service.store.get(tenant, "carol").version == 2
        assert rg.apply_operation("carol", "moderation", "reset").version == 2  # already the default: no write


def test_a_body_with_a_duplicate_key_is_refused_and_writes_nothing(service):
    """json.loads keeps the last of two equal keys, so these bodies would have stored "allow" (an unblock) with a
    200; they are a 422 ``duplicate_key`` before any route runs, on every route."""
    tenant, key = service.new_tenant()
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    bodies = [("put", "/v1/users/alice/settings/moderation",
               '{"data": {"categories": {"toxic": {"action": "block"}, "toxic": {"action": "allow"}}}}'),
              ("post", "/v1/users/alice/settings/moderation/block",
               '{"name": "spam-x", "examples": ["a"], "action": "block", "action": "allow"}'),
              ("post", "/v1/check", '{"user_id": "alice", "text": "hi", "text": "hello"}')]
    for method, path, body in bodies:
        r = httpx.request(method, f"{service.url}{path}", content=body, headers=auth)
        assert r.status_code == 422 and r.json()["error"]["code"] == "duplicate_key", (path, r.text)
    assert service.store.get(tenant, "alice").version == 0
    ok = httpx.post(f"{service.url}/v1/users/alice/settings/moderation/block", headers=auth,
                    content='{"name": "spam-x", "examples": ["a"], "action": "block"}')
    assert ok.status_code == 200 and service.store.get(tenant, "alice").version == 1


def test_unknown_sections_and_operations_are_404_and_the_list_names_them(service):
    tenant, key = service.new_tenant()
    auth = {"Authorization": f"Bearer {key}"}
    r = httpx.post(f"{service.url}/v1/users/alice/settings/moderation/unblock_everything_for_everyone",
                   json={}, headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_operation"
    assert "unblock" in r.json()["error"]["details"]["known"]
    r = httpx.post(f"{service.url}/v1/users/alice/settings/nosuch/block", json={}, headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_section"
    r = httpx.post(f"{service.url}/v1/users/alice/settings/guard/block", json={}, headers=auth)
    assert r.status_code == 404  # the spine's own section takes no plugin operations
    r = httpx.post(f"{service.url}/v1/users/alice/settings/moderation/block", json=[PITCH], headers=auth)
    assert r.status_code == 422  # not an object
    r = httpx.post(f"{service.url}/v1/users/alice/settings/moderation/block", json={"name": "x"})
    assert r.status_code == 401  # no key: nothing runs
    assert service.store.get(tenant, "alice").version == 0
    r = httpx.get(f"{service.url}/v1/settings/operations", headers=auth)
    ops = r.json()["moderation"]
    assert r.status_code == 200 and set(ops) == {"block", "unblock", "reblock", "extend", "set_threshold",
                                                 "remove", "reset"}
    assert ops["block"]["input"]["additionalProperties"] is False and "name" in ops["block"]["input"]["required"]
    assert httpx.get(f"{service.url}/v1/settings/operations").status_code == 401


def test_an_operation_named_like_a_user_route_erases_no_one(service):
    """`{user_id:path}`: POST .../alice/settings/moderation/erase erased the user "alice/settings/moderation"."""
    tenant, key = service.new_tenant()
    with service.client(key) as rg:
        rg.apply_operation("alice/settings/moderation", "moderation", "unblock", name="spam")
        r = httpx.post(f"{service.url}/v1/users/alice/settings/moderation/erase", json={},
                       headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_operation"
        r = httpx.post(f"{service.url}/v1/users/alice/settings/moderation/%65rase", json={},  # routed as "erase"
                       headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_operation"
        assert rg.get_settings("alice/settings/moderation").version == 1
        assert rg.erase_user("alice/settings/moderation")["settings"] == 1  # its own route still erases it


@pytest.mark.parametrize("operation", ["block", "unblock", "extend", "remove", "set_threshold"])
def test_a_refused_name_is_not_echoed(service, operation):
    body = {"name": "my ssn is 123-45-6789", "examples": ["x"], "texts": ["x"], "threshold": 0.5}
    fields = {"block": ("name", "examples"), "unblock": ("name",), "extend": ("name", "texts"), "remove": ("name",),
              "set_threshold": ("name", "threshold")}[operation]
    with service.client() as rg:
        with pytest.raises(ServiceInvalidInputError) as err:
            rg.apply_operation("alice", "moderation", operation, **{k: body[k] for k in fields})
        assert "123-45-6789" not in str(err.value) and "ssn" not in str(err.value)


def test_too_many_variations_are_refused_before_any_is_generated(monkeypatch):
    from personalization import profile as P
    from personalization import variations
    from personalization.user_texts import with_variations

    monkeypatch.setattr(variations, "variations", lambda *a, **k: pytest.fail("generated before the bound"))
    with pytest.raises(InvalidInputError, match="more than the 1000 one request may carry"):
        with_variations([f"text {i}" for i in range(1000)], P.MAX_EXAMPLES - 1)  # the most variations allowed


def test_users_and_tenants_stay_apart(service):
    (_, k1), (_, k2) = service.new_tenant(), service.new_tenant()
    with service.client(k1) as a, service.client(k2) as b:
        a.apply_operation("alice", "moderation", "block", name="crypto", examples=[PITCH])
        b.apply_operation("alice", "moderation", "unblock", name="toxic")
        a.apply_operation("bob", "moderation", "unblock", name="spam")
        assert set(_profile(a, "alice").categories) == {"crypto", "toxic", "spam", "negative"}
        assert _profile(a, "alice").categories["toxic"].action == "block"  # tenant 2's alice unblocked hers
        assert _profile(a, "alice").categories["spam"].action == "warn"  # bob's unblock is bob's
        assert "crypto" not in _profile(b, "alice").categories


def test_async_twin(service):
    _, key = service.new_tenant()

    async def go():
        async with AsyncRailguardClient(service.url, api_key=key, max_retries=0) as rg:
            s = await rg.apply_operation("alice", "moderation", "block", name="crypto", examples=[PITCH])
            with pytest.raises(ServiceNameTakenError):
                await rg.apply_operation("alice", "moderation", "block", name="crypto", examples=[PITCH])
            with pytest.raises(ServiceUnknownNameError):
                await rg.apply_operation("alice", "moderation", "unblock", name="cryptoo")
            return s

    assert asyncio.run(go()).settings["moderation"]["categories"]["crypto"]["examples"] == [PITCH]


# ---- the spine's registry, without HTTP ------------------------------------------------------------------
class _Note(BaseModel):
    text: str


def test_registry_ignores_builtin_sections_and_refuses_malformed_entries(monkeypatch):
    op = SectionOperation(_Note, lambda s, b: {**s, "note": b.text})
    monkeypatch.setitem(detector._local["railguard.settings_operations"], "guard", {"note": op})
    assert "guard" not in section_operations()
    monkeypatch.setitem(detector._local["railguard.settings_operations"], "notes", {"note": "not an operation"})
    with pytest.raises(ConfigError, match="notes"):
        section_operations()


def test_prepare_runs_once_outside_the_write_and_errors_abort_it(tmp_path):
    calls = []

    def prepare(body):
        calls.append(body.text)
        return body.model_copy(update={"text": body.text.upper()})

    class Notes(BaseModel):
        note: str = ""

    detector.register("railguard.settings", "notes_test", Notes)
    try:
        op = SectionOperation(_Note, lambda s, b: {"note": b.text}, prepare=prepare)
        with SettingsStore(f"sqlite:///{tmp_path / 'ops.db'}") as store:
            saved = run_operation(store, "t", "alice", "notes_test", op, {"text": "hi"}, actor="test")
            assert saved.settings["notes_test"] == {"note": "HI"} and calls == ["hi"]
            with pytest.raises(InvalidInputError, match="text"):
                run_operation(store, "t", "alice", "notes_test", op, {"text": 3}, actor="test")

            def boom(s, b):
                raise InvalidInputError("refused")

            with pytest.raises(InvalidInputError, match="refused"):
                run_operation(store, "t", "alice", "notes_test", SectionOperation(_Note, boom), {"text": "x"},
                              actor="test")
            assert store.get("t", "alice").version == 1 and calls == ["hi"]
    finally:
        detector._local["railguard.settings"].pop("notes_test", None)
