"""Training from privacy records on a model: capture the activations (through the sentinel, as served), then fit
and calibrate with :mod:`probes.train`. ``train_bundle`` is what ``railguard probes train`` runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .datasets import labelled_conversation_problem
from .probe import ProbeArtifact
from .train import MAX_COMBINED_LAYERS, DriftTarget, Method, default_layers, fit_multiturn, fit_single

__all__ = ["per_turn_rows", "train_bundle", "train_drift_probe"]


def train_drift_probe(records: Sequence[dict[str, Any]], lm: Any, *, max_layer: int,
                      layers: Sequence[int] | None = None, layer: int | None = None, target_fpr: float = 0.01,
                      method: Method = "logreg", data_sha256: dict[str, str] | None = None,
                      progress: bool = True,
                      captured: tuple[Sequence[int], Sequence[np.ndarray]] | None = None,
                      max_layers: int = 1, target: DriftTarget = "displacement") -> ProbeArtifact:
    """The multi-turn drift probe from multi-turn records, on activations collected through the sentinel
    (:func:`probes.features.conversation_capture`: the serving path, one incremental prefill per turn).

    Candidate layers stop at ``max_layer`` (the single-turn probe's): the sentinel's early exit is set by the
    deepest probe layer, so the drift probe never adds per-turn compute. ``layer`` pins one layer.
    ``captured = (layers, arrays)``: activations already collected the same way for the first ``len(arrays)``
    records at a superset of the candidate layers (``train_bundle`` passes its own); their columns are reused
    instead of running those conversations again (early exit never changes the layers before it).
    ``target``: what w is fit on, ``"displacement"`` (a_t - a_1) or ``"delta"`` (a_t - a_{t-1}): `fit_multiturn`.
    """
    from .features import conversation_capture

    if not records:
        raise ValueError("the drift probe needs multi-turn records ({'turns', 'label'} lines)")
    cand = sorted(set(layers or default_layers(lm.num_layers)) | ({layer} if layer is not None else set()))
    cand = [li for li in cand if li <= max_layer] if layer is None else cand
    if not cand:
        raise ValueError(f"no candidate layer at or below {max_layer}")
    convs: list[np.ndarray] = []
    if captured is not None:
        have, arrays = [int(i) for i in captured[0]], list(captured[1])
        if not set(cand) <= set(have) or len(arrays) > len(records):
            raise ValueError(f"captured activations (layers {have}, {len(arrays)} conversations) do not cover "
                             f"layers {cand} of the first records")
        convs = [a[:, [have.index(li) for li in cand]] for a in arrays]
    if len(convs) < len(records):
        convs += conversation_capture(lm, records[len(convs):], cand, progress=progress)
    return fit_multiturn(convs, [r["label"] for r in records], [r.get("turn_labels") for r in records],
                         [r.get("group", r["id"]) for r in records], cand, model_id=lm.name,
                         fingerprint=lm.fingerprint(), target_fpr=target_fpr, layer=layer, method=method,
                         data_sha256=data_sha256, progress=progress, max_layers=max_layers, target=target)


def train_bundle(records: Sequence[dict[str, Any]], lm: Any, *, layer: int | None = None,
                 layers: Sequence[int] | None = None, target_fpr: float = 0.01, multiturn: bool = False,
                 method: Method = "logreg", data_sha256: dict[str, str] | None = None,
                 progress: bool = True, max_layers: int = MAX_COMBINED_LAYERS,
                 drift_max_layers: int = 1, drift_extra: Sequence[dict[str, Any]] = (),
                 drift_target: DriftTarget = "displacement") -> Any:
    """Fit a :class:`~probes.probe.ProbeBundle` from privacy records: single-turn lines (required) and multi-turn
    lines. The per-turn probe learns from both (every user turn of a conversation, labelled per turn) and gets
    two thresholds (requests and first turns; later turns, calibrated per conversation: :func:`fit_single`).
    With ``multiturn`` the multi-turn lines also train the drift probe. ``max_layers`` / ``drift_max_layers``:
    how many layers the per-turn / drift probe may concatenate (:func:`fit_single`, :func:`fit_multiturn`).
    ``drift_extra``: more multi-turn records for the drift probe only (``probes.remarks.remark_copies``)."""
    from .probe import ProbeBundle

    multi = [r for r in records if "turns" in r]
    if multiturn and not multi:
        raise ValueError("--multiturn needs multi-turn records ({'turns', 'label'} lines)")
    if drift_extra and not multiturn:
        raise ValueError("drift_extra trains the drift probe: it needs multiturn=True")
    # checked before any capture (the full default run takes hours)
    for where, rows in (("a multi-turn record", multi), ("drift_extra", drift_extra)):
        for i, r in enumerate(rows):
            problem = labelled_conversation_problem(r)
            if problem:
                at = f"id {r['id']!r}" if isinstance(r, dict) and "id" in r else i
                raise ValueError(f"{where} ({at}): {problem}")
    cand = sorted(set(layers or default_layers(lm.num_layers)) | ({layer} if layer is not None else set()))
    kw = dict(model_id=lm.name, fingerprint=lm.fingerprint(), target_fpr=target_fpr, layer=layer,
              method=method, data_sha256=data_sha256, progress=progress)
    X, y, groups, domains, turns, convs = per_turn_rows(records, lm, cand, progress)
    # Per-source OOF FPR is reported next to the pooled one (records without `scenario`: one domain).
    art = fit_single(X, y, groups, cand, domains=domains, max_layers=max_layers,  # type: ignore[arg-type]
                     conversation_turns=turns if multi else None, **kw)
    mt = None
    if multiturn:
        mt = train_drift_probe([*multi, *drift_extra], lm, max_layer=art.meta.layer, layers=cand, layer=layer,
                               target_fpr=target_fpr, method=method, data_sha256=data_sha256, progress=progress,
                               captured=(cand, convs), max_layers=drift_max_layers, target=drift_target)
    return ProbeBundle(single=art, multiturn=mt)


def per_turn_rows(records: Sequence[dict[str, Any]], lm: Any, cand: Sequence[int], progress: bool,
                  offset: int = 0) -> tuple[
        np.ndarray, list[int], list[str], list[str], list[tuple[str, int] | None], list[np.ndarray]]:
    """Rows for a per-turn probe: single-turn requests, then every user turn of the multi-turn records (labelled
    per turn), with groups, domains (``scenario``), (conversation, turn) keys and the per-conversation arrays."""
    from .features import cached_capture, conversation_capture, single_turn_prompts

    single = [r for r in records if "request" in r]
    multi = [r for r in records if "turns" in r]
    if not single:
        raise ValueError("training needs single-turn records ({'request', 'label'} lines)")
    X = cached_capture(lm, single_turn_prompts(lm.tokenizer, single), cand, progress=progress, offset=offset)
    y = [int(r["label"]) for r in single]
    groups = [str(r.get("group", r["id"])) for r in single]
    domains = [str(r.get("scenario", "default")) for r in single]
    turns: list[tuple[str, int] | None] = [None] * len(single)
    convs: list[np.ndarray] = []
    if multi:
        # The per-turn probe is served on whole conversations (history + current turn), so it also learns
        # from every user turn of the multi-turn records, labelled per turn ("train on the history form you
        # serve"): benign turns with history are negatives, which keeps history alone from looking risky.
        # Collected through the sentinel, i.e. exactly as served (see conversation_capture).
        convs = conversation_capture(lm, multi, cand, progress=progress, offset=offset)
        X = np.concatenate([X, *convs])
        for c, conv in enumerate(convs):
            tl = multi[c].get("turn_labels")
            y += [int(tl[t]) if tl is not None else int(multi[c]["label"]) for t in range(len(conv))]
            groups += [str(multi[c].get("group", multi[c]["id"]))] * len(conv)
            domains += [str(multi[c].get("scenario", "default"))] * len(conv)
            turns += [(f"{c}:{multi[c]['id']}", t) for t in range(len(conv))]
    return X, y, groups, domains, turns, convs
