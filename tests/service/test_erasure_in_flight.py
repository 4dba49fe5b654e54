"""Erasing a user while that user's checks are running (guardrails.erasure): the erasure waits for them, holds
their new ones, never holds other users', and gives up with a typed error (nothing erased) when they overrun."""

from __future__ import annotations

import asyncio
import threading

import pytest
from fastapi.testclient import TestClient

from guardrails import ErasureBusyError, Guard, Stage
from guardrails.service import create_app
from guardrails.store import SettingsStore

WAIT = 10.0  # generous upper bound for events that must happen; never reached when the code is right


class _SessionWriter:
    """Writes session state for the checked user, as the privacy guard's drift tracker does, after `release`
    (for the (tenant, user) pairs in `hold`); `forget_user` can be held too (`forgetting`/`resume`)."""

    name = "writer"

    def __init__(self, store: SettingsStore, hold: set[tuple[str, str]] | None = None) -> None:
        self.stages = frozenset({Stage.INPUT})
        self.store, self.hold = store, hold or set()
        self.entered, self.release = threading.Event(), threading.Event()
        self.forgetting, self.resume = threading.Event(), threading.Event()
        self.resume.set()
        self.checked: list[str] = []

    def predict(self, request):
        if (request.tenant_id, request.user_id) in self.hold:
            self.entered.set()
            assert self.release.wait(WAIT)
        self.store.put_state(request.tenant_id, request.user_id, request.session_id or "s", "drift", {"turn": 2})
        self.checked.append(request.user_id)
        return []

    async def apredict(self, request):
        return await asyncio.to_thread(self.predict, request)

    def forget_user(self, tenant_id, user_id, settings=None):
        self.forgetting.set()
        assert self.resume.wait(WAIT)
        return 0


def _thread(fn, *args, **kwargs) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn(*args, **kwargs)), daemon=True)
    t.start()
    return t, out


def test_an_erasure_waits_for_the_users_check_in_flight_so_its_state_write_is_erased_too(tmp_path):
    with SettingsStore(tmp_path / "e.db") as store:
        det = _SessionWriter(store, hold={("t", "erin")})
        guard = Guard([det], store=store, tenant_id="t")
        checking, _ = _thread(guard.check, "hi", user_id="erin", session_id="s1")
        assert det.entered.wait(WAIT)
        erasing, erased = _thread(guard.erase_user, "erin")
        erasing.join(0.3)
        assert erasing.is_alive()  # held while the check runs (without the gate it finished at once)
        # another user of the same tenant, and the same id in another tenant, are not held
        guard.check("hi", user_id="bob", session_id="s1")
        Guard([det], store=store, tenant_id="u").check("hi", user_id="erin", session_id="s1")
        det.release.set()
        checking.join(WAIT)
        erasing.join(WAIT)
        assert erased == [{"settings": 0, "session_state": 1, "audit": 0, "detectors": {"writer": 0}}]
        assert store.get_state("t", "erin", "s1", "drift") is None  # the in-flight write did not survive
        assert store.get_state("t", "bob", "s1", "drift") == {"turn": 2}
        assert store.get_state("u", "erin", "s1", "drift") == {"turn": 2}


def test_checks_of_the_user_wait_for_the_erasure_and_other_users_do_not(tmp_path):
    with SettingsStore(tmp_path / "e.db") as store:
        det = _SessionWriter(store)
        guard = Guard([det], store=store, tenant_id="t")
        other_view = Guard([det], store=store, tenant_id="t")  # a second Guard over the same store shares the gate
        det.resume.clear()
        erasing, _ = _thread(guard.erase_user, "erin")
        assert det.forgetting.wait(WAIT)
        held, _ = _thread(other_view.check, "hi", user_id="erin", session_id="s1")
        held.join(0.3)
        assert held.is_alive() and "erin" not in det.checked
        guard.check("hi", user_id="bob", session_id="s1")
        assert det.checked == ["bob"]
        det.resume.set()
        erasing.join(WAIT)
        held.join(WAIT)
        assert det.checked == ["bob", "erin"]
        assert store.get_state("t", "erin", "s1", "drift") == {"turn": 2}  # written after the erasure: a new check


def test_an_erasure_that_overruns_raises_erases_nothing_and_frees_the_user(tmp_path):
    with SettingsStore(tmp_path / "e.db") as store:
        store.update_section("t", "erin", "guard", lambda g: {**g, "shadow": True}, actor="t")
        det = _SessionWriter(store, hold={("t", "erin")})
        guard = Guard([det], store=store, tenant_id="t", erase_wait_s=0.05)
        checking, _ = _thread(guard.check, "hi", user_id="erin", session_id="s1")
        assert det.entered.wait(WAIT)
        with pytest.raises(ErasureBusyError, match="nothing was erased"):
            guard.erase_user("erin")
        assert not det.forgetting.is_set() and store.get("t", "erin").version == 1
        det.hold.clear()
        guard.check("hi", user_id="erin", session_id="s2")  # not held: the failed erasure let go of the user
        det.release.set()
        checking.join(WAIT)
        guard.erase_wait_s = WAIT
        assert guard.erase_user("erin")["session_state"] == 2


def test_acheck_waits_for_an_erasure_without_blocking_the_event_loop(tmp_path):
    with SettingsStore(tmp_path / "e.db") as store:
        det = _SessionWriter(store)
        guard = Guard([det], store=store, tenant_id="t")

        async def run() -> list[str]:
            det.resume.clear()
            erasing = asyncio.create_task(guard.aerase_user("erin"))
            assert await asyncio.to_thread(det.forgetting.wait, WAIT)
            held = asyncio.create_task(guard.acheck("hi", user_id="erin", session_id="s1"))
            await guard.acheck("hi", user_id="bob", session_id="s1")  # the loop still runs other users' checks
            await asyncio.sleep(0.2)
            assert not held.done() and det.checked == ["bob"] and guard._gate.in_flight(("t", "erin")) == 0
            det.resume.set()
            await erasing
            await held
            return det.checked

        assert asyncio.run(run()) == ["bob", "erin"]


def test_the_erase_route_answers_409_when_the_users_checks_overrun(tmp_path):
    with SettingsStore(tmp_path / "e.db") as store:
        det = _SessionWriter(store, hold={("t", "erin")})
        app = create_app(Guard([det], store=store, erase_wait_s=0.05), store)
        _, key = app.state.rg.keys.create_tenant("t")
        view = app.state.rg.guard_for("t")  # the tenant's view keeps the Guard's erase_wait_s
        with TestClient(app) as tc:
            checking, _ = _thread(view.check, "hi", user_id="erin", session_id="s1")
            assert det.entered.wait(WAIT)
            r = tc.post("/v1/users/erin/erase", headers={"Authorization": f"Bearer {key}"})
            det.release.set()
            checking.join(WAIT)
            assert r.status_code == 409 and r.json()["error"]["code"] == "erasure_busy", r.text
            assert store.get_state("t", "erin", "s1", "drift") == {"turn": 2}  # nothing erased
            r = tc.post("/v1/users/erin/erase", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200 and r.json()["erased"]["session_state"] == 1, r.text


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "30", None, True])
def test_an_out_of_range_erase_wait_is_a_config_error(bad):
    from guardrails import ConfigError

    with pytest.raises(ConfigError, match="erase_wait_s"):
        Guard([], erase_wait_s=bad)


def test_a_cancelled_acheck_keeps_the_user_admitted_until_its_detectors_finish(tmp_path):
    """A client that goes away cancels the acheck, but its detector keeps running in a worker thread and will still
    write state: the erasure must wait for that write, not for the cancellation."""
    with SettingsStore(tmp_path / "e.db") as store:
        det = _SessionWriter(store, hold={("t", "erin")})
        guard = Guard([det], store=store, tenant_id="t")

        async def run() -> None:
            task = asyncio.create_task(guard.acheck("hi", user_id="erin", session_id="s1"))
            assert await asyncio.to_thread(det.entered.wait, WAIT)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert guard._gate.in_flight(("t", "erin")) == 1  # still admitted: its detector is still running
            assert len(guard._admitted) == 1  # and its body is held, not left to the garbage collector
            erasing = asyncio.create_task(guard.aerase_user("erin"))
            await asyncio.sleep(0.3)
            assert not erasing.done()
            det.release.set()
            assert (await erasing)["session_state"] == 1  # the write of the cancelled check was erased too
            assert guard._gate.in_flight(("t", "erin")) == 0 and not guard._admitted

        asyncio.run(run())
        assert store.get_state("t", "erin", "s1", "drift") is None
        guard.check("hi", user_id="erin", session_id="s2")  # the user is free again


def test_erase_wait_bounds_the_wait_for_another_erasure_of_the_user_too(tmp_path):
    with SettingsStore(tmp_path / "e.db") as store:
        det = _SessionWriter(store)
        guard = Guard([det], store=store, tenant_id="t", erase_wait_s=0.05)
        det.resume.clear()
        first, _ = _thread(guard.erase_user, "erin")
        assert det.forgetting.wait(WAIT)
        with pytest.raises(ErasureBusyError, match="another erasure"):
            guard.erase_user("erin")
        det.resume.set()
        first.join(WAIT)
        assert not first.is_alive()
        assert guard.erase_user("erin")["detectors"] == {"writer": 0}  # the failed wait left nothing held


def test_a_view_keeps_the_guards_settings_and_shares_its_erasure_gate(tmp_path):
    with SettingsStore(tmp_path / "v.db") as store, SettingsStore(tmp_path / "w.db") as other:
        det = _SessionWriter(store, hold={("t2", "erin")})
        guard = Guard([det], store=store, tenant_id="t", shadow=True, erase_wait_s=0.05)
        view = guard.view(tenant_id="t2")
        assert (view.slots, view.store, view.tenant_id, view.shadow, view.erase_wait_s) == (
            guard.slots, store, "t2", True, 0.05)
        assert guard.view().tenant_id == "t" and guard.view([]).slots == ()
        assert guard.view(store=other).store is other
        checking, _ = _thread(view.check, "hi", user_id="erin", session_id="s1")
        assert det.entered.wait(WAIT)
        with pytest.raises(ErasureBusyError):  # a second view over the store sees the first one's check in flight
            guard.view(tenant_id="t2").erase_user("erin")
        det.release.set()
        checking.join(WAIT)
