"""Rebuild the shipped artefacts (example bank, its embeddings, the base-category head) from ../shared/data.

Why a module and not a notebook: the artefacts in `personalization/data/` must be reproducible from a fresh
clone with one command (`python -m personalization.build --data ../shared/data/harm`), and the dev split used
for every number we report is defined here once. Only train files are read; rows are split by a hash of their
id: 20 % dev (evaluation only), 20 % cal (benign rows calibrate thresholds), 60 % train (heads + bank).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .bank import BANK_PATH, ExampleBank
from .direct_abuse import GENERATED_WEIGHT, direct_abuse_records
from .embedding import HEAD_PATH, BaseHeads, Encoder
from .evaluate import DEV_EVAL_PATH

FILES = {"sms_spam_train": None, "toxigen_demos": None, "davidson_train": None, "sst2_train": 20000}
BANK_PER_LABEL = {"spam": 300, "toxic": 300, "negative": 300}
BANK_BENIGN_PER_TASK = {"spam": 200, "toxicity": 200, "sentiment": 200}


def split_of(row_id: str) -> str:
    h = int(hashlib.sha1(row_id.encode()).hexdigest(), 16) % 5
    return "dev" if h == 0 else "cal" if h == 1 else "train"


def load_rows(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Rows per file; SST-2 is subsampled (fixed seed) to keep CPU embedding time modest."""
    out = {}
    for name, cap in FILES.items():
        rows = [json.loads(x) for x in (data_dir / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if x]
        if cap and len(rows) > cap:
            rows = random.Random(0).sample(rows, cap)
        out[name] = rows
    return out


def embed_rows(name: str, rows: list[dict[str, Any]], enc: Encoder, cache: Path | None) -> np.ndarray:
    if cache is not None and (cache / f"{name}.npy").exists():
        ids = json.loads((cache / f"{name}.ids.json").read_text())
        if ids == [r["id"] for r in rows]:
            return np.load(cache / f"{name}.npy", allow_pickle=False)
    E = enc.encode([r["text"] for r in rows])
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"{name}.npy", E)
        (cache / f"{name}.ids.json").write_text(json.dumps([r["id"] for r in rows]))
    return E


def leaky(rows: list[dict[str, Any]], dev_texts: list[str]) -> np.ndarray:
    """Rows whose text occurs inside a dev text. SST-2's train file holds every sub-phrase of its sentences,
    so without this ~40 % of training rows are pieces of dev sentences and dev F1 is inflated (0.93 vs 0.84
    for a lexical model). Exact duplicates (common in the SMS corpus) are caught too."""
    big = "\n".join(t.lower() for t in dev_texts)
    return np.array([r["text"].lower() in big for r in rows], dtype=bool)


def dev_rows(rows: dict[str, list[dict[str, Any]]], min_words_sst2: int = 8) -> dict[str, list[dict[str, Any]]]:
    """Dev rows per task. SST-2 dev keeps sentences of ≥ 8 words: the public test set is full sentences,
    while the train file is mostly short phrases."""
    out: dict[str, list[dict[str, Any]]] = {"spam": [], "toxicity": [], "sentiment": []}
    for name, rs in rows.items():
        for r in rs:
            if split_of(r["id"]) != "dev":
                continue
            if name == "sst2_train" and len(r["text"].split()) < min_words_sst2:
                continue
            out[r["task"]].append(r)
    return out


def build(data_dir: Path, cache: Path | None, out_dev: Path | None, C: float = 16.0, target_fpr: float = 0.05,
          lexical: bool = True, calibration: str = "f1") -> dict[str, Any]:
    enc = Encoder(int8=False)  # artefacts are fit in fp32; an int8 encoder serves them (see models.quantize)
    rows = load_rows(data_dir)
    E_all, recs = [], []
    for name, rs in rows.items():
        t = time.perf_counter()
        E_all.append(embed_rows(name, rs, enc, cache))
        print(f"embedded {name}: {len(rs)} rows in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        recs += rs
    E = np.concatenate(E_all)
    split = np.array([split_of(r["id"]) for r in recs])
    y = np.array([r["label"] for r in recs])
    devs = dev_rows(rows)
    leak = np.zeros(len(recs), dtype=bool)
    for task, rs in devs.items():
        m = np.array([r["task"] == task for r in recs]) & (split != "dev")
        leak[m] = leaky([r for r, k in zip(recs, m, strict=True) if k], [r["text"] for r in rs])
    tr, cal = (split == "train") & ~leak, (split == "cal") & ~leak
    print(f"excluded {int(leak.sum())} train/cal rows that occur inside dev texts", file=sys.stderr)
    texts = [r["text"] for r in recs]
    t_tr = [t for t, m in zip(texts, tr, strict=True) if m]
    t_cal = [t for t, m in zip(texts, cal, strict=True) if m]
    heads = BaseHeads(C=C, use_lexical=lexical, calibration=calibration, target_fpr=target_fpr)
    tasks = np.array([r["task"] for r in recs])
    # Generated direct abuse (personalization.direct_abuse): its train part trains the heads only, at
    # GENERATED_WEIGHT; never the bank, the calibration split or the shipped dev file.
    gen = [r for r in direct_abuse_records() if split_of(r["group"]) != "dev"]
    E_gen = embed_rows("direct_abuse", gen, enc, cache)
    heads.fit(np.concatenate([E[tr], E_gen]), t_tr + [r["text"] for r in gen], [*y[tr], *(r["label"] for r in gen)],
              E[cal], t_cal, list(y[cal]), tasks=[*tasks[tr], *(r["task"] for r in gen)],
              tasks_cal=list(tasks[cal]), row_weight=[1.0] * int(tr.sum()) + [GENERATED_WEIGHT] * len(gen))
    HEAD_PATH.parent.mkdir(parents=True, exist_ok=True)
    heads.save(HEAD_PATH, encoder_name=enc.name)
    # Bank: train-split rows only, deduplicated, balanced per label (benign per task so anchors cover domains).
    rng = random.Random(13)
    bank: list[dict[str, Any]] = []
    seen: set[str] = set()
    filled: dict[tuple[str, str], int] = {}
    for i in rng.sample(range(len(recs)), len(recs)):
        r = recs[i]
        if not tr[i] or r["text"] in seen or len(r["text"]) < 12 or len(r["text"]) > 400:
            continue
        lab, task = r["label"], r["task"]
        quota = BANK_BENIGN_PER_TASK[task] if lab == "benign" else BANK_PER_LABEL[lab]
        key = (lab, task if lab == "benign" else "")
        if filled.get(key, 0) >= quota:
            continue
        filled[key] = filled.get(key, 0) + 1
        seen.add(r["text"])
        bank.append({"id": r["id"], "text": r["text"], "label": lab, "task": task, "source": r["source"]})
    bank.sort(key=lambda b: b["id"])
    BANK_PATH.write_text("".join(json.dumps(b, sort_keys=True, ensure_ascii=False) + "\n" for b in bank),
                         encoding="utf-8")
    # Bank embeddings serve user-category anchors and semantic demo retrieval: the plain (topic) encoder's space.
    eb = ExampleBank.load()
    topic = Encoder(adapter=None, int8=False)
    pos = {r["id"]: i for i, r in enumerate(recs)}
    eb._emb[topic.name] = (E[[pos[i] for i in eb.ids]] if topic.name == enc.name
                           else topic.encode(list(eb.texts)))
    eb.save_embeddings(topic)
    # A small held-out set shipped for `harm personalize-eval` (dev split only; disjoint from bank and head).
    pick = random.Random(5)
    ship = []
    for rs in devs.values():
        for lab in sorted({r["label"] for r in rs}):
            cand = [r for r in rs if r["label"] == lab and len(r["text"]) <= 400]
            ship += pick.sample(cand, min(len(cand), 150))
    ship.sort(key=lambda r: r["id"])
    DEV_EVAL_PATH.write_text("".join(json.dumps({k: r[k] for k in ("id", "text", "label", "task", "source")},
                                                sort_keys=True, ensure_ascii=False) + "\n" for r in ship),
                             encoding="utf-8")
    if out_dev is not None:
        out_dev.mkdir(parents=True, exist_ok=True)
        for task, rs in devs.items():
            (out_dev / f"dev_{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
        (out_dev / "dev_all.jsonl").write_text("".join(json.dumps(r) + "\n" for rs in devs.values() for r in rs))
    counts: dict[str, int] = {}
    for b in bank:
        counts[b["label"]] = counts.get(b["label"], 0) + 1
    return {"bank": counts, "train": int(tr.sum()), "generated_train": len(gen), "cal": int(cal.sum()),
            "dev": int((split == "dev").sum()),
            "excluded_leaky": int(leak.sum()),
            "head_cal_fpr": dict(zip(heads.classes_, heads.cal_fpr_.round(4).tolist(), strict=True))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/harm"))
    ap.add_argument("--cache", type=Path, default=None, help="embedding cache dir (e.g. /tmp/harm_cache)")
    ap.add_argument("--dev-out", type=Path, default=None, help="write dev_*.jsonl evaluation files here")
    ap.add_argument("--C", type=float, default=16.0)
    ap.add_argument("--target-fpr", type=float, default=0.05)
    ap.add_argument("--no-lexical", action="store_true", help="embedding-only heads (ablation)")
    ap.add_argument("--calibration", choices=["f1", "fpr"], default="f1")
    a = ap.parse_args(argv)
    print(json.dumps(build(a.data, a.cache, a.dev_out, a.C, a.target_fpr, not a.no_lexical, a.calibration)))


if __name__ == "__main__":
    main()
