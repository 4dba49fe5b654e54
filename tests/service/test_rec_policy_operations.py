"""The recommendation policy's operations over HTTP (`POST /v1/users/{u}/settings/rec_policy/{operation}`):
``command`` parses a natural-language feed command with the shipped parser and merges it by the agent's memory
rules; ``remove`` / ``feed_served`` / ``reset``; text that changes no feed preference is refused whole."""

from __future__ import annotations

import httpx
import pytest

from agents.policy import RecPolicy
from guardrails.client import ServiceInvalidInputError, ServiceUnknownNameError, ServiceUnknownUserError


def _policy(client, user: str) -> RecPolicy:
    return RecPolicy.model_validate(client.get_section(user, "rec_policy"))


def _prefs(policy: RecPolicy) -> set[tuple[str, str, str | int, str, str]]:
    return {(p.attribute, p.operator, p.value, p.polarity, p.kind) for p in policy.preferences}


def test_a_feed_command_over_http_is_parsed_and_merged(service):
    with service.client() as rg:
        s = rg.apply_operation("alice", "rec_policy", "command", text="no more horror, and nothing before 1990")
        assert s.version == 1
        prefs = _prefs(_policy(rg, "alice"))
        assert ("genre", "eq", "Horror", "-", "hard") in prefs
        assert any(a == "year" and pol == "+" and v == 1990 for a, _, v, pol, _ in prefs)
        rg.apply_operation("alice", "rec_policy", "command", text="horror is fine again")  # memory rules: retract
        assert not any(p.value == "Horror" for p in _policy(rg, "alice").preferences)
        audit = rg.audit("alice")
        assert len(audit) == 2 and all("horror" not in e.model_dump_json().lower() for e in audit)
        with pytest.raises(ServiceUnknownUserError):
            rg.get_settings("bob")  # nobody else was written


def test_remove_feed_served_and_reset(service):
    with service.client() as rg:
        rg.apply_operation("alice", "rec_policy", "command", text="only comedies, and no horror just this time")
        pol = _policy(rg, "alice")
        comedy = next(p for p in pol.preferences if p.value == "Comedy")
        assert any(p.value == "Horror" and p.scope == "next_feed" for p in pol.preferences)
        rg.apply_operation("alice", "rec_policy", "remove", id=comedy.id)
        assert all(p.value != "Comedy" for p in _policy(rg, "alice").preferences)
        rg.apply_operation("alice", "rec_policy", "feed_served")
        pol = _policy(rg, "alice")
        assert pol.preferences == [] and pol.feeds_served == 1  # the next-feed wish ended with the feed
        rg.apply_operation("alice", "rec_policy", "command", text="more sci-fi")
        s = rg.apply_operation("alice", "rec_policy", "reset")
        assert s.settings["rec_policy"] == RecPolicy().model_dump(mode="json") and s.version == 5


def test_a_session_wish_is_bound_to_its_session(service):
    with service.client() as rg:
        rg.apply_operation("alice", "rec_policy", "command", text="no horror for now", session_id="s-1")
        (pref,) = _policy(rg, "alice").preferences
        assert pref.scope == "session" and pref.session_id == "s-1"


@pytest.mark.parametrize("body", [
    {"text": "what year was Fargo released?"},             # a question changes nothing
    {"text": "the weather is lovely today"},               # chat
    {"text": "no horror and block crypto spam"},           # a moderation change belongs to its own section
    {"text": "no horror for every user"},                  # other users' settings are not this user's to change
    {"text": "only horror, no horror"},                    # contradicts itself (refused inside the write)
    {"text": ""}, {"text": "no horror " * 300}, {"text": 7}, {"text": "no horror", "colour": "red"}, {},
    {"text": "no horror", "session_id": ""}, {"text": "no horror", "session_id": "a\u0000b"},
    {"text": "no horror", "session_id": "s" * 257},
])
def test_bad_commands_are_refused_and_write_nothing(service, body):
    with service.client() as rg:
        rg.apply_operation("alice", "rec_policy", "command", text="more comedies")
        before = rg.get_settings("alice")
        with pytest.raises(ServiceInvalidInputError):
            rg.apply_operation("alice", "rec_policy", "command", **body)
        assert rg.get_settings("alice") == before


def test_removing_an_unknown_preference_writes_nothing(service):
    with service.client() as rg:
        rg.apply_operation("alice", "rec_policy", "command", text="no horror")
        before = rg.get_settings("alice")
        with pytest.raises(ServiceUnknownNameError, match="no preference with this id") as err:
            rg.apply_operation("alice", "rec_policy", "remove", id="0123456789")
        assert (err.value.status_code, err.value.code) == (404, "unknown_preference")
        assert rg.get_settings("alice") == before


def test_one_users_command_leaves_another_users_policy(service):
    with service.client() as rg:
        rg.apply_operation("bob", "rec_policy", "command", text="only horror")
        bob = rg.get_settings("bob")
        rg.apply_operation("alice", "rec_policy", "command", text="no horror, no thrillers")
        rg.apply_operation("alice", "rec_policy", "reset")
        assert rg.get_settings("bob") == bob
        assert _prefs(_policy(rg, "bob")) == {("genre", "eq", "Horror", "+", "hard")}


def test_the_operations_are_listed(service):
    _, key = service.new_tenant()
    r = httpx.get(f"{service.url}/v1/settings/operations", headers={"Authorization": f"Bearer {key}"})
    ops = r.json()["rec_policy"]
    assert r.status_code == 200 and set(ops) == {"command", "remove", "feed_served", "reset"}
    assert ops["command"]["input"]["additionalProperties"] is False and ops["command"]["input"]["required"] == ["text"]


def test_a_session_id_as_long_as_a_checks_is_accepted(service):
    with service.client() as rg:
        rg.apply_operation("alice", "rec_policy", "command", text="no horror for now", session_id="s" * 256)
        assert _policy(rg, "alice").preferences[0].session_id == "s" * 256


@pytest.mark.parametrize("text,secret", [
    ("only movies with a budget over 100m from alice@example.com", "alice@example.com"),
    ("only Fargo, no Fargo", "Fargo"),
])
def test_a_refused_command_is_not_echoed(service, text, secret):
    with service.client() as rg, pytest.raises(ServiceInvalidInputError) as err:
        rg.apply_operation("alice", "rec_policy", "command", text=text)
    assert secret not in str(err.value) and "refused" in str(err.value)


def test_removing_one_alternative_removes_its_set(service):
    with service.client() as rg:
        rg.apply_operation("alice", "rec_policy", "command", text="only horror or comedy, and no thrillers")
        pol = _policy(rg, "alice")
        comedy = next(p for p in pol.preferences if p.value == "Comedy")
        assert comedy.any_of is not None  # a set of two alternatives
        rg.apply_operation("alice", "rec_policy", "remove", id=comedy.id)
        # horror alone would be "only horror", a narrower feed than either the set or no filter
        assert _prefs(_policy(rg, "alice")) == {("genre", "eq", "Thriller", "-", "hard")}


def test_a_missing_catalog_is_a_server_error_without_its_path(service, monkeypatch, tmp_path):
    import agents.catalog as catalog
    import agents.operations as ops
    import agents.parser as parser

    nowhere = str(tmp_path / "nowhere")
    monkeypatch.setattr(parser, "_default", {})  # no parser loaded yet in this process
    real = catalog.load_catalog.__wrapped__  # uncached: the real loader, pointed at a folder without the data
    monkeypatch.setattr(catalog, "load_catalog", lambda: real(nowhere))
    _, key = service.new_tenant()
    r = httpx.post(f"{service.url}/v1/users/alice/settings/rec_policy/command", json={"text": "no horror"},
                   headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 500 and r.json()["error"]["message"] == ops.FeedParserUnavailableError.__name__
    assert "nowhere" not in r.text
