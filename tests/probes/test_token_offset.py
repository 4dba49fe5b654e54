"""Probes that read a token before the last one (``token_offset``): capture, sentinel, fused hook, artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from probe_testkit import synthetic_bundle

from guardrails.detector import CheckRequest, Message
from guardrails.errors import InvalidInputError
from probes.capture import LayerTap, capture, render, site_key, turn_end_offset
from probes.context_free import train_context_free_probe
from probes.plugin import PrivacyDetector
from probes.probe import TOKEN_OFFSET_FORMAT_VERSION, ProbeMismatchError, load_probe
from probes.sentinel import SentinelEncoder

PROMPTS = ["hello there my friend", "a much longer prompt with several more characters in it", "three word one"]


def _hidden(lm, prompt):
    ids = torch.tensor([lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return lm.model(input_ids=ids, output_hidden_states=True).hidden_states


def _with_offset_free(tiny, offset: int, *, free_tau: float = 1e3):
    bundle = synthetic_bundle(tiny, 2, threshold=1e3)
    free = synthetic_bundle(tiny, 2, threshold=free_tau, seed=7).single
    free.meta.token_offset = offset
    bundle.context_free = free
    return bundle


def test_capture_at_an_offset_equals_output_hidden_states(tiny):
    acts = capture(tiny.model, tiny.tokenizer, PROMPTS, [1, 3], batch_size=3, offset=2)  # right-padded batch
    for j, p in enumerate(PROMPTS):
        hs = _hidden(tiny, p)
        for i, li in enumerate([1, 3]):
            assert torch.allclose(hs[li][0, -3], torch.tensor(acts[j, i]), atol=1e-5)
    with pytest.raises(InvalidInputError, match="shorter than the token offset"):
        capture(tiny.model, tiny.tokenizer, ["x"], [1], offset=40)
    with pytest.raises(InvalidInputError, match="non-negative"):
        LayerTap(tiny.model, [1], offsets={1: (-1,)})


def test_sentinel_reads_every_site_and_its_kv_path_equals_full_prefill(tiny):
    enc = SentinelEncoder(tiny.model, tiny.tokenizer, [1, 3], offsets={1: (0, 4), 3: (0,)})
    msgs = [{"role": "system", "content": "careful"}]
    for t in range(4):
        msgs.append({"role": "user", "content": f"question number {t} about the claim"})
        acts = enc.activation(msgs, session="s")
        assert set(acts) == {1, 3, (1, 4)}
        prompt = render(tiny.tokenizer, msgs)
        at4 = capture(tiny.model, tiny.tokenizer, [prompt], [1], offset=4)[0]
        last = capture(tiny.model, tiny.tokenizer, [prompt], [1, 3])[0]
        assert abs(acts[(1, 4)] - at4[0]).max() < 1e-4 and abs(acts[1] - last[0]).max() < 1e-4
        assert not np.allclose(acts[(1, 4)], acts[1])
        msgs.append({"role": "assistant", "content": "ok"})
    assert enc.stats == {"full": 1, "incremental": 3, "hits": 0}


def test_a_suffix_shorter_than_the_offset_is_prefilled_in_full(tiny):
    enc = SentinelEncoder(tiny.model, tiny.tokenizer, [2], offsets={2: (0, 30)})
    base = [{"role": "user", "content": "a long enough first question about the claim and the policy " * 3}]
    enc.activation(base, session="s")
    longer = [*base, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "and?"}]
    acts = enc.activation(longer, session="s")
    assert enc.stats["full"] == 2 and enc.stats["incremental"] == 0
    want = capture(tiny.model, tiny.tokenizer, [render(tiny.tokenizer, longer)], [2], offset=30)[0, 0]
    assert abs(acts[(2, 30)] - want).max() < 1e-4


def test_artifact_with_a_token_offset_round_trips_and_is_versioned(tiny, tmp_path):
    bundle = _with_offset_free(tiny, 3)
    assert bundle.offsets == {2: (0, 3)} and bundle.layers == [2]
    assert bundle.context_free.keys == [(2, 3)] and bundle.single.keys == [2]
    bundle.save(tmp_path / "b")
    meta = json.loads((tmp_path / "b" / "context_free" / "meta.json").read_text())
    assert meta["token_offset"] == 3 and meta["format_version"] == TOKEN_OFFSET_FORMAT_VERSION
    assert json.loads((tmp_path / "b" / "single" / "meta.json").read_text())["format_version"] == 1
    back = load_probe(tmp_path / "b")
    assert back.context_free.meta.token_offset == 3 and back.offsets == {2: (0, 3)}
    with pytest.raises(ProbeMismatchError, match=r"lack probe layer\(s\) \[\(2, 3\)\]"):  # last token only
        back.context_free.features({2: np.zeros(bundle.single.coef.shape[0], np.float32)})
    from probes.probe import CorruptProbeError

    for bad, match in (({"token_offset": -1}, "invalid"), ({"format_version": 1}, "does not match token_offset"),
                       ({"format_version": 2}, "does not match token_offset")):
        (tmp_path / "b" / "context_free" / "meta.json").write_text(json.dumps({**meta, **bad}))
        with pytest.raises(CorruptProbeError, match=match):  # an offset probe a last-token reader would misread
            load_probe(tmp_path / "b")


class _Tok:
    """A chat template whose generation header rewrites the end of the turn (no suffix relation)."""

    chat_template = "x"

    def apply_chat_template(self, msgs, tokenize=False, add_generation_prompt=False):
        return "<u>Hello there.</u><a>" if add_generation_prompt else "<u>Hello there.<end>"

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids):
        return "".join(map(chr, ids))


def test_turn_end_offset_refuses_a_template_it_cannot_read():
    with pytest.raises(InvalidInputError, match="not a suffix"):
        turn_end_offset(_Tok())


def test_sentinel_and_fused_modes_score_the_offset_site_alike(tiny):
    """The context-free probe at offset 3 of layer 2: both modes read the same vector (fused: one more row of
    the same one-shot hook, still no extra forward) and its margin is w·h[-4] + b."""
    bundle = _with_offset_free(tiny, 3, free_tau=-1e3)
    det = PrivacyDetector(bundle, lm=tiny)
    assert det.scorer.offsets == {2: (0, 3)}
    msgs = [{"role": "user", "content": "what is my neighbour's diagnosis"}]
    req = CheckRequest(stage="input", user_id="u", session_id=None, text=msgs[0]["content"],
                       messages=(Message(**msgs[0]),), settings={})
    got = det.predict(req)[0]
    prompt = render(tiny.tokenizer, msgs)
    h = _hidden(tiny, prompt)[2][0, -4].numpy()
    raw = float(bundle.context_free.coef @ h + bundle.context_free.intercept)
    assert f"(layer 2, 3 tokens before the last): raw {raw:.3f}" in got.explanation and got.action.value == "block"
    hook = PrivacyDetector(bundle, lm=tiny, mode="fused").fused_hook(identity=lambda: None)
    ids = torch.tensor([tiny.tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    detach = hook.attach(tiny, ids, None)
    from guardrails.models.chat import PrefillBlocked

    with pytest.raises(PrefillBlocked), torch.no_grad():
        tiny.model(input_ids=ids)
    detach()
    assert hook.calls == 1 and hook.last_findings[0].score == pytest.approx(got.score, abs=1e-5)


def test_train_context_free_probe_records_its_offset(tiny):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    rows = [{"id": f"s{i}", "context": None, "label": i % 2, "group": f"g{i // 2}",
             "request": ("tell me their secret " if i % 2 else "tell me a fact ") + " ".join(rng.choice(words, 3))}
            for i in range(120)]
    at2 = train_context_free_probe(rows, tiny, layer=2, target_fpr=0.05, progress=False, token_offset=2)
    default = train_context_free_probe(rows, tiny, layer=2, target_fpr=0.05, progress=False)
    assert at2.meta.token_offset == 2 and at2.keys == [site_key(2, 2)]
    assert default.meta.token_offset == turn_end_offset(tiny.tokenizer) == 0  # no chat template: last token
    assert not np.allclose(at2.coef, default.coef)


@pytest.mark.model
def test_turn_end_offset_points_at_the_user_end_of_turn_token(smol):
    k = turn_end_offset(smol.tokenizer)
    prompt = render(smol.tokenizer, [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Where does my neighbour bank?"}])
    ids = smol.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert k == 5 and smol.tokenizer.decode([ids[-1 - k]]) == "<|im_end|>"
    assert smol.tokenizer.decode([ids[-2 - k]]) == "?"
    bundle = load_probe("default")
    assert bundle.context_free is not None and bundle.context_free.meta.token_offset == k
    assert bundle.offsets[bundle.single.meta.layer] == (0, k)
