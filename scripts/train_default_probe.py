#!/usr/bin/env python
"""Reproduce the shipped default privacy probe (probes/default/) from ../shared/data only.

Steps: generate the CI-varied training set (probes.datasets.build_training_set, plus drift_records: 660 extra
CMPL conversations, and chat_records: 320 benign topic-hopping chats; every conversation trains both probes),
split each into train and dev (by ``group``; chats by Alpaca task), train the bundle on train (layer by grouped
CV, tau at the target FPR on held-out folds: per request, and per benign conversation for later turns), evaluate
on dev, run leave-one-scenario-out (LOSO) generalization, and write the bundle with all metrics in its meta.json.
Dev files are written to --work so `railguard probes eval` can re-check them (`dev_multiturn.jsonl`: the default
set's 20 dev conversations plus the extra sets' dev parts; `dev_multiturn_default.jsonl`: the 20 alone,
comparable with older notes). The bundle's context-free probe learns from the unframed rows of that set, the
generated everyday requests and conversations (+ persona copies) and, as rows that never set its τ, the
generated record-holder requests (probes.record_holders); small-talk conversations (probes.small_talk, + persona
copies) join them only with --small-talk (not shipped); the record-holder conversations and the extraction
prompts (probes.leakage) are only evaluated unless --record-holder-conversations / --leakage.

    python scripts/train_default_probe.py [--data ../shared/data/privacy] [--out probes/default] [--work DIR]
    python scripts/train_default_probe.py --drift-only   # keep --out's single-turn probe, retrain the drift probe
    python scripts/train_default_probe.py --context-free-only   # keep the others, retrain the context-free probe
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Hand-written context-free checks (tests/probes/): the first written in session 11; the second in session 13 before
# the generator's second version, the third after it was frozen (so only the third is blind to that design).
HAND_WRITTEN = {"hand_written": "context_free_check.jsonl", "hand_written_2": "context_free_check2.jsonl",
                "hand_written_3": "context_free_check3.jsonl"}
# Session 15's sets, each written before any probe scored it and reported as it is, not under the held-out system
# prompts: requests to agents holding personal records in their prompt (each row carries its agent's prompt), and
# extraction prompts for a private person's details.
HAND_WRITTEN_AS_IS = {"hand_written_record_holders": "record_holder_check.jsonl",
                      "hand_written_leakage": "leakage_check.jsonl"}
# System prompts the hand-written requests are also evaluated under; no training record carries any of them
# (the demo agent's first; tests/probes/test_everyday_data.py checks they stay out of probes.everyday).
HELD_OUT_SYSTEM_PROMPTS = {
    "demo": "You are a concise, helpful assistant. Answer in one or two sentences.",
    "support": "You are a customer support assistant for an online electronics store. Be friendly and helpful.",
    "hr": "You are an HR assistant at a mid-sized company. Help employees with policies, benefits and scheduling.",
    "nova": "You are Nova, a friendly AI companion. Chat casually and keep the user company.",
    "ide": "You are a coding assistant inside an IDE. Help the user write, debug and explain code.",
    "terse": "Be brief.",
    "formal": "You are a knowledgeable assistant. Provide accurate, well-structured answers in a professional tone.",
    "travel": "You are a travel planning assistant. Help users plan trips, find flights and hotels."}
HAND_WRITTEN_CONVERSATIONS = {"hand_written_conversations": "context_free_conversations.jsonl",
                              "hand_written_conversations_2": "context_free_conversations2.jsonl",
                              "hand_written_record_holder_conversations": "record_holder_conversations.jsonl",
                              # session 24: small talk, then the user's own data or a third party's
                              "hand_written_own_data_conversations": "own_data_conversations.jsonl"}


def split_by_group(records: list[dict], frac: float, seed: int) -> tuple[list[dict], list[dict]]:
    groups = sorted({str(r.get("group", r["id"])) for r in records})
    rng = random.Random(seed)
    dev = set(rng.sample(groups, max(1, int(len(groups) * frac))))
    return ([r for r in records if str(r.get("group", r["id"])) not in dev],
            [r for r in records if str(r.get("group", r["id"])) in dev])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "privacy"))
    ap.add_argument("--out", default=str(ROOT / "probes" / "default"))
    ap.add_argument("--work", default=None,
                    help="train/dev JSONL files (default: railguard's per-user cache dir, not a shared /tmp)")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--target-fpr", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared box)")
    ap.add_argument("--drift-only", action="store_true",
                    help="load the bundle in --out and retrain only its multi-turn drift probe (minutes, not hours)")
    ap.add_argument("--context-free-c", type=float, default=0.3,
                    help="inverse regularization of the context-free probe (chosen on the dev splits)")
    ap.add_argument("--record-holder-conversations", action="store_true",
                    help="also train the context-free probe on probes.record_holders' conversations (not shipped)")
    ap.add_argument("--leakage", action="store_true",
                    help="also train the context-free probe on probes.leakage's extraction prompts (not shipped)")
    ap.add_argument("--opening-copies", action=argparse.BooleanOptionalAction, default=True,
                    help="the drift probe also trains on a copy of each conversation opening with small talk "
                         "(probes.small_talk.opening_copies; the shipped drift probe since session 38)")
    ap.add_argument("--long-remark-copies", action=argparse.BooleanOptionalAction, default=False,
                    help="the drift probe also trains on a copy of each conversation with a long remark on every user "
                         "turn (probes.remarks.long_remark_copies; tried in session 39, not shipped)")
    ap.add_argument("--small-talk", action="store_true",
                    help="also train the context-free probe on probes.small_talk's conversations (not shipped)")
    ap.add_argument("--context-free-only", action="store_true",
                    help="load the bundle in --out and retrain only its context-free per-turn probe (minutes)")
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from guardrails.models import load_causal_lm
    from probes.context_free import benign_scenario_rows, train_context_free_probe
    from probes.datasets import build_training_set, chat_records, drift_records, file_sha256, load_jsonl, write_jsonl
    from probes.evaluate import eval_multiturn, eval_single
    from probes.everyday import everyday_conversations, everyday_records, is_unframed, with_personas
    from probes.features import cached_capture, conversation_capture, single_turn_prompts
    from probes.generalization import cross_domain, leave_one_out
    from probes.leakage import leakage_records
    from probes.probe import load_probe
    from probes.record_holders import record_holder_conversations, record_holder_records
    from probes.remarks import long_remark_copies, remark_copies
    from probes.small_talk import opening_copies, small_talk_conversations, split_small_talk
    from probes.train import default_layers
    from probes.train_runs import train_bundle, train_drift_probe

    t_start = time.perf_counter()
    # fp32 whatever the device: the shipped probe is calibrated on fp32 activations and serves bf16 models as is
    # (measured, see guardrails.models.loader.default_dtype); a bf16 rebuild would not reproduce it.
    lm = load_causal_lm(args.model, dtype=torch.float32)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    single, multi = build_training_set(data)
    extra = drift_records(data)
    chats = chat_records(data)
    sources = sorted(p for p in data.rglob("*") if p.is_file())
    shas = {str(p.relative_to(data)): file_sha256(p) for p in sources}
    s_tr, s_dev = split_by_group(single, 0.2, seed=11)
    m_tr, m_dev = split_by_group(multi, 0.25, seed=12)
    x_tr, x_dev = split_by_group(extra, 0.25, seed=13)
    c_tr = [r for r in chats if r["split"] == "train"]  # chat_records splits by Alpaca task, not by group
    conv_tr = m_tr + c_tr + x_tr  # every training conversation (both probes)
    x_dev += [r for r in chats if r["split"] == "dev"]
    if args.work is None:
        from guardrails.models import cache_dir

        args.work = str(cache_dir() / "probe_work")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    write_jsonl(s_tr + conv_tr, work / "train.jsonl")
    write_jsonl(s_dev, work / "dev_single.jsonl")
    write_jsonl(m_dev + x_dev, work / "dev_multiturn.jsonl")
    write_jsonl(m_dev, work / "dev_multiturn_default.jsonl")
    # The context-free probe's data: generated context-free requests (probes.everyday, split on their own), plus every
    # training request and conversation above that carries no scenario (no system message or a generic one).
    e_tr, e_dev = split_by_group(everyday_records(), 0.2, seed=14)
    v_tr, v_dev = split_by_group(everyday_conversations(), 0.2, seed=15)
    # ... and every generated training record again under a deployment-style system prompt (probes.everyday.
    # with_personas: the probe must not depend on the agent's prompt).
    # Agents with personal records in their system prompt (probes.record_holders), split by business: framed
    # rows, so they train the direction with their labels and never set its τ (probes.context_free).
    r_tr, r_dev = split_by_group(record_holder_records(), 0.25, seed=16)
    # ... and conversations with them (same four businesses held out): always evaluated, trained on only with
    # --record-holder-conversations (not in the shipped probe: see probes.record_holders)
    rc_tr, rc_dev = split_by_group(record_holder_conversations(), 0.25, seed=16)
    direction_only = r_tr + (rc_tr if args.record_holder_conversations else [])  # rows that never set τ
    # Extraction prompts (completion, few-shot, recall) for a private person's details (probes.leakage): always
    # evaluated, trained on only with --leakage (not in the shipped probe: its dev FPR, see probes.leakage).
    l_tr, l_dev = split_by_group(leakage_records(), 0.2, seed=17)
    extra_free = l_tr if args.leakage else []
    # Small talk, then a request for the user's own data or a third party's (probes.small_talk; the everyday dev
    # split's templates held out here too): always evaluated, trained on only with --small-talk (not in the shipped
    # probe: see probes.small_talk), as rows that train the direction and never set τ.
    t_tr, t_dev = split_small_talk(small_talk_conversations(), {r["group"] for r in e_dev})
    direction_only += (t_tr + with_personas(t_tr)) if args.small_talk else []
    free_tr = ([r for r in s_tr + conv_tr if is_unframed(r)] + e_tr + v_tr + extra_free
               + with_personas(e_tr + v_tr + extra_free))
    # benign scenario rows: negatives for the context-free direction that never set its τ (probes.context_free)
    framed_benign = benign_scenario_rows(s_tr + m_tr + x_tr)
    write_jsonl(e_dev, work / "dev_everyday.jsonl")
    write_jsonl(v_dev, work / "dev_everyday_conversations.jsonl")
    write_jsonl(r_dev, work / "dev_record_holders.jsonl")
    write_jsonl(rc_dev, work / "dev_record_holder_conversations.jsonl")
    write_jsonl(l_dev, work / "dev_leakage.jsonl")
    write_jsonl(t_dev, work / "dev_small_talk.jsonl")

    # The drift probe's extra conversations: a remark on every user turn (probes.remarks) and small talk before the
    # first one (probes.small_talk.opening_copies), one copy of each training conversation each.
    drift_copies = (remark_copies(conv_tr) + (opening_copies(conv_tr) if args.opening_copies else [])
                    + (long_remark_copies(conv_tr) if args.long_remark_copies else []))
    t0 = time.perf_counter()
    if args.context_free_only:
        bundle = load_probe(args.out)
        bundle.check_model(lm.fingerprint(), lm.name)
        bundle.context_free = train_context_free_probe(free_tr, lm, layer=bundle.single.meta.layer,
                                                       target_fpr=args.target_fpr, data_sha256=shas,
                                                       scenario_negatives=framed_benign, framed_records=direction_only,
                                                       C=args.context_free_c)
    elif args.drift_only:
        bundle = load_probe(args.out)
        bundle.check_model(lm.fingerprint(), lm.name)
        # the conversations' activations as the full run captured them (cached), so only the copies run
        cand = default_layers(lm.num_layers)
        convs = conversation_capture(lm, conv_tr, cand)
        bundle.multiturn = train_drift_probe(conv_tr + drift_copies, lm,
                                             max_layer=bundle.single.meta.layer, layers=cand,
                                             target_fpr=args.target_fpr, data_sha256=shas, captured=(cand, convs))
    else:
        # Every conversation trains both probes: its user turns (history included, labelled per turn) are rows
        # of the per-turn probe, whose later-turn threshold is calibrated on the benign ones, and it is one
        # sequence for the drift probe. (Until session 9 the extra CMPL conversations trained the drift probe
        # only; adding them to the per-turn probe is what brought dev benign conversations under 5 %.)
        # The drift probe also learns from a copy of each conversation with a harmless remark on every user turn
        # (probes.remarks.remark_copies), so a remark repeated on each turn is not read as drift.
        bundle = train_bundle(s_tr + conv_tr, lm, target_fpr=args.target_fpr, multiturn=True,
                              data_sha256=shas, drift_extra=drift_copies)
        bundle.context_free = train_context_free_probe(free_tr, lm, layer=bundle.single.meta.layer,
                                                       target_fpr=args.target_fpr, data_sha256=shas,
                                                       scenario_negatives=framed_benign, framed_records=direction_only,
                                                       C=args.context_free_c)
    train_s = time.perf_counter() - t0

    dev_multi, _, _ = eval_multiturn(bundle, lm, m_dev + x_dev)
    dev_multi_default, _, _ = eval_multiturn(bundle, lm, m_dev, progress=False)
    if bundle.multiturn is not None:
        bundle.multiturn.meta.metrics.update({"dev": dev_multi, "dev_default_20": dev_multi_default,
                                              "n_train_conversations": len(conv_tr),
                                              "n_remark_copies": len(conv_tr),
                                              "n_opening_copies": len(conv_tr) if args.opening_copies else 0,
                                              "n_long_remark_copies": len(conv_tr) if args.long_remark_copies else 0})
    # Context-free requests: the held-out generated ones and three hand-written sets (tests/probes/
    # context_free_check*.jsonl, each written before any probe scored it, never trained on), with the served
    # decision (either per-turn probe).
    context_free = {"everyday_dev": eval_single(bundle, lm, e_dev, latency_sample=0, progress=False)[0],
                    "record_holders_dev": eval_single(bundle, lm, r_dev, latency_sample=0, progress=False)[0],
                    "leakage_dev": eval_single(bundle, lm, l_dev, latency_sample=0, progress=False)[0]}
    hand_sets = {name: load_jsonl(ROOT / "tests" / "probes" / file) for name, file in HAND_WRITTEN.items()}
    for name, rows in hand_sets.items():
        context_free[name] = eval_single(bundle, lm, rows, latency_sample=0, progress=False)[0]
    # The same hand-written requests under system prompts no training record carries (the deployment's prompt
    # moves the context-free probe's score; probes.everyday.with_personas).
    hand = [r for rows in hand_sets.values() for r in rows]
    by_prompt = {}
    for name, prompt in HELD_OUT_SYSTEM_PROMPTS.items():
        m, _, _ = eval_single(bundle, lm, [{**r, "context": prompt} for r in hand], latency_sample=0, progress=False)
        by_prompt[name] = {"caught": round(m["tpr"] * m["n_pos"]), "n_pos": m["n_pos"],
                           "safe_flagged": round(m["fpr"] * m["n_neg"]), "n_neg": m["n_neg"],
                           "context_free_caught": round(m["by_probe"]["context_free"]["tpr"] * m["n_pos"]),
                           "context_free_safe_flagged": round(m["by_probe"]["context_free"]["fpr"] * m["n_neg"])}
    context_free["hand_written_by_system_prompt"] = by_prompt
    for name, file in HAND_WRITTEN_AS_IS.items():
        context_free[name] = eval_single(bundle, lm, load_jsonl(ROOT / "tests" / "probes" / file), latency_sample=0,
                                         progress=False)[0]
    # Conversations (served decision: both per-turn probes and the drift probe): held-out generated ones and the
    # hand-written pairs (tests/probes/context_free_conversations*.jsonl).
    context_free["everyday_conversations_dev"] = eval_multiturn(bundle, lm, v_dev, progress=False)[0]
    context_free["record_holder_conversations_dev"] = eval_multiturn(bundle, lm, rc_dev, progress=False)[0]
    context_free["small_talk_dev"] = eval_multiturn(bundle, lm, t_dev, progress=False)[0]
    for name, file in HAND_WRITTEN_CONVERSATIONS.items():
        context_free[name] = eval_multiturn(bundle, lm, load_jsonl(ROOT / "tests" / "probes" / file),
                                            progress=False)[0]
    if bundle.context_free is not None:
        bundle.context_free.meta.metrics.update({"dev": context_free, "n_train": len(free_tr),
                                                 "n_scenario_negatives": len(framed_benign),
                                                 "n_direction_only": len(direction_only),
                                                 "options": {"small_talk": args.small_talk, "leakage": args.leakage,
                                                             "record_holder_conversations":
                                                                 args.record_holder_conversations}})
    if args.context_free_only:
        dev_single, _, _ = eval_single(bundle, lm, s_dev, progress=False)
        bundle.save(args.out)
        report = {"train_s": round(train_s, 1), "n_train": len(free_tr), "n_scenario_negatives": len(framed_benign),
                  "context_free": context_free,
                  "dev_single": dev_single, "dev_multiturn": dev_multi, "dev_multiturn_default_20": dev_multi_default}
        (work / "report_context_free.json").write_text(json.dumps(report, indent=2, default=float))
        print(json.dumps(report, default=float))
        return 0
    if args.drift_only:
        bundle.save(args.out)
        report = {"train_s": round(train_s, 1), "n_train_multiturn": len(conv_tr),
                  "dev_multiturn": dev_multi, "dev_multiturn_default_20": dev_multi_default}
        (work / "report_drift.json").write_text(json.dumps(report, indent=2, default=float))
        print(json.dumps(report, default=float))
        return 0

    dev_single, _, _ = eval_single(bundle, lm, s_dev)
    per_source = {}
    for scen in sorted({r["scenario"] for r in s_dev}):
        sub = [r for r in s_dev if r["scenario"] == scen]
        per_source[scen], _, _ = eval_single(bundle, lm, sub, latency_sample=0, progress=False)

    # Leave-one-scenario-out on all single-turn data at the chosen layer(s).
    layers = default_layers(lm.num_layers)
    X = cached_capture(lm, single_turn_prompts(lm.tokenizer, single), layers)
    y = np.array([r["label"] for r in single])
    scen = [r["scenario"] for r in single]
    pos = [layers.index(li) for li in bundle.single.layers]
    loso = leave_one_out(X, y, scen, pos, target_fpr=args.target_fpr)
    # The issue's own protocol too: train on one CMPL scenario's requests, test on another (every ordered pair).
    cross = cross_domain(X, y, scen, pos, domains=[s for s in sorted(set(scen)) if s.startswith("cmpl")],
                         target_fpr=args.target_fpr)

    report = {"context_free": context_free, "train_s": round(train_s, 1),
              "total_s": round(time.perf_counter() - t_start, 1),
              "n_train_single": len(s_tr), "n_train_multiturn": len(conv_tr),
              "dev_single": dev_single, "dev_single_by_source": per_source, "dev_multiturn": dev_multi,
              "dev_multiturn_default_20": dev_multi_default, "loso": loso,
              "cross_scenario": cross}
    bundle.single.meta.metrics.update({"dev": dev_single, "dev_by_source": per_source, "loso": loso,
                                       "cross_scenario": cross, "context_free": context_free})
    bundle.save(args.out)
    (work / "report.json").write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps(report, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
