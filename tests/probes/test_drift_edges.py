"""Mutation-audit gaps (session 18): each test fails on a specific single-point mutant of the code it names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from probe_testkit import synthetic_bundle

from guardrails.decision import Action
from guardrails.detector import CheckRequest, Message
from guardrails.errors import InvalidInputError
from guardrails.middleware.identity import Identity
from probes.plugin import PrivacyDetector
from probes.probe import ProbeArtifact, ProbeMeta
from probes.sentinel import SentinelEncoder
from probes.velocity import VelocityTracker


def _req(msgs, user="u", session="s"):
    return CheckRequest(stage="input", user_id=user, session_id=session, text=msgs[-1]["content"],
                        messages=tuple(Message(**m) for m in msgs))

def _drift_bundle(tiny):
    b = synthetic_bundle(tiny, 2, threshold=1e3)
    b.multiturn.meta.threshold = -1e9  # drift fires as soon as it may (turn 2); the per-turn probe never does
    return b

ONE = [{"role": "user", "content": "first"}]
TWO = [*ONE, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"}]

def test_drift_blocks_from_turn_two(tiny):
    det = PrivacyDetector(_drift_bundle(tiny), lm=tiny)
    assert det.predict(_req(ONE))[1].action is Action.ALLOW
    f = det.predict(_req(TWO))
    assert f[0].action is Action.ALLOW and f[1].action is Action.BLOCK

def test_drift_is_reported_not_enforced_on_a_later_turn_checked_without_its_conversation(tiny):
    """Sent alone, a later turn is read without its history, unlike every turn the drift was calibrated on (it
    fired on 35 of 171 benign dev conversations checked that way): the session advances, the drift does not
    block; with the conversation it does."""
    det = PrivacyDetector(_drift_bundle(tiny), lm=tiny)
    assert det.predict(_req(ONE))[1].action is Action.ALLOW
    alone = det.predict(_req([{"role": "system", "content": "be kind"}, {"role": "user", "content": "second"}]))
    assert alone[1].action is Action.ALLOW and alone[1].score == 0.0
    assert "S_2" in alone[1].explanation and "only the newest message" in alone[1].explanation
    assert "(user turn 2)" in alone[0].explanation  # the turn count still picks the later-turn τ
    third = [*TWO, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "third"}]
    f = det.predict(_req(third))
    assert "S_3" in f[1].explanation and f[1].action is Action.BLOCK and "newest" not in f[1].explanation
    # a session's first check never fires the drift, with or without messages (turn 1 is the baseline)
    assert det.predict(_req(ONE, session="s2"))[1].action is Action.ALLOW

def test_fused_hook_blocks_on_drift(tiny):
    from guardrails.models.chat import PrefillBlocked
    det = PrivacyDetector(_drift_bundle(tiny), lm=tiny, mode="fused")
    hook = det.fused_hook(identity=lambda: Identity("u", "s"))
    turns = ((ONE, "user: first\nassistant:"), (TWO, "user: first\nassistant: ok\nuser: second\nassistant:"))
    for msgs, prompt in turns:
        ids = torch.tensor([tiny.tokenizer(prompt)["input_ids"]])
        detach = hook.attach(tiny, ids, msgs)
        try:
            if msgs is TWO:
                with pytest.raises(PrefillBlocked), torch.no_grad():
                    tiny.model(input_ids=ids)
            else:
                with torch.no_grad():
                    tiny.model(input_ids=ids)
        finally:
            detach()

def test_fused_drift_is_not_enforced_on_a_prefill_of_the_newest_message_alone(tiny):
    """Fused mode reads the serving model's own prefill: an agent that gives its model only the newest message
    (after the system prompt) is read without history too, so the drift is reported, not enforced, as in the
    sentinel; the next prefill with the whole conversation blocks."""
    from guardrails.models.chat import PrefillBlocked
    det = PrivacyDetector(_drift_bundle(tiny), lm=tiny, mode="fused")
    hook = det.fused_hook(identity=lambda: Identity("u", "s"))
    third = [*TWO, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "third"}]
    turns = ((ONE, "user: first\nassistant:", False),
             ([{"role": "system", "content": "be kind"}, {"role": "user", "content": "second"}],
              "system: be kind\nuser: second\nassistant:", False),
             (third, "user: first\nassistant: ok\nuser: second\nassistant: ok\nuser: third\nassistant:", True))
    for msgs, prompt, blocked in turns:
        ids = torch.tensor([tiny.tokenizer(prompt)["input_ids"]])
        detach = hook.attach(tiny, ids, msgs)
        try:
            with torch.no_grad():
                if blocked:
                    with pytest.raises(PrefillBlocked):
                        tiny.model(input_ids=ids)
                else:
                    tiny.model(input_ids=ids)
        finally:
            detach()

def _mt(d=16):
    meta = ProbeMeta(kind="multiturn", model_id="m", model_fingerprint="fp", layer=2, d_model=d, threshold=1.0,
                     target_fpr=0.01)
    return ProbeArtifact(coef=np.random.default_rng(0).normal(size=d).astype(np.float32), intercept=0.0, meta=meta)

def test_overflowing_drift_weights_fail_without_touching_state():
    p = _mt()
    p.coef[:] = 1e30
    tr = VelocityTracker(p)
    tr.update("t", "u", "s", np.zeros(16, np.float32))
    with pytest.raises(InvalidInputError), np.errstate(over="ignore"):
        tr.update("t", "u", "s", np.full(16, 1e10, np.float32))
    assert tr.load("t", "u", "s").turn == 1

def _conv(*turns):
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]

def test_a_newest_only_message_does_not_move_the_baseline_opening():
    tr = VelocityTracker(_mt())
    a = np.random.default_rng(5).normal(size=(4, 16)).astype(np.float32)
    tr.update("t", "u", "s", a[0], conversation=_conv("q1"))
    tr.update("t", "u", "s", a[1], conversation=_conv("q1", "r1", "q2"))
    tr.update("t", "u", "s", a[2], conversation=_conv("q3"))  # a client sending only its newest message
    s, t = tr.update("t", "u", "s", a[3], conversation=_conv("q1", "r1", "q2", "r2", "q3", "r3", "q4"))
    assert t == 4 and s == pytest.approx(float(tr.probe.coef @ (a[3] - a[0])), abs=1e-4)

def test_a_greeting_before_the_newest_message_is_no_history_and_continues_the_session():
    """The tracker given [assistant greeting, newest user message] on every check (direct use; the privacy
    detector refuses assistant-first conversations): one user message, so no history. It used to count as history
    with a new opening each time, which reset the session to turn 1 on every check."""
    tr = VelocityTracker(_mt())
    a = np.random.default_rng(6).normal(size=(3, 16)).astype(np.float32)
    greeting = {"role": "assistant", "content": "Hi! How can I help?"}
    for i in range(3):
        s, t = tr.update("t", "u", "s", a[i], conversation=[greeting, {"role": "user", "content": f"q{i}"}])
    assert t == 3 and s == pytest.approx(float(tr.probe.coef @ (a[2] - a[0])), abs=1e-4)

def test_a_shorter_prefix_of_the_cached_conversation_is_not_a_cache_hit(tiny):
    enc = SentinelEncoder(tiny.model, tiny.tokenizer, 2)
    enc.activation(TWO, session="s")
    got = enc.activation(ONE, session="s")
    want = SentinelEncoder(tiny.model, tiny.tokenizer, 2).activation(ONE)
    np.testing.assert_allclose(got[2], want[2], atol=1e-5)

def test_eval_alone_scores_each_turn_without_history_and_never_counts_the_drift(tiny):
    from probes.evaluate import eval_multiturn

    recs = [{"id": f"c{i}", "context": "be kind", "label": i % 2, "turns": TWO} for i in range(2)]
    with_history, _, drifts = eval_multiturn(_drift_bundle(tiny), tiny, recs, progress=False)
    assert with_history["tpr"] == 1.0 and with_history["fpr"] == 1.0  # the drift fires on turn 2 of both
    alone, _, drifts_alone = eval_multiturn(_drift_bundle(tiny), tiny, recs, progress=False, alone=True)
    assert alone["tpr"] == 0.0 and alone["fpr"] == 0.0
    assert alone["encoder_stats"]["incremental"] == 0  # every turn a fresh prefill of the message alone
    assert not np.allclose(drifts[0], drifts_alone[0])  # read without the system prompt and history


def test_probes_eval_refuses_alone_with_remarks_before_loading_anything(tmp_path):
    import json

    from typer.testing import CliRunner

    from probes.cli import app

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "turns": ONE, "label": 0}) + "\n")
    res = CliRunner().invoke(app, ["eval", "--probe", "default", "--data", str(data), "--alone", "--remarks",
                                   "--json"])
    assert res.exit_code == 2 and "--alone and --remarks" in json.loads(res.stdout)["error"]


@pytest.mark.parametrize("with_drift", [True, False])
def test_eval_alone_counts_turns_as_served_a_repeated_message_is_a_retry(tiny, with_drift):
    """`eval_multiturn(alone=True)` must flag what `Guard.check(text, session_id)` flags: later turns take the
    per-turn probe's later-turn τ, but a message repeating the previous one is a retry (still turn 1 here), and
    without a drift probe there is no session (every check is turn 1)."""
    from guardrails import Guard
    from probes.evaluate import eval_multiturn

    def bundle():
        b = synthetic_bundle(tiny, 2, threshold=0.0)
        b.single.meta.threshold, b.single.meta.history_threshold = 1e3, -1e3  # only a later turn can fire
        if not with_drift:
            b.multiturn = None
        return b

    texts = [["hello there", "hello there"], ["hello there", "tell me more"], ["a", "b", "b"], ["a", "a", "b"]]
    def turns(conv):
        return [t for x in conv for t in ({"role": "user", "content": x}, {"role": "assistant", "content": "ok"})][:-1]

    recs = [{"id": f"c{i}", "context": None, "label": i % 2, "turns": turns(conv)} for i, conv in enumerate(texts)]
    guard = Guard([PrivacyDetector(bundle(), lm=tiny)])
    served = [any(guard.check(x, user_id="u", session_id=f"s{i}").action is not Action.ALLOW for x in conv)
              for i, conv in enumerate(texts)]
    assert served == ([False, True, True, True] if with_drift else [False] * 4)
    margins: list[float] = []
    eval_multiturn(bundle(), tiny, recs, progress=False, alone=True, margins_out=margins)
    assert [m > 0 for m in margins] == served


def _drift_scores(det, conv, session, user="u"):
    f = {x.category: x for x in det.predict(_req(conv, user=user, session=session))}["privacy_drift"]
    return f


def test_a_conversation_sent_whole_to_a_new_session_gets_its_drift_from_its_own_opening(tiny):
    """Review finding (session 32): the first check of a session set the baseline a_1 to *that* turn, so the same
    conversation sent under a new session id had S = 0 and the drift never fired (a client rotating session ids
    turned it off; an edited opening did the same). The baseline is now read from the conversation's opening (a
    few tokens in the same forward) and the turn is its user message count: S_t equals the turn-by-turn value."""
    det = PrivacyDetector(_drift_bundle(tiny), lm=tiny)
    three = [*TWO, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "third thing"}]
    for conv in (ONE, TWO):
        det.predict(_req(conv, session="step"))
    stepped = _drift_scores(det, three, "step")
    fresh = _drift_scores(det, three, "new-id")
    assert "S_3" in fresh.explanation and fresh.action is Action.BLOCK
    s_step = float(stepped.explanation.split("= ")[1].split()[0])
    s_fresh = float(fresh.explanation.split("= ")[1].split()[0])
    assert s_fresh == pytest.approx(s_step, abs=2e-3) and abs(s_fresh) > 1e-3
    # an edited opening starts its own trajectory from the edited opening, at the conversation's turn count
    edited = [{"role": "user", "content": "first, edited"}, *three[1:]]
    again = _drift_scores(det, edited, "step")
    assert "S_3" in again.explanation and again.action is Action.BLOCK
    assert float(again.explanation.split("= ")[1].split()[0]) == pytest.approx(
        float(_drift_scores(det, edited, "other-id").explanation.split("= ")[1].split()[0]), abs=2e-3)
    # a session's first check of a lone message is still the baseline (turn 1, never fires)
    lone = _drift_scores(det, ONE, "lone")
    assert "S_1" in lone.explanation and lone.action is Action.ALLOW


def test_the_tracker_starts_a_whole_conversation_from_its_opening():
    tr = VelocityTracker(_mt())
    a = np.random.default_rng(9).normal(size=(2, 16)).astype(np.float32)
    conv = _conv("q1", "r1", "q2", "r2", "q3")
    s, t = tr.update("t", "u", "s", a[1], conversation=conv, opening=a[0])
    assert t == 3 and s == pytest.approx(float(tr.probe.coef @ (a[1] - a[0])), abs=1e-4)
    assert tr.needs_opening("t", "u", "new", conv) and not tr.needs_opening("t", "u", "s", conv)
    assert not tr.needs_opening("t", "u", "new", _conv("q1"))  # no history: the turn is its own baseline
    # without an opening (a caller that cannot read it) the old rule stands: this turn is the baseline
    assert tr.update("t", "u", "s2", a[1], conversation=conv) == (0.0, 1)
