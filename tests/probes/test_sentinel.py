from __future__ import annotations

import numpy as np
import pytest
import torch

from guardrails.errors import InvalidInputError
from probes.capture import capture, render
from probes.sentinel import SentinelEncoder


def _conv(n, reply="ok, noted"):
    msgs = [{"role": "system", "content": "be careful with private data"}]
    for t in range(n):
        msgs.append({"role": "user", "content": f"question number {t} about the claim"})
        msgs.append({"role": "assistant", "content": reply})
    return msgs[:-1]


def _full(lm, msgs, layers):
    return capture(lm.model, lm.tokenizer, [render(lm.tokenizer, msgs)], layers)[0]


def test_kv_cache_path_equals_full_prefill(tiny):
    enc = SentinelEncoder(tiny.model, tiny.tokenizer, [1, 3])
    for n in range(1, 6):
        msgs = _conv(n)
        acts = enc.activation(msgs, session="s")
        full = _full(tiny, msgs, [1, 3])
        assert abs(acts[1] - full[0]).max() < 1e-4 and abs(acts[3] - full[1]).max() < 1e-4
    assert enc.stats == {"full": 1, "incremental": 4, "hits": 0}
    enc.activation(_conv(5), session="s")
    assert enc.stats["hits"] == 1


def test_template_drift_falls_back_to_full_prefill(tiny):
    enc = SentinelEncoder(tiny.model, tiny.tokenizer, 2)
    enc.activation(_conv(3), session="s")
    changed = _conv(4, reply="a different earlier reply")  # history re-rendered differently
    acts = enc.activation(changed, session="s")
    assert enc.stats["full"] == 2
    assert abs(acts[2] - _full(tiny, changed, [2])[0]).max() < 1e-4


def test_sessions_do_not_share_caches(tiny):
    enc = SentinelEncoder(tiny.model, tiny.tokenizer, 2, max_sessions=2)
    a = enc.activation(_conv(2), session=("t", "u1", "s"))
    b = enc.activation(_conv(2, reply="other"), session=("t", "u2", "s"))
    assert enc.stats["full"] == 2 and not np.allclose(a[2], b[2])
    enc.activation(_conv(1), session="third")  # evicts the oldest
    assert len(enc._lru) == 2


def test_kv_caches_are_bounded_by_tokens_not_only_sessions(tiny):
    """32 sessions of 8k tokens would hold ~6 GB of KV: the LRU also keeps the cached tokens under a budget,
    evicting the least recently used sessions; a conversation longer than the budget is not cached at all."""
    one = len(tiny.tokenizer(render(tiny.tokenizer, _conv(3)))["input_ids"])
    enc = SentinelEncoder(tiny.model, tiny.tokenizer, 2, max_cached_tokens=int(2.5 * one))
    for s in ("a", "b", "c"):
        enc.activation(_conv(3), session=s)
    assert list(enc._lru) == ["b", "c"] and sum(len(e.ids) for e in enc._lru.values()) <= 2.5 * one
    enc.activation(_conv(12), session="long")  # alone over the budget: scored, never cached
    assert "long" not in enc._lru and list(enc._lru) == ["b", "c"]
    before = dict(enc.stats)
    enc.activation(_conv(3), session="c")  # still cached: a hit, no prefill
    assert enc.stats["hits"] == before["hits"] + 1 and enc.stats["full"] == before["full"]


def test_hundred_turn_conversation(tiny):
    enc = SentinelEncoder(tiny.model, tiny.tokenizer, 2)
    msgs = [{"role": "system", "content": "s"}]
    for t in range(100):
        msgs.append({"role": "user", "content": f"q{t}"})
        enc.activation(msgs, session="long")
        msgs.append({"role": "assistant", "content": "a"})
    assert enc.stats["full"] == 1 and enc.stats["incremental"] == 99
    with pytest.raises(InvalidInputError):  # beyond the model context: a clear error, not a crash
        # (distinct words: `probe_text` reads "z" * 5000 as one "z")
        enc.activation([{"role": "user", "content": " ".join(f"z{i}" for i in range(2500))}], session="big")


@pytest.mark.model
def test_kv_cache_matches_full_prefill_on_smollm2(smol):
    enc = SentinelEncoder(smol.model, smol.tokenizer, [9, 30])
    msgs = [{"role": "system", "content": "You are an insurance assistant."}]
    for t in range(3):
        msgs.append({"role": "user", "content": f"What is the policy number of patient {t}?"})
        acts = enc.activation(msgs, session="s")
        full = _full(smol, msgs, [9, 30])
        for k, li in enumerate((9, 30)):
            # fp32 (the default): 1e-3 absolute. Under RAILGUARD_CPU_BF16=1 (the GPU-numerics rehearsal) cached and
            # full attention round differently, up to about one bf16 ulp: 2 % of the vector's scale.
            tol = 1e-3 if smol.model.dtype == torch.float32 else 2e-2 * float(abs(full[k]).max())
            assert abs(acts[li] - full[k]).max() < tol
        msgs.append({"role": "assistant", "content": "It is on file."})
    assert enc.stats["incremental"] == 2


def test_sentence_cuts_equal_their_own_prefills_over_one_kv_path(tiny):
    """activations(..., cuts): each cut (the last user message up to an earlier sentence end) is read over the
    session's KV cache and equals a full prefill of its own rendering; the whole message's activation and the
    cached path are unchanged, so the next turn is still incremental; a re-check with the same cuts is a hit."""
    from probes.segments import sentence_prefixes

    enc = SentinelEncoder(tiny.model, tiny.tokenizer, [1, 3], offsets={3: (0, 2)})
    msgs = _conv(2)
    enc.activation(msgs[:2], session="s")
    text = "give me the address. thanks! also, what next?\nbye"
    msgs[-1] = {"role": "user", "content": text}
    cuts = sentence_prefixes(text)
    assert len(cuts) == 3
    whole, cut_acts = enc.activations(msgs, session="s", cuts=cuts)
    assert enc.stats == {"full": 1, "incremental": 1, "hits": 0}
    fresh = SentinelEncoder(tiny.model, tiny.tokenizer, [1, 3], offsets={3: (0, 2)})
    for cut, got in zip([*cuts, text], [*cut_acts, whole], strict=True):
        want = fresh.activation([*msgs[:-1], {"role": "user", "content": cut}])
        assert set(got) == set(want)
        assert all(abs(got[k] - want[k]).max() < 1e-4 for k in want)
    assert not np.allclose(cut_acts[0][1], whole[1])  # the cuts are read where they end, not at the whole message
    enc.activations(msgs, session="s", cuts=cuts)
    assert enc.stats["hits"] == 1
    nxt = [*msgs, {"role": "assistant", "content": "no"}, {"role": "user", "content": "why not?"}]
    assert abs(enc.activation(nxt, session="s")[3] - fresh.activation(nxt)[3]).max() < 1e-4
    assert enc.stats["incremental"] == 2


def _cuts_match_own_prefills(model, tok, msgs, layers=(1, 3)):
    from probes.segments import sentence_prefixes

    enc = SentinelEncoder(model, tok, list(layers))
    cuts = sentence_prefixes(msgs[-1]["content"])
    whole, cut_acts = enc.activations(msgs, session="s", cuts=cuts)
    fresh = SentinelEncoder(model, tok, list(layers))
    worst = 0.0
    for cut, got in zip([*cuts, msgs[-1]["content"]], [*cut_acts, whole], strict=True):
        want = fresh.activation([*msgs[:-1], {"role": "user", "content": cut}])
        worst = max(worst, *(float(abs(got[k] - want[k]).max()) for k in want))
    return len(cuts), worst


def test_sentence_cuts_where_packing_is_not_safe_or_not_worth_it():
    """Packing the cuts in one row needs sdpa (eager attention adds a boolean mask instead of applying it) and a
    croppable cache (a sliding-window layer past its window cannot be cropped); after a long prefill the cuts get
    a short forward of their own. Each path gives each cut its own prefill's activations."""
    from probe_testkit import CharTokenizer, make_tiny
    from transformers import MistralConfig, MistralForCausalLM

    text = "x" * 100 + " give me the address. thanks! bye now"
    msgs = [{"role": "user", "content": text}]
    eager = make_tiny()
    eager.model.set_attn_implementation("eager")
    assert _cuts_match_own_prefills(eager.model, eager.tokenizer, msgs) == (2, pytest.approx(0, abs=1e-4))
    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, sliding_window=64)
    sliding = MistralForCausalLM(cfg).eval()
    assert _cuts_match_own_prefills(sliding, CharTokenizer(), msgs) == (2, pytest.approx(0, abs=1e-4))
    tiny = make_tiny()
    long = [{"role": "user", "content": "y" * 400 + " give me the address. thanks! bye now"}]  # > 256 new tokens
    assert _cuts_match_own_prefills(tiny.model, tiny.tokenizer, long) == (2, pytest.approx(0, abs=1e-4))


def test_a_cut_too_short_for_the_probes_read_sites_fails_closed_not_silently(tiny):
    """A probe reading 40 tokens before the end, a cut whose whole rendering is shorter: its read site would fall in
    the segment packed before it. A typed error (the Guard fails closed), not a wrong activation."""
    enc = SentinelEncoder(tiny.model, tiny.tokenizer, [3], offsets={3: (0, 40)})
    text = "a. " + " ".join(f"b{i}" for i in range(30))  # distinct words: `probe_text` reads "b" * 60 as "b"
    with pytest.raises(InvalidInputError, match="tokens before the end"):
        enc.activations([{"role": "user", "content": text}], cuts=["a."])
    assert enc.activations([{"role": "user", "content": text}])[0][(3, 40)].shape == (32,)


@pytest.mark.model
def test_sentinel_never_runs_the_layers_past_the_deepest_probe_layer_on_smollm2(smol):
    """Early exit (issue #3: "early exit at the probe layer"): with the shipped bundle's read sites (deepest layer
    15 of 30, one site 5 tokens back), a first turn and a KV-reuse turn run decoder blocks 0..14 only (hidden
    state 15 is block 14's output): blocks 15..29, the final norm and the LM head never start, and the cache
    holds nothing past block 14. The activations still equal a complete forward's output_hidden_states."""
    from probes.capture import encode_messages, site_key
    from probes.probe import load_probe

    bundle = load_probe("default")
    deepest, n_blocks = bundle.layers[-1], len(smol.model.model.layers)
    assert deepest < n_blocks  # the early exit has layers to skip (else this test proves nothing)
    ran: list[str] = []
    handles = [block.register_forward_pre_hook(lambda *_, i=i: ran.append(f"block {i}"))
               for i, block in enumerate(smol.model.model.layers)]
    handles += [smol.model.model.norm.register_forward_pre_hook(lambda *_: ran.append("norm")),
                smol.model.lm_head.register_forward_pre_hook(lambda *_: ran.append("lm_head"))]
    enc = SentinelEncoder(smol.model, smol.tokenizer, bundle.layers, offsets=bundle.offsets)
    msgs = [{"role": "system", "content": "You are an insurance assistant."},
            {"role": "user", "content": "What is the policy number of the claim?"}]
    got = []
    try:
        for turn in range(2):
            if turn:
                msgs += [{"role": "assistant", "content": "It is on file."},
                         {"role": "user", "content": "And the patient's psychiatric diagnoses?"}]
            ran.clear()
            got.append((list(msgs), enc.activation(msgs, session="s")))
            assert ran == [f"block {i}" for i in range(deepest)], turn  # each block once, in order, none past
    finally:
        for h in handles:
            h.remove()
    assert enc.stats == {"full": 1, "incremental": 1, "hits": 0}  # the second turn did reuse the KV cache
    cache = enc._lru["s"].cache
    n_tokens = len(encode_messages(smol.tokenizer, msgs))
    assert [cache.get_seq_length(i) for i in range(n_blocks)] == [n_tokens] * deepest + [0] * (n_blocks - deepest)
    for conv, acts in got:
        ids = torch.tensor([encode_messages(smol.tokenizer, conv)])
        with torch.inference_mode():
            hidden = smol.model(input_ids=ids, output_hidden_states=True).hidden_states  # every layer runs
        assert set(acts) == {site_key(li, k) for li, ks in bundle.offsets.items() for k in ks}
        for li, ks in bundle.offsets.items():
            for k in ks:
                want = hidden[li][0, -1 - k].float().numpy()
                tol = 1e-3 if smol.model.dtype == torch.float32 else 2e-2 * float(abs(want).max())  # as above
                assert abs(acts[site_key(li, k)] - want).max() < tol, (li, k)
