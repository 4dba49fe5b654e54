import pytest

from agents.planner import choose_tools
from agents.policy import RecPolicy
from agents.schema import Preference, UnknownAttributeError


def P(**kw):
    base = dict(polarity="-", kind="hard", attribute="genre", operator="eq", value="Horror")
    base.update(kw)
    return Preference(**base)


def test_tool_chain_from_kinds():
    assert choose_tools(RecPolicy()) == ["Aggregator"]
    assert choose_tools(RecPolicy(preferences=[P()])) == ["Filter", "Aggregator"]
    assert choose_tools(RecPolicy(preferences=[P(kind="soft", polarity="+")])) == ["Matcher", "Aggregator"]
    mixed = RecPolicy(preferences=[P(), P(kind="soft", polarity="+", value="Comedy"), P(kind="soft", value="War")])
    assert choose_tools(mixed) == ["Filter", "Matcher", "Attenuator", "Aggregator"]


def test_filter_hard_constraints_always_hold(planner, catalog):
    pol = RecPolicy(preferences=[P(value="Drama"), P(attribute="year", operator="ge", value=1995, polarity="+"),
                                 P(polarity="+", value="Comedy")])
    feed = planner.recommend(pol, 1, k=10)
    assert len(feed.items) == 10 and not feed.plan.infeasible
    for m in feed.items:
        i = catalog.index[m]
        assert "Drama" not in catalog.genres[i] and "Comedy" in catalog.genres[i] and catalog.years[i] >= 1995


def _share(feed, catalog, genre):
    return sum(genre in catalog.genres[catalog.index[m]] for m in feed.items) / len(feed.items)


def test_matcher_boosts_and_attenuator_penalises(planner, catalog):
    base = planner.recommend(RecPolicy(), 7, k=10)
    more = planner.recommend(RecPolicy(preferences=[P(kind="soft", polarity="+", value="Comedy")]), 7, k=10)
    less = planner.recommend(RecPolicy(preferences=[P(kind="soft", polarity="-", value="Comedy")]), 7, k=10)
    assert _share(more, catalog, "Comedy") > _share(base, catalog, "Comedy") >= _share(less, catalog, "Comedy")
    assert "Matcher" in more.plan.tools and "Attenuator" in less.plan.tools


def test_matcher_title_like_uses_collaborative_similarity(planner, catalog):
    pol = RecPolicy(preferences=[P(kind="soft", polarity="+", attribute="title", operator="like",
                                   value="Toy Story (1995)")])
    feed = planner.recommend(pol, None, k=300)
    plain = planner.recommend(RecPolicy(), None, k=300)
    # Toy Story 2, the collaborative neighbour, climbs well above its popularity rank
    assert feed.items.index(3114) < plain.items.index(3114) - 20


def test_less_like_a_title_sinks_that_title_too(planner, catalog):
    """"less stuff like Titanic" attenuated the films like Titanic but scored Titanic itself 0, lifting it (rank
    8 -> 0 for user 7, session 25 audit)."""
    titanic = next(m for m, i in catalog.index.items() if catalog.titles[i].startswith("Titanic (1997)"))
    pol = RecPolicy(preferences=[P(kind="soft", polarity="-", attribute="title", operator="like",
                                   value="Titanic (1997)")])
    for user in (7, 10, 15):
        plain = planner.recommend(RecPolicy(), user, k=300).items
        less = planner.recommend(pol, user, k=300).items
        assert titanic not in less or (titanic in plain and less.index(titanic) > plain.index(titanic)), user


def test_relaxation_reported_never_violates(planner, catalog):
    # Film-Noir from 1950 exactly: a handful of films, many obscure -> the quality floor is relaxed.
    pol = RecPolicy(preferences=[P(polarity="+", value="Film-Noir"),
                                 P(attribute="year", operator="eq", value=1950, polarity="+")])
    feed = planner.recommend(pol, 1, k=10)
    assert feed.plan.relaxed
    for m in feed.items:
        i = catalog.index[m]
        assert "Film-Noir" in catalog.genres[i] and catalog.years[i] == 1950


def test_infeasible_says_so(planner, catalog):
    pol = RecPolicy(preferences=[P(polarity="+", value="Documentary"), P(polarity="+", value="Western"),
                                 P(polarity="+", value="IMAX")])
    feed = planner.recommend(pol, 1, k=10)
    assert feed.plan.infeasible and len(feed.items) < 10
    assert "not relaxed" in feed.plan.explanation


def test_catalog_without_attribute(planner, catalog):
    from agents.catalog import Catalog
    from agents.planner import Planner

    no_tags = Catalog(item_ids=catalog.item_ids, titles=catalog.titles, years=catalog.years,
                      genres=catalog.genres, tags=catalog.tags, support=catalog.support,
                      attributes=frozenset({"genre", "year", "title"}))
    p = Planner(no_tags, planner.base, None)
    with pytest.raises(UnknownAttributeError):
        p.recommend(RecPolicy(preferences=[P(attribute="tag", value="zombies")]), 1)
