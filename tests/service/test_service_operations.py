"""Operating the service: configuration checked before any worker starts, readiness that tells the truth, failures
visible in logs and metrics, and shutdown that accounts for every request and does not hang on a stuck detector."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from guardrails import Action, Guard, Stage
from guardrails.decision import Finding
from guardrails.detector import BaseDetector, CheckRequest
from guardrails.errors import ConfigError, StoreError
from guardrails.service import create_app
from guardrails.service.env import ServiceEnv
from guardrails.store import SettingsStore

REPO = Path(__file__).resolve().parents[2]


class Flaky(BaseDetector):
    """`mode`: "ok", "raise" (predict fails), "slow" (apredict sleeps)."""

    stages = frozenset(Stage)

    def __init__(self, name: str = "flaky", mode: str = "raise", default_fail_mode: str = "open") -> None:
        self.name, self.mode, self.default_fail_mode = name, mode, default_fail_mode

    def predict(self, request: CheckRequest) -> list[Finding]:
        if self.mode == "raise":
            raise RuntimeError("backend down")
        return [Finding(detector=self.name, category="x", score=0.0, threshold=0.5, action=Action.ALLOW)]

    async def apredict(self, request: CheckRequest) -> list[Finding]:
        if self.mode == "slow" and request.user_id != "__readyz__":
            await asyncio.sleep(30)
        return self.predict(request)


@pytest.fixture
def keep_logging():
    """`run_server` / `configure_json_logging` rewire the railguard and uvicorn loggers: put them back."""
    loggers = [logging.getLogger(n) for n in ("railguard", "uvicorn", "uvicorn.error")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:], lg.propagate = handlers, propagate
        lg.setLevel(level)


@pytest.fixture
def store(tmp_path):
    s = SettingsStore(tmp_path / "ops.db")
    yield s
    s.close()


# ---- 1. configuration -----------------------------------------------------------------------------------------
def test_every_bad_variable_is_named_in_one_error_and_secrets_are_not_quoted():
    bad = {"RAILGUARD_MAX_BODY_BYTES": "1MB", "RAILGUARD_NUM_THREADS": "abc", "RAILGUARD_STATE_TTL_DAYS": "-5",
           "RAILGUARD_WARMUP": "backgroud", "RAILGUARD_SSE_KEEPALIVE_S": "abc", "RAILGUARD_STRICT_DETECTORS": "maybe",
           "RAILGUARD_LOG_LEVEL": "loud", "RAILGUARD_UPSTREAM_TIMEOUT_S": "0"}
    with pytest.raises(ConfigError) as err:
        ServiceEnv.from_environ(bad)
    for name in bad:
        assert name in str(err.value)
    assert "'1MB'" in str(err.value)
    with pytest.raises(ConfigError, match="RAILGUARD_MAX_BODY_BYTES must be a number of bytes from 1"):
        ServiceEnv.from_environ({"RAILGUARD_MAX_BODY_BYTES": "-1"})
    env = ServiceEnv.from_environ({"RAILGUARD_MAX_BODY_BYTES": "2048", "RAILGUARD_WARMUP": "Background",
                                   "RAILGUARD_STATE_TTL_DAYS": "0", "RAILGUARD_DETECTORS": " pii, validator ",
                                   "RAILGUARD_UPSTREAM_TOTAL_TIMEOUT_S": "0", "RAILGUARD_NUM_THREADS": "3"})
    assert (env.max_body_bytes, env.warmup, env.state_ttl_days, env.detectors) == (2048, "background", 0.0,
                                                                                   ["pii", "validator"])
    assert env.upstream_total_timeout_s is None and env.num_threads == 3 and env.strict_detectors
    assert ServiceEnv.from_environ({}) == ServiceEnv()
    flags = ServiceEnv.from_environ({"RAILGUARD_WARM_CHAT_MODEL": "True", "RAILGUARD_STRICT_DETECTORS": "off"})
    assert flags.warm_chat_model is True and flags.strict_detectors is False  # the usual spellings of a flag
    for var, value in (("RAILGUARD_STATE_TTL_DAYS", "1e10"), ("RAILGUARD_MAX_BODY_BYTES", "99999999999"),
                       ("RAILGUARD_NUM_THREADS", "\u0663")):
        with pytest.raises(ConfigError, match=var):
            ServiceEnv.from_environ({var: value})
    # only the fields asked for are read: an embedder is not refused over a variable it does not use
    assert ServiceEnv.from_environ(bad, only={"db_url"}).max_body_bytes == 1 << 20
    with pytest.raises(ValueError, match="unknown ServiceEnv field"):
        ServiceEnv.from_environ({}, only={"nope"})
    for value in ("1_0", "\u0663"):
        with pytest.raises(ConfigError, match="RAILGUARD_UPSTREAM_TIMEOUT_S"):
            ServiceEnv.from_environ({"RAILGUARD_UPSTREAM_TIMEOUT_S": value})


def test_run_server_checks_config_and_store_before_uvicorn_starts(monkeypatch, tmp_path, keep_logging):
    import uvicorn

    from guardrails.service import run_server

    started: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(os.environ.get("PROMETHEUS_MULTIPROC_DIR")))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    for name in ("RAILGUARD_DB_URL", "RAILGUARD_DETECTORS", "RAILGUARD_UPSTREAM_URL", "RAILGUARD_LOG_LEVEL",
                 "RAILGUARD_NUM_THREADS"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # run_server writes them: restored after the test
    monkeypatch.setenv("RAILGUARD_MAX_BODY_BYTES", "1MB")
    with pytest.raises(ConfigError, match="RAILGUARD_MAX_BODY_BYTES"):
        run_server(db_url=str(tmp_path / "a.db"), workers=2)
    monkeypatch.delenv("RAILGUARD_MAX_BODY_BYTES")
    with pytest.raises(ConfigError, match="nosuch"):
        run_server(db_url=str(tmp_path / "a.db"), workers=2, detectors=["pii", "nosuch"])
    monkeypatch.setenv("RAILGUARD_DETECTORS", "")
    with pytest.raises(ConfigError, match="workers"):
        run_server(db_url=str(tmp_path / "a.db"), workers=0)
    with pytest.raises(ConfigError, match="port"):  # was an OverflowError traceback from the bind
        run_server(db_url=str(tmp_path / "a.db"), port=99999)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        if not os.access(tmp_path / "ro", os.W_OK):  # (root can write anywhere)
            with pytest.raises(StoreError):
                run_server(db_url=str(tmp_path / "ro" / "sub" / "x.db"), workers=2)
    finally:
        (tmp_path / "ro").chmod(0o700)
    assert started == []  # uvicorn never started for a bad configuration
    # a good one: workers get a metrics directory, removed again when the server returns
    run_server(db_url=str(tmp_path / "a.db"), workers=2)
    assert started and started[0] and started[0].startswith(os.path.join(os.path.dirname(started[0]), "railguard-"))
    assert not os.path.exists(started[0]) and "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_serve_with_a_bad_variable_is_one_error_line_and_exit_2(tmp_path):
    env = {**os.environ, "RAILGUARD_MAX_BODY_BYTES": "1MB", "RAILGUARD_DB_URL": str(tmp_path / "s.db")}
    r = subprocess.run([sys.executable, "-m", "guardrails.cli", "serve", "--port", "1", "--workers", "2"],
                       env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "RAILGUARD_MAX_BODY_BYTES" in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) <= 3, r.stderr


def test_configured_json_logging_turns_model_progress_bars_off(monkeypatch, keep_logging):
    import warnings

    from transformers.utils import logging as hf_logging

    from guardrails.service.observability import configure_json_logging

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)  # restored (unset) afterwards
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # huggingface_hub may have read the variable at import
        hf_logging.enable_progress_bar()
    assert hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    try:
        configure_json_logging("warning")
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity(verbosity)


# ---- 2. readiness -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["deleted", "corrupted"])
def test_readyz_is_503_when_the_sqlite_file_is_gone_or_broken(tmp_path, damage):
    path = tmp_path / "r.db"
    store = SettingsStore(path)
    try:
        app = create_app(Guard([], store=store), store)
        with TestClient(app) as tc:
            assert tc.get("/readyz").status_code == 200
            if damage == "deleted":
                path.unlink()
            else:
                store.engine.dispose()
                with open(path, "r+b") as f:
                    f.write(b"\0" * 4096)
            r = tc.get("/readyz")
            assert r.status_code == 503 and r.json()["details"]["store"] == "StoreError" if damage == "deleted" \
                else r.status_code == 503, r.text
    finally:
        store.close()


def test_a_detector_failing_its_warm_up_keeps_readyz_503_unless_not_strict(store, monkeypatch):
    monkeypatch.delenv("RAILGUARD_STRICT_DETECTORS", raising=False)
    with TestClient(create_app(Guard([Flaky("broken", "raise")], store=store), store)) as tc:
        r = tc.get("/readyz")
        assert r.status_code == 503, r.text
        assert "broken" in r.json()["details"]["unavailable_detectors"] and "broken" in r.json()["details"]["warmup"]
    monkeypatch.setenv("RAILGUARD_STRICT_DETECTORS", "0")
    with TestClient(create_app(Guard([Flaky("broken", "raise")], store=store), store)) as tc:
        r = tc.get("/readyz")
        assert r.status_code == 200 and "broken" in r.json()["details"]["unavailable_detectors"], r.text


def test_a_warm_up_that_fails_once_is_retried_until_ready(store, monkeypatch):
    """A backend down for a moment at start-up: /readyz 503, then 200 once the background retry passes."""
    from guardrails.service import lifecycle

    monkeypatch.delenv("RAILGUARD_STRICT_DETECTORS", raising=False)
    real_retry = lifecycle._retry_warm_up
    monkeypatch.setattr("guardrails.service.app._retry_warm_up",
                        lambda st, first_s=2.0: real_retry(st, first_s=0.05, most_s=0.1))
    det = Flaky("wobbly", "raise")
    with TestClient(create_app(Guard([det], store=store), store)) as tc:
        assert tc.get("/readyz").status_code == 503
        det.mode = "ok"  # the backend is back
        deadline = time.monotonic() + 10
        while tc.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, tc.get("/readyz").text
            time.sleep(0.05)
        assert "unavailable_detectors" not in (tc.get("/readyz").json().get("details") or {})


# ---- 3. failures visible ------------------------------------------------------------------------------------------
def test_a_fail_open_allow_is_told_from_a_clean_one_in_logs_metrics_and_screens(store, caplog, monkeypatch):
    monkeypatch.setenv("RAILGUARD_STRICT_DETECTORS", "0")
    det = Flaky("flaky", "ok")
    det.gate = True  # a text-level detector: it screens earlier messages too
    app = create_app(Guard([det], store=store), store)
    _, key = app.state.rg.keys.create_tenant("t")
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as tc, caplog.at_level(logging.INFO, logger="railguard.service"):
        det.mode = "raise"
        r = tc.post("/v1/check/input", headers=auth, json={"user_id": "u", "text": "hello"})
        assert r.status_code == 200 and r.json()["action"] == "allow" and r.json()["error"]
        checks = [rec.fields for rec in caplog.records if getattr(rec, "fields", {}).get("event") == "check"]
        assert checks[-1]["failed_detectors"] == ["flaky"]
        r = tc.post("/v1/screen/history", headers=auth,
                    json={"user_id": "u", "messages": [{"role": "user", "content": "earlier"}]})
        assert r.status_code == 200 and r.json()["decisions"][0]["decision"]["error"], r.text  # kept, not dropped
        metrics = tc.get("/metrics").text
    assert 'railguard_detector_errors_total{detector="flaky",stage="input"} 1.0' in metrics
    assert 'railguard_detector_errors_total{detector="flaky",stage="history"} 1.0' in metrics
    assert 'railguard_decisions_total{action="allow",shadow="false",stage="input"} 1.0' in metrics
    assert 'railguard_decisions_total{action="allow",shadow="false",stage="history"} 1.0' in metrics


def test_made_up_http_methods_do_not_add_metric_series(store):
    """Methods are caller input and reach the metrics before auth: bounded to a fixed set."""
    app = create_app(Guard([], store=store), store)
    with TestClient(app) as tc:
        for i in range(40):
            assert tc.request(f"XM{i:04d}", "/healthz").status_code == 405
        metrics = tc.get("/metrics").text
    assert "XM00" not in metrics
    assert 'railguard_http_requests_total{method="other",route="/healthz",status="405"} 40.0' in metrics


class BrokenRedactor(BaseDetector):
    stages = frozenset(Stage)

    def __init__(self, name: str, default_fail_mode: str) -> None:
        self.name, self.default_fail_mode = name, default_fail_mode

    def predict(self, request: CheckRequest) -> list[Finding]:
        return [Finding(detector=self.name, category="secret", score=1.0, threshold=0.5, action=Action.REDACT)]

    def redact(self, text: str) -> str:
        raise RuntimeError("redaction backend down")


def test_a_redactor_that_raises_gets_its_fail_mode_not_a_500(store):
    from guardrails.detectors import PIIDetector

    closed = Guard([BrokenRedactor("secrets", "closed"), PIIDetector()])
    d = closed.check("mail bob@example.com", user_id="u")
    assert d.action is Action.BLOCK and d.redacted_text is None and "secrets: RuntimeError" in d.error
    opened = Guard([BrokenRedactor("secrets", "open"), PIIDetector()])
    d = opened.check("mail bob@example.com", user_id="u")  # the other redactor still applies
    assert d.action is Action.REDACT and d.redacted_text is not None and "bob@example.com" not in d.redacted_text
    assert d.error and not any(f.detector == "secrets" and f.action is Action.REDACT for f in d.findings)
    alone = Guard([BrokenRedactor("secrets", "open")]).check("mail bob@example.com", user_id="u")
    assert alone.action is Action.ALLOW and alone.redacted_text is None and alone.error  # no redaction claimed
    app = create_app(Guard([BrokenRedactor("secrets", "open")], store=store), store)
    _, key = app.state.rg.keys.create_tenant("t")
    with TestClient(app) as tc:
        r = tc.post("/v1/check/input", headers={"Authorization": f"Bearer {key}"},
                    json={"user_id": "u", "text": "the code is 1234"})
        assert r.status_code == 200 and r.json()["action"] == "allow" and r.json()["error"], r.text


# ---- 4. shutdown ----------------------------------------------------------------------------------------------------
_SLOW_SERVER = """
import asyncio, sys
import uvicorn
from guardrails import Action, Guard, Stage
from guardrails.decision import Finding
from guardrails.detector import BaseDetector
from guardrails.service import create_app
from guardrails.service.observability import configure_json_logging
from guardrails.store import SettingsStore

class Slow(BaseDetector):
    name, stages = "slow", frozenset(Stage)
    def predict(self, request):
        return [Finding(detector="slow", category="x", score=0.0, threshold=0.5, action=Action.ALLOW)]
    async def apredict(self, request):
        if request.user_id != "__readyz__":
            open(sys.argv[3], "w").close()  # tells the test the check is running
            await asyncio.sleep(60)
        return self.predict(request)

configure_json_logging("info")
store = SettingsStore(sys.argv[1])
app = create_app(Guard([Slow()], store=store), store)
print(app.state.rg.keys.create_tenant("t")[1], flush=True)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_config=None, access_log=False,
            timeout_graceful_shutdown=0.5)
"""


def test_a_request_cancelled_at_shutdown_still_gets_its_log_line(tmp_path):
    """SIGTERM with a check still running past the graceful timeout: uvicorn cancels it, runs the lifespan's end,
    then re-raises the signal and the process dies; the lifespan must let the cancelled request log first."""
    import json
    import signal

    from tests.service.conftest import free_port

    (tmp_path / "srv.py").write_text(_SLOW_SERVER)
    port = free_port()
    running = tmp_path / "running"
    proc = subprocess.Popen([sys.executable, str(tmp_path / "srv.py"), str(tmp_path / "s.db"), str(port), str(running)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        key = proc.stdout.readline().strip()  # type: ignore[union-attr]
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.2)
        outcome: list[Any] = []

        def call() -> None:
            try:
                outcome.append(httpx.post(f"http://127.0.0.1:{port}/v1/check/input",
                                          headers={"Authorization": f"Bearer {key}"},
                                          json={"user_id": "u", "text": "hello"}, timeout=30).status_code)
            except httpx.HTTPError as exc:
                outcome.append(type(exc).__name__)

        client = threading.Thread(target=call)
        client.start()
        deadline = time.monotonic() + 30
        while not running.exists():  # the check is running (sleeping in the detector)
            assert time.monotonic() < deadline, "the check never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        client.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    records = [json.loads(ln) for ln in err.splitlines() if ln.startswith("{")]
    checks = [r for r in records if r.get("event") == "request" and r.get("route") == "/v1/check/{stage}"]
    assert len(checks) == 1 and checks[0].get("cancelled") is True, err[-3000:]
    assert outcome, "the client call never returned"


_LEAVE = """
import asyncio, atexit, sys, threading, time, typer
from guardrails import offload
from guardrails.cli.app import _leave

class Owner:
    name = "owner"

atexit.register(lambda: print("atexit ran", flush=True))
owner = Owner()
asyncio.run(offload(owner, sum, [1, 2]))  # an idle pool thread is left behind (its owner still alive)
if sys.argv[1] == "stuck":
    threading.Thread(target=time.sleep, args=(120,), name="railguard-stuck").start()
try:
    _leave(0, grace_s=float(sys.argv[2]))
except typer.Exit as e:
    raise SystemExit(e.exit_code)
"""


@pytest.mark.parametrize("case", ["idle", "stuck"])
def test_serve_exits_past_stuck_threads_and_promptly_with_idle_pools(tmp_path, case):
    (tmp_path / "leave.py").write_text(_LEAVE)
    started = time.monotonic()
    r = subprocess.run([sys.executable, str(tmp_path / "leave.py"), case, "5" if case == "idle" else "0.5"],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr[-2000:]
    assert "atexit ran" in r.stdout  # exit handlers run either way
    if case == "idle":  # idle pool threads are shut down first: no grace period spent, nothing reported stuck
        assert took < 4.5 and "still running" not in r.stderr, (took, r.stderr[-2000:])
    else:
        assert took < 30 and "still running" in r.stderr  # not the 120 s the thread sleeps


async def test_offload_survives_its_pool_being_released_in_between(monkeypatch):
    """Another Guard view closing a shared detector between picking its pool and submitting to it."""
    from concurrent.futures import ThreadPoolExecutor

    from guardrails import detector as det_module
    from guardrails import offload

    class Owner:
        name = "shared"

    owner, real = Owner(), det_module._executor_of
    closed = ThreadPoolExecutor(1)
    closed.shutdown()
    picks = iter([closed])
    monkeypatch.setattr(det_module, "_executor_of", lambda o: next(picks, None) or real(o))
    assert await offload(owner, sum, [1, 2, 3]) == 6
    det_module.release_offload(owner)


def test_create_app_leaves_a_callers_store_retention_alone(tmp_path):
    store = SettingsStore(tmp_path / "mine.db", state_ttl=timedelta(days=7))
    try:
        app = create_app(Guard([]), store)
        assert store.state_ttl == timedelta(days=7)  # not switched off or replaced behind the caller's back
        with TestClient(app):
            pass
        assert store.state_ttl == timedelta(days=7)
    finally:
        store.close()


async def test_offload_does_not_resubmit_after_an_unrelated_runtime_error(monkeypatch):
    """Only a pool released in between is retried: "can't start new thread" may have queued the call already."""
    from guardrails import detector as det_module
    from guardrails import offload

    class Refusing:
        _shutdown = False
        submitted = 0

        def submit(self, fn, *args):
            Refusing.submitted += 1
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(det_module, "_executor_of", lambda o: Refusing())
    with pytest.raises(RuntimeError, match="new thread"):
        await offload(object(), sum, [1])
    assert Refusing.submitted == 1


def test_a_failing_redactor_keeps_its_other_findings_and_shadow_failures_are_counted():
    from guardrails.guard_types import DetectorSlot
    from guardrails.service.observability import failed_detectors

    class WarnsToo(BrokenRedactor):
        def predict(self, request: CheckRequest) -> list[Finding]:
            return [*super().predict(request),
                    Finding(detector=self.name, category="threat", score=0.9, threshold=0.5, action=Action.WARN)]

    d = Guard([WarnsToo("secrets", "open")]).check("x", user_id="u")
    assert d.action is Action.WARN and [f.category for f in d.findings] == ["threat", "error"]
    shadow = Guard([DetectorSlot(Flaky("flaky", "raise"), shadow=True)]).check("x", user_id="u")
    assert shadow.error and failed_detectors(shadow) == ["flaky"]


@pytest.mark.parametrize("url", ["notaurl", "http://", "ftp://models.internal/v1", "http://user:s3cretpw@"])
def test_an_upstream_url_that_is_not_http_is_refused_at_start_and_not_quoted(url):
    """`serve --upstream-url notaurl` started and answered every proxied chat with a 502."""
    with pytest.raises(ConfigError, match="RAILGUARD_UPSTREAM_URL must be an http") as err:
        ServiceEnv.from_environ({"RAILGUARD_UPSTREAM_URL": url})
    assert "s3cretpw" not in str(err.value)
    assert ServiceEnv.from_environ({"RAILGUARD_UPSTREAM_URL": "http://127.0.0.1:8000/v1"}).upstream_url
