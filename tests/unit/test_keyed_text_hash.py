"""Text digests in logs and session state are keyed when the deployment sets RAILGUARD_HASH_KEY: a plain SHA-256 of a
short or templated text is recovered by trying candidates (leak audit, session 31)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from guardrails import Guard
from guardrails.decision import HASH_KEY_ENV, _hash_key, text_hash


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setenv(HASH_KEY_ENV, "deployment-secret")
    _hash_key.cache_clear()
    yield b"deployment-secret"
    monkeypatch.delenv(HASH_KEY_ENV, raising=False)
    _hash_key.cache_clear()


TEXT = "my SSN is 123-45-6789"


def test_plain_sha256_without_a_key():
    _hash_key.cache_clear()
    assert text_hash(TEXT) == hashlib.sha256(TEXT.encode()).hexdigest()


def test_keyed_digest_everywhere_text_is_hashed(keyed, keyword, monkeypatch):
    want = hmac.new(keyed, TEXT.encode(), "sha256").hexdigest()
    assert text_hash(TEXT) == want != hashlib.sha256(TEXT.encode()).hexdigest()
    assert Guard([keyword("attack")]).check(TEXT, user_id="u").text_sha256 == want
    from probes.velocity import conversation_digest

    conv = [{"role": "user", "content": TEXT}]
    keyed_digest = conversation_digest(conv)
    monkeypatch.delenv(HASH_KEY_ENV)
    _hash_key.cache_clear()
    assert conversation_digest(conv) != keyed_digest


def test_chat_category_names_do_not_depend_on_the_key(keyed, monkeypatch):
    from agents.router import category_name

    named = category_name("posts about my SSN 123-45-6789")
    monkeypatch.delenv(HASH_KEY_ENV)
    _hash_key.cache_clear()
    assert category_name("posts about my SSN 123-45-6789") == named  # its unblock command finds it by this name
