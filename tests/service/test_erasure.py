"""Erasing one user (a data-subject erasure request): the store, the HTTP route, the clients (the privacy
detector's caches: tests/probes/test_plugin.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from fastapi.testclient import TestClient

from guardrails import Guard
from guardrails.client import AsyncRailguardClient, RailguardClient
from guardrails.errors import InvalidInputError
from guardrails.service import create_app
from guardrails.store import SettingsStore
from tests.service.conftest import ThreadServer


def _fill(store: SettingsStore, tenant: str, user: str) -> None:
    store.update_section(tenant, user, "guard", lambda g: {**g, "shadow": True}, actor="t")
    store.update_section(tenant, user, "guard", lambda g: {**g, "shadow": False}, actor="t")
    store.put_state(tenant, user, "s1", "velocity", {"turn": 1})
    store.put_state(tenant, user, "s2", "velocity", {"turn": 4})


def test_the_store_erases_settings_state_and_audit_of_one_user_only(tmp_path):
    with SettingsStore(tmp_path / "e.db") as store:
        for tenant, user in (("t", "erin"), ("t", "bob"), ("other", "erin")):
            _fill(store, tenant, user)
        assert store.erase_user("t", "erin") == {"settings": 1, "session_state": 2, "audit": 2}
        assert store.get("t", "erin").version == 0 and store.history("t", "erin") == []
        assert store.get_state("t", "erin", "s2", "velocity") is None
        for tenant, user in (("t", "bob"), ("other", "erin")):  # another user, the same id in another tenant
            assert store.get(tenant, user).version == 2 and len(store.history(tenant, user)) == 2
            assert store.get_state(tenant, user, "s2", "velocity") == {"turn": 4}
        assert store.erase_user("t", "erin") == {"settings": 0, "session_state": 0, "audit": 0}
        with pytest.raises(InvalidInputError):
            store.erase_user("t", "")
        assert asyncio.run(store.aerase_user("t", "bob"))["audit"] == 2


def test_the_erase_route_and_both_clients(tmp_path, caplog):
    store = SettingsStore(tmp_path / "svc.db")
    try:
        app = create_app(Guard([], store=store), store)
        _, key = app.state.rg.keys.create_tenant("t")
        _, other_key = app.state.rg.keys.create_tenant("u")
        for tenant in ("t", "u"):
            _fill(store, tenant, "erin-7f3q")
        with caplog.at_level(logging.INFO, logger="railguard.service"), TestClient(app) as tc:
            r = tc.post("/v1/users/erin-7f3q/erase", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200 and r.json() == {"erased": {"settings": 1, "session_state": 2, "audit": 2,
                                                                   "detectors": {}}}, r.text
            assert tc.post("/v1/users/erin-7f3q/erase").status_code == 401
            bare = tc.build_request("POST", "/v1/users/nobody/erase", headers={"Authorization": f"Bearer {key}"})
            bare.headers.pop("content-length", None)  # `curl -X POST` sends no body and no Content-Length
            assert tc.send(bare).status_code == 200
        assert store.get("u", "erin-7f3q").version == 2  # another tenant's user of the same id: untouched
        records = [rec.fields for rec in caplog.records if getattr(rec, "fields", {}).get("event") == "user_erased"]
        assert len(records) == 2 and "erin-7f3q" not in str(records) and records[0]["user_sha256"]
        with ThreadServer(app) as srv:
            _fill(store, "t", "erin-7f3q")
            with RailguardClient(srv.url, api_key=key) as c:
                assert c.erase_user("erin-7f3q") == {"settings": 1, "session_state": 2, "audit": 2, "detectors": {}}

            async def run() -> dict[str, int]:
                async with AsyncRailguardClient(srv.url, api_key=other_key) as ac:
                    return await ac.erase_user("erin-7f3q")

            assert asyncio.run(run()) == {"settings": 1, "session_state": 2, "audit": 2, "detectors": {}}
    finally:
        store.close()


class _Forgetful:
    """A caching detector: remembers users per tenant; `fail` makes forgetting raise."""

    name, fail = "forgetful", False

    def __init__(self) -> None:
        from guardrails import Stage

        self.stages = frozenset({Stage.INPUT})
        self.seen: set[tuple[str, str]] = set()
        self.settings_seen: list[dict] = []

    def predict(self, request):
        self.seen.add((request.tenant_id, request.user_id))
        return []

    async def apredict(self, request):
        return self.predict(request)

    def forget_user(self, tenant_id, user_id, settings=None):
        if self.fail:
            raise RuntimeError("cache backend down")
        self.settings_seen.append(dict(settings or {}))
        gone = {k for k in self.seen if k == (tenant_id, user_id)}
        self.seen -= gone
        return len(gone)


def test_detectors_forget_through_the_tenant_view_and_a_failure_erases_nothing(tmp_path):
    from guardrails.errors import DetectorError

    det = _Forgetful()
    store = SettingsStore(tmp_path / "views.db")
    try:
        app = create_app(Guard([det], store=store), store)
        _, key = app.state.rg.keys.create_tenant("t")
        _, other = app.state.rg.keys.create_tenant("u")
        _fill(store, "t", "erin")
        with TestClient(app, raise_server_exceptions=False) as tc:
            for k in (key, other):
                assert tc.post("/v1/check/input", headers={"Authorization": f"Bearer {k}"},
                               json={"user_id": "erin", "text": "hi"}).status_code == 200
            det.fail = True
            r = tc.post("/v1/users/erin/erase", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code >= 500 and store.get("t", "erin").version == 2  # nothing half-erased
            det.fail = False
            r = tc.post("/v1/users/erin/erase", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200 and r.json()["erased"]["detectors"] == {"forgetful": 1}, r.text
        assert det.seen - {("__readyz__", "__readyz__")} == {("u", "erin")}  # the same id, another tenant: kept
        assert det.settings_seen[-1]["guard"]["shadow"] is False  # what the store held, read before erasing
        det.fail = True
        with pytest.raises(DetectorError):
            Guard([det], store=store).erase_user("bob")
    finally:
        store.close()


def test_erasure_listeners_run_before_the_store_and_a_failing_one_stops_it(tmp_path):
    """`Guard.on_erase`: what wraps a Guard forgets the user before the store's rows go; if it fails, nothing is
    erased (a retry is safe), as with a detector's `forget_user`."""
    from guardrails.errors import DetectorError

    calls: list[tuple[str, str]] = []

    def remember(tenant_id: str, user_id: str) -> None:
        calls.append((tenant_id, user_id))

    def broken(tenant_id: str, user_id: str) -> None:
        raise RuntimeError("boom")

    with SettingsStore(tmp_path / "l.db") as store:
        _fill(store, "default", "u")
        guard = Guard([], store=store)
        other_view = Guard([], store=store, tenant_id="acme")  # same store: one gate, one set of listeners
        guard.on_erase(remember)
        other_view.erase_user("v")
        assert calls == [("acme", "v")]
        remove = guard.on_erase(broken)
        with pytest.raises(DetectorError, match="failed to forget"):
            guard.erase_user("u")
        assert store.get("default", "u").settings  # nothing erased
        remove()
        assert guard.erase_user("u")["settings"] == 1  # the failing listener is gone
        assert calls[-1] == ("default", "u")


class _Caching:
    """A detector that caches per user what it saw, like the harm backend's and the sentinel's caches."""

    name = "caching"

    def __init__(self) -> None:
        from guardrails import Stage

        self.stages = frozenset({Stage.INPUT})
        self.cache: dict[tuple[str, str], str] = {}

    def predict(self, request):
        self.cache[(request.tenant_id, request.user_id)] = request.text
        return []

    async def apredict(self, request):
        return self.predict(request)

    def forget_user(self, tenant_id, user_id, settings=None):
        return int(self.cache.pop((tenant_id, user_id), None) is not None)

    def forget_all_users(self):
        n = len(self.cache)
        self.cache.clear()
        return n


def _poll_now(guard: Guard) -> None:
    guard._gate._next_poll = 0.0  # the next check looks at once (POLL_S apart otherwise)


def test_an_erasure_in_another_process_reaches_this_ones_caches(tmp_path):
    """Two workers over one database (two store objects: two processes' worth of gates and caches). An erasure
    in A dropped only A's in-memory data; B kept the user's until evicted (review of session 34). Now the store
    logs each erasure (naming nobody) and B's next check, or its service timer, drops every user's cached data."""
    db = tmp_path / "shared.db"
    with SettingsStore(db) as store_a, SettingsStore(db) as store_b:
        a, b = _Caching(), _Caching()
        guard_a, guard_b = Guard([a], store=store_a), Guard([b], store=store_b)
        for g in (guard_a, guard_b):
            g.check("carol's secret ZEBRA-42", user_id="carol")
            g.check("dave's text", user_id="dave")
        assert ("default", "carol") in b.cache
        guard_a.erase_user("carol")
        assert ("default", "carol") not in a.cache and ("default", "dave") in a.cache  # its own: precise
        assert ("default", "carol") in b.cache  # not yet: B has not looked
        _poll_now(guard_b)
        guard_b.check("hello", user_id="erin")
        assert set(b.cache) == {("default", "erin")}  # whose was erased is unknown to B: everyone's went
        _poll_now(guard_a)
        assert guard_a.poll_erasures() is False  # A's own erasure is not news to A
        assert ("default", "dave") in a.cache
        _poll_now(guard_b)
        assert guard_b.poll_erasures() is False  # nothing new since B's last look
        guard_b.erase_user("erin")
        _poll_now(guard_a)
        assert asyncio.run(guard_a.acheck("x", user_id="frank")).action.value == "allow"
        assert set(a.cache) == {("default", "frank")}  # B's erasure reached A, on the async path too


def test_an_erasure_made_on_the_store_directly_reaches_this_process_guards(tmp_path):
    """`SettingsStore.erase_user` called directly (not through a Guard) used to count as the store's own erasure:
    the Guards over that store object in this process never learned of it and kept the user's cached data. Now
    the next check of any of them, with no POLL_S wait, has every Guard over the store drop every user's cached
    data (one gate per store), as for another process's erasure; an erasure through a Guard stays precise."""
    with SettingsStore(tmp_path / "direct.db") as store:
        a, b = _Caching(), _Caching()
        guard_a, guard_b = Guard([a], store=store), Guard([b], store=store, tenant_id="acme")
        for g in (guard_a, guard_b):
            g.check("carol's secret ZEBRA-42", user_id="carol")
            g.check("dave's text", user_id="dave")
        guard_a.erase_user("dave")  # through a Guard: precise, and not news afterwards
        guard_a.check("x", user_id="carol")
        assert set(a.cache) == {("default", "carol")} and len(b.cache) == 2
        assert store.erase_user("default", "carol")["session_state"] == 0  # directly on the store
        assert set(a.cache) == {("default", "carol")}  # nothing is told before the next check
        guard_a.check("hello", user_id="erin")  # no _poll_now: the direct erasure made the look due
        assert set(a.cache) == {("default", "erin")} and not b.cache
        guard_b.check("hi", user_id="frank")
        guard_a.check("again", user_id="gina")
        assert set(a.cache) == {("default", "erin"), ("default", "gina")}  # news once, not at every check
        assert set(b.cache) == {("acme", "frank")}


def test_erasures_elsewhere_reach_the_service_of_an_idle_worker(tmp_path, monkeypatch):
    """`railguard serve` also looks on a timer: a worker with no traffic dropped nothing until its next check."""
    import time

    from guardrails.service import lifecycle

    monkeypatch.setattr(lifecycle, "POLL_S", 0.05)
    db = tmp_path / "svc.db"
    with SettingsStore(db) as store_a, SettingsStore(db) as store_b:
        b = _Caching()
        guard_b = Guard([b], store=store_b)
        app = create_app(guard_b, store_b)
        with TestClient(app):
            guard_b.check("carol's text", user_id="carol")
            Guard([_Caching()], store=store_a).erase_user("someone")
            _poll_now(guard_b)
            deadline = time.monotonic() + 5
            while b.cache and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not b.cache


def test_a_store_that_cannot_log_erasures_still_erases(tmp_path, caplog):
    """A database whose role could not create the erasure log (an older release's tables): erasure works, the
    log's absence is warned about once, and polls find nothing."""
    import sqlalchemy as sa

    db = tmp_path / "old.db"
    with SettingsStore(db) as store:
        _fill(store, "default", "u")
        with store.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE railguard_erasures"))
        guard = Guard([_Caching()], store=store)
        with caplog.at_level(logging.WARNING, logger="railguard.store"):
            assert guard.erase_user("u")["settings"] == 1
            _poll_now(guard)
            assert guard.poll_erasures() is False
            guard.erase_user("u")
            _poll_now(guard)
            guard.poll_erasures()
        msgs = [r.getMessage() for r in caplog.records]
        assert sum("cannot write the erasure log" in m for m in msgs) == 1  # once per kind, not per erasure
        assert sum("cannot read the erasure log" in m for m in msgs) == 1
    with SettingsStore(db) as store:  # reopened by a role that may create tables: the log is back
        assert store.erasures_since(None) == (0, False)


def test_the_erasure_log_counts_any_id_it_cannot_account_for_as_anothers(tmp_path):
    """An id missing between two of its own (another process's erasure not yet committed when it looked: ids are
    handed out at insert time on PostgreSQL) was missed for good (review of session 34): now a gap counts as
    another's erasure, and an id is this store's own only once its transaction committed."""
    import sqlalchemy as sa

    from guardrails.store.schema import erasure_log

    with SettingsStore(tmp_path / "gap.db") as store:
        first, _ = store.erasures_since(None)
        store.erase_user("default", "a", notified=True)  # as Guard.erase_user makes it
        assert store.erasures_since(first) == (first + 1, False)  # its own, nothing else
        with store.engine.begin() as conn:  # an id skipped, as an uncommitted insert of another process leaves it
            conn.execute(sa.insert(erasure_log).values(id=first + 3, at=sa.func.now()))
        assert store.erasures_since(first + 1) == (first + 3, True)
        store.erase_user("default", "b", notified=True)  # first + 4, its own: still a gap at first + 2
        assert store.erasures_since(first + 1)[1] is True
        newest, _ = store.erasures_since(None)

        def fail_commit(conn):
            raise RuntimeError("disk I/O error at commit")

        sa.event.listen(store.engine, "commit", fail_commit)
        try:
            with pytest.raises(Exception, match="disk I/O"):
                store.erase_user("default", "c", notified=True)
        finally:
            sa.event.remove(store.engine, "commit", fail_commit)
        assert newest + 1 not in store._own_erasures  # rolled back: that id may be another's next


def test_a_guard_without_an_erasure_log_does_not_look_on_every_check(tmp_path):
    """With no store (or one without a log) the poll was due forever: a worker-thread hop on every acheck."""
    calls = []
    guard = Guard([_Caching()])
    real = guard._gate.poll

    def counting(store):
        calls.append(store)
        return real(store)

    guard._gate.poll = counting
    for _ in range(5):
        guard.check("hi", user_id="u")
        asyncio.run(guard.acheck("hi", user_id="u"))
    assert len(calls) == 1 and not guard._gate.poll_due()


def test_erasure_listeners_that_are_not_methods_are_kept(tmp_path):
    """A lambda or a partial handed to on_erase was held weakly, collected at once and never called; a builtin's
    bound method raised TypeError."""
    import functools

    seen: list[tuple] = []
    with SettingsStore(tmp_path / "l2.db") as store:
        guard = Guard([], store=store)
        guard.on_erase(lambda t, u: seen.append(("lambda", t, u)))
        guard.on_erase(functools.partial(lambda tag, t, u: seen.append((tag, t, u)), "partial"))
        record: dict[str, str] = {}
        guard.on_erase(record.setdefault)  # a builtin's bound method: no TypeError, and called
        import gc

        gc.collect()
        guard.erase_user("u")
    assert ("lambda", "default", "u") in seen and ("partial", "default", "u") in seen
    assert record == {"default": "u"}


def test_the_service_timer_watches_the_stores_gate_when_the_guard_has_no_store(tmp_path, monkeypatch):
    """`create_app(Guard([...]), store)`: tenant views use `store` while the base Guard has none; the timer polled
    the base Guard's own gate, which has no log, so an idle worker never dropped anything."""
    import time

    from guardrails.service import lifecycle

    monkeypatch.setattr(lifecycle, "POLL_S", 0.05)
    db = tmp_path / "svc2.db"
    with SettingsStore(db) as store_a, SettingsStore(db) as store_b:
        b = _Caching()
        app = create_app(Guard([b]), store_b)
        _, key = app.state.rg.keys.create_tenant("t")
        with TestClient(app) as tc:
            assert tc.post("/v1/check/input", headers={"Authorization": f"Bearer {key}"},
                           json={"user_id": "carol", "text": "hi"}).status_code == 200
            assert b.cache
            Guard([_Caching()], store=store_a).erase_user("someone")
            gate = app.state.rg.guard_for("t")._gate
            gate._next_poll = 0.0
            deadline = time.monotonic() + 3 * lifecycle.POLL_S
            while b.cache and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not b.cache


def test_an_id_missing_at_one_look_counts_again_when_it_appears(tmp_path):
    """PostgreSQL hands out ids at insert time: an erasure still in its transaction leaves a gap, counted as news
    at once (the cache dropped) but, once it committed, never again, though the user could have been cached anew in
    between (review of session 34). The missing id is watched for and counts again when it appears."""
    import sqlalchemy as sa

    from guardrails.store.schema import erasure_log

    with SettingsStore(tmp_path / "pending.db") as store:
        base, _ = store.erasures_since(None)
        with store.engine.begin() as conn:  # id base + 2 committed, base + 1 "still in its transaction"
            conn.execute(sa.insert(erasure_log).values(id=base + 2, at=sa.func.now()))
        assert store.erasures_since(base) == (base + 2, True)
        assert store.erasures_since(base + 2) == (base + 2, False)
        with store.engine.begin() as conn:  # ... now it committed
            conn.execute(sa.insert(erasure_log).values(id=base + 1, at=sa.func.now()))
        assert store.erasures_since(base + 2) == (base + 2, True)
        assert store.erasures_since(base + 2) == (base + 2, False)  # counted once


def test_a_first_look_that_failed_makes_the_first_answer_count(tmp_path):
    """The database did not answer the gate's first look, checks cached users meanwhile, then another process
    erased one: the first successful look only set a baseline, so the erasure was never seen (review)."""
    db = tmp_path / "first.db"
    with SettingsStore(db) as store_a, SettingsStore(db) as store_b:
        b = _Caching()
        guard_b = Guard([b], store=store_b)
        real = store_b.erasures_since
        store_b.erasures_since = lambda last: None  # type: ignore[method-assign]
        guard_b.check("carol's text", user_id="carol")
        Guard([_Caching()], store=store_a).erase_user("carol")
        store_b.erasures_since = real  # type: ignore[method-assign]
        _poll_now(guard_b)
        assert guard_b.poll_erasures() is True and not b.cache


def test_a_foreign_erasure_tells_detectors_shared_by_tenant_views_once(tmp_path):
    db = tmp_path / "views.db"
    with SettingsStore(db) as store_a, SettingsStore(db) as store_b:
        calls = []

        class Counting(_Caching):
            def forget_all_users(self):
                calls.append(1)
                return super().forget_all_users()

        base = Guard([Counting()], store=store_b)
        views = [base.view(tenant_id=f"t{i}", store=store_b) for i in range(20)]
        base.check("hi", user_id="u")  # the first look: a baseline
        Guard([_Caching()], store=store_a).erase_user("x")
        _poll_now(base)
        assert base.poll_erasures() is True and len(calls) == 1 and len(views) == 20


@pytest.mark.parametrize("bad", [None, "forget", 3])
def test_an_erasure_listener_that_is_not_callable_is_refused_at_once(tmp_path, bad):
    """It was accepted and then failed every erasure of every user ("failed to forget"), long after the mistake."""
    with SettingsStore(tmp_path / "bad.db") as store:
        _fill(store, "default", "u")
        guard = Guard([], store=store)
        with pytest.raises(InvalidInputError, match="must be callable"):
            guard.on_erase(bad)
        assert guard.erase_user("u")["settings"] == 1  # nothing was registered


def test_a_check_waits_for_a_poll_that_found_an_erasure_to_finish_forgetting(tmp_path):
    """Review of session 34: the poll released its lock before its listeners ran, and checks in that moment went
    on (the next poll was not yet due) and read caches about to be dropped. A check now waits for a poll in
    progress, listeners included; a listener that itself checks does not deadlock."""
    import threading

    db = tmp_path / "shared.db"
    with SettingsStore(db) as store_a, SettingsStore(db) as store_b:
        b = _Caching()
        guard_a, guard_b = Guard([_Caching()], store=store_a), Guard([b], store=store_b)
        guard_b.check("hello", user_id="carol")
        forgetting, release, done = threading.Event(), threading.Event(), threading.Event()

        def slow_forget(tenant_id, user_id):
            if tenant_id is None:  # everyone: an erasure found by the poll
                forgetting.set()
                assert release.wait(10)
                guard_b.check("from a listener", user_id="listener")  # re-entrant: no deadlock

        guard_b.on_erase(slow_forget)
        guard_a.erase_user("carol")
        _poll_now(guard_b)
        poller = threading.Thread(target=guard_b.poll_erasures)
        poller.start()
        assert forgetting.wait(10)
        checker = threading.Thread(target=lambda: (guard_b.check("x", user_id="dave"), done.set()))
        checker.start()
        assert not done.wait(0.5)  # held while the poll's listeners run
        release.set()
        poller.join(10)
        checker.join(10)
        assert done.is_set() and not poller.is_alive()
        assert set(b.cache) >= {("default", "dave")} and ("default", "carol") not in b.cache


def test_a_listener_waiting_on_another_threads_check_and_a_slow_store_read_stall_nothing(tmp_path, monkeypatch):
    """Follow-up review (session 35): waiting for the poll's lock deadlocked a listener that waits for a check on
    another thread (the check waited for the listener), and made every check wait while one poll read the store.
    Now checks wait only while listeners run, and at most `FORGET_WAIT_S`; the store is read with none waiting."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from guardrails import erasure

    monkeypatch.setattr(erasure, "FORGET_WAIT_S", 0.3)
    db = tmp_path / "shared.db"
    with SettingsStore(db) as store_a, SettingsStore(db) as store_b, ThreadPoolExecutor(1) as pool:
        guard_a, guard_b = Guard([_Caching()], store=store_a), Guard([_Caching()], store=store_b)
        guard_b.on_erase(lambda t, u: pool.submit(guard_b.check, "from a worker", user_id="w").result(10)
                         if t is None else None)
        guard_a.erase_user("carol")
        _poll_now(guard_b)
        poller = threading.Thread(target=guard_b.poll_erasures)
        poller.start()
        poller.join(10)
        assert not poller.is_alive()  # the worker's check waited its bound, then went on

        reading, release, done = threading.Event(), threading.Event(), threading.Event()
        real = store_b.erasures_since

        def slow_since(mark):
            reading.set()
            assert release.wait(10)
            return real(mark)

        monkeypatch.setattr(store_b, "erasures_since", slow_since)
        guard_a.erase_user("dave")
        _poll_now(guard_b)
        poller = threading.Thread(target=guard_b.poll_erasures)
        poller.start()
        assert reading.wait(10)
        threading.Thread(target=lambda: (guard_b.check("x", user_id="erin"), done.set())).start()
        assert done.wait(10)  # not held by the read in progress
        release.set()
        poller.join(10)
        assert not poller.is_alive()


def test_a_listeners_own_check_never_runs_the_listeners_again():
    """Follow-up review (session 35): listeners that ran longer than POLL_S and checked on their own thread polled
    again, ran every listener a second time inside the first and cleared the mark other threads wait on."""
    import threading

    from guardrails.erasure import UserGate

    class AlwaysNews:  # a store whose log always shows another process's erasure
        n = 0

        def erasures_since(self, mark):
            self.n += 1
            return self.n, True

    gate, store, calls, seen = UserGate(), AlwaysNews(), [], {}

    def listener(tenant_id, user_id):
        calls.append(threading.get_ident())
        if len(calls) == 1:
            gate._next_poll = 0.0  # as if the listeners had run past POLL_S
            seen["nested"] = gate.poll(store)  # what a check on this thread does
            seen["still_marked"] = gate.poll_due() and gate._forgetter == threading.get_ident()

    gate.add_listener(listener)
    assert gate.poll(store) is True
    assert len(calls) == 1 and seen == {"nested": False, "still_marked": True} and gate._forgetter is None


def test_a_direct_erasure_hook_that_raises_is_logged_and_the_erasure_stands(tmp_path, caplog):
    """A hook only makes the Guards' next look at the erasure log due; one that fails must not undo or hide the
    erasure, nor keep the hooks after it from running, and its log line names no user."""
    import logging

    with SettingsStore(tmp_path / "hooks.db") as store:
        calls: list[str] = []

        def broken() -> None:
            raise RuntimeError("carol's hook broke")

        store.on_direct_erasure(broken)
        store.on_direct_erasure(lambda: calls.append("after"))
        _fill(store, "default", "carol")
        with caplog.at_level(logging.WARNING, logger="railguard"):
            erased = store.erase_user("default", "carol")
        assert erased == {"settings": 1, "session_state": 2, "audit": 2} and calls == ["after"]
        assert "an erasure hook failed (RuntimeError)" in caplog.text and "carol" not in caplog.text
        assert store.get("default", "carol").version == 0 and store.history("default", "carol") == []
