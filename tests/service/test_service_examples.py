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
    assert replies[0] == "Sure, happy to help with your order."
    assert "jane.doe@example.com" not in replies[1] and "[REDACTED" in replies[1]
    with service.client(key) as c:  # the per-user settings in the service apply to the remote agent
        c.put_section("alice", "guard", {"disabled_detectors": ["pii"]})
    replies = example.main(service.url, key)
    assert "jane.doe@example.com" in replies[1]


def test_fastapi_chat_app_embedding_the_client(service, monkeypatch):
    _, key = service.new_tenant()
    monkeypatch.setenv("RAILGUARD_URL", service.url)
    monkeypatch.setenv("RAILGUARD_API_KEY", key)
    example = _load("service_fastapi_chat_app")
    with TestClient(example.app) as app:
        r = app.post("/chat", json={"user_id": "alice", "session_id": "s", "message": "mail me at a@example.com"})
        assert r.status_code == 200 and "a@example.com" not in r.json()["reply"]
        assert r.json()["input"] == "redact"
        r = app.post("/chat/proxy", json={"user_id": "alice", "message": "hello"})
        assert r.json()["reply"] == "echo: hello"
        r = app.put("/me/alice/guard", json={"shadow": True})
        assert r.json()["version"] == 1 and r.json()["guard"]["shadow"] is True
        r = app.post("/chat", json={"user_id": "alice", "message": "mail me at a@example.com"})
        assert "a@example.com" in r.json()["reply"]  # shadow: decisions logged, never enforced
