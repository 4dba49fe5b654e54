"""Mutation-audit gaps (session 18): each test fails on a specific single-point mutant of the code it names."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from agents.policy import SECTION, InMemoryStore, RecPolicy, load_policy
from agents.schema import Preference, now_utc


def test_negative_soft_preference_lowers_that_genre(planner, catalog):
    base = planner.recommend(RecPolicy(), 7, k=10)
    g = Counter(x for m in base.items for x in catalog.genres[catalog.index[m]]).most_common(1)[0][0]
    less = planner.recommend(RecPolicy(preferences=[Preference(polarity="-", kind="soft", attribute="genre",
                                                               value=g)]), 7, k=10)
    def share(feed):
        return sum(g in catalog.genres[catalog.index[m]] for m in feed.items)

    assert share(less) < share(base)  # strictly: `base >= less` held with the attenuator switched off

def test_load_policy_drops_expired_preferences():
    store = InMemoryStore()
    old = Preference(polarity="-", kind="hard", attribute="genre", value="Horror",
                     expires_at=now_utc() - timedelta(days=1))
    store.update_section("t", "u", SECTION, lambda s: RecPolicy(preferences=[old]).model_dump(mode="json"), actor="x")
    assert load_policy(store, "t", "u").preferences == []
