"""Shared fixtures. Model tests use the real shipped models; plumbing tests use small real detectors."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from guardrails import Action, BaseDetector, CheckRequest, Finding  # noqa: E402


class KeywordDetector(BaseDetector):
    """A tiny real detector for pipeline plumbing tests: flags texts containing `word`."""

    def __init__(self, word: str, action: Action = Action.BLOCK, name: str = "keyword", fail: bool = False,
                 stages=None, gate: bool = False) -> None:
        self.word, self.action, self.name, self.fail = word, action, name, fail
        if stages is not None:
            self.stages = frozenset(stages)
        self.gate = gate
        self.calls = 0

    def predict(self, request: CheckRequest) -> list[Finding]:
        self.calls += 1
        if self.fail:
            raise RuntimeError("detector backend down")
        hit = self.word.lower() in request.text.lower()
        return [Finding(detector=self.name, category=self.word, score=float(hit), threshold=0.5,
                        action=self.action if hit else Action.ALLOW, explanation="keyword match" if hit else "")]

    def redact(self, text: str) -> str:
        import re

        return re.sub(re.escape(self.word), "[REDACTED]", text, flags=re.I)


@pytest.fixture
def keyword():
    return KeywordDetector


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'settings.db'}"
