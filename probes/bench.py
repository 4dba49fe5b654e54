"""Privacy-guard performance ratios, all measured in one run on one device (CONTRACT ``bench`` keys).

* ``sentinel_ms_p50``: per-turn sentinel check (KV reuse + early exit) over a 20-turn conversation.
* ``judge_ms_p50``: the same local model asked for a yes/no privacy verdict (full prompt, <= 20 new tokens),
  i.e. the LLM-judge alternative, on the same turns. ``judge_over_sentinel`` is their ratio.
* ``turn20_over_turn2``: sentinel cost at user turn 20 over turn 2 (constant-cost claim).
* ``fused_extra_forward_passes``: model forward calls during ``generate`` with the fused hook minus without.
* ``fused_overhead_pct``: time spent inside the fused layer hooks (activation copies to the host included:
  ``FusedProbeHook.busy_s``) as a share of the hooked ``generate`` (the work
  fused mode adds). ``fused_overhead_wall_pct`` is the raw A/B wall-clock difference (interleaved, medians),
  reported too but noise-dominated on a shared CPU.
"""

from __future__ import annotations

import time
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


def _ms(t0: float) -> float:
    """Milliseconds since t0, after the GPU finished what was queued (CUDA kernels run asynchronously)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000


def bench(quick: bool = True) -> dict[str, Any]:
    """Run the privacy benchmarks; returns the CONTRACT keys plus details."""
    import torch

    from guardrails.models import load_causal_lm

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
    inputs = lm.tokenizer.apply_chat_template(_conversation(4), add_generation_prompt=True, return_tensors="pt",
                                              return_dict=True).to(lm.device)
    gen = dict(max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    hook = FusedProbeHook(scorer, identity=lambda: None)
    plain, fused, fused_calls, plain_calls, shares = [], [], 0, 0, []
    try:
        for _ in range(reps + 1):
            calls["n"] = 0
            t0 = time.perf_counter()
            with torch.inference_mode():
                lm.model.generate(**inputs, **gen)
            plain.append(_ms(t0))
            plain_calls = calls["n"]
            calls["n"], hook.busy_s = 0, 0.0
            t0 = time.perf_counter()
            detach = hook.attach(lm, inputs["input_ids"], None)
            try:
                with torch.inference_mode():
                    lm.model.generate(**inputs, **gen)
            finally:
                detach()
            fused.append(_ms(t0))
            fused_calls = calls["n"]
            shares.append(100 * hook.busy_s * 1000 / fused[-1])
    finally:
        counter.remove()
    s_p50, j_p50 = float(np.median(sent)), float(np.median(judge_ms))
    return {
        "device": str(lm.device) + (f" ({torch.cuda.get_device_name()}, {lm.model.dtype})"
                                    if str(lm.device).startswith("cuda")
                                    else f" ({torch.get_num_threads()} threads, {lm.model.dtype})"),
        "fused_extra_forward_passes": int(fused_calls - plain_calls),
        "fused_overhead_pct": float(np.median(shares)),
        "fused_overhead_wall_pct": float(100 * (np.median(fused) - np.median(plain)) / np.median(plain)),
        "sentinel_ms_p50": s_p50,
        "judge_ms_p50": j_p50,
        "judge_over_sentinel": j_p50 / s_p50,
        "turn20_over_turn2": float(sent[19] / sent[1]),
        "sentinel_ms_by_turn": [round(float(x), 2) for x in sent],
        "judge_ms_by_turn": dict(zip(map(str, judge_turns), [round(x, 1) for x in judge_ms], strict=True)),
        "fused_fired": hook.calls, "probe_layers": scorer.layers,
    }
