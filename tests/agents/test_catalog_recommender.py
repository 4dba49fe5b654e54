import numpy as np
import pytest

from agents.catalog import Catalog, clean_title, fold, parse_year
from agents.recommender import PureSVDRecommender
from agents.schema import Preference, UnknownAttributeError


def test_title_parsing():
    assert parse_year("Toy Story (1995)") == 1995
    assert parse_year("No year here") == -1
    assert clean_title("Matrix, The (1999)") == "The Matrix"
    assert fold("Amélie") == "amelie"


def test_catalog_loaded(catalog):
    i = catalog.index[1]
    assert catalog.years[i] == 1995 and "Animation" in catalog.genres[i]
    assert len(catalog) == 9742 and catalog.support[i] > 100
    assert "pixar" in catalog.tags[i]


def test_contract_check_semantics(catalog):
    i = catalog.index[1]  # Toy Story (1995)
    assert catalog.check(i, "genre", "includes", "Comedy")
    assert catalog.check(i, "genre", "excludes", "Horror")
    assert catalog.check(i, "year", "ge", 1995) and not catalog.check(i, "year", "le", 1994)
    assert catalog.check(i, "title", "includes", "toy story")
    assert catalog.check(i, "tag", "includes", "PIXAR")  # case-insensitive
    with pytest.raises(UnknownAttributeError):
        catalog.check(i, "actor", "includes", "Tom Hanks")


def test_catalog_without_attribute_raises(catalog):
    small = Catalog(item_ids=catalog.item_ids[:5], titles=catalog.titles[:5], years=catalog.years[:5],
                    genres=catalog.genres[:5], tags=catalog.tags[:5], attributes=frozenset({"genre", "title"}))
    with pytest.raises(UnknownAttributeError):
        small.mask(Preference(polarity="+", kind="hard", attribute="year", operator="ge", value=1990))


def _toy_ratings():
    rows = [(u, m, 5.0 if (u + m) % 2 else 3.0, 0) for u in range(1, 30) for m in range(1, 20) if (u * m) % 3]
    out = np.zeros(len(rows), dtype=[("user", "i8"), ("item", "i8"), ("rating", "f4"), ("ts", "i8")])
    for k, r in enumerate(rows):
        out[k] = r
    return out


def test_recommender_estimator_protocol():
    est = PureSVDRecommender(n_components=4)
    assert est.fit(_toy_ratings()) is est
    assert est.item_factors_.shape[1] == 4 and hasattr(est, "popularity_")
    assert est.get_params()["n_components"] == 4


def test_recommend_excludes_seen_and_cold_start(base):
    top = base.recommend(1, 10)
    seen = set(base.item_ids_[base.seen(1)].tolist())
    assert len(top) == 10 and not (set(top) & seen)
    cold = base.recommend(None, 5)
    assert cold == base.recommend(999999, 5)  # unknown user -> popularity
    folded = base.recommend(None, 5, history={1: 5.0, 3114: 5.0})  # fold-in from history
    assert 1 not in folded and folded != cold


def test_missing_movielens_is_a_typed_error_and_skips_the_rec_demo(tmp_path, monkeypatch):
    from agents.catalog import load_catalog
    from agents.plugin import demo
    from guardrails.errors import ConfigError, DataNotAvailableError

    with pytest.raises(DataNotAvailableError, match="RAILGUARD_MOVIELENS") as info:
        load_catalog(str(tmp_path))
    assert isinstance(info.value, ConfigError) and isinstance(info.value, FileNotFoundError)  # old callers still work
    monkeypatch.setenv("RAILGUARD_MOVIELENS", str(tmp_path))
    load_catalog.cache_clear()  # the no-argument call is cached per process; read the (empty) override
    try:
        with pytest.raises(DataNotAvailableError):
            demo(None)  # the demo's plugin_turns logs this and runs without the rec turns
    finally:
        monkeypatch.delenv("RAILGUARD_MOVIELENS")
        load_catalog.cache_clear()


@pytest.mark.parametrize("damage", ["cut", "ratings"])
def test_a_damaged_movielens_copy_is_a_typed_error(tmp_path, damage):
    """A movies.csv cut mid-line was an AttributeError traceback out of `rec eval` / `rec recommend`."""
    import shutil

    from agents.catalog import default_data_dir, load_catalog, load_ratings
    from guardrails.errors import DataNotAvailableError

    src = default_data_dir()
    for name in ("movies.csv", "ratings.csv"):
        shutil.copy(src / name, tmp_path / name)
    if damage == "cut":
        (tmp_path / "movies.csv").write_bytes((src / "movies.csv").read_bytes()[:100])
        with pytest.raises(DataNotAvailableError, match="malformed"):
            load_catalog(str(tmp_path))
    else:
        (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,x\n")
        with pytest.raises(DataNotAvailableError, match="malformed"):
            load_ratings(str(tmp_path))
