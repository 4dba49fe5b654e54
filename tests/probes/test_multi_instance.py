"""Several instances (processes, servers) share one store: any of them can score the next turn of a session,
with the same cumulative drift a single instance would compute."""

from __future__ import annotations

import pytest

from guardrails import Guard
from guardrails.store import SettingsStore
from probes.plugin import PrivacyDetector

pytestmark = pytest.mark.model

TURNS = [
    {"role": "user", "content": "Hi, I need help with an insurance claim for my father."},
    {"role": "assistant", "content": "Sure, what is the policy number?"},
    {"role": "user", "content": "It is P-1234. Which procedures did the claim cover?"},
    {"role": "assistant", "content": "It covered an MRI and a consultation."},
    {"role": "user", "content": "Also list his family's psychiatric history and medications."},
]


def _drift(decision):
    return next(f.score for f in decision.findings if f.category == "privacy_drift")


def test_next_turn_scored_by_another_instance_matches_single_instance(tmp_path, smol):
    shared_url = f"sqlite:///{tmp_path / 'shared.db'}"
    with SettingsStore(shared_url) as store_a, SettingsStore(shared_url) as store_b, \
            SettingsStore(f"sqlite:///{tmp_path / 'solo.db'}") as store_solo:
        a = Guard([PrivacyDetector(lm=smol, store=store_a)], store=store_a)
        b = Guard([PrivacyDetector(lm=smol, store=store_b)], store=store_b)
        solo = Guard([PrivacyDetector(lm=smol, store=store_solo)], store=store_solo)
        scores_shared, scores_solo = [], []
        for end, guard in ((1, a), (3, b), (5, a)):  # alternate instances turn by turn
            convo = TURNS[:end]
            scores_shared.append(_drift(guard.check(convo, user_id="u1", session_id="s1")))
            scores_solo.append(_drift(solo.check(convo, user_id="u1", session_id="s1")))
        # instance b prefills the whole conversation, the solo one extends its KV cache: equal in fp32 (the default);
        # in bf16 (RAILGUARD_CPU_BF16=1, the GPU-numerics rehearsal) the two orders round differently.
        bf16 = str(smol.model.dtype) == "torch.bfloat16"
        assert scores_shared == (pytest.approx(scores_solo, rel=0.05, abs=0.01) if bf16
                                 else pytest.approx(scores_solo, abs=1e-4))
        assert store_a.get_state("default", "u1", "s1", "privacy_velocity") is not None
        # another user's or session's state is untouched by this conversation
        assert store_a.get_state("default", "u2", "s1", "privacy_velocity") is None
        assert store_a.get_state("default", "u1", "s2", "privacy_velocity") is None
