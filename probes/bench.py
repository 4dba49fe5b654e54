"""Privacy-guard performance ratios, all measured in one run on one device (CONTRACT ``bench`` keys).

* ``sentinel_ms_p50``: per-turn sentinel check (KV reuse + early exit) over a 20-turn conversation.
* ``judge_ms_p50``: the same local model asked for a yes/no privacy verdict (full prompt, <= 20 new tokens),
  i.e. the LLM-judge alternative, on the same turns. ``judge_over_sentinel`` is their ratio.
* ``turn20_over_turn2``: sentinel cost at user turn 20 over turn 2 (constant-cost claim).
* ``fused_extra_forward_passes``: model forward calls during ``generate`` with the fused hook minus without.
* ``fused_cut_extra_forward_calls`` / ``fused_cut_overhead_wall_pct``: the same for a turn with a sentence cut
  (" Thanks!" after the request), whose head is prefilled with the cut's few tokens beside it
  (``FusedProbeHook.attach_prefilled``): one forward call more, no prompt token processed twice.
* ``fused_overhead_pct``: time spent inside the fused layer hooks (activation copies to the host included:
  ``FusedProbeHook.busy_s``) and in planning the turn's readings, as a share of the hooked ``generate`` (the work
  fused mode adds). ``fused_overhead_wall_pct`` is the raw A/B wall-clock difference (interleaved, medians),
  reported too but noise-dominated on a shared CPU.
"""

from __future__ import annotations

import time
import types
from typing import Any

import numpy as np

_TURNS = ["What is the patient's insurance policy number?", "Which hospital did they visit most recently?",
          "What procedures were performed there?", "What are the billing codes for that visit?",
          "Is the chest X-ray covered by the policy?", "What is the patient's age and gender?",
          "What current conditions are listed for the claim?", "Who was the attending physician?"]


JUDGE_NEW_TOKENS = 20  # NeuroFilter's Llama Guard baseline allows 20 new tokens; greedy may stop earlier


def _conversation(n: int) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "You help an insurance agent process a claim. Appropriate: policy "
                                          "details, recent visit, billing, current conditions."}]
    for t in range(n):
        msgs.append({"role": "user", "content": _TURNS[t % len(_TURNS)]})
        msgs.append({"role": "assistant", "content": "Here is the information from the claim file for that."})
    return msgs[:-1]


def _with_thanks(conv: list[dict[str, str]]) -> list[dict[str, str]]:
    return [*conv[:-1], {"role": "user", "content": conv[-1]["content"] + " Thanks!"}]


def _wall_pct(run: dict[str, Any]) -> float:
    """The raw A/B wall-clock difference, fused over plain (medians; noise-dominated on a shared CPU)."""
    return float(100 * (np.median(run["fused"]) - np.median(run["plain"])) / np.median(run["plain"]))


def _ms(t0: float) -> float:
    """Milliseconds since t0, after the GPU finished what was queued (CUDA kernels run asynchronously)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000


def bench(quick: bool = True) -> dict[str, Any]:
    """Run the privacy benchmarks; returns the CONTRACT keys plus details."""
    import torch

    from guardrails.models import cache_keyword, load_causal_lm

    from .fused import FusedProbeHook
    from .probe import load_probe, model_fingerprints
    from .scoring import PrivacyScorer
    from .sentinel import SentinelEncoder

    bundle = load_probe("default")
    lm = load_causal_lm(bundle.model_id)
    bundle.check_model(model_fingerprints(lm), lm.name)
    scorer = PrivacyScorer(bundle)
    reps = 2 if quick else 5
    n_turns = 20

    # --- sentinel: replay 20 turns incrementally, per-turn latency (median over reps) ---
    per_turn = np.zeros((reps + 1, n_turns))
    for r in range(reps + 1):  # replay 0 is a warm-up (allocator, thread pools), dropped below
        enc = SentinelEncoder(lm.model, lm.tokenizer, scorer.layers, offsets=scorer.offsets)
        conv = _conversation(n_turns)
        users = [i for i, m in enumerate(conv) if m["role"] == "user"]
        for t, ui in enumerate(users):
            t0 = time.perf_counter()
            acts = enc.activation(conv[: ui + 1], session="bench")
            scorer.findings(acts, tenant_id="bench", user_id="bench", session_id=f"bench-{r}")
            per_turn[r, t] = _ms(t0)
    sent = np.median(per_turn[1:], axis=0)

    # --- LLM judge on the same model: full prompt each time, short yes/no generation ---
    judge_turns = [2, 10, 20] if quick else [2, 5, 10, 15, 20]
    judge_ms = []
    for t in [judge_turns[0], *judge_turns]:  # the first run is a warm-up (layers past the sentinel's exit, lm_head)
        conv = _conversation(t)
        transcript = "\n".join(f"{m['role']}: {m['content']}" for m in conv)
        q = [{"role": "user", "content": f"Conversation:\n{transcript}\n\nDoes the last user message ask for "
                                         "information that violates the privacy norms above? Answer yes or no."}]
        ids = lm.tokenizer.apply_chat_template(q, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True).to(lm.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            lm.model.generate(**ids, max_new_tokens=JUDGE_NEW_TOKENS, do_sample=False,
                              pad_token_id=lm.tokenizer.pad_token_id)
        judge_ms.append(_ms(t0))
    judge_ms = judge_ms[1:]

    # --- fused: forward-pass count and overhead of the one-shot hook inside generate ---
    calls = {"n": 0}
    counter = lm.model.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    gen = dict(max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    # a session served turn by turn (without a session id, a check reads the whole history it is sent: session 41)
    who = types.SimpleNamespace(user_id="bench", session_id="bench-fused", settings={})
    hook = FusedProbeHook(scorer, identity=lambda: who)
    runs: dict[str, dict[str, Any]] = {}
    try:
        served = _conversation(4)
        for ui in [i for i, m in enumerate(served) if m["role"] == "user"][:-1]:  # its earlier turns, untimed
            upto = served[: ui + 1]
            inputs = lm.tokenizer.apply_chat_template(upto, add_generation_prompt=True, return_tensors="pt",
                                                      return_dict=True).to(lm.device)
            detach, cache = hook.attach_prefilled(lm, inputs["input_ids"], upto)
            try:
                with torch.inference_mode():
                    lm.model.generate(**inputs, **{**gen, "max_new_tokens": 1, "min_new_tokens": 1},
                                      **({} if cache is None else {cache_keyword(lm.model): cache}))
            finally:
                detach()
        # a turn read as served; then the same turn with " Thanks!" after the request, whose sentence cut is read
        # in the head of the prefill (`FusedProbeHook.attach_prefilled`)
        for name, conv in (("one", _conversation(4)), ("cut", _with_thanks(_conversation(4)))):
            inputs = lm.tokenizer.apply_chat_template(conv, add_generation_prompt=True, return_tensors="pt",
                                                      return_dict=True).to(lm.device)
            run = runs[name] = {"plain": [], "fused": [], "shares": []}
            for _ in range(reps + 1):
                calls["n"] = 0
                t0 = time.perf_counter()
                with torch.inference_mode():
                    lm.model.generate(**inputs, **gen)
                run["plain"].append(_ms(t0))
                run["plain_calls"] = calls["n"]
                calls["n"], hook.busy_s = 0, 0.0
                t0 = time.perf_counter()
                detach, cache = hook.attach_prefilled(lm, inputs["input_ids"], conv)  # plans the turn's readings
                attach_ms = _ms(t0)
                try:
                    with torch.inference_mode():
                        resume = {} if cache is None else {cache_keyword(lm.model): cache}
                        lm.model.generate(**inputs, **gen, **resume)
                finally:
                    detach()
                run["fused"].append(_ms(t0))
                run["fused_calls"], run["head"] = calls["n"], cache is not None
                # hook work plus planning the turn's readings (for "cut", also the head's forward: prefill work)
                run["shares"].append(100 * (hook.busy_s * 1000 + attach_ms) / run["fused"][-1])
    finally:
        counter.remove()
    one, cut = runs["one"], runs["cut"]
    s_p50, j_p50 = float(np.median(sent)), float(np.median(judge_ms))
    return {
        "device": str(lm.device) + (f" ({torch.cuda.get_device_name()}, {lm.model.dtype})"
                                    if str(lm.device).startswith("cuda")
                                    else f" ({torch.get_num_threads()} threads, {lm.model.dtype})"),
        "fused_extra_forward_passes": int(one["fused_calls"] - one["plain_calls"]),
        "fused_overhead_pct": float(np.median(one["shares"])),
        "fused_overhead_wall_pct": _wall_pct(one),
        # a turn with a sentence cut: its head runs in a forward call of its own (no prompt token twice)
        "fused_cut_head_prefilled": bool(cut["head"]),
        "fused_cut_extra_forward_calls": int(cut["fused_calls"] - cut["plain_calls"]),
        "fused_cut_overhead_wall_pct": _wall_pct(cut),
        "sentinel_ms_p50": s_p50,
        "judge_ms_p50": j_p50,
        "judge_over_sentinel": j_p50 / s_p50,
        "turn20_over_turn2": float(sent[19] / sent[1]),
        "sentinel_ms_by_turn": [round(float(x), 2) for x in sent],
        "judge_ms_by_turn": dict(zip(map(str, judge_turns), [round(x, 1) for x in judge_ms], strict=True)),
        "fused_fired": hook.calls, "probe_layers": scorer.layers,
    }
