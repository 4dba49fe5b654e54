"""`railguard probes ...`: train and evaluate activation probes (mounted by the spine from ``probes.cli:app``).

``--json`` prints exactly one JSON object on stdout; logs and progress bars go to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import typer

from guardrails.cli.output import PLOT_SUFFIXES, emit_json, fail, output_path_problem

app = typer.Typer(help="Activation-probe privacy guard (NeuroFilter): train and evaluate probes.",
                  no_args_is_help=True)


def _setup_logging() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _print(res: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(res)  # one JSON object; NaN/inf become null
    else:
        typer.echo(json.dumps(res, indent=2, default=str))


@app.command()
def train(
    data: list[Path] = typer.Option(..., "--data", help="privacy JSONL file(s); repeatable"),
    out: Path = typer.Option(..., "--out", help="output probe directory (bundle: single/ [+ multiturn/])"),
    model: str = typer.Option("smollm2-135m-instruct", "--model", help="embedded name, HF id or local path"),
    layer: str = typer.Option("auto", "--layer", help="'auto' (grouped CV) or a layer index"),
    target_fpr: float = typer.Option(0.01, "--target-fpr", help="FPR the threshold is calibrated to"),
    multiturn: bool = typer.Option(False, "--multiturn", help="also fit the multi-turn drift probe"),
    method: str = typer.Option("logreg", "--method", help="logreg | diffmean"),
    max_layers: int = typer.Option(4, "--max-layers", help="layers the single-turn probe may concatenate (grouped-CV "
                                   "greedy, shallower than the best one; 1 = one layer)"),
    context_free_data: list[Path] = typer.Option(
        [], "--context-free-data", help="privacy JSONL of requests/conversations with no scenario (no system message "
        "or a generic one): also fit the bundle's context-free probe (repeatable); rows under a system prompt of "
        "their own (an agent holding personal records) train it too but never set its threshold; the benign "
        "scenario rows of --data are its extra negatives"),
    personas: bool = typer.Option(True, "--personas/--no-personas", help="with --context-free-data, also train on a "
                                  "copy of each record under a deployment-style system prompt"),
    drift_target: str = typer.Option("displacement", "--drift-target", help="with --multiturn, what the drift "
                                     "probe is fit on: displacement (a_t - a_1, what S_t thresholds; default) | "
                                     "delta (a_t - a_{t-1}, NeuroFilter's per-turn deltas)"),
    as_json: bool = typer.Option(False, "--json", help="print the training metrics as one JSON object"),
) -> None:
    """Fit + calibrate a probe and write an artifact directory."""
    _setup_logging()
    from guardrails.errors import RailguardError
    from guardrails.models import load_causal_lm

    from .datasets import data_hashes, load_jsonl
    from .probe import bundle_dir_problem
    from .train_runs import train_bundle

    if not 0 < target_fpr < 1:
        fail("--target-fpr must be in (0, 1)", as_json=as_json)
    if method not in ("logreg", "diffmean"):
        fail("--method must be logreg or diffmean", as_json=as_json)
    if drift_target not in ("displacement", "delta"):
        fail("--drift-target must be displacement or delta", as_json=as_json)
    if not 1 <= max_layers <= 8:
        fail("--max-layers must be in 1..8", as_json=as_json)
    problem = output_path_problem(out, directory=True) or bundle_dir_problem(out)
    if problem:
        fail(f"--out: {problem}", as_json=as_json)
    try:
        li = None if layer == "auto" else int(layer)
    except ValueError:
        fail("--layer must be 'auto' or an integer", as_json=as_json)
    try:
        records = [r for f in data for r in load_jsonl(f)]
        if len({r["label"] for r in records}) < 2:  # before minutes of capture, not after
            fail(f"--data needs both labels (0 and 1); got only {sorted({r['label'] for r in records})}",
                 as_json=as_json)
        if multiturn and not any("turns" in r for r in records):
            fail("--multiturn needs multi-turn records ('turns') in --data", as_json=as_json)
        if li is not None and li < 0:
            fail("--layer must be 'auto' or a layer index >= 0", as_json=as_json)
        shas = data_hashes(data)
        # read before the model loads and the main probes train, so a bad file fails in seconds, not after them
        rows = [r for f in context_free_data for r in load_jsonl(f)]
        lm = load_causal_lm(model)
        if li is not None and not 0 <= li <= lm.num_layers:
            fail(f"--layer must be in 0..{lm.num_layers}", as_json=as_json)
        t0 = time.perf_counter()
        bundle = train_bundle(records, lm, layer=li, target_fpr=target_fpr, multiturn=multiturn,
                              method=method, data_sha256=shas, max_layers=max_layers,  # type: ignore[arg-type]
                              drift_target=drift_target)  # type: ignore[arg-type]
        if context_free_data:
            from .context_free import benign_scenario_rows, train_context_free_probe
            from .everyday import is_unframed, with_personas

            shas = data_hashes([*data, *context_free_data])
            # rows under a system prompt of their own (e.g. an agent holding records) train the direction as they
            # are; only unframed rows get persona copies and set τ
            free = [r for r in rows if is_unframed(r)]
            bundle.context_free = train_context_free_probe(
                free + (with_personas(free) if personas else []), lm, layer=bundle.single.meta.layer,
                target_fpr=target_fpr, method=method, data_sha256=shas,  # type: ignore[arg-type]
                scenario_negatives=benign_scenario_rows(records),
                framed_records=[r for r in rows if not is_unframed(r)])
        bundle.save(out)
    except (RailguardError, ValueError, OSError) as exc:
        fail(str(exc), as_json=as_json)
    res: dict[str, Any] = {"out": str(out), "train_s": round(time.perf_counter() - t0, 2),
                           "single": {"layer": bundle.single.meta.layer, "layers": bundle.single.layers,
                                      **bundle.single.meta.metrics["cv"],
                                      "history_threshold": bundle.single.meta.history_threshold}}
    if bundle.multiturn is not None:
        res["multiturn"] = {"layer": bundle.multiturn.meta.layer, "layers": bundle.multiturn.layers,
                            **bundle.multiturn.meta.metrics["cv_conversation"]}
    if bundle.context_free is not None:
        res["context_free"] = {"layer": bundle.context_free.meta.layer,
                               "token_offset": bundle.context_free.meta.token_offset,
                               **bundle.context_free.meta.metrics["cv"]}
    _print(res, as_json)


@app.command("eval")
def eval_(
    probe: str = typer.Option(..., "--probe", help="probe directory or 'default'"),
    data: Path = typer.Option(..., "--data", help="privacy JSONL (single- and/or multi-turn lines)"),
    as_json: bool = typer.Option(False, "--json", help="exactly one JSON object on stdout"),
    plot: Path | None = typer.Option(None, "--plot", help="write a ROC (+ S_t over turns) PNG"),
    model: str | None = typer.Option(None, "--model", help="override the probe's model (must match it)"),
    remarks: bool = typer.Option(False, "--remarks",
                                 help="also re-score every request and conversation (each user turn) with each of "
                                      "probes.remarks' harmless remarks appended (one more pass per remark); "
                                      "reported as 'remarks' in the single-turn and multi-turn parts"),
    alone: bool = typer.Option(False, "--alone",
                               help="score each conversation as a client sending one user message per check "
                                    "(no system prompt, no earlier messages): the drift is then not enforced"),
) -> None:
    """Metrics: n, n_pos, n_neg, auroc, tpr, fpr, threshold, latency_ms_p50 (+ mean_detection_turn; with --remarks,
    the metrics under each appended remark)."""
    _setup_logging()
    import numpy as np

    from guardrails.errors import RailguardError
    from guardrails.models import load_causal_lm

    from . import evaluate as ev
    from .datasets import load_jsonl
    from .probe import load_probe, model_fingerprints
    from .remarks import remark_robustness

    if alone and remarks:
        fail("--alone and --remarks measure different things: run them separately", as_json=as_json)
    problem = output_path_problem(plot, suffixes=PLOT_SUFFIXES) if plot is not None else None
    if problem:  # found out before minutes of scoring, not after
        fail(f"--plot: {problem}", as_json=as_json)
    try:
        bundle = load_probe(probe)
        records = load_jsonl(data)
        if not records:
            fail(f"{data} holds no records", as_json=as_json)
        lm = load_causal_lm(model or bundle.model_id)
        bundle.check_model(model_fingerprints(lm), lm.name)
        single = [r for r in records if "request" in r]
        multi = [r for r in records if "turns" in r]
        parts: dict[str, Any] = {}
        plot_args: dict[str, Any] = {}
        pooled_y: list[int] = []
        pooled_margins: list[float] = []
        if single:
            m, y, s = ev.eval_single(bundle, lm, single)
            margins = ev.single_margins(bundle, s)
            if remarks:
                m["remarks"] = remark_robustness(bundle, lm, single, multiturn=False, clean_margins=margins,
                                                 progress=True)
            parts["single"] = m
            plot_args = {"y": y, "scores": s}
            pooled_y += [int(v) for v in y]
            pooled_margins += [float(v) for v in margins]
        if multi:
            k = len(pooled_margins)
            m, y, drifts = ev.eval_multiturn(bundle, lm, multi, margins_out=pooled_margins, alone=alone)
            if remarks:
                m["remarks"] = remark_robustness(bundle, lm, multi, multiturn=True, clean_margins=pooled_margins[k:],
                                                 progress=True)
            pooled_y += [int(v) for v in y]
            parts["multiturn"] = m
            if not single:
                plot_args = {"y": y, "scores": np.asarray([d.max() for d in drifts])}
            plot_args.update(drifts=drifts, labels=list(y),
                             drift_threshold=bundle.multiturn.meta.threshold if bundle.multiturn else None)
    except (RailguardError, ValueError, OSError) as exc:
        fail(str(exc), as_json=as_json)
    # Top level = the only part; for a file mixing both formats, every row pooled (a conversation counts once,
    # flagged if any turn is; scores are margins over the calibrated thresholds, 0 = flag), both parts nested.
    res = dict(parts["single"] if "single" in parts else parts["multiturn"])
    if "single" in parts and "multiturn" in parts:
        from .metrics import rates

        res = {**rates(pooled_y, pooled_margins, 0.0), "threshold": parts["single"]["threshold"],
               "latency_ms_p50": parts["single"]["latency_ms_p50"],
               "mean_detection_turn": parts["multiturn"]["mean_detection_turn"], "pooled": True,
               "single": parts["single"], "multiturn": parts["multiturn"]}
    res["probe"] = probe
    if plot is not None:
        try:
            ev.plot(plot, **plot_args)
        except (OSError, ValueError) as exc:
            fail(f"--plot: {exc}", as_json=as_json)
        res["plot"] = str(plot)
    _print(res, as_json)



if __name__ == "__main__":  # python -m probes.cli
    app()
