"""Shared fixtures for the agents tests. Everything here is model-free (the "bow" student, no encoder)."""

from __future__ import annotations

import pytest

from agents.catalog import load_catalog
from agents.policy import InMemoryStore


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


@pytest.fixture(scope="session")
def parser(catalog):
    from agents.parser import StudentParser

    return StudentParser.load(backend="bow", catalog=catalog)


@pytest.fixture(scope="session")
def base(catalog):
    from agents.recommender import default_recommender

    return default_recommender(catalog)


@pytest.fixture(scope="session")
def planner(catalog, base):
    from agents.planner import Planner

    return Planner(catalog, base, None)


@pytest.fixture()
def store():
    return InMemoryStore()
