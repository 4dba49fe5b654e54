from __future__ import annotations

import asyncio
import json
import time

import pytest
from pydantic import ValidationError

from guardrails import (
    Action,
    BaseDetector,
    ConfigError,
    Decision,
    DetectorSlot,
    Finding,
    Guard,
    InvalidInputError,
    Stage,
)
from guardrails.text import MAX_TEXT_CHARS


def test_allow_when_nothing_fires(keyword):
    d = Guard([keyword("secret")]).check("hello there", user_id="alice")
    assert d.action is Action.ALLOW and d.stage is Stage.INPUT and d.user_id == "alice"
    assert len(d.findings) == 1 and d.findings[0].action is Action.ALLOW
    assert d.latency_ms >= 0 and d.text_sha256 and d.error is None


def test_most_severe_wins(keyword):
    g = Guard([keyword("foo", Action.WARN, name="a"), keyword("bar", Action.BLOCK, name="b"),
               keyword("baz", Action.REDACT, name="c")])
    assert g.check("foo", user_id="u").action is Action.WARN
    assert g.check("foo baz", user_id="u").action is Action.REDACT
    assert g.check("foo bar baz", user_id="u").action is Action.BLOCK


def test_redact_applies_redactors(keyword):
    d = Guard([keyword("secret", Action.REDACT)]).check("my Secret is here", user_id="u")
    assert d.action is Action.REDACT and d.redacted_text == "my [REDACTED] is here"
    assert "redacted_text" not in d.log_record()


def test_decision_is_frozen(keyword):
    d = Guard([keyword("x")]).check("x", user_id="u")
    with pytest.raises(ValidationError):
        d.action = Action.ALLOW  # type: ignore[misc]
    assert Decision.model_validate_json(d.model_dump_json()) == d


def test_fail_open_and_closed(keyword):
    open_ = Guard([keyword("x", fail=True)]).check("hi", user_id="u")
    # a plain RuntimeError's message may quote its input: the error names the detector and type, message hashed
    assert open_.action is Action.ALLOW and open_.error.startswith("keyword: RuntimeError: message withheld")
    closed = Guard([keyword("x", fail=True)], fail_modes={"keyword": "closed"}).check("hi", user_id="u")
    assert closed.action is Action.BLOCK and closed.findings[0].category == "error"

    class Closed(BaseDetector):
        name = "privacy"
        default_fail_mode = "closed"

        def predict(self, request):
            raise ValueError("non-finite activation")

    assert Guard([Closed()]).check("hi", user_id="u").action is Action.BLOCK


def test_shadow_mode_reports_but_does_not_enforce(keyword):
    d = Guard([keyword("x")], shadow=True).check("x", user_id="u")
    assert d.action is Action.BLOCK and d.shadow and d.enforced_action is Action.ALLOW and not d.blocked
    slot = DetectorSlot(keyword("x"), shadow=True)
    d2 = Guard([slot]).check("x", user_id="u")
    assert d2.action is Action.ALLOW and d2.findings[0].explanation.startswith("[shadow]")


def test_stages_filter_detectors(keyword):
    det = keyword("x", stages={Stage.OUTPUT})
    g = Guard([det])
    assert g.check("x", user_id="u", stage="input").findings == ()
    assert g.check("x", user_id="u", stage="output").action is Action.BLOCK


def test_gate_blocks_skip_expensive_detectors(keyword):
    gate = keyword("\x00", name="gate", gate=True)
    heavy = keyword("x", name="heavy")
    g = Guard([heavy, gate])
    assert g.detector_names == ["gate", "heavy"]
    d = g.check("x\x00", user_id="u")
    assert d.action is Action.BLOCK and heavy.calls == 0
    g.check("x", user_id="u")
    assert heavy.calls == 1


@pytest.mark.parametrize("bad", ["", "   \n\t ", b"\xff\xfe invalid", "a\ud800b", 12345, None])
def test_bad_text_raises_typed_error(keyword, bad):
    with pytest.raises(InvalidInputError):
        Guard([keyword("x")]).check(bad, user_id="u")


def test_huge_text_rejected_before_detectors(keyword):
    det = keyword("x")
    with pytest.raises(InvalidInputError, match="too large"):
        Guard([det]).check("a" * (MAX_TEXT_CHARS + 1), user_id="u")
    assert det.calls == 0


def test_one_megabyte_text_is_checked(keyword):
    d = Guard([keyword("needle")]).check("a" * 1_000_000 + " needle", user_id="u")
    assert d.action is Action.BLOCK


@pytest.mark.parametrize("bad", [[], "a plain string is one text", [{"role": "wizard", "content": "x"}],
                                 [{"role": "user"}], [{"role": "user", "content": 3}], [42], [{"content": "x"}]])
def test_malformed_messages(keyword, bad):
    g = Guard([keyword("zzz")])
    if isinstance(bad, str):
        assert g.check(bad, user_id="u").action is Action.ALLOW
        return
    with pytest.raises(InvalidInputError):
        g.check(bad, user_id="u")


def test_messages_check_last_turn(keyword):
    g = Guard([keyword("x")])
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "fine"}]
    assert g.check(msgs, user_id="u").action is Action.ALLOW
    assert g.check(msgs[:1], user_id="u").action is Action.BLOCK


@pytest.mark.parametrize("uid", ["", "a" * 300, "bad\nid"])
def test_bad_user_ids(keyword, uid):
    with pytest.raises(InvalidInputError):
        Guard([keyword("x")]).check("hi", user_id=uid)


def test_bad_stage_and_config(keyword):
    with pytest.raises(InvalidInputError):
        Guard([keyword("x")]).check("hi", user_id="u", stage="sideways")
    with pytest.raises(ConfigError):
        Guard([keyword("x")], fail_modes={"nope": "open"})
    with pytest.raises(ConfigError):
        Guard([keyword("x")], fail_modes={"keyword": "sometimes"})
    with pytest.raises(ConfigError):
        Guard([keyword("x"), keyword("y")])  # duplicate names
    with pytest.raises(ConfigError):
        Guard([object()])  # type: ignore[list-item]


async def test_acheck_runs_detectors_concurrently():
    class Slow(BaseDetector):
        def __init__(self, name):
            self.name = name

        def predict(self, request):
            time.sleep(0.3)
            return [Finding(detector=self.name, category="c", score=0.0, threshold=0.5, action=Action.ALLOW)]

    g = Guard([Slow(f"s{i}") for i in range(4)])
    t = time.perf_counter()
    d = await g.acheck("hello", user_id="u")
    elapsed = time.perf_counter() - t
    assert len(d.findings) == 4
    # sequential would take >= 1.2 s; concurrency is asserted as a ratio-free bound with wide margin
    assert elapsed < 1.0


async def test_acheck_timeout_applies_fail_mode():
    class Hang(BaseDetector):
        name = "hang"

        async def apredict(self, request):
            await asyncio.sleep(5)
            return []

    d = await Guard([Hang()], timeout_s=0.05, fail_modes={"hang": "closed"}).acheck("hi", user_id="u")
    assert d.action is Action.BLOCK and "TimeoutError" in d.error


async def test_sync_and_async_agree(keyword):
    g = Guard([keyword("foo", Action.WARN, name="a"), keyword("bar", Action.REDACT, name="b")])
    for text in ["foo", "bar", "foo bar", "nothing"]:
        s, a = g.check(text, user_id="u"), await g.acheck(text, user_id="u")
        assert (s.action, s.redacted_text, [f.score for f in s.findings]) == (
            a.action, a.redacted_text, [f.score for f in a.findings])


def test_finding_threshold_override_from_user_settings(keyword):
    class FakeStore:
        def __init__(self, settings):
            self.settings = settings

        def get(self, tenant, user):
            class S:
                pass

            s = S()
            s.settings = self.settings.get(user, {})
            return s

    store = FakeStore({"lenient": {"guard": {"thresholds": {"keyword": 2.0}}},
                       "muted": {"guard": {"disabled_detectors": ["keyword"]}},
                       "shadowed": {"guard": {"shadow": True}}})
    g = Guard([keyword("x")], store=store)
    assert g.check("x", user_id="strict").action is Action.BLOCK
    assert g.check("x", user_id="lenient").action is Action.ALLOW
    assert g.check("x", user_id="muted").findings == ()
    assert g.check("x", user_id="shadowed").enforced_action is Action.ALLOW


def test_check_accepts_langchain_messages_pairs_and_content_parts(keyword):
    """guard.check reads what the integrations hand around: LangChain messages (a list or one), (role, content)
    pairs and OpenAI content parts, all as the same conversation; malformed items stay typed errors."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    guard = Guard([keyword("attack")])
    forms = [
        [SystemMessage("be nice"), HumanMessage("hi"), AIMessage("hello"), HumanMessage("an attack")],
        [("system", "be nice"), ("human", "hi"), ("ai", "hello"), ("user", "an attack")],
        [{"role": "developer", "content": "be nice"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]},
         {"role": "assistant", "content": "hello"},
         {"role": "user", "content": [{"type": "text", "text": "an"}, {"type": "image_url", "image_url": {}},
                                      {"type": "text", "text": "attack"}]}],
    ]
    for form in forms:
        d = guard.check(form, user_id="u")
        assert d.action is Action.BLOCK, form
    assert guard.check(HumanMessage("an attack"), user_id="u").action is Action.BLOCK
    from langchain_core.messages import AIMessageChunk, ChatMessage

    chunks = [ChatMessage(role="system", content="be nice"), AIMessageChunk(content="hello"),
              ChatMessage(role="user", content="an attack")]
    assert guard.check(chunks, user_id="u").action is Action.BLOCK
    assert guard.check([("user", "fine")], user_id="u").action is Action.ALLOW
    for bad in ([("wizard", "hi")], [("user",)], [42], [{"role": "user", "content": [{"type": "text", "text": 1}]}]):
        with pytest.raises(InvalidInputError):
            guard.check(bad, user_id="u")


def test_the_local_models_prompt_reads_roles_as_the_guard_does(keyword):
    """to_chat_dicts (the local chat model's prompt, which the fused hook scores) turned every message type it did
    not list into a user message: a ChatMessage system prompt or a function result was shown to the model as the
    user's words (session 25 audit). It now reads roles as guard.check does, and refuses an unknown one."""
    from langchain_core.messages import ChatMessage, FunctionMessage, HumanMessage

    from guardrails.models import to_chat_dicts

    msgs = [ChatMessage(role="system", content="norms"), HumanMessage("hi"),
            ChatMessage(role="assistant", content="hello"), FunctionMessage(name="f", content="42")]
    assert [m["role"] for m in to_chat_dicts(msgs)] == ["system", "user", "assistant", "tool"]
    guard = Guard([keyword("zz")])
    assert guard.check(msgs, user_id="u").stage is Stage.INPUT  # the Guard reads the same roles (tool last)
    with pytest.raises(InvalidInputError, match="role"):
        to_chat_dicts([ChatMessage(role="wizard", content="hi")])


def test_every_entry_point_reads_content_parts_the_same_way(keyword):
    """One reading of content parts (guardrails.text.content_text) for guard.check, the middleware's and wrapped
    runnables' view (to_chat_dicts, also the local model's prompt) and the HTTP wire model. Before, guard.check
    read only parts typed "text", so text in an "input_text" part (OpenAI Responses, LangChain v1 blocks) went
    unchecked although a provider reads it; the middleware joined every part with spaces and str()-ed the rest."""
    from langchain_core.messages import HumanMessage

    from guardrails.models import to_chat_dicts
    from guardrails.service.schemas import ChatMessageIn

    parts = [{"type": "input_text", "text": "an"}, {"type": "image_url", "image_url": {"url": "x"}},
             {"type": "text", "text": "attack"}, "plain", {"type": "tool_use", "id": "t", "input": {}}]
    guard = Guard([keyword("attack")])
    assert guard.check([{"role": "user", "content": parts[:2]}], user_id="u").action is Action.ALLOW
    hidden = [{"role": "user", "content": [{"type": "input_text", "text": "an attack"}]}]
    assert guard.check(hidden, user_id="u").action is Action.BLOCK
    want = "an\nattack\nplain"
    assert guard.check([{"role": "user", "content": parts}], user_id="u").action is Action.BLOCK
    assert to_chat_dicts([HumanMessage(content=parts)])[0]["content"] == want
    assert ChatMessageIn.model_validate({"role": "user", "content": parts}).content == want
    from guardrails.text import coerce_messages

    assert coerce_messages([{"role": "user", "content": parts}])[0].content == want
    # text a provider reads in other places: a refusal, a tool_result's own content (str or parts), a text document
    more = [{"type": "refusal", "refusal": "no"}, {"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "text", "text": "row 1"}]}, {"type": "tool_result", "tool_use_id": "u", "content": "row 2"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}},
        {"type": "text", "citations": [{"cited_text": "x"}], "index": 0}]  # a streamed citations update: no text
    assert coerce_messages([{"role": "user", "content": more}])[0].content == "no\nrow 1\nrow 2\ndoc"
    doc = [{"type": "document", "title": "T", "context": "C", "source": {"type": "content", "content": (
        {"type": "text", "text": "inner"},)}}, {"type": "tool_result", "content": ({"type": "text", "text": "tup"},)}]
    assert coerce_messages([{"role": "user", "content": doc}])[0].content == "T\nC\ninner\ntup"
    # a reply's reasoning is not read as its text: this reading is also forwarded to models (session 25 review)
    thought = [{"type": "thinking", "thinking": "private chain of thought"}, {"type": "text", "text": "Paris."}]
    assert coerce_messages([{"role": "assistant", "content": thought}])[0].content == "Paris."
    assert to_chat_dicts([HumanMessage(content=more)])[0]["content"] == "no\nrow 1\nrow 2\ndoc"
    assert guard.check([{"role": "user", "content": ["hi", {"type": "tool_result", "tool_use_id": "t",
                                                            "content": "an attack"}]}], user_id="u").blocked
    deep: list = ["x"]
    for _ in range(10):
        deep = [{"type": "tool_result", "content": deep}]
    for bad in ([{"type": "input_text", "text": 5}], [{"type": "refusal", "refusal": 3}], [7], deep):
        with pytest.raises(InvalidInputError):
            coerce_messages([{"role": "user", "content": bad}])
        with pytest.raises(ValueError):
            ChatMessageIn.model_validate({"role": "user", "content": bad})
    with pytest.raises(InvalidInputError):  # HumanMessage itself refuses [7]
        to_chat_dicts([HumanMessage(content=[{"type": "input_text", "text": 5}])])


def test_detector_failure_messages_that_may_quote_input_are_withheld():
    """Decision.error is logged (log_record). A plugin's pydantic ValidationError quotes its input_value (the
    user's text) and a KeyError its key; only railguard's own errors and environment errors keep their message."""
    from pydantic import BaseModel

    from guardrails import DetectorError

    class Strict(BaseModel):
        n: int

    class Validating(BaseDetector):
        name = "validating"

        def predict(self, request):
            Strict.model_validate({"n": request.text})
            return []

    class Typed(BaseDetector):
        name = "typed"

        def predict(self, request):
            raise DetectorError("backend returned 503")

    d = Guard([Validating(), Typed()]).check("my SSN is 078-05-1120", user_id="u")
    assert "078-05" not in d.error and "078-05" not in json.dumps(d.log_record())
    assert "validating: ValidationError: message withheld, sha256 " in d.error
    assert "typed: DetectorError: backend returned 503" in d.error


class _SettingsKeyword(BaseDetector):
    """Blocks a text naming a word the user's own settings block (like a chat-made moderation category)."""

    name = "topic"

    def predict(self, request):
        blocked = request.settings.get("kw", {}).get("blocked", [])
        return [Finding(detector=self.name, category=w, score=1.0, threshold=0.5, action=Action.BLOCK)
                for w in blocked if w in request.text]


class _Unblocker(BaseDetector):
    """A side-effect detector: 'unblock <word>' removes the word from the user's settings, unless `refuse`."""

    name = "cmd"
    side_effects = True

    def __init__(self, store, claim):
        self.store, self.claim, self.refuse, self.ran = store, claim, False, 0

    def lifts(self, request, blocking):
        return self.claim(request, blocking)

    def predict(self, request):
        self.ran += 1
        if request.text.startswith("unblock ") and not self.refuse:
            word = request.text.split()[1]
            self.store.update_section(request.tenant_id, request.user_id, "kw",
                                      lambda s: {"blocked": [w for w in s.get("blocked", []) if w != word]},
                                      actor="cmd")
        return []


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_a_side_effect_detector_may_lift_the_block_its_own_command_undoes(tmp_path, twin, monkeypatch, keyword):
    import asyncio

    from pydantic import BaseModel

    import guardrails.store.sql as store_sql
    from guardrails.store import SettingsStore

    class Kw(BaseModel):
        blocked: list[str] = []

    registered = store_sql.section_models
    monkeypatch.setattr(store_sql, "section_models", lambda: {**registered(), "kw": Kw})

    store = SettingsStore(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        def run(guard, text, user):
            if twin == "sync":
                return guard.check(text, user_id=user)
            return asyncio.run(guard.acheck(text, user_id=user))

        for user in ("a", "b", "c", "d"):
            store.put("default", user, {"kw": {"blocked": ["crypto"]}}, expected_version=0, actor="t")
        claims = {"yes": lambda req, blocking: all(f.category == "crypto" for f in blocking),
                  "raises": lambda req, blocking: 1 / 0, "truthy": lambda req, blocking: "yes"}
        # a claim that raises or says anything but True lifts nothing: blocked, the command not run
        for user, claim in (("a", "raises"), ("b", "truthy")):
            cmd = _Unblocker(store, claims[claim])
            d = run(Guard([_SettingsKeyword(), cmd], store=store), "unblock crypto", user)
            assert d.action is Action.BLOCK and cmd.ran == 0 and store.get("default", user).version == 1
        # a claimed command that applies nothing (refused): judged again under unchanged settings, still blocked
        cmd = _Unblocker(store, claims["yes"])
        cmd.refuse = True
        d = run(Guard([_SettingsKeyword(), cmd], store=store), "unblock crypto", "c")
        assert d.action is Action.BLOCK and cmd.ran == 1 and store.get("default", "c").version == 1
        # the claimed command applies: the message is judged again under the new settings and passes
        cmd = _Unblocker(store, claims["yes"])
        d = run(Guard([_SettingsKeyword(), cmd], store=store), "unblock crypto", "d")
        assert d.action is Action.ALLOW and cmd.ran == 1
        assert store.get("default", "d").settings["kw"] == {"blocked": []}
        assert store.get("default", "a").settings["kw"] == {"blocked": ["crypto"]}  # another user: untouched
        # a block the claim does not cover (another detector's) lifts nothing
        cmd = _Unblocker(store, claims["yes"])
        guard = Guard([_SettingsKeyword(), keyword("unblock", name="other"), cmd], store=store)
        store.update_section("default", "d", "kw", lambda s: {"blocked": ["crypto"]}, actor="t")
        d = run(guard, "unblock crypto", "d")
        assert d.action is Action.BLOCK and cmd.ran == 0
    finally:
        store.close()


class _Broken(BaseDetector):
    name = "topic"  # the same name as the user's own category detector: its failure finding is ("topic", "error")

    def predict(self, request):
        from guardrails import DetectorError

        raise DetectorError("backend down")


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_a_lifting_command_may_waive_what_blocks_it_on_that_message_only(tmp_path, twin, monkeypatch, keyword):
    """`lifts` answering (detector, category) pairs: those blocking findings are let through on this message after
    the command ran (they stay in force for every other message); pairs that do not block are ignored, and a
    detector that failed closed is never waived, even when the user owns a category called "error"."""
    import asyncio

    from pydantic import BaseModel

    import guardrails.store.sql as store_sql
    from guardrails.store import SettingsStore

    class Kw(BaseModel):
        blocked: list[str] = []

    registered = store_sql.section_models
    monkeypatch.setattr(store_sql, "section_models", lambda: {**registered(), "kw": Kw})
    store = SettingsStore(f"sqlite:///{tmp_path / 'w.db'}")

    def run(guard, text, user):
        return guard.check(text, user_id=user) if twin == "sync" else asyncio.run(guard.acheck(text, user_id=user))

    try:
        store.put("default", "u", {"kw": {"blocked": ["crypto", "error"]}}, expected_version=0, actor="t")
        waive_all = _Unblocker(store, lambda req, blocking: frozenset({("topic", "crypto"), ("other", "x")}))
        d = run(Guard([_SettingsKeyword(), waive_all], store=store), "unblock spam crypto", "u")
        assert d.action is Action.ALLOW and waive_all.ran == 1
        (f,) = [f for f in d.findings if f.category == "crypto"]
        assert f.action is Action.ALLOW and "lifted" in f.explanation and f.score == 1.0
        assert run(Guard([_SettingsKeyword()], store=store), "buy crypto", "u").action is Action.BLOCK
        # a pair that is not what blocks (another detector's block) is not waived: still blocked, nothing run
        other = _Unblocker(store, lambda req, blocking: frozenset({("topic", "crypto")}))
        guard = Guard([_SettingsKeyword(), keyword("spam", name="other"), other], store=store)
        d = run(guard, "unblock spam crypto", "u")
        assert d.action is Action.BLOCK and other.ran == 0
        # fail-closed failure: never lifted, whatever the claim says
        failing = _Unblocker(store, lambda req, blocking: frozenset({("topic", "error")}))
        guard = Guard([_Broken(), failing], store=store, fail_modes={"topic": "closed"})
        d = run(guard, "unblock spam", "u")
        assert d.action is Action.BLOCK and failing.ran == 0 and "backend down" in (d.error or "")
    finally:
        store.close()


def test_an_openai_tool_call_turn_with_null_content_reads_as_the_service_reads_it():
    """An OpenAI history holds assistant tool-call turns with `"content": null`: the HTTP service read them as "",
    the Python Guard refused the whole conversation (InvalidInputError, session 37 review). Both read "" now; a null
    user turn being checked is still an error (empty text)."""
    from guardrails.service.schemas import ChatMessageIn
    from guardrails.text import coerce_messages

    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    history = [{"role": "user", "content": "What's the weather in Paris?"},
               {"role": "assistant", "content": None, "tool_calls": [call]},
               {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
               {"role": "assistant", "content": "It's sunny."},
               {"role": "user", "content": "And tomorrow?"}]
    msgs = coerce_messages(history)
    assert [m.content for m in msgs] == [ChatMessageIn.model_validate(m).content for m in history]
    assert msgs[1].content == "" and Guard(detectors=[]).check(history, user_id="u").action is Action.ALLOW
    with pytest.raises(InvalidInputError):
        Guard(detectors=[]).check([{"role": "user", "content": None}], user_id="u")
