"""Regression tests for the agents audit (negated moderation, idiom polarity, bad text, cross-user phrasings, CLI
bounds, next_feed expiry, title retraction, compound genres, decades, refusal explanations, typos, eval nulls)."""

import json
from pathlib import Path

import pytest

from agents.llm_parser import LLMParser, ParserOutputError
from agents.policy import RecPolicy, apply_command, load_policy, merge
from agents.router import CommandRouter, CrossUserCommandError, RouteKind, check_identity_safe, moderation_action
from agents.schema import (
    CommandError,
    ContradictoryCommandError,
    InvalidTextError,
    ParsedCommand,
    Preference,
    Retraction,
)
from guardrails.errors import ConfigError

FIX = Path(__file__).parent / "fixtures"


class FakeModeration:
    def __init__(self):
        self.calls = []

    def block(self, tenant_id, user_id, target, *, actor):
        self.calls.append(("block", user_id, target))
        return "ok"

    def unblock(self, tenant_id, user_id, target, *, actor):
        self.calls.append(("unblock", user_id, target))
        return "ok"


@pytest.fixture()
def router(parser, store):
    return CommandRouter(parser, store, FakeModeration())


def _cli(args):
    from typer.testing import CliRunner

    from agents.cli import app

    return CliRunner().invoke(app, args)


# ---------------------------------------------------------------- 1. negated moderation requests are blocks
@pytest.mark.parametrize("text,target", [
    ("I don't want to see spam again", "spam"),
    ("don't allow crypto spam", "crypto spam"),
    ("please don't let spam through", "spam"),
    ("never allow insults", "insults"),
    ("I never want to see toxic comments again", "toxic comments"),
    ("stop allowing spam", "spam"),
    ("I dont want to see spam again", "spam"),  # apostrophes are often dropped
    ("dont let spam through", "spam"),
])
def test_negated_unblock_cue_is_a_block(router, text, target):
    res = router.route(text, user_id="alice", tenant_id="t")
    assert res.kind is RouteKind.MODERATION
    assert router.moderation.calls == [("block", "alice", target)]


@pytest.mark.parametrize("text,op", [
    ("allow spam", "unblock"), ("show me insults again", "unblock"), ("let spam through", "unblock"),
    ("I don't mind spam", "unblock"), ("don't block spam", "unblock"), ("stop blocking insults", "unblock"),
    ("spam is fine", "unblock"), ("spam is not fine", "block"), ("do not show me crypto spam", "block"),
    ("I dont mind spam", "unblock"), ("I do not mind spam", "unblock"), ("dont block insults", "unblock"),
    ("no longer block toxic messages", "unblock"),
])
def test_moderation_op_keeps_plain_phrasings(text, op):
    assert moderation_action(text).op == op


# ---------------------------------------------------------------- 2. idioms that flip polarity
@pytest.mark.parametrize("text,expected", [
    ("anything but horror", {("genre", "eq", "horror", "-", "hard")}),
    ("everything except comedies", {("genre", "eq", "comedy", "-", "hard")}),
    ("nothing but horror", {("genre", "eq", "horror", "+", "hard")}),
    ("show me horror again", {("genre", "eq", "horror", "+", "soft")}),
    ("include horror again", {("genre", "eq", "horror", "+", "soft")}),
    ("horror again please", {("genre", "eq", "horror", "+", "soft")}),
    ("bring back horror", {("genre", "eq", "horror", "+", "soft")}),
    ("put horror back", {("genre", "eq", "horror", "+", "soft")}),
    ("nothing too violent", {("tag", "eq", "violent", "-", "soft")}),
    ("hold the horror", {("genre", "eq", "horror", "-", "hard")}),
    ("I don't want horror again", {("genre", "eq", "horror", "-", "hard")}),  # negated: no re-enable
    ("no horror again", {("genre", "eq", "horror", "-", "hard")}),
    ("horror is not ok", set()),  # negated lift: no retraction
])
def test_polarity_idioms(parser, text, expected):
    assert parser.parse(text).slots() == expected


@pytest.mark.parametrize("again", ["show me horror again", "include horror again", "horror again please",
                                   "bring back horror", "put horror back", "allow horror", "unblock horror",
                                   "lift the horror ban", "horror is ok now", "horror movies are fine now"])
def test_reenable_removes_the_exclusion(router, store, again):
    router.route("no horror movies", user_id="u", tenant_id="t", session_id="s")
    router.route(again, user_id="u", tenant_id="t", session_id="s")
    prefs = load_policy(store, "t", "u", session_id="s").preferences
    assert not any(p.value == "Horror" and p.polarity == "-" for p in prefs)


def test_anything_but_excludes_in_the_feed(parser, planner, catalog):
    cmd = parser.parse("anything but horror")
    feed = planner.recommend(merge(RecPolicy(), cmd)[0], 1, k=10)
    assert feed.items and not any("Horror" in catalog.genres[catalog.index[m]] for m in feed.items)


# ---------------------------------------------------------------- 3. lone surrogates: typed error
def test_lone_surrogate_is_a_typed_error(parser, router, store):
    with pytest.raises(InvalidTextError):
        parser.parse("no horror \udcff")
    res = router.route("no horror \udcff, stop showing me spam", user_id="alice", tenant_id="t")
    assert res.error == "InvalidTextError" and not res.applied
    assert store.audit == [] and router.moderation.calls == []

    class Chat:
        def invoke(self, messages):  # pragma: no cover - must not be reached
            raise AssertionError("the model must not see invalid text")

    with pytest.raises(InvalidTextError):
        LLMParser(Chat()).parse("no horror \udcff")


def test_cli_parse_surrogate_prints_one_json_error(parser, monkeypatch):
    import agents.parser as P

    monkeypatch.setitem(P._default, "bow", parser)
    res = _cli(["parse", "no horror \udcff", "--parser", "bow"])
    assert res.exit_code == 2 and "InvalidTextError" in json.loads(res.stdout)["error"]


def test_an_unknown_parser_backend_is_a_config_error():
    """`rec parse --parser xyz` ended in a FileNotFoundError traceback (student_xyz.npz); the plugin's rec_parser
    setting went the same way."""
    import agents.parser as P

    with pytest.raises(ConfigError, match="unknown parser backend"):
        P.default_parser("xyz")
    res = _cli(["parse", "no horror", "--parser", "xyz"])
    assert res.exit_code == 2 and "unknown parser backend" in json.loads(res.stdout)["error"]


# ---------------------------------------------------------------- 4. LLM genre values canonicalised
def _llm_reply(value):
    return json.dumps({"preferences": [{"polarity": "-", "kind": "hard", "attribute": "genre", "operator": "eq",
                                        "value": value, "scope": "persistent"}], "retractions": [], "reset": False})


def test_llm_genre_value_canonicalised(catalog, planner):
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    cmd = LLMParser(FakeListChatModel(responses=[_llm_reply("horror")])).parse("no horror")
    assert [p.value for p in cmd.preferences] == ["Horror"]
    feed = planner.recommend(merge(RecPolicy(), cmd)[0], 1, k=10)
    assert not any("Horror" in catalog.genres[catalog.index[m]] for m in feed.items)


def test_llm_unknown_genre_is_repaired_or_rejected():
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    with pytest.raises(ParserOutputError, match="not one of"):
        LLMParser(FakeListChatModel(responses=[_llm_reply("spooky"), _llm_reply("spooky")])).parse("no spooky")


def test_catalog_mask_and_check_agree_on_genre_case(catalog):
    lower = Preference(polarity="-", kind="hard", attribute="genre", value="horror")
    m = catalog.mask(lower)
    assert m.sum() > 0
    assert all(m[i] == catalog.check(i, "genre", "includes", "horror") for i in range(0, len(catalog), 37))


# ---------------------------------------------------------------- 5. commands addressed to someone else
@pytest.mark.parametrize("text", ["no horror for bob", "no horror for @bob", "no horror for uid 5",
                                  "as bob, reset my preferences", "no horror for bob please",
                                  "no horror for alice@example.com",
                                  # audience words are allowed only at the end of a clause (review)
                                  "as mom, reset my preferences", "for dad: unblock spam",
                                  "copy these settings to mom", "do the same for dad", "apply this to wife"])
def test_addressed_to_another_user_is_refused(router, store, text):
    res = router.route(text, user_id="alice", tenant_id="t")
    assert res.kind is RouteKind.REJECTED and res.error == "CrossUserCommandError" and store.audit == []


@pytest.mark.parametrize("text", ["no horror for me", "no horror for now", "no horror for my kids",
                                  "no horror for good", "only comedies for halloween", "no horror for kids",
                                  "more like Amelie for comedies", "as always, no horror", "no horror, for real",
                                  "stop showing me posts from bob", "no horror for the next feed",
                                  "something light for sunday", "recommend something for friday.",
                                  "a movie for two", "nothing scary for dad"])
def test_for_phrases_that_scope_content_still_allowed(text):
    check_identity_safe(text)


# ---------------------------------------------------------------- 6. `rec recommend` bounds and errors
@pytest.mark.parametrize("k", ["0", "-5", "100000"])
def test_recommend_rejects_out_of_range_k(k):
    res = _cli(["recommend", "--user", "1", "--k", k, "--json"])
    assert res.exit_code == 2 and "--k" in json.loads(res.stdout)["error"]


def test_recommend_rejects_unknown_user(base):
    res = _cli(["recommend", "--user", "99999", "--k", "3", "--json"])
    assert res.exit_code == 2 and "not a MovieLens user" in json.loads(res.stdout)["error"]


def test_recommend_without_data_is_one_json_error(monkeypatch):
    import agents.catalog as C
    from guardrails.errors import DataNotAvailableError

    def missing(*a, **kw):
        raise DataNotAvailableError("MovieLens movies.csv not found under /nonexistent")

    monkeypatch.setattr(C, "load_catalog", missing)
    res = _cli(["recommend", "--user", "1", "--json"])
    assert res.exit_code == 2 and "DataNotAvailableError" in json.loads(res.stdout)["error"]


def test_load_ratings_missing_is_typed(tmp_path):
    from agents.catalog import load_ratings
    from guardrails.errors import DataNotAvailableError

    with pytest.raises(DataNotAvailableError):
        load_ratings(str(tmp_path))


@pytest.mark.parametrize("k", [0, -3])
def test_planner_refuses_non_positive_k(planner, k):
    from guardrails.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        planner.recommend(RecPolicy(), 1, k=k)


# ---------------------------------------------------------------- 7. next_feed preferences expire via the tool
def test_recommend_tool_consumes_next_feed_preferences(parser, store, planner):
    from agents.plugin import make_tools

    router = CommandRouter(parser, store)
    cmd = ParsedCommand(preferences=[Preference(polarity="-", kind="hard", attribute="genre", value="Horror",
                                                scope="next_feed")])
    apply_command(store, "t", "u1", cmd, actor="test", session_id="s")

    def recommend(user_id, k):
        return planner.recommend(load_policy(store, "t", user_id, session_id="s"), None, k=k)

    tools = {t.name: t for t in make_tools(router, user_id="u1", tenant_id="t", session_id="s",
                                           recommend=recommend)}
    assert load_policy(store, "t", "u1", session_id="s").preferences
    tools["recommend_movies"].invoke({"k": 5})
    assert load_policy(store, "t", "u1", session_id="s").preferences == []
    assert load_policy(store, "t", "other").preferences == []
    # serving a feed with nothing to end writes nothing (review: every call created a version and audit row)
    writes = len(store.audit)
    tools["recommend_movies"].invoke({"k": 5})
    assert len(store.audit) == writes
    other = {t.name: t for t in make_tools(router, user_id="fresh", tenant_id="t", recommend=recommend)}
    other["recommend_movies"].invoke({"k": 3})
    assert len(store.audit) == writes and store.get("t", "fresh").version == 0


# ---------------------------------------------------------------- 8. title retraction as the user named it
def test_forget_title_matches_full_catalog_title():
    like = Preference(polarity="+", kind="soft", attribute="title", operator="like",
                      value="Amelie (Fabuleux destin d'Amélie Poulain, Le) (2001)")
    matrix = Preference(polarity="+", kind="soft", attribute="title", operator="like", value="Matrix, The (1999)")
    assert Retraction(attribute="title", value="Amelie").matches(like)
    assert Retraction(attribute="title", value="The Matrix").matches(matrix)
    assert not Retraction(attribute="title", value="Amelie").matches(matrix)
    pol, rep = merge(RecPolicy(preferences=[like, matrix]),
                     ParsedCommand(retractions=[Retraction(attribute="title", value="Amelie")]))
    assert pol.preferences == [matrix] and len(rep.retracted) == 1


# ---------------------------------------------------------------- 9. romantic comedies, consistently
def test_romantic_comedies_phrasings_agree(parser, planner, catalog):
    a, b = parser.parse("no romantic comedies"), parser.parse("no romcoms")
    assert a.slots() == b.slots() == {("genre", "eq", "romance", "-", "hard")}
    keep = planner.filter(a.preferences)
    removed = len(catalog) - int(keep.sum())
    both = sum(1 for g in catalog.genres if {"Romance", "Comedy"} <= g)
    either = sum(1 for g in catalog.genres if {"Romance", "Comedy"} & g)
    assert both <= removed < either  # every romcom excluded, far fewer casualties than Romance-or-Comedy
    assert not any({"Romance", "Comedy"} <= catalog.genres[i] for i in range(len(catalog)) if keep[i])
    only = parser.parse("only romantic comedies").slots()
    assert only == {("genre", "eq", "romance", "+", "hard"), ("genre", "eq", "comedy", "+", "hard")}
    assert parser.parse("only romcoms").slots() == only


# ---------------------------------------------------------------- 10. excluding a decade: clear message
@pytest.mark.parametrize("text", ["no 80s movies", "no movies from the 2010s", "nothing between 1980 and 1995"])
def test_negated_decade_says_not_supported(parser, text):
    with pytest.raises(CommandError, match="not supported") as err:
        parser.parse(text)
    assert not isinstance(err.value, ContradictoryCommandError)


# ---------------------------------------------------------------- 11. refusals explained by error class
def test_detector_explains_refusal_without_quoting(parser, store):
    from agents.plugin import CommandDetector
    from guardrails.decision import Stage
    from guardrails.detector import CheckRequest

    det = CommandDetector(CommandRouter(parser, store))
    req = CheckRequest(stage=Stage.INPUT, user_id="alice", session_id="s1", tenant_id="t",
                       text="only horror and no horror zqxmarker")
    f = {x.category: x for x in det.predict(req)}["rec_command"]
    assert "refused" in f.explanation and "ContradictoryCommandError" in f.explanation
    assert "zqxmarker" not in f.explanation and store.audit == []


# ---------------------------------------------------------------- 12. genre typos
@pytest.mark.parametrize("text,expected", [
    ("no horor", {("genre", "eq", "horror", "-", "hard")}),
    ("no comdies", {("genre", "eq", "comedy", "-", "hard")}),
    ("more comedys", {("genre", "eq", "comedy", "+", "soft")}),
    ("no thriler", {("genre", "eq", "thriller", "-", "hard")}),
])
def test_genre_typos_are_understood(parser, text, expected):
    assert parser.parse(text).slots() == expected


@pytest.mark.parametrize("text", ["more eastern movies", "no mastery", "no war", "more action",
                                  "i like all kinds of comedies", "movies about docks", "no skids"])
def test_fuzzy_genre_matching_is_conservative(parser, text):
    genres = {p.value for p in parser.parse(text).preferences if p.attribute == "genre"}
    assert not genres & {"Western", "Mystery", "Children", "Documentary"}  # "kinds" is not "kids" (review)


# ---------------------------------------------------------------- 13. rec eval: null check values
def test_rec_eval_refuses_null_check_value(tmp_path):
    first, second = (json.loads(x) for x in (FIX / "rec_scripts.jsonl").read_text().splitlines()[:2])
    second["checks"] = [{"attr": "title", "op": "includes", "value": None}]
    data = tmp_path / "s.jsonl"
    data.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    res = _cli(["eval", "--data", str(data), "--json", "--parser", "bow", "--no-semantic"])
    assert res.exit_code == 2 and "line 2" in json.loads(res.stdout)["error"]


@pytest.mark.parametrize("check, kind, match", [
    ({"attr": "title", "op": "excludes", "value": ["Star Wars"]}, "hard", "title check's value must be a string"),
    ({"attr": "tag", "op": "includes", "value": 5}, "soft", "tag check's value must be a string"),
    ({"attr": "genre", "op": "excludes", "value": "Horror"}, "banana", "kind must be"),
])
def test_rec_eval_refuses_checks_that_would_hold_trivially(tmp_path, check, kind, match):
    """A list never equals a title, so an 'excludes' check on it always held (hard_satisfaction 1.0)."""
    first = json.loads((FIX / "rec_scripts.jsonl").read_text().splitlines()[0])
    data = tmp_path / "s.jsonl"
    data.write_text(json.dumps({**first, "checks": [check], "kind": kind}) + "\n")
    res = _cli(["eval", "--data", str(data), "--json", "--parser", "bow", "--no-semantic"])
    assert res.exit_code == 2 and match in json.loads(res.stdout)["error"]


def test_rec_eval_refuses_a_file_with_no_scripts(tmp_path):
    data = tmp_path / "blank.jsonl"
    data.write_text("\n  \n")
    res = _cli(["eval", "--data", str(data), "--json", "--parser", "bow", "--no-semantic"])
    assert res.exit_code == 2 and "no rec scripts" in json.loads(res.stdout)["error"]


@pytest.mark.parametrize("text,expected", [
    ("no horror for my kids", {("genre", "eq", "horror", "-", "hard")}),  # was also "- hard Children"
    ("more kids movies for my kids", {("genre", "eq", "children", "+", "soft")}),
    ("more movies for kids", {("genre", "eq", "children", "+", "soft")}),  # no possessive: still the genre
])
def test_an_audience_with_a_possessive_is_not_the_children_genre(parser, text, expected):
    assert parser.parse(text).slots() == expected


# --------------------------------------------------------------------------- review, session 31

@pytest.mark.parametrize("remark", ["show my settings", "don't reset anything", "never reset my preferences",
                                    "save my settings", "keep my settings", "list my filters", "print my preferences",
                                    "don't change my settings", "unblock everything"])
def test_remarks_about_settings_do_not_wipe_the_policy(router, store, remark):
    """The intent head read remarks about settings as a reset and the whole feed policy went."""
    router.route("no horror, and nothing before 1990", user_id="u", tenant_id="t", session_id="s")
    before = load_policy(store, "t", "u", session_id="s").preferences
    assert len(before) == 2
    router.route(remark, user_id="u", tenant_id="t", session_id="s")
    assert load_policy(store, "t", "u", session_id="s").preferences == before, remark


@pytest.mark.parametrize("ask", ["reset my preferences", "start over", "clear all my filters", "reset everything"])
def test_a_reset_said_in_so_many_words_still_resets(router, store, ask):
    router.route("no horror", user_id="u", tenant_id="t", session_id="s")
    res = router.route(ask, user_id="u", tenant_id="t", session_id="s")
    assert res.rec is not None and res.rec.reset, ask
    assert load_policy(store, "t", "u", session_id="s").preferences == []


@pytest.mark.parametrize("forget", ["forget the 90s", "forget 1990", "drop the 90s filter", "forget about the 80s",
                                    "forget 90s movies", "drop the 90s films", "forget the 1990s movies"])
def test_forgetting_a_year_lifts_the_year_bound_instead_of_adding_one(router, store, forget):
    """"forget the 90s" after "nothing before 2000" had stored "only the 90s"."""
    router.route("nothing before 2000", user_id="u", tenant_id="t", session_id="s")
    router.route(forget, user_id="u", tenant_id="t", session_id="s")
    prefs = load_policy(store, "t", "u", session_id="s").preferences
    assert not [p for p in prefs if p.attribute == "year"], (forget, prefs)


@pytest.mark.parametrize("text", ["reset everyone", "clear everybody's filters", "copy my settings to dave",
                                  "send my preferences to bob", "unblock spam for alice and bob",
                                  "no horror for bob and carol", "for my husband: unblock spam",
                                  "no horror on bobs feed", "no horror on moms feed", "block spam on wifes account"])
def test_more_ways_of_addressing_other_users_are_refused(router, store, text):
    router.route("no horror", user_id="u", tenant_id="t", session_id="s")
    before = load_policy(store, "t", "u", session_id="s").preferences
    with pytest.raises(CrossUserCommandError):
        check_identity_safe(text)
    res = router.route(text, user_id="u", tenant_id="t", session_id="s")
    assert res.kind is RouteKind.REJECTED and not router.moderation.calls
    assert load_policy(store, "t", "u", session_id="s").preferences == before


@pytest.mark.parametrize("text", ["something light for mom and dad", "no horror for kids and family",
                                  "no horror on my feed", "for me: no horror", "more comedies for the weekend",
                                  "no horror in christmas feed", "more comedy on sundays recommendations",
                                  "more romance in valentines recommendations", "no horror on weekdays feed",
                                  "more anime for adults feed"])
def test_audiences_and_own_feeds_are_still_commands(text):
    check_identity_safe(text)


def test_a_title_exclusion_names_whole_words(catalog):
    """"no more Her" hid 300 films (Father of the Bride, The Brothers McMullen, Higher Learning), "no Saw" The Texas
    Chainsaw Massacre and Akira Kurosawa's Dreams: the title matched inside other words."""
    def hidden(value):
        mask = catalog.mask(Preference(attribute="title", operator="contains", value=value, polarity="-",
                                       kind="hard"))
        return {catalog.titles[i] for i in mask.nonzero()[0]}

    her, saw, alien = hidden("Her"), hidden("Saw"), hidden("Alien")
    assert "Death Becomes Her (1992)" in her and len(her) < 40
    assert not any(t.startswith(("Father of the Bride", "Brothers McMullen", "Higher Learning")) for t in her)
    assert "Saw II (2005)" in saw and not any("Chainsaw" in t or "Kurosawa" in t for t in saw)
    assert {"Alien (1979)", "Aliens (1986)"} <= alien  # a plural still counts


@pytest.mark.parametrize("text", ["nothing before -1990", "only after −2000", "nothing after -90s",
                                  "nothing before -1990s"])
def test_a_negative_year_is_refused(parser, router, store, text):
    """"nothing before -1990" was stored as "only films from 1990"."""
    res = _refused_and_nothing_written(parser, router, store, text, after="no horror")
    assert res.error == "CommandError"


def _refused_and_nothing_written(parser, router, store, text, *, after):
    """``text`` is refused by the parser, and routed (after the command ``after``) it applies and writes nothing."""
    with pytest.raises(CommandError):
        parser.parse(text)
    router.route(after, user_id="u", tenant_id="t", session_id="s")
    before = load_policy(store, "t", "u", session_id="s").preferences
    res = router.route(text, user_id="u", tenant_id="t", session_id="s")
    assert res.error and not res.applied and not router.moderation.calls
    assert load_policy(store, "t", "u", session_id="s").preferences == before  # nothing written
    return res


@pytest.mark.parametrize("text", ["only 5 star movies", "only 5 star comedies", "only movies from 19999",
                                  "show me movies rated 9 or more from the 90s"])
def test_a_rating_or_a_number_that_is_no_year_is_refused_and_writes_nothing(parser, router, store, text):
    """Session 32: these had become free-text wishes, or kept only the genre or years."""
    _refused_and_nothing_written(parser, router, store, text, after="no horror")


def test_a_range_is_not_a_negative_year(parser):
    parser.parse("no movies rated -18")  # a signed number that is no year is not refused
    cmd = parser.parse("movies from 1990 -2000")
    assert {(p.operator, p.value) for p in cmd.preferences if p.attribute == "year"} == {("ge", 1990), ("le", 2000)}


def test_reset_and_retraction_reach_every_session():
    """A reset from the laptop said "reset all preferences" and left the phone's "less horror for now" in place; a
    retraction from the laptop reported it unmatched."""
    from datetime import timedelta

    from agents.policy import now_utc

    now = now_utc()
    phone = Preference(attribute="genre", operator="eq", value="Horror", polarity="-", kind="soft", scope="session",
                       session_id="phone", expires_at=now + timedelta(hours=2))
    policy = RecPolicy(preferences=[phone])
    reset, report = merge(policy, ParsedCommand(text="reset", reset=True), now=now, session_id="laptop")
    assert reset.preferences == [] and report.reset and report.retracted
    lifted, report = merge(policy, ParsedCommand(text="horror is fine again", retractions=[
        Retraction(attribute="genre", value="Horror")]), now=now, session_id="laptop")
    assert lifted.preferences == [] and not report.unmatched_retractions
    unrelated, _ = merge(policy, ParsedCommand(text="more comedy", preferences=[Preference(
        attribute="genre", operator="eq", value="Comedy", polarity="+", kind="soft")]), now=now, session_id="laptop")
    assert phone in unrelated.preferences  # another session's wish stays through an unrelated write


@pytest.mark.parametrize("text,want", [
    ("not horror but comedy", {("Horror", "-", "soft"), ("Comedy", "+", "soft")}),
    ("comedies not horror", {("Comedy", "+", "soft"), ("Horror", "-", "soft")}),
    ("comedy rather than horror", {("Comedy", "+", "soft"), ("Horror", "-", "soft")}),
    ("comedy instead of horror", {("Comedy", "+", "soft"), ("Horror", "-", "soft")}),
    ("no horror or thrillers", {("Horror", "-", "hard"), ("Thriller", "-", "hard")}),  # not a contrast
])
def test_two_values_said_in_contrast_get_opposite_readings(parser, text, want):
    """Review, session 31: one polarity went to every value of the clause: "not horror but comedy" kept only
    horror-comedies, "comedies not horror" and "comedy rather than horror" excluded comedy."""
    got = {(p.value, p.polarity, p.kind) for p in parser.parse(text).preferences}
    assert got == want


@pytest.mark.parametrize("text", ["no horror except for comedies", "no horror unless it's a comedy",
                                  "block horror except for the Scream movies", "no movies unless they're comedies",
                                  "nothing except comedies"])
def test_an_exception_to_a_rule_is_refused(parser, router, store, text):
    """Both the rule's value and its exception were excluded (the user asked to keep the exception)."""
    _refused_and_nothing_written(parser, router, store, text, after="nothing before 1990")


@pytest.mark.parametrize("text,want", [
    ("only movies from 1995, nothing after 2000", {("year", "eq", 1995, "hard"), ("year", "le", 2000, "hard")}),
    ("only horror, and lots more horror", {("genre", "eq", "Horror", "hard"), ("genre", "eq", "Horror", "soft")}),
])
def test_parts_of_one_command_stand_together(parser, text, want):
    """Review, session 31: a later part of a command superseded an earlier part of the same command (only the
    second of "only movies from 1995, nothing after 2000" was stored)."""
    cmd = parser.parse(text)
    assert {(p.attribute, p.operator, p.value, p.kind) for p in cmd.preferences} == want
    policy, _ = merge(RecPolicy(), cmd)
    assert {(p.attribute, p.operator, p.value, p.kind) for p in policy.preferences} == want
    # ...while a later command still supersedes an earlier one
    again, _ = merge(policy, parser.parse("only 2001"))
    assert [(p.operator, p.value) for p in again.preferences if p.attribute == "year" and p.kind == "hard"] == [
        ("eq", 2001)]


def test_the_policy_keeps_what_a_command_means_not_the_users_words(parser):
    """Review, session 31: each preference stored the clause verbatim in `source` (control characters and personal
    data included; nothing read it), and a free-text wish its e-mail address."""
    cmd = parser.parse("no horror\u202e, and more movies about cancer survivors like jane@x.org")
    assert all(p.source == "" for p in cmd.preferences) and all(r.source == "" for r in cmd.retractions)
    text = [p.value for p in cmd.preferences if p.attribute == "text"]
    assert text and all("jane@x.org" not in v and "email" in v for v in text)
    assert "\u202e" not in json.dumps(RecPolicy(preferences=cmd.preferences).model_dump(mode="json"))


def test_an_llm_parser_cannot_set_the_stores_bookkeeping():
    """A model's JSON set `id`, `session_id` or `created_at`: two preferences given one id were both removed by
    a retraction of one."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    reply = json.dumps({"preferences": [
        {"polarity": "-", "kind": "hard", "attribute": "genre", "operator": "eq", "value": "Horror", "id": "same",
         "session_id": "someone-else", "source": "raw words", "created_at": "1999-01-01T00:00:00Z"},
        {"polarity": "-", "kind": "hard", "attribute": "genre", "operator": "eq", "value": "Comedy", "id": "same"}],
        "retractions": [], "reset": False})
    cmd = LLMParser(FakeListChatModel(responses=[reply])).parse("no horror, no comedy")
    a, b = cmd.preferences
    assert a.id != b.id and "same" not in (a.id, b.id)
    assert a.session_id is None and a.source == "" and a.created_at.year > 2000
