"""The examples run against the real service (fake model; no downloads)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from fastapi.testclient import TestClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_langchain_agent_with_remote_guard(service):
    _, key = service.new_tenant()
    example = _load("service_langchain_remote_agent")
    replies = example.main(service.url, key)
    assert replies[0] == "Here is what I found: order 42: shipped."  # the tool ran, its call and result checked
    assert "jane.doe@example.com" not in replies[1] and "[REDACTED" in replies[1]
    assert replies[2].startswith("Thanks. The card number was removed")  # the model saw the redacted input
    with service.client(key) as c:  # the per-user settings in the service apply to the remote agent
        c.put_section("alice", "guard", {"disabled_detectors": ["pii"]})
    replies = example.main(service.url, key)
    assert "jane.doe@example.com" in replies[1]


def test_fastapi_chat_app_embedding_the_client(service, monkeypatch):
    _, key = service.new_tenant()
    monkeypatch.setenv("RAILGUARD_URL", service.url)
    monkeypatch.setenv("RAILGUARD_API_KEY", key)
    example = _load("service_fastapi_chat_app")
    alice = {"x-user-id": "alice"}
    with TestClient(example.app) as app:
        assert app.post("/chat", json={"message": "hi"}).status_code == 401  # no signed-in user
        r = app.post("/chat", headers=alice, json={"session_id": "s", "message": "mail me at a@example.com"})
        assert r.status_code == 200 and "a@example.com" not in r.json()["reply"]
        assert r.json()["input"] == "redact"
        r = app.post("/chat/proxy", headers=alice, json={"message": "hello"})
        assert r.json()["reply"] == "echo: hello"
        # End users may not switch off protective detectors or turn on shadow mode for themselves ...
        for body in ({"shadow": True}, {"disabled_detectors": ["pii"]}, {"disabled_detectors": ["privacy"]}):
            assert app.put("/me/guard", headers=alice, json=body).status_code == 422
        # ... and a service refusal is the caller's 422, not a 500 (this test service runs no `harm` detector)
        r = app.put("/me/guard", headers=alice, json={"disabled_detectors": ["harm"]})
        assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_detector"
        with service.client(key) as operator:  # the operator can (tenant key): shadow = logged, never enforced
            operator.put_section("alice", "guard", {"shadow": True})
        r = app.post("/chat", headers=alice, json={"message": "mail me at a@example.com"})
        assert "a@example.com" in r.json()["reply"]
        r = app.post("/chat", headers={"x-user-id": "bob"}, json={"message": "mail me at a@example.com"})
        assert "a@example.com" not in r.json()["reply"]  # bob's guard is his own
