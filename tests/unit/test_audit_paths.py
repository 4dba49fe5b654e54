"""The audit trail's changed paths: schema names as they are, names a user chose as their keyed hash."""

from __future__ import annotations

import json
import logging
from typing import Annotated, ClassVar

from pydantic import BaseModel, Field

from guardrails import Action, BaseDetector, CheckRequest, Decision, Finding, Guard, Stage, name_hash
from guardrails.store import IDENTIFIER_KEYS, GuardSettings, changed_paths, section_models


class Rule(BaseModel):
    on: bool = False
    labels: dict[str, int] = Field(default_factory=dict)


class Section(BaseModel):
    audit_public_keys: ClassVar[dict[str, frozenset[str] | str]] = {
        "rules": frozenset({"builtin"}), "limits": IDENTIFIER_KEYS}

    rules: dict[str, Rule] = Field(default_factory=dict)
    maybe: Annotated[dict[str, Rule] | None, Field(default=None)]
    limits: dict[str, float] = Field(default_factory=dict)
    flag: bool = False


MODELS = {"s": Section}


def test_schema_names_and_declared_keys_are_shown_and_user_chosen_keys_are_hashed() -> None:
    old = {"s": {"rules": {"builtin": {"on": False}}}}
    new = {"s": {"flag": True, "rules": {"builtin": {"on": True}, "posts about jane doe": {"on": True},
                                         "jane-doe-divorce": {"labels": {"her ex": 1}}},
                 "maybe": {"john smith": {"on": True}}, "limits": {"pii": 0.5, "a b": 1.0}}}
    paths = changed_paths(old, new, MODELS)
    h = name_hash
    assert sorted(paths) == sorted([
        "s.flag", "s.rules.builtin.on",
        f"s.rules.{h('posts about jane doe')}.on",
        f"s.rules.{h('jane-doe-divorce')}.labels.{h('her ex')}",  # an identifier-looking user name is hashed too
        f"s.maybe.{h('john smith')}.on",  # Optional and Annotated are looked through
        "s.limits.pii", f"s.limits.{h('a b')}",  # operator identifiers as safe_segment shows them
    ])
    assert not any(w in json.dumps(paths) for w in ("jane", "john", "ex"))


def test_keys_the_models_do_not_describe_are_hashed() -> None:
    # a section no model describes (a plugin since uninstalled), and a field no longer in the schema
    paths = changed_paths({"gone": {"alice-notes": {"x": 1}}, "s": {"dropped_field": 1}}, {}, MODELS)
    assert paths == [f"gone.{name_hash('alice-notes')}.{name_hash('x')}", f"s.{name_hash('dropped_field')}"]


def test_the_default_models_are_the_registered_sections() -> None:
    assert changed_paths({}, {"guard": {"shadow": True, "thresholds": {"pii": 0.2}}}) == [
        "guard.shadow", "guard.thresholds.pii"]
    assert section_models()["guard"] is GuardSettings
    moderation = section_models()["moderation"]  # the personalization plugin's section declares its base names
    paths = changed_paths({}, {"moderation": {"categories": {"spam": {"action": "block"},
                                                             "crypto-shilling": {"action": "block"}}}})
    assert moderation.__name__ == "ModerationProfile"
    assert paths == [f"moderation.categories.{name_hash('crypto-shilling')}.action",
                     "moderation.categories.spam.action"]


def _decision() -> Decision:
    return Decision(action=Action.BLOCK, stage=Stage.INPUT, user_id="u", findings=(
        Finding(detector="harm", category="posts-about-jane-doe", score=0.9, threshold=0.5, user_category=True,
                detail="blocked 'posts about jane doe'"),
        Finding(detector="harm", category="spam", score=0.1, threshold=0.5, action=Action.ALLOW)))


def test_a_user_named_category_is_logged_as_its_hash_and_returned_by_name() -> None:
    d = _decision()
    record = d.log_record()
    assert [f["category"] for f in record["findings"]] == [name_hash("posts-about-jane-doe"), "spam"]  # type: ignore[index]
    assert "jane" not in json.dumps(record)
    assert d.findings[0].category == "posts-about-jane-doe"  # the caller's own Decision keeps the name
    assert "posts-about-jane-doe" in d.model_dump_json()
    assert d.findings[0].log_name == name_hash("posts-about-jane-doe") and d.findings[1].log_name == "spam"


class NamedCategoryDetector(BaseDetector):
    """Flags every text under a category the user named, as the harm plugin does for a user's own category."""

    name = "harm"

    def predict(self, request: CheckRequest) -> list[Finding]:
        return [Finding(detector=self.name, category="posts-about-jane-doe", score=0.9, threshold=0.5,
                        user_category=True, explanation="user category; above threshold")]


def test_the_guards_and_the_services_log_lines_hold_the_hash(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from guardrails.service import create_app
    from guardrails.store import SettingsStore

    caplog.set_level(logging.INFO)
    with SettingsStore(tmp_path / "svc.db") as store:
        app = create_app(Guard([NamedCategoryDetector()], store=store), store)
        _, key = app.state.rg.keys.create_tenant("t")
        with TestClient(app) as tc:
            r = tc.post("/v1/check/input", json={"user_id": "u", "text": "hello"},
                        headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.json()["findings"][0]["category"] == "posts-about-jane-doe"  # the caller's
    decisions = [json.loads(r.getMessage()) for r in caplog.records if r.name == "railguard.decision"]
    checks = [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == "check"]
    assert decisions and decisions[0]["findings"][0]["category"] == name_hash("posts-about-jane-doe")
    assert checks and checks[0]["findings"] == ["harm/" + name_hash("posts-about-jane-doe")]
    assert "jane" not in caplog.text + json.dumps(checks)


def test_a_public_keys_declaration_that_is_not_a_set_of_names_is_refused() -> None:
    """Follow-up review: a string other than IDENTIFIER_KEYS was tested by substring, so keys inside it showed."""
    import pytest

    from guardrails.errors import ConfigError

    class Typo(BaseModel):
        audit_public_keys: ClassVar[dict[str, object]] = {"rules": "toxic-and-more"}
        rules: dict[str, Rule] = Field(default_factory=dict)

    for bad in ("toxic-and-more", "identifier", ["toxic"], frozenset({1})):
        Typo.audit_public_keys = {"rules": bad}
        with pytest.raises(ConfigError, match="must be a set of names"):
            changed_paths({}, {"t": {"rules": {"and": {"on": True}}}}, {"t": Typo})
    from guardrails import detector

    Typo.audit_public_keys = {"rules": "toxic"}
    detector._local["railguard.settings"]["typo"] = Typo
    try:  # refused when the section is registered, before any write
        with pytest.raises(ConfigError, match="must be a set of names"):
            section_models()
    finally:
        del detector._local["railguard.settings"]["typo"]
    Typo.audit_public_keys = {"rules": {"and"}}  # a plain set is a set of names too
    assert changed_paths({}, {"t": {"rules": {"and": {"on": True}}}}, {"t": Typo}) == ["t.rules.and.on"]
