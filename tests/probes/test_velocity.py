from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from guardrails.errors import InvalidInputError
from probes.probe import ProbeArtifact, ProbeMeta
from probes.velocity import InMemoryStateStore, StateStore, VelocityTracker, _enc


def _mt(d=16, fp="fp"):
    meta = ProbeMeta(kind="multiturn", model_id="m", model_fingerprint=fp, layer=2, d_model=d, threshold=1.0,
                     target_fpr=0.01)
    return ProbeArtifact(coef=np.random.default_rng(0).normal(size=d).astype(np.float32), intercept=0.0,
                         meta=meta)


def test_telescoping_sum():
    probe = _mt()
    tr = VelocityTracker(probe)
    acts = np.random.default_rng(1).normal(size=(12, 16)).astype(np.float32) * 3
    for t, a in enumerate(acts, 1):
        s, turn = tr.update("t", "u", "s", a)
        assert turn == t
        assert s == pytest.approx(float(probe.coef @ (a - acts[0])), abs=1e-3)
        deltas = sum(float(probe.coef @ (acts[k] - acts[k - 1])) for k in range(1, t))
        assert s == pytest.approx(deltas, abs=1e-3)
    assert s != 0.0


def test_state_is_small_and_survives_restart():
    store = InMemoryStateStore()
    probe = _mt()
    acts = np.random.default_rng(2).normal(size=(3, 16)).astype(np.float32)
    VelocityTracker(probe, store).update("t", "u", "s", acts[0])
    VelocityTracker(probe, store).update("t", "u", "s", acts[1])  # "new process", same store
    s, turn = VelocityTracker(probe, store).update("t", "u", "s", acts[2])
    assert turn == 3 and s == pytest.approx(float(probe.coef @ (acts[2] - acts[0])), abs=1e-4)
    st = store.get_state("t", "u", "s", "privacy_velocity")
    assert set(st) == {"turn", "a1", "prev", "score", "probe_id", "digest", "head"}  # never the history


def _conv(*turns):
    """user/assistant alternating, starting with the user."""
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def test_a_retry_is_not_a_new_turn_and_a_rewritten_history_rebaselines():
    store = InMemoryStateStore()
    probe = _mt()
    tr = VelocityTracker(probe, store)
    a = np.random.default_rng(3).normal(size=(5, 16)).astype(np.float32) * 3
    assert tr.update("t", "u", "s", a[0], conversation=_conv("q1")) == (0.0, 1)
    s2, t2 = tr.update("t", "u", "s", a[1], conversation=_conv("q1", "r1", "q2"))
    assert t2 == 2 and s2 == pytest.approx(float(probe.coef @ (a[1] - a[0])), abs=1e-4)
    # the same conversation again (a retry, an agent re-checking its turn): unchanged, whatever the activation
    assert tr.update("t", "u", "s", a[4], conversation=_conv("q1", "r1", "q2")) == (s2, t2)
    st = store.get_state("t", "u", "s", "privacy_velocity")
    assert "q2" not in str(st) and "q1" not in str(st)  # digests, never the text
    # the continuation counts as turn 3 and telescopes from the first baseline
    s3, t3 = tr.update("t", "u", "s", a[2], conversation=_conv("q1", "r1", "q2", "r2", "q3"))
    assert t3 == 3 and s3 == pytest.approx(float(probe.coef @ (a[2] - a[0])), abs=1e-4)
    # a later turn replaced (a blocked turn withheld in an agent's thread) or edited: same opening, same baseline,
    # so the drift keeps counting from a_1 (a block must not hand the attacker a fresh baseline)
    s4, t4 = tr.update("t", "u", "s", a[3], conversation=_conv("q1", "r1", "[withheld]", "sorry", "q3", "r3", "q4"))
    assert t4 == 4 and s4 == pytest.approx(float(probe.coef @ (a[3] - a[0])), abs=1e-4)
    # an edited first turn: the old a_1 belongs to another conversation, so this one starts its own trajectory
    assert tr.update("t", "u", "s", a[3], conversation=_conv("q1 edited", "r1", "q2")) == (0.0, 1)
    s2b, t2b = tr.update("t", "u", "s", a[1], conversation=_conv("q1 edited", "r1", "q2", "r2", "q3"))
    assert t2b == 2 and s2b == pytest.approx(float(probe.coef @ (a[1] - a[3])), abs=1e-4)


def test_a_client_sending_only_its_newest_message_keeps_its_session():
    tr = VelocityTracker(_mt())
    a = np.random.default_rng(4).normal(size=(3, 16)).astype(np.float32)
    for t, (q, act) in enumerate(zip(["q1", "q2", "q3"], a, strict=True), 1):
        assert tr.update("t", "u", "s", act, conversation=_conv(q))[1] == t
    assert tr.update("t", "u", "s", a[0], conversation=_conv("q3"))[1] == 3  # the same message again: a retry


def test_session_isolation():
    store = InMemoryStateStore()
    tr = VelocityTracker(_mt(), store)
    rng = np.random.default_rng(3)
    keys = [("t1", "alice", "s1"), ("t1", "alice", "s2"), ("t1", "bob", "s1"), ("t2", "alice", "s1")]
    for k in keys:
        tr.update(*k, rng.normal(size=16).astype(np.float32))
    for k in keys:
        assert tr.load(*k).turn == 1
    tr.update(*keys[0], rng.normal(size=16).astype(np.float32))
    assert tr.load(*keys[0]).turn == 2 and all(tr.load(*k).turn == 1 for k in keys[1:])


def test_retrained_probe_or_garbage_state_rebaselines():
    store = InMemoryStateStore()
    a = np.ones(16, dtype=np.float32)
    VelocityTracker(_mt(fp="old"), store).update("t", "u", "s", a)
    assert VelocityTracker(_mt(fp="new"), store).update("t", "u", "s", a) == (0.0, 1)
    store.put_state("t", "u", "s", "privacy_velocity", {"turn": "x"})
    assert VelocityTracker(_mt(fp="new"), store).update("t", "u", "s", a)[1] == 1


def test_a_state_it_could_not_have_written_rebaselines():
    """A stored turn below 1 kept the drift from ever firing for that session (the check needs turn >= 2), and a
    turn of 1e400 (inf) raised OverflowError (session 25 audit): anything to_json never writes is no state."""
    store = InMemoryStateStore()
    tr = VelocityTracker(_mt(), store)
    a = np.ones(16, dtype=np.float32)
    tr.update("t", "u", "s", a)
    good = store.get_state("t", "u", "s", "privacy_velocity")
    for bad in ({"turn": -50}, {"turn": float("inf")}, {"turn": 2.0}, {"turn": True}, {"score": float("nan")},
                {"a1": _enc(np.full(16, np.inf))}):
        store.put_state("t", "u", "s", "privacy_velocity", {**good, **bad})
        assert tr.update("t", "u", "s", a) == (0.0, 1), bad


def test_bad_activation_rejected():
    tr = VelocityTracker(_mt())
    with pytest.raises(InvalidInputError):
        tr.update("t", "u", "s", np.full(16, np.nan, dtype=np.float32))
    with pytest.raises(InvalidInputError):
        tr.update("t", "u", "s", np.zeros(5, dtype=np.float32))


def test_real_settings_store_when_available(tmp_path):
    import guardrails.store as sql

    store = sql.SettingsStore(f"sqlite:///{tmp_path / 's.db'}")
    try:
        assert isinstance(store, StateStore)
        probe = _mt()
        acts = np.random.default_rng(4).normal(size=(2, 16)).astype(np.float32)
        VelocityTracker(probe, store).update("t", "u", "s", acts[0])
        s, turn = VelocityTracker(probe, store).update("t", "u", "s", acts[1])
        assert turn == 2 and s == pytest.approx(float(probe.coef @ (acts[1] - acts[0])), abs=1e-4)
        assert VelocityTracker(probe, store).load("t", "u", "other") is None
    finally:
        store.close()


class _SlowGetPut:
    """A store with only get_state/put_state (a user's own), slow enough to interleave concurrent updates."""

    def __init__(self) -> None:
        self.inner = InMemoryStateStore()

    def get_state(self, *args):
        import time

        got = self.inner.get_state(*args)
        time.sleep(0.002)
        return got

    def put_state(self, *args):
        self.inner.put_state(*args)


@pytest.mark.parametrize("kind", ["sql", "memory", "get_put_only"])
def test_concurrent_turns_of_one_session_are_each_counted_once(tmp_path, kind):
    """A double submit / two tabs: turns checked at once are turns 1..N, never two of them the same turn (which
    dropped an update, or scored a later turn against the first-turn threshold with no drift check)."""
    import threading

    import guardrails.store as sql

    store: Any = {"sql": lambda: sql.SettingsStore(tmp_path / "v.db"), "memory": InMemoryStateStore,
                  "get_put_only": _SlowGetPut}[kind]()
    probe = _mt()
    acts = np.random.default_rng(5).normal(size=(24, 16)).astype(np.float32)
    barrier, turns = threading.Barrier(8), []

    def run(i: int) -> None:
        tracker = VelocityTracker(probe, store)
        barrier.wait()
        for a in acts[i * 3:(i + 1) * 3]:
            turns.append(tracker.update("t", "u", "s", a)[1])

    ts = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for th in ts:
        th.start()
    for th in ts:
        th.join(60)
    try:
        assert sorted(turns) == list(range(1, 25))
        assert VelocityTracker(probe, store).load("t", "u", "s").turn == 24
    finally:
        if kind == "sql":
            store.close()


def test_the_in_memory_state_store_is_bounded():
    from datetime import timedelta

    store = InMemoryStateStore(max_entries=3)
    for i in range(5):
        store.put_state("t", "u", f"s{i}", "k", {"i": i})
    assert len(store) == 3 and store.get_state("t", "u", "s0", "k") is None  # least recently written went first
    store.update_state("t", "u", "s2", "k", lambda raw: {"i": 22})  # a write refreshes it
    store.put_state("t", "u", "s5", "k", {"i": 5})
    assert store.get_state("t", "u", "s2", "k") == {"i": 22} and store.get_state("t", "u", "s3", "k") is None
    assert store.prune_state(timedelta(days=1)) == 0
    assert store.prune_state(timedelta(seconds=-1)) == 3 and len(store) == 0


def test_a_store_whose_update_state_never_calls_back_fails_instead_of_guessing():
    from guardrails.errors import StoreError

    class Lazy(InMemoryStateStore):
        def update_state(self, *args, **kwargs):
            return None

    with pytest.raises(StoreError, match="update_state"):
        VelocityTracker(_mt(), Lazy()).update("t", "u", "s", np.zeros(16, dtype=np.float32))


def test_a_session_continues_across_a_restamped_model_fingerprint():
    """A release re-stamped the shipped probe's model fingerprint (weights and training time unchanged): sessions
    stored under the old id continue; a probe retrained (new training time) still re-baselines."""
    probe = _mt()
    probe = ProbeArtifact(coef=probe.coef, intercept=0.0, meta=probe.meta.model_copy(update={
        "weights_sha256": "ab" * 32, "created_at": "2026-12-02T20:36:41+00:00"}))
    store = InMemoryStateStore()
    acts = np.random.default_rng(7).normal(size=(3, 16)).astype(np.float32)
    old_form = VelocityTracker(_mt(fp="a7aeec4cdeadbeef"), store)
    old_form.probe_id = "a7aeec4cdeadbeef:2:2026-12-02T20:36:41+00:00"  # how the older release stamped it
    old_form.update("t", "u", "s", acts[0])
    old_form.update("t", "u", "s", acts[1])
    s, turn = VelocityTracker(probe, store).update("t", "u", "s", acts[2])
    assert turn == 3 and s == pytest.approx(float(probe.coef @ (acts[2] - acts[0])), abs=1e-4)
    retrained = ProbeArtifact(coef=probe.coef, intercept=0.0, meta=probe.meta.model_copy(update={
        "created_at": "2026-12-06T09:00:00+00:00"}))
    assert VelocityTracker(retrained, store).update("t", "u", "s", acts[0])[1] == 1


def test_a_session_continues_exactly_after_the_sqlite_store_is_closed_and_reopened(tmp_path):
    """Restart survival on a real SQLite file (issue #3: "a session survives a process restart"): three turns,
    the store closed, a new store object and a new tracker on the same file, three more turns. S_t and t continue
    exactly as one uninterrupted run's (within 1e-6), a retry right after the restart is still recognised (the
    conversation digest was persisted too), and other sessions and users on the same file are left as they were."""
    import guardrails.store as sql
    from guardrails.errors import StoreError

    probe = _mt()
    acts = np.random.default_rng(11).normal(size=(6, 16)).astype(np.float32) * 3
    convs = [_conv(*[x for k in range(1, t + 1) for x in (f"q{k}", f"r{k}")][:-1]) for t in range(1, 7)]
    with sql.SettingsStore(tmp_path / "ref.db") as ref_store:  # the uninterrupted run
        ref_tracker = VelocityTracker(probe, ref_store)
        want = [ref_tracker.update("t", "alice", "s1", a, conversation=c) for a, c in zip(acts, convs, strict=True)]
    assert [t for _, t in want] == [1, 2, 3, 4, 5, 6] and want[-1][0] != 0.0

    path = tmp_path / "state.db"
    first = sql.SettingsStore(path)
    got = [VelocityTracker(probe, first).update("t", "alice", "s1", a, conversation=c)
           for a, c in zip(acts[:3], convs[:3], strict=True)]
    others = {("t", "bob", "s1"): acts[5], ("t", "alice", "s2"): acts[4], ("t2", "alice", "s1"): acts[3]}
    for (tenant, user, session), a in others.items():
        VelocityTracker(probe, first).update(tenant, user, session, a, conversation=_conv("other"))
    before = {k: first.get_state(*k, "privacy_velocity") for k in others}
    first.close()
    with pytest.raises(StoreError):  # really closed: nothing below can come from the first object
        first.get_state("t", "alice", "s1", "privacy_velocity")

    second = sql.SettingsStore(path)  # the "new process": a new store object and tracker on the same file
    try:
        tracker = VelocityTracker(probe, second)
        assert tracker.load("t", "alice", "s1").turn == 3
        assert tracker.update("t", "alice", "s1", acts[5], conversation=convs[2]) == got[-1]  # a retry, not turn 4
        got += [tracker.update("t", "alice", "s1", a, conversation=c) for a, c in zip(acts[3:], convs[3:], strict=True)]
        assert [t for _, t in got] == [t for _, t in want]
        for (s, _), (s_ref, _) in zip(got, want, strict=True):
            assert abs(s - s_ref) < 1e-6
        assert abs(got[-1][0] - float(probe.coef @ (acts[5] - acts[0]))) < 1e-3  # still telescoping from a_1
        assert {k: second.get_state(*k, "privacy_velocity") for k in others} == before  # untouched
        assert all(tracker.load(*k).turn == 1 for k in others)
    finally:
        second.close()


def test_a_turn_grown_by_messages_sent_before_a_reply_is_the_same_turn():
    """Review, session 37: the detector joins the user messages sent since the last reply into one (by a line
    break). A client checking each as it arrives ([q1], then [q1, thanks]) had its turn counted twice, so the
    joined message was read at the later turns' threshold. The caller names the conversations this one grew from
    (`grown_from`); the last scored among them is that turn again: S_t = w·(a_t' - a_1), at turn 1 a new baseline.
    Only the caller's word counts: a newest-only client's message that starts with its previous one is a new turn
    (second review)."""
    from probes.velocity import conversation_digest as dg

    store = InMemoryStateStore()
    probe = _mt()
    tr = VelocityTracker(probe, store)
    a = np.random.default_rng(5).normal(size=(6, 16)).astype(np.float32) * 3
    assert tr.update("t", "u", "s", a[0], conversation=_conv("q1")) == (0.0, 1)
    grown = tr.update("t", "u", "s", a[1], conversation=_conv("q1\nthanks"), grown_from=[dg(_conv("q1"))])
    assert grown == (0.0, 1)
    s2, t2 = tr.update("t", "u", "s", a[2], conversation=_conv("q1\nthanks", "r1", "q2"))
    assert t2 == 2 and s2 == pytest.approx(float(probe.coef @ (a[2] - a[1])), abs=1e-4)  # baseline: the grown turn
    s2b, t2b = tr.update("t", "u", "s", a[3], conversation=_conv("q1\nthanks", "r1", "q2\nok"),
                         grown_from=[dg(_conv("q1\nthanks", "r1", "q2"))])
    assert t2b == 2 and s2b == pytest.approx(float(probe.coef @ (a[3] - a[1])), abs=1e-4)
    # the same text without the caller's word (a client sending only its newest message): a new turn, as before
    assert tr.update("t", "u", "s", a[4], conversation=_conv("q1\nthanks", "r1", "q2\nok\nmore"))[1] == 3
    assert tr.update("t", "u", "s", a[5], conversation=_conv("q9"), grown_from=[dg(_conv("q0"))])[1] == 4
