"""ICL backend with the local embedded causal LM: label likelihoods, prefix cache consistency (marked `model`)."""

from __future__ import annotations

import math

import pytest

from personalization import profile as P
from personalization.adapters import LocalLMAdapter
from personalization.bank import ExampleBank
from personalization.icl import ICLBackend

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def backend():
    return ICLBackend(LocalLMAdapter("smollm2-135m-instruct"), bank=ExampleBank.load(), k=4)


def test_label_probabilities_are_a_distribution(backend):
    prof = P.block_new(P.ModerationProfile(), "crypto_shill", examples=["buy $DOGEX now 50x"])
    labels = backend.labels(prof)
    probs = backend.adapter.label_probs(backend.messages("WIN a FREE prize, txt CLAIM now", prof), labels)
    assert set(probs) == set(labels) and math.isclose(sum(probs.values()), 1.0, rel_tol=1e-5)
    s = backend.score(["WIN a FREE prize, txt CLAIM now"], prof)
    assert set(s) == set(prof.categories) and all(0.0 <= float(v[0]) <= 1.0 for v in s.values())


def test_prefix_cache_gives_same_scores_as_cold_run(backend):
    prof = P.ModerationProfile()
    msgs = backend.messages("see you at lunch tomorrow", prof)
    labels = backend.labels(prof)
    warm1 = backend.adapter.label_probs(msgs, labels)
    backend.adapter.label_probs(backend.messages("another text entirely", prof), labels)  # reuses prefix
    warm2 = backend.adapter.label_probs(msgs, labels)
    backend.adapter._prefix = None  # cold
    cold = backend.adapter.label_probs(msgs, labels)
    for lab in labels:
        assert math.isclose(warm1[lab], cold[lab], abs_tol=1e-4)
        assert math.isclose(warm2[lab], cold[lab], abs_tol=1e-4)


def test_a_label_that_is_a_token_prefix_of_another_does_not_win_by_being_shorter(backend):
    """A label is scored with the end of the answer after it: without it P("ben") >= P("benign") on every text (the
    review of session 30 found a user category named "ben" firing at >= 0.5 everywhere, and long names penalised)."""
    msgs = [{"role": "system", "content": "Classify the message as benign or spam. Answer with the label only."},
            {"role": "user", "content": "see you at lunch tomorrow"}]
    for other in ("ben", "benign-spam"):
        p = backend.adapter.label_probs(msgs, [other, "benign", "spam"])
        assert p["benign"] > 0.5 > p[other], (other, p)
