"""Each deterministic memory rule, expiry, and persistence through a store."""

from datetime import UTC, datetime, timedelta

import pytest

from agents.policy import (
    SECTION,
    RecPolicy,
    apply_command,
    consume_next_feed,
    load_policy,
    mark_feed_served,
    merge,
)
from agents.schema import ContradictoryCommandError, ParsedCommand, Preference, Retraction

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def P(**kw):
    base = dict(polarity="-", kind="hard", attribute="genre", operator="eq", value="Horror")
    base.update(kw)
    return Preference(**base)


def Y(op, v, **kw):
    return P(attribute="year", operator=op, value=v, polarity="+", **kw)


def cmd(*prefs, retract=(), reset=False):
    return ParsedCommand(preferences=list(prefs), retractions=list(retract), reset=reset)


def test_integrate_compatible():
    pol, rep = merge(RecPolicy(), cmd(P(), P(value="War"), Y("ge", 1990)), now=NOW)
    assert len(pol.preferences) == 3 and len(rep.added) == 3


def test_preserve_identical_keeps_old_id():
    pol, _ = merge(RecPolicy(), cmd(P()), now=NOW)
    old_id = pol.preferences[0].id
    pol2, rep = merge(pol, cmd(P()), now=NOW)
    assert [p.id for p in pol2.preferences] == [old_id]
    assert rep.preserved and not rep.added


def test_conflict_newest_wins_polarity_flip():
    pol, _ = merge(RecPolicy(), cmd(P(polarity="+")), now=NOW)  # only horror
    pol, rep = merge(pol, cmd(P(polarity="-")), now=NOW)  # no horror
    assert [(p.polarity, p.value) for p in pol.preferences] == [("-", "Horror")]
    assert rep.replaced


def test_new_only_filter_supersedes_older_only_filter():
    pol, _ = merge(RecPolicy(), cmd(P(polarity="+"), P(value="War")), now=NOW)  # only horror; no war
    pol, rep = merge(pol, cmd(P(polarity="+", value="Comedy")), now=NOW)  # now: only comedies
    assert sorted((p.polarity, p.value) for p in pol.preferences) == [("+", "Comedy"), ("-", "War")]
    assert any("Horror" in r for r in rep.replaced)
    # two "only" filters given in one command are both kept (the user asked for both together)
    pol2, _ = merge(RecPolicy(), cmd(P(polarity="+", value="Comedy"), P(polarity="+", value="Romance")), now=NOW)
    assert len(pol2.preferences) == 2


def test_conflict_soft_to_hard_upgrade():
    pol, _ = merge(RecPolicy(), cmd(P(kind="soft")), now=NOW)
    pol, _ = merge(pol, cmd(P(kind="hard")), now=NOW)
    assert [p.kind for p in pol.preferences] == ["hard"]


def test_year_bounds_replace_and_resolve():
    pol, _ = merge(RecPolicy(), cmd(Y("ge", 1990)), now=NOW)
    pol, _ = merge(pol, cmd(Y("ge", 2000)), now=NOW)  # same bound: replaced, never stacked
    assert [(p.operator, p.value) for p in pol.preferences] == [("ge", 2000)]
    pol, _ = merge(pol, cmd(Y("le", 2010)), now=NOW)  # compatible upper bound: integrated
    assert len(pol.preferences) == 2
    pol, _ = merge(pol, cmd(Y("le", 1980)), now=NOW)  # contradicts ge 2000: newest wins
    assert [(p.operator, p.value) for p in pol.preferences] == [("le", 1980)]


def test_retract_by_attribute_and_value():
    pol, _ = merge(RecPolicy(), cmd(P(), P(value="War"), Y("ge", 1990)), now=NOW)
    pol, rep = merge(pol, cmd(retract=[Retraction(attribute="year")]), now=NOW)
    assert all(p.attribute != "year" for p in pol.preferences) and rep.retracted
    pol, _ = merge(pol, cmd(retract=[Retraction(attribute="genre", value="horror")]), now=NOW)
    assert [p.value for p in pol.preferences] == ["War"]


def test_unmatched_retraction_is_noop():
    pol, _ = merge(RecPolicy(), cmd(P()), now=NOW)
    pol2, rep = merge(pol, cmd(retract=[Retraction(attribute="tag", value="zombies")]), now=NOW)
    assert pol2.preferences == pol.preferences and rep.unmatched_retractions and not rep.changed


def test_reset_clears():
    pol, _ = merge(RecPolicy(), cmd(P(), Y("ge", 1990)), now=NOW)
    pol, rep = merge(pol, cmd(reset=True), now=NOW)
    assert pol.preferences == [] and rep.reset


def test_contradictory_command_applies_nothing():
    pol, _ = merge(RecPolicy(), cmd(P(value="War")), now=NOW)
    with pytest.raises(ContradictoryCommandError):
        merge(pol, cmd(P(polarity="+"), P(polarity="-")), now=NOW)


def test_expired_dropped_on_load():
    pol = RecPolicy(preferences=[P(expires_at=NOW - timedelta(seconds=1)), P(value="War")])
    assert [p.value for p in pol.active(NOW).preferences] == ["War"]
    new, rep = merge(pol, cmd(), now=NOW)
    assert rep.expired == 1 and len(new.preferences) == 1


def test_session_scope_lives_in_its_session():
    pol, _ = merge(RecPolicy(), cmd(P(scope="session")), now=NOW, session_id="s1")
    assert pol.preferences[0].session_id == "s1"
    assert pol.active(NOW, "s1").preferences and not pol.active(NOW, "s2").preferences


def test_next_feed_consumed_after_serving():
    pol, _ = merge(RecPolicy(), cmd(P(scope="next_feed"), P(value="War")), now=NOW)
    after = consume_next_feed(pol)
    assert [p.value for p in after.preferences] == ["War"] and after.feeds_served == 1


def test_persistence_in_memory_store_isolated(store):
    apply_command(store, "t", "alice", cmd(P()), actor="test")
    apply_command(store, "t", "bob", cmd(P(value="War", polarity="+")), actor="test")
    assert [p.value for p in load_policy(store, "t", "alice").preferences] == ["Horror"]
    assert [p.value for p in load_policy(store, "t", "bob").preferences] == ["War"]
    assert load_policy(store, "other-tenant", "alice").preferences == []
    mark_feed_served(store, "t", "alice", actor="test")
    assert store.get("t", "alice").version == 2


def test_persistence_through_spine_settings_store(tmp_path):
    import guardrails.store as sql

    s = sql.SettingsStore(f"sqlite:///{tmp_path / 'settings.db'}")
    try:
        rep = apply_command(s, "default", "alice", cmd(P(), Y("ge", 1990)), actor="router")
        assert len(rep.added) == 2
        assert len(load_policy(s, "default", "alice").preferences) == 2
        assert load_policy(s, "default", "bob").preferences == []
        stored = s.get("default", "alice")
        assert stored.version == 1 and SECTION in stored.settings
        assert s.history("default", "alice")[0].actor == "router"
        from guardrails.errors import ConfigError

        with pytest.raises(ConfigError):  # the store validates the section through RecPolicy (entry point)
            s.update_section("default", "alice", SECTION, lambda d: {"preferences": [{"bogus": 1}]}, actor="x")
    finally:
        s.close()


# ---------------------------------------------------------------- session 25 audit
def test_a_soft_year_wish_never_removes_a_hard_bound():
    """"nothing before 1990" then "a few more after 2010" replaced the hard bound by the soft wish."""
    pol, _ = merge(RecPolicy(), cmd(Y("ge", 1990)), now=NOW)
    pol, rep = merge(pol, cmd(Y("ge", 2011, kind="soft")), now=NOW)
    assert {(p.kind, p.value) for p in pol.preferences} == {("hard", 1990), ("soft", 2011)} and not rep.replaced
    pol, rep = merge(pol, cmd(Y("ge", 2000)), now=NOW)  # a new hard bound still replaces the old one
    assert {(p.kind, p.value) for p in pol.preferences} == {("hard", 2000), ("soft", 2011)} and rep.replaced


def test_a_lasting_rule_after_a_temporary_one_is_kept():
    """"no horror this week" then "no horror" was "preserved": the lasting rule vanished with the week."""
    pol, _ = merge(RecPolicy(), cmd(P(expires_at=NOW + timedelta(days=7))), now=NOW)
    pol, rep = merge(pol, cmd(P()), now=NOW)
    assert [p.expires_at for p in pol.preferences] == [None] and rep.replaced and not rep.preserved


def test_another_sessions_wishes_are_kept_and_one_without_a_session_ends():
    pol, _ = merge(RecPolicy(), cmd(P(kind="soft", polarity="+", value="Comedy", scope="session")), now=NOW,
                   session_id="phone")
    pol, rep = merge(pol, cmd(P()), now=NOW, session_id="tv")  # used to drop phone's live wish (expired=1)
    assert rep.expired == 0 and {p.value for p in pol.active(NOW, "phone").preferences} == {"Comedy", "Horror"}
    assert {p.value for p in pol.active(NOW, "tv").preferences} == {"Horror"}
    assert {p.value for p in pol.active(NOW + timedelta(hours=13), "phone").preferences} == {"Horror"}  # it ends
    pol, _ = merge(RecPolicy(), cmd(P(kind="soft", polarity="+", value="Comedy", scope="session")), now=NOW)
    assert pol.active(NOW + timedelta(hours=1)).preferences  # no session id: it lasts a while...
    assert not pol.active(NOW + timedelta(days=365)).preferences  # ...not forever


def test_a_session_wish_stored_without_an_expiry_ends_too():
    old = P(kind="soft", polarity="+", value="Comedy", scope="session", session_id="phone", created_at=NOW)
    pol = RecPolicy(preferences=[old])  # as stored before session wishes got an expiry
    assert pol.active(NOW + timedelta(hours=1), "phone").preferences
    assert not pol.active(NOW + timedelta(hours=13), "phone").preferences
    new, rep = merge(pol, cmd(P()), now=NOW + timedelta(hours=13), session_id="tv")
    assert rep.expired == 1 and [p.value for p in new.preferences] == ["Horror"]


def test_a_timed_wish_said_again_is_the_same_wish_lasting_longer():
    """Review of the fix above: comparing expiry times made every resend of a timed wish a replacement."""
    week = P(expires_at=NOW + timedelta(days=7))
    pol, _ = merge(RecPolicy(), cmd(week), now=NOW)
    later = NOW + timedelta(days=5)
    pol, rep = merge(pol, cmd(P(expires_at=later + timedelta(days=7))), now=later)
    assert rep.preserved and not rep.replaced and [p.id for p in pol.preferences] == [week.id]
    assert pol.preferences[0].expires_at == later + timedelta(days=7)


def test_past_the_limit_soft_wishes_go_before_hard_rules_and_are_reported():
    pol, _ = merge(RecPolicy(), cmd(P(), Y("ge", 1990)), now=NOW)
    tags = [P(attribute="tag", value=f"tag{i}", kind="soft", polarity="+") for i in range(63)]
    pol, rep = merge(pol, cmd(*tags[:32]), now=NOW)
    pol, rep = merge(pol, cmd(*tags[32:]), now=NOW)
    assert len(pol.preferences) == 64 and {("Horror", "hard"), (1990, "hard")} <= {
        (p.value, p.kind) for p in pol.preferences}
    assert rep.dropped == [tags[0].describe()] and "dropped" in rep.summary()


def test_a_command_with_more_preferences_than_a_policy_holds_is_refused(parser):
    from agents.schema import CommandError

    with pytest.raises(CommandError, match="at most 64"):
        parser.parse("more " + ", ".join(f"{g} movies" for g in ["horror", "comedy", "drama", "war", "western"] * 14))
