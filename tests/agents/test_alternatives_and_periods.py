"""Session 26: keep-only values listed as alternatives ("only horror or comedy") and stated periods ("for the next
two days", "until Friday"). Before, the first intersected the filters (only horror-comedies were shown) and the
second was read as "next feed only" or had no end at all."""

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from agents.lexicon import MAX_PERIOD, expiry_for
from agents.policy import RecPolicy, apply_command, load_policy, merge
from agents.router import CommandRouter, moderation_action
from agents.schema import CommandError, ParsedCommand, Preference, alternatives_id

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)  # a Sunday


class FakeModeration:
    def block(self, tenant_id, user_id, target, *, actor):
        return "ok"

    unblock = block


def _hard_genres(cmd):
    return {(p.value, p.any_of) for p in cmd.preferences if p.kind == "hard" and p.attribute == "genre"}


# ------------------------------------------------------------------------------------------- alternatives
@pytest.mark.parametrize("text", ["only horror or comedy", "only horror movies or comedies",
                                  "only horror/comedy", "only comedies and horror", "just horror, comedy"])
def test_listed_keep_only_values_are_alternatives(parser, text):
    cmd = parser.parse(text, now=NOW)
    found = _hard_genres(cmd)
    assert {v for v, _ in found} == {"Horror", "Comedy"}
    groups = {g for _, g in found}
    assert len(groups) == 1 and None not in groups, found


@pytest.mark.parametrize("text", ["only horror comedies", "only sci-fi thrillers", "only romantic comedies"])
def test_values_side_by_side_still_narrow_each_other(parser, text):
    cmd = parser.parse(text, now=NOW)
    assert len(cmd.preferences) == 2 and all(p.any_of is None for p in cmd.preferences)


def test_exclusions_and_wishes_are_not_grouped(parser):
    assert all(p.any_of is None for p in parser.parse("no horror or comedy", now=NOW).preferences)
    assert all(p.any_of is None for p in parser.parse("more horror or comedy", now=NOW).preferences)


@pytest.mark.parametrize("text", ["only horror comedies or dramas", "only romcoms or horror"])
def test_a_mix_of_alternatives_and_combined_values_is_refused(parser, text):
    with pytest.raises(CommandError, match="alternatives"):
        parser.parse(text, now=NOW)


def test_the_same_set_gets_the_same_id_and_a_different_set_another(parser):
    a = {g for _, g in _hard_genres(parser.parse("only horror or comedy", now=NOW))}
    b = {g for _, g in _hard_genres(parser.parse("only comedy or horror", now=NOW))}
    c = {g for _, g in _hard_genres(parser.parse("only horror or drama", now=NOW))}
    assert a == b and a != c


def test_any_of_only_on_hard_keep_only_filters():
    with pytest.raises(ValidationError, match="alternatives"):
        Preference(polarity="-", kind="hard", attribute="genre", value="Horror", any_of="1")
    with pytest.raises(ValidationError, match="alternatives"):
        Preference(polarity="+", kind="soft", attribute="genre", value="Horror", any_of="1")
    with pytest.raises(ValidationError, match="year"):
        Preference(polarity="+", kind="hard", attribute="year", operator="ge", value=1990, any_of="1")
    with pytest.raises(ValidationError):
        Preference(polarity="+", kind="hard", attribute="genre", value="Horror", any_of="not an id!")


def test_a_feed_of_alternatives_holds_both_and_nothing_else(parser, planner, catalog, store):
    apply_command(store, "t", "u", parser.parse("only horror or comedy", now=NOW), actor="test")
    feed = planner.recommend(load_policy(store, "t", "u"), 1, k=30)
    genres = [set(catalog.genres[catalog.index[m]]) for m in feed.items]
    assert len(genres) == 30 and not feed.plan.infeasible
    assert all(g & {"Horror", "Comedy"} for g in genres)
    assert any("Horror" in g and "Comedy" not in g for g in genres)  # an intersection would have none of these
    assert any("Comedy" in g and "Horror" not in g for g in genres)
    keep = planner.filter(load_policy(store, "t", "u").hard())
    horror = planner.filter([Preference(polarity="+", kind="hard", attribute="genre", value="Horror")])
    comedy = planner.filter([Preference(polarity="+", kind="hard", attribute="genre", value="Comedy")])
    assert (keep == (horror | comedy)).all()


def test_alternatives_and_other_filters_still_all_hold(parser, planner, catalog, store):
    apply_command(store, "t", "u", parser.parse("I want action or thriller, nothing before 1990", now=NOW),
                  actor="test")
    feed = planner.recommend(load_policy(store, "t", "u"), 1, k=20)
    for m in feed.items:
        i = catalog.index[m]
        assert set(catalog.genres[i]) & {"Action", "Thriller"} and catalog.years[i] >= 1990


def test_restating_a_set_preserves_it_and_a_new_set_replaces_it(parser):
    pol, _ = merge(RecPolicy(), parser.parse("only horror or comedy", now=NOW), now=NOW)
    pol, rep = merge(pol, parser.parse("only comedy or horror", now=NOW), now=NOW)
    assert len(rep.preserved) == 2 and not rep.replaced and not rep.added
    pol, rep = merge(pol, parser.parse("only horror or drama", now=NOW), now=NOW)
    assert {p.value for p in pol.preferences} == {"Horror", "Drama"}
    assert len({p.any_of for p in pol.preferences}) == 1


def test_a_filter_said_again_is_not_superseded_by_its_own_command(parser):
    """"only horror comedies" then "only horror dramas": Horror was preserved, then Drama superseded it."""
    pol, _ = merge(RecPolicy(), parser.parse("only horror comedies", now=NOW), now=NOW)
    pol, rep = merge(pol, parser.parse("only horror dramas", now=NOW), now=NOW)
    assert {p.value for p in pol.preferences} == {"Horror", "Drama"}, rep


# ------------------------------------------------------------------------------------------------ periods
@pytest.mark.parametrize("text,length", [
    ("tonight", timedelta(hours=12)), ("for the next two days", timedelta(days=2)),
    ("for 3 days", timedelta(days=3)), ("for a couple of days", timedelta(days=2)),
    ("for the next few hours", timedelta(hours=3)), ("until tomorrow", timedelta(days=1)),
    ("this weekend", timedelta(days=3)), ("this week", timedelta(days=7)), ("for a week", timedelta(days=7)),
    ("this month", timedelta(days=30)), ("till monday", timedelta(days=1)), ("until sunday", timedelta(days=7)),
    ("for 900 months", MAX_PERIOD), ("for the next week", timedelta(days=7)),
    ("for the next couple days", timedelta(days=2)), ("over the next two days", timedelta(days=2)),
    ("for a year", timedelta(days=365)), ("for the rest of the week", timedelta(days=7)),
])
def test_stated_periods(text, length):
    assert expiry_for(f"no horror {text}", NOW) == NOW + length


@pytest.mark.parametrize("text", ["no horror", "no horror for 0 days", "no horror for a while", "news about today's",
                                  "show me something for a day off"])
def test_no_period(text):
    assert expiry_for(text, NOW) is None


def test_a_period_of_days_holds_across_sessions_and_ends(parser, store):
    cmd = parser.parse("no horror for the next two days", now=NOW)
    (p,) = cmd.preferences
    assert (p.polarity, p.kind, p.scope, p.expires_at) == ("-", "hard", "persistent", NOW + timedelta(days=2))
    apply_command(store, "t", "u", cmd, actor="test", session_id="phone", now=NOW)
    tomorrow = NOW + timedelta(days=1)
    assert [q.value for q in load_policy(store, "t", "u", session_id="tv", now=tomorrow).preferences] == ["Horror"]
    assert not load_policy(store, "t", "u", session_id="tv", now=NOW + timedelta(days=2, minutes=1)).preferences


def test_a_short_period_stays_with_its_session(parser):
    (p,) = parser.parse("only dramas for the next few hours", now=NOW).preferences
    assert p.scope == "session" and p.expires_at == NOW + timedelta(hours=3)
    (q,) = parser.parse("no comedies for the next feed", now=NOW).preferences
    assert q.scope == "next_feed" and q.expires_at is None


def test_a_period_is_not_part_of_a_free_text_wish(parser):
    (p,) = parser.parse("something with car chases for two days", now=NOW).preferences
    assert p.attribute == "text" and "two days" not in str(p.value) and p.expires_at == NOW + timedelta(days=2)


def test_a_moderation_command_with_a_period_says_it_has_no_end(parser, store):
    m = moderation_action("block crypto shilling for the next two days")
    assert (m.target, m.stated_period) == ("crypto shilling", True)
    assert moderation_action("block news about today").target == "news about today"
    assert not moderation_action("block spam for now").stated_period
    res = CommandRouter(parser, store, FakeModeration()).route("block crypto shilling for two days", user_id="u")
    assert "no end date" in res.explanation and "'crypto shilling'" in res.explanation


def test_parsed_command_round_trips_with_alternatives(parser):
    cmd = parser.parse("only horror or comedy", now=NOW)
    again = ParsedCommand.model_validate_json(cmd.model_dump_json())
    assert _hard_genres(again) == _hard_genres(cmd)


# ------------------------------------------------------------------------------------------------ idiom rules
@pytest.mark.parametrize("text,want", [
    ("nothing from before 1960", {("year", "ge", "1960", "+", "hard")}),  # was le 1959: the opposite
    ("nothing from Star Wars", {("title", "contains", "star wars", "-", "hard")}),
    ("stop showing me comedies", {("genre", "eq", "comedy", "-", "hard")}),
    ("please stop recommending horror", {("genre", "eq", "horror", "-", "hard")}),
    ("never show me westerns again", {("genre", "eq", "western", "-", "hard")}),
    ("keep horror movies away from me", {("genre", "eq", "horror", "-", "hard")}),
    ("nothing but horror", {("genre", "eq", "horror", "+", "hard")}),  # the earlier idioms still win
    ("nothing too violent", {("tag", "eq", "violent", "-", "soft")}),  # a penalty, not a rule
])
def test_exclusion_idioms(parser, text, want):
    assert parser.parse(text, now=NOW).slots() == want


def test_stop_excluding_is_still_a_retraction(parser):
    assert parser.parse("stop excluding horror", now=NOW).slots() == {("retract", "genre", "horror", "", "")}


@pytest.mark.parametrize("text,want", [
    ("noir is fine again", {("retract", "genre", "film-noir", "", "")}),  # permission: the rule goes
    ("hey, you can show war movies again", {("retract", "genre", "war", "", "")}),
    ("show me fantasy again", {("genre", "eq", "fantasy", "+", "soft")}),  # a wish: re-enabled with a boost
    ("more like fargo", {("title", "like", "fargo (1996)", "+", "soft")}),  # lowercase, after "like"
    ("more horror, like always", {("genre", "eq", "horror", "+", "soft")}),  # not the film "Always"
])
def test_permission_and_lowercase_titles(parser, text, want):
    assert parser.parse(text, now=NOW).slots() == want


@pytest.mark.parametrize("text", ["show me horror", "show me horror movies", "please give me horror",
                                  "i want horror"])
def test_asking_for_a_value_wants_it(parser, text):
    """The n-gram heads read "show me X" as an exclusion (from "don't show me X")."""
    assert {(p.value, p.polarity) for p in parser.parse(text, now=NOW).preferences} == {("Horror", "+")}


@pytest.mark.parametrize("text", ["don't show me horror", "stop showing me horror", "show me less horror",
                                  "i want no horror", "show me anything but horror"])
def test_asking_with_a_negation_still_excludes(parser, text):
    assert {(p.value, p.polarity) for p in parser.parse(text, now=NOW).preferences} == {("Horror", "-")}


# ------------------------------------------------------------------------------------- moderation clauses
@pytest.mark.parametrize("text,want", [
    ("unblock spam and ads", [("unblock", "spam"), ("unblock", "ads")]),  # "ads" was blocked
    ("stop hiding insults and spam", [("unblock", "insults"), ("unblock", "spam")]),
    ("block crypto scams and unblock toxic", [("block", "crypto scams"), ("unblock", "toxic")]),
    ("no spam", [("block", "spam")]),  # the category was named "no spam"
    ("block posts about weapons and drugs", [("block", "posts about weapons"), ("block", "drugs")]),  # "drugs"
    # vanished
    ("block posts about weapons or drugs", [("block", "posts about weapons or drugs")]),  # "or": one category
    ("unblock insults but keep hiding spam", [("unblock", "insults"), ("block", "keep hiding spam")]),
    ("unblock toxic. Spam should stay blocked.", [("unblock", "toxic"), ("block", "spam should stay blocked")]),
    ("hide posts about politics or crime", [("block", "posts about politics or crime")]),  # no feed "only Crime"
    ("block spam and drugs", [("block", "spam"), ("block", "drugs")]),
    ("block ads and thanks", [("block", "ads")]),
    ("unblock spam, ads and scams", [("unblock", "spam"), ("unblock", "ads"), ("unblock", "scams")]),
    ("stop blocking insults, you idiot", [("unblock", "insults")]),  # who is spoken to is no category
    ("block spam, my friend", [("block", "spam")]),
    # review of fdc7d90: each of these made a category of the last word
    ("block spam, seriously", [("block", "spam")]),
    ("block spam, right now", [("block", "spam")]),
    ("block spam, right?", [("block", "spam")]),
    ("block spam, for real", [("block", "spam")]),
    ("unblock spam, ugh, finally", [("unblock", "spam")]),
    ("stop hiding insults, idiot", [("unblock", "insults")]),
    ("block spam and drugs please", [("block", "spam"), ("block", "drugs")]),  # "drugs please" was a feed filter
    ("block spam and ads too", [("block", "spam"), ("block", "ads")]),
    ("unblock toxic and negative", [("unblock", "toxic"), ("unblock", "negative")]),
    ("keep spam away from me", [("block", "spam")]),  # the category was "keep spam away from me"
    # second review: after a comma a bare target is a category again (328c778 sent it to the feed as "only drugs")
    ("block spam, drugs", [("block", "spam"), ("block", "drugs")]),
    ("unblock spam, gambling", [("unblock", "spam"), ("unblock", "gambling")]),
    ("block spam, weapons and drugs", [("block", "spam"), ("block", "weapons"), ("block", "drugs")]),
    ("block spam and the 90s", [("block", "spam")]),  # the whole message was refused ("no 90s")
    ("block posts about religion and war", [("block", "posts about religion"), ("block", "war")]),  # content
    ("unblock posts about religion and war", [("unblock", "posts about religion"), ("unblock", "war")]),
    ("block spam and gambling for now", [("block", "spam"), ("block", "gambling")]),  # was "gambling for"
    ("I want spam and ads gone", [("block", "spam"), ("block", "ads")]),
    ("block spam and italy", [("block", "spam"), ("block", "italy")]),  # not an adverb
    ("block spam, online gambling", [("block", "spam"), ("block", "online gambling")]),
    # third review: a remark after a comma made a category of its own
    ("block spam, getting annoying", [("block", "spam")]),
    ("block ads, so annoying", [("block", "ads")]),
    ("block spam, much appreciated", [("block", "spam")]),
    ("block crypto, sick of it", [("block", "crypto")]),
    ("block the spam, driving me crazy", [("block", "spam")]),
    ("mute trolls, getting out of hand", [("block", "trolls")]),
    ("hide ads, cheers mate", [("block", "ads")]),
    ("block spam, good night", [("block", "spam")]),
    ("block spam, pretty please", [("block", "spam")]),
    ("block spam, finally some peace", [("block", "spam")]),
    ("spam is ok now", [("unblock", "spam")]),  # was a block
    ("I'm fine with ads", [("unblock", "ads")]),
])
def test_moderation_clauses_keep_their_operation_and_target(parser, text, want):
    kind, cmd, mods = CommandRouter(parser).classify(text)
    assert [(m.op, m.target) for m in mods] == want and cmd is None


@pytest.mark.parametrize("text", ["block spam and horror", "block spam and horror too", "block spam, also horror",
                                  "no spam and horror", "block spam and horror movies", "block spam and horror flicks",
                                  "block spam and horror for a week"])
def test_a_feed_value_after_a_block_is_excluded_from_the_feed(parser, text):
    """It became a moderation category "horror" (fdc7d90), and before that "only horror" in the feed."""
    _, cmd, mods = CommandRouter(parser).classify(text)
    assert [(m.op, m.target) for m in mods] == [("block", "spam")]
    assert cmd is not None and cmd.slots() == {("genre", "eq", "horror", "-", "hard")}


def test_a_feed_value_after_an_unblock_lifts_its_rule(parser, store):
    router = CommandRouter(parser, store)
    router.route("no horror movies", user_id="u", tenant_id="default")
    _, cmd, mods = router.classify("unblock spam and horror")
    assert [(m.op, m.target) for m in mods] == [("unblock", "spam")] and cmd is not None
    assert not cmd.preferences and [r.value for r in cmd.retractions] == ["Horror"]


def test_a_feed_clause_joined_by_and_goes_to_the_feed(parser):
    kind, cmd, mods = CommandRouter(parser).classify("no horror movies and spam")
    assert [(m.op, m.target) for m in mods] == [("block", "spam")]
    assert cmd is not None and cmd.slots() == {("genre", "eq", "horror", "-", "hard")}
    _, cmd, mods = CommandRouter(parser).classify("no spam, more comedies")
    assert [(m.op, m.target) for m in mods] == [("block", "spam")] and cmd is not None


# ------------------------------------------------- review of the above (session 26): what it over-matched
@pytest.mark.parametrize("text,value", [
    ("horror this weekend", "Horror"), ("comedies for the next two days", "Comedy"),
    ("westerns for a couple of days", "Western"), ("sci-fi until friday", "Sci-Fi")])
def test_a_wish_with_a_period_is_not_an_exclusion(parser, text, value):
    """The heads read "X for now" (what the period was rewritten to) as avoiding X."""
    (p,) = parser.parse(text, now=NOW).preferences
    assert (p.value, p.polarity, p.expires_at is not None) == (value, "+", True)


def test_alternatives_with_a_period_stay_one_set(parser):
    prefs = parser.parse("only horror or comedy this weekend", now=NOW).preferences
    assert {(p.value, p.polarity, p.expires_at) for p in prefs} == {("Horror", "+", NOW + timedelta(days=3)),
                                                                   ("Comedy", "+", NOW + timedelta(days=3))}
    assert len({p.any_of for p in prefs}) == 1 and prefs[0].any_of is not None


@pytest.mark.parametrize("text", ["nothing beats a good horror movie", "nothing like a good comedy",
                                  "nothing is better than sci-fi"])
def test_chat_opening_with_nothing_is_no_exclusion(parser, text):
    assert not any(p.polarity == "-" and p.kind == "hard" for p in parser.parse(text, now=NOW).preferences)


def test_stop_recommending_only_x_is_not_an_exclusion_of_x(parser):
    assert all(p.polarity == "+" for p in parser.parse("stop recommending only horror", now=NOW).preferences)


@pytest.mark.parametrize("text", ["keep horror away from the kids", "i never want to show horror to my kids"])
def test_kids_as_audience_are_not_the_children_genre(parser, text):
    assert {p.value for p in parser.parse(text, now=NOW).preferences} == {"Horror"}


def test_a_year_as_an_alternative_is_refused(parser):
    with pytest.raises(CommandError, match="year range as an alternative"):
        parser.parse("only horror or 90s movies", now=NOW)
    assert len(parser.parse("only horror or comedy after 1990", now=NOW).preferences) == 3  # "after": a bound


def test_a_verb_like_is_not_a_title_cue(parser):
    assert {p.attribute for p in parser.parse("i'd like vampires", now=NOW).preferences} == {"text"}


def test_set_ids_name_their_sets_whoever_made_them(parser, planner):
    """An LLM reusing "1" for two commands joined unrelated keep-only filters into one set."""
    def llm_made(*values):
        return ParsedCommand(text="x", preferences=[
            Preference(polarity="+", kind="hard", attribute=a, value=v, any_of="1") for a, v in values])
    pol, _ = merge(RecPolicy(), llm_made(("genre", "Horror"), ("genre", "Comedy")), now=NOW)
    pol, _ = merge(pol, llm_made(("tag", "zombies"), ("tag", "vampires")), now=NOW)
    assert len({p.any_of for p in pol.preferences}) == 2
    both = planner.filter(pol.hard())
    genres = planner.filter(pol.hard()[:2])
    assert both.sum() < genres.sum()  # (horror or comedy) and (zombies or vampires), not any of the four
    pol, _ = merge(RecPolicy(), llm_made(("genre", "Horror")), now=NOW)
    assert pol.preferences[0].any_of is None  # a set of one is no set


def test_the_llm_parser_names_its_sets_too():
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from agents.llm_parser import LLMParser

    reply = ('{"preferences": [{"polarity": "+", "kind": "hard", "attribute": "genre", "value": "horror", '
             '"any_of": "1"}, {"polarity": "+", "kind": "hard", "attribute": "genre", "value": "comedy", '
             '"any_of": "1"}], "retractions": [], "reset": false}')
    cmd = LLMParser(GenericFakeChatModel(messages=iter([AIMessage(content=reply)]))).parse("only horror or comedy")
    assert {p.any_of for p in cmd.preferences} == {alternatives_id([("genre", "Horror"), ("genre", "Comedy")])}


@pytest.mark.parametrize("first,then,left", [
    ("only horror or zombies", "only comedy or drama", {"Comedy", "Drama"}),  # zombies stayed: 2 films left
    ("only horror or comedy", "comedy is fine again", set()),  # Horror alone narrowed the feed
    ("only horror or comedy", "allow comedy", set()),
    ("only horror or comedy", "no comedy", {"Horror", "Comedy"}),  # a new rule on a member: the rest stays
])
def test_changing_one_alternative_changes_its_set(parser, first, then, left):
    pol, _ = merge(RecPolicy(), parser.parse(first, now=NOW), now=NOW)
    pol, _ = merge(pol, parser.parse(then, now=NOW), now=NOW)
    assert {p.value for p in pol.preferences} == left


@pytest.mark.parametrize("text,target,period", [
    ("block posts about this weekend", "posts about this weekend", False),
    ("block posts about what happened over the weekend", "posts about what happened over the weekend", False),
    ("block spam through friday", "spam", True),
])
def test_a_period_that_is_the_topic_stays_in_the_target(text, target, period):
    m = moderation_action(text)
    assert (m.target, m.stated_period) == (target, period)


# --------------------------------------------------------------------- questions are chat (walkthrough)
@pytest.mark.parametrize("text", ["What year was Fargo released?",
                                  "My kids hate horror, what should we do this weekend?",
                                  "I don't like comedy shows much, what about documentaries?",
                                  "Who should I start at QB in fantasy football this week?",
                                  "why is spam getting through?", "how do I see more horror?", "is fargo any good?",
                                  # no "?", or a filler clause first (review of fdc7d90: these changed the feed)
                                  "what year was Fargo released", "which is better, Alien or Aliens",
                                  "how do I see more horror", "just wondering, what year was Fargo released?",
                                  "never mind, what year was Alien released?",
                                  "btw, what year was Fargo released", "by the way, what year was Fargo released",
                                  "anyway, what year was Fargo released", "also what year was Fargo released",
                                  "whats new in horror", "how many horror movies are there",
                                  "well, what about comedies",
                                  # third review: no "?", or a first clause that only looks like a command
                                  "how come I still see spam", "why so many ads lately", "who keeps sending me spam",
                                  "what if I block ads", "what happens when I unblock spam", "why only comedies today",
                                  "how many Alien movies are there", "never watched Alien, is it good?",
                                  "keep in mind I'm new here, what's Fargo about?",
                                  "I don't want to be rude, but is Titanic overrated?",
                                  "no offense, but the comments here are toxic, right?",
                                  "forget it, what's on tonight?", "more importantly, is Alien scary?"])
def test_questions_change_no_settings(parser, store, text):
    res = CommandRouter(parser, store, FakeModeration()).route(text, user_id="u")
    assert (res.kind.value, res.applied) == ("neither", False) and not store.get("default", "u").settings


@pytest.mark.parametrize("text,want", [
    ("can you stop showing me horror?", {("genre", "eq", "horror", "-", "hard")}),
    ("could I get more comedies?", {("genre", "eq", "comedy", "+", "soft")}),
    ("no horror please. what is on tonight?", {("genre", "eq", "horror", "-", "hard")}),
    ("can you recommend more comedies?", {("genre", "eq", "comedy", "+", "soft")}),  # ignored in fdc7d90
    ("can you add more comedies?", {("genre", "eq", "comedy", "+", "soft")}),
    ("what about more comedies?", {("genre", "eq", "comedy", "+", "soft")}),
    ("how about no horror", {("genre", "eq", "horror", "-", "hard")}),
    ("just no horror?", {("genre", "eq", "horror", "-", "hard")}),
    ("What I want is no horror", {("genre", "eq", "horror", "-", "hard")}),  # a question by its first word
    ("what i really want is more comedies", {("genre", "eq", "comedy", "+", "soft")}),
    ("which reminds me no horror", {("genre", "eq", "horror", "-", "hard")}),
    ("who knows, maybe more comedies", {("genre", "eq", "comedy", "+", "soft")}),
    ("why not more comedies", {("genre", "eq", "comedy", "+", "soft")}),
    ("i dont want horror", {("genre", "eq", "horror", "-", "hard")}),  # the heads read "dont" as wanting it
])
def test_requests_asked_as_questions_are_commands(parser, text, want):
    kind, cmd, _ = CommandRouter(parser).classify(text)
    assert cmd is not None and cmd.slots() == want


def test_a_moderation_request_asked_as_a_question(parser):
    _, _, mods = CommandRouter(parser).classify("Could you please unblock spam?")
    assert [(m.op, m.target) for m in mods] == [("unblock", "spam")]


def test_rec_cli_says_when_it_understood_nothing():
    """Walkthrough: `rec parse "what's the weather"` and `rec recommend -c ...` were silent about commands they did
    not understand (exit 0, feed unchanged)."""
    from typer.testing import CliRunner

    from agents.cli import app

    res = CliRunner().invoke(app, ["parse", "what's the weather like", "--parser", "bow"])
    assert res.exit_code == 0 and "no feed command understood" in res.stderr
    assert ParsedCommand.model_validate_json(res.stdout).is_empty


# ------------------------------------------------------------------------ second review (session 26)
@pytest.mark.parametrize("text", ["Could you recommend Fargo?", "would you suggest Alien?",
                                  "Would you recommend horror movies?", "What about horror?"])
def test_opinion_questions_change_nothing(parser, text):
    assert CommandRouter(parser).classify(text)[0].value == "neither"


@pytest.mark.parametrize("text", ["no horror?", "so, no horror?", "no horror??", "No horror movies, please?",
                                  "no horror, what do you think?", "When the kids are around, no horror please",
                                  "Which reminds me, no horror", "Where possible, no horror."])
def test_commands_with_a_question_mark_or_a_question_word_still_apply(parser, text):
    _, cmd, _ = CommandRouter(parser).classify(text)
    assert cmd is not None and cmd.slots() == {("genre", "eq", "horror", "-", "hard")}


@pytest.mark.parametrize("text", ["Could you recommend something like Alien?", "can you find me movies like Alien?"])
def test_asking_for_similar_films_is_a_wish(parser, text):
    _, cmd, _ = CommandRouter(parser).classify(text)
    assert cmd is not None and {(p.attribute, p.polarity) for p in cmd.preferences} == {("title", "+")}


def test_a_title_with_a_question_mark_is_still_a_wish(parser):
    _, cmd, _ = CommandRouter(parser).classify("more like What About Bob?")
    assert cmd is not None and {p.attribute for p in cmd.preferences} == {"title"}


@pytest.mark.parametrize("text", ["I want zero horror", "show me zero horror", "show me rarely horror",
                                  "I'd like horror gone", "I want horror gone", "I want horror out"])
def test_asking_with_an_exclusion_word_is_no_wish(parser, text):
    assert all(p.polarity == "-" for p in parser.parse(text, now=NOW).preferences)


@pytest.mark.parametrize("text,gone", [
    ("I want horror and comedy gone", {"Horror", "Comedy"}),
    ("I want horror, comedy and drama gone", {"Horror", "Comedy", "Drama"}),
    ("I'd like horror and thrillers out of my feed", {"Horror", "Thriller"}),
    ("I want comedies and horror out", {"Comedy", "Horror"}),
])
def test_a_wish_for_several_values_gone_excludes_each(parser, text, gone):
    # the split at "and" had left the first value in "I want X" (wanted) and only the last one excluded
    prefs = parser.parse(text, now=NOW).preferences
    assert {(p.attribute, p.value, p.polarity, p.kind) for p in prefs} == {("genre", g, "-", "hard") for g in gone}


@pytest.mark.parametrize("text,wanted,excluded", [("I want horror and comedy", {"Horror", "Comedy"}, set()),
                                                  ("I want horror and no comedy", {"Horror"}, {"Comedy"})])
def test_a_wish_for_several_values_without_gone_keeps_them(parser, text, wanted, excluded):
    prefs = parser.parse(text, now=NOW).preferences
    assert {p.value for p in prefs if p.polarity == "+"} == wanted
    assert {p.value for p in prefs if p.polarity == "-"} == excluded


@pytest.mark.parametrize("text,length", [("no horror today pls", timedelta(hours=12)),
                                         ("no horror in the next two days", timedelta(days=2)),
                                         ("no horror within the next 3 hours", timedelta(hours=3)),
                                         ("no horror this week either", timedelta(days=7)),
                                         ("no horror this week because of the kids", timedelta(days=7))])
def test_a_period_followed_by_ordinary_words(text, length):
    assert expiry_for(text, NOW) == NOW + length


@pytest.mark.parametrize("text", ["no movies over 2 hours", "no horror in two days"])
def test_lengths_and_starts_are_no_periods(text):
    assert expiry_for(text, NOW) is None


@pytest.mark.parametrize("then,wish", [("more comedy", ("Comedy", "+")), ("less horror", ("Horror", "-"))])
def test_a_soft_wish_on_one_alternative_keeps_the_set(parser, then, wish):
    """"only horror or comedy", then "less horror": the set went (and with the session-26 rule the whole of it: the
    feed was every genre); replacing one member left the other alone ("only comedy")."""
    pol, _ = merge(RecPolicy(), parser.parse("only horror or comedy", now=NOW), now=NOW)
    pol, _ = merge(pol, parser.parse(then, now=NOW), now=NOW)
    hard = {(p.value, p.kind, p.polarity) for p in pol.preferences if p.any_of is not None}
    assert hard == {("Horror", "hard", "+"), ("Comedy", "hard", "+")}
    assert [(p.value, p.polarity) for p in pol.preferences if p.kind == "soft"] == [wish]


def test_a_set_said_again_keeps_a_soft_wish_on_a_member(parser):
    """Second review: the set said again replaced the soft wish (two rules on Horror failed 'said again')."""
    pol, _ = merge(RecPolicy(), parser.parse("only horror or comedy", now=NOW), now=NOW)
    pol, _ = merge(pol, parser.parse("less horror", now=NOW), now=NOW)
    pol, report = merge(pol, parser.parse("only horror or comedy", now=NOW), now=NOW)
    assert not report.replaced and len(report.preserved) == 2
    assert {(p.value, p.kind, p.polarity) for p in pol.preferences} == {
        ("Horror", "hard", "+"), ("Comedy", "hard", "+"), ("Horror", "soft", "-")}


@pytest.mark.parametrize("text,want", [
    ("no horror tonight because my son gets nightmares", ("Horror", "-", "hard")),  # nothing applied
    ("no horror tonight as my son gets nightmares", ("Horror", "-", "hard")),
    ("only comedies tonight so we can relax", ("Comedy", "+", "hard")),
])
def test_a_reason_after_a_command_is_not_part_of_it(parser, text, want):
    _, cmd, _ = CommandRouter(parser).classify(text)
    assert cmd is not None and [(p.value, p.polarity, p.kind) for p in cmd.preferences] == [want]
    assert cmd.preferences[0].expires_at is not None  # "tonight" still ends it


def test_how_about_something_asks_for_it(parser):
    _, cmd, _ = CommandRouter(parser).classify("how about something funny")
    assert cmd is not None and {(p.value, p.polarity) for p in cmd.preferences} == {("funny", "+")}


@pytest.mark.parametrize("text", [
    "my inbox is full of spam haha", "the Trolls movie was cute", "I blocked spam yesterday",
    "the spam filter is working great", "love that you block ads", "Mean Girls has the best insults",
    "Catfish is a documentary about online scams", "so many bots in the comments lately lol",
    "never watched Jaws. Is it scary?", "no spoilers please, I haven't seen it yet"])
def test_mentioning_a_moderation_topic_changes_nothing(parser, store, text):
    """Third review: each blocked a category named after the whole sentence (Jaws: a title exclusion)."""
    res = CommandRouter(parser, store).route(text, user_id="u")
    assert (res.kind.value, res.applied) == ("neither", False) and not store.get("default", "u").settings


@pytest.mark.parametrize("text,targets", [
    ("yo block spam", ["spam"]), ("pls block ads thx", ["ads"]),
    ("ugh so much spam, block it", ["spam"]),
    ("I'm getting tons of crypto spam, can you block it?", ["crypto spam"]),
    ("the comments are so toxic, hide them", ["toxic"]),
    ("I need the ads gone asap", ["ads"]), ("I want crypto stuff out of my feed", ["crypto stuff"]),
    ("i'm sick of the ads", ["ads"]), ("please block the scammers, they keep messaging me", ["scammers"]),
])
def test_moderation_commands_in_chatty_forms(parser, text, targets):
    _, _, mods = CommandRouter(parser).classify(text)
    assert [(m.op, m.target) for m in mods] == [("block", t) for t in targets]  # not the remark around it


@pytest.mark.parametrize("text,want", [("only comedies since the 90s", ("year", 1990, "+")),
                                       ("no horror since the 80s please", ("year", 1979, "+"))])
def test_since_a_decade_is_a_date_not_a_reason(parser, text, want):
    """The reason rule cut "since the 90s" off (the year bound was lost)."""
    _, cmd, _ = CommandRouter(parser).classify(text)
    assert cmd is not None and want in {(p.attribute, p.value, p.polarity) for p in cmd.preferences}


@pytest.mark.parametrize("text,scope", [("for now, no horror", "session"), ("no horror, for now", "session"),
                                        ("tonight, no horror", "session"), ("no horror, tonight", "session"),
                                        ("no horror, just this time", "next_feed"),
                                        ("forever, no horror", "persistent")])
def test_a_period_said_apart_from_its_command_still_scopes_it(parser, text, scope):
    # a comma left "for now" / "just this time" as a clause of its own: the wish was stored as lasting, and "just"
    # became a free-text preference
    (pref,) = parser.parse(text, now=NOW).preferences
    assert (pref.attribute, pref.value, pref.polarity, pref.scope) == ("genre", "Horror", "-", scope)
    assert (pref.expires_at is not None) == ("tonight" in text)


@pytest.mark.parametrize("text,want", [
    ("please no more horror movies for the kids", {("genre", "Horror", "-")}),  # had also excluded Children
    ("only comedies for date night", {("genre", "Comedy", "+")}),  # had also filtered on the film "Date Night"
    ("only animation for the children", {("genre", "Animation", "+"), ("genre", "Children", "+")}),  # a wish keeps it
    ("something for the kids", {("genre", "Children", "+")}),  # alone, the audience is the request
])
def test_who_or_when_a_feed_is_for_is_no_value_of_it(parser, text, want):
    assert {(p.attribute, p.value, p.polarity) for p in parser.parse(text, now=NOW).preferences} == want


@pytest.mark.parametrize("text,want", [
    ("more like Dial M for Murder", ("title", "Dial M for Murder (1954)", "+")),
    ("something like Waiting for Guffman", ("title", "Waiting for Guffman (1996)", "+")),
    ("everybody's favourite comedies please", ("genre", "Comedy", "+")),
])
def test_titles_and_phrases_that_look_like_an_addressee_are_not_cross_user(parser, text, want):
    _, cmd, _ = CommandRouter(parser).classify(text)  # had raised CrossUserCommandError
    assert cmd is not None and [(p.attribute, p.value, p.polarity) for p in cmd.preferences] == [want]


@pytest.mark.parametrize("text", ["no horror for bob", "no horror for Annie", "set everyone's feed to no comedies",
                                  "reset everyones preferences", "unblock spam in everybody's moderation settings",
                                  # a title in the text is no way around the other checks
                                  "block horror for all the people I know", "do the same for Jackie Brown",
                                  "apply this to Annie Hall", "block horror in everyone's recs",
                                  "turn off horror in everyone's queue"])
def test_addressing_someone_else_is_still_refused(parser, text):
    from agents.router import CrossUserCommandError

    with pytest.raises(CrossUserCommandError):
        CommandRouter(parser).classify(text)


@pytest.mark.parametrize("earlier,later,left", [
    ("nothing before 2000", "actually 80s movies are fine too", set()),  # had become "only the 80s"
    ("no comedies", "90s films are fine as well", {("genre", "Comedy")}),  # nothing of the year's to lift
    ("more 90s movies", "80s movies are fine too", {("year", 1990), ("year", 1999)}),  # a boost is no bound
    ("only comedies", "romantic comedies are fine too", {("genre", "Comedy")}),  # asks to add: no lift
])
def test_permission_said_with_too_lifts_and_never_narrows(parser, earlier, later, left):
    policy, _ = merge(RecPolicy(), parser.parse(earlier, now=NOW), now=NOW)
    policy, _ = merge(policy, parser.parse(later, now=NOW), now=NOW)
    assert {(p.attribute, p.value) for p in policy.preferences} == left


@pytest.mark.parametrize("text,bound", [("no movies before '85", ("ge", 1985)), ("only movies after '99", ("ge", 2000)),
                                        ("nothing before \u201985 please", ("ge", 1985)),
                                        ("movies up to '05", ("le", 2005)),
                                        ("nothing before '29", ("ge", 1929))])  # not 2029: an empty feed
def test_a_year_written_short_after_a_bound_word(parser, text, bound):
    # had been a free-text wish "before '85"
    (pref,) = parser.parse(text, now=NOW).preferences
    assert (pref.attribute, pref.operator, pref.value, pref.kind) == ("year", *bound, "hard")


@pytest.mark.parametrize("text,want", [
    # a wish, then something else gone at a comma, "but" or a sentence end: not joined into the wish
    ("I want comedy but horror gone", {("Comedy", "+"), ("Horror", "-")}),
    ("I want comedy, but horror gone", {("Comedy", "+"), ("Horror", "-")}),
    ("I want comedy. Horror gone.", {("Comedy", "+"), ("Horror", "-")}),
    ("I want comedy and horror off", {("Comedy", "+"), ("Horror", "-")}),
    # "only for today" is left to the heads, which read "only" as a wish: the exclusion stays one
    ("no horror, only for today", {("Horror", "-")}),
    # a wish keeps the children's films it is for
    ("only comedies for kids", {("Comedy", "+"), ("Children", "+")}),
    ("more movies like Frozen for the kids", {("Frozen (2013)", "+"), ("Children", "+")}),
    # ("block horror except for the Scream movies" excluded the Scream films as well: refused since session 31,
    # see test_audit_fixes.test_an_exception_to_a_rule_is_refused)
])
def test_what_the_joins_and_the_audience_rule_leave_alone(parser, text, want):
    prefs = parser.parse(text, now=NOW).preferences
    assert {(p.value, p.polarity) for p in prefs if p.attribute != "text"} == want


@pytest.mark.parametrize("text", ["hmm, for now, no horror", "ok, tonight, no horror"])
def test_a_period_after_a_filler_opening_still_scopes(parser, text):
    (pref,) = parser.parse(text, now=NOW).preferences
    assert (pref.value, pref.polarity, pref.scope) == ("Horror", "-", "session")


@pytest.mark.parametrize("text,want", [
    ("no horror, only for today", {("genre", "Horror", "-")}),  # had also stored a free-text wish "only"
    ("only for tonight, no horror", {("genre", "Horror", "-")}),
    ("'95 or later please", {("year", 1995, "+")}),  # a short year opening the message was no year
    ("'85 or earlier", {("year", 1985, "+")}),
])
def test_no_wish_made_of_a_lone_only_and_short_years_opening_a_message(parser, text, want):
    assert {(p.attribute, p.value, p.polarity) for p in parser.parse(text, now=NOW).preferences} == want
