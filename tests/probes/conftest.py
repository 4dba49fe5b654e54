"""Fixtures: a tiny random Llama and, for `model` tests, the embedded SmolLM2."""

from __future__ import annotations

from typing import Any

import pytest
from probe_testkit import TinyLM, make_tiny, synthetic_bundle  # noqa: F401  (re-exported for fixtures)


@pytest.fixture(scope="session")
def tiny() -> TinyLM:
    return make_tiny()


@pytest.fixture(scope="session")
def smol() -> Any:
    from guardrails.models import load_causal_lm

    return load_causal_lm("smollm2-135m-instruct")  # `railguard models pull` first; never skipped


