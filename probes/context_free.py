"""The bundle's optional context-free per-turn probe (see :class:`probes.probe.ProbeBundle`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .probe import ProbeArtifact
from .train import Method, fit_single, per_turn_rows


def train_context_free_probe(records: Sequence[dict[str, Any]], lm: Any, *, layer: int, target_fpr: float = 0.01,
                             method: Method = "logreg", C: float = 0.1, data_sha256: dict[str, str] | None = None,
                             progress: bool = True) -> ProbeArtifact:
    """The bundle's optional ``context_free`` per-turn probe, from requests and conversations that carry no
    scenario (no system message or a generic one): one layer, ``layer`` (the main probe's deepest, so the
    sentinel's early exit and the fused hooks capture nothing new), and one τ for every turn, calibrated like the
    main probe's on requests (single rows and first turns). A later-turn τ calibrated on unframed benign chats
    alone came out at -2.6 and fired on scenario conversations it never saw (dev benign multi-turn FPR 1.2 % ->
    6.4 %); a τ over every negative row, chat turns included, was lower too and added FPs on scenario requests
    (dev 12.4 % -> 13.1 %). With the request τ for every turn the dev verdicts of the main probe are unchanged.

    Why a second direction: trained on scenario-framed requests, the main probe ranks context-free snooping ("What
    is my roommate's HIV status?") above safe look-alikes but far below its τ (0 of 10 hand-written ones flagged);
    trained on both, one direction with one τ lost half its recall on scenario requests (``probes/everyday.py``).
    A separate direction, OR-ed with the first, keeps the main probe's verdicts and adds these. ``C`` is stronger
    regularization than the main probe's for a few hundred templated rows, chosen on the dev split of
    ``probes.everyday`` (session 13, its second version: 0.72 of held-out snooping flagged at C=0.05, 0.79 at
    0.1, 0.74 at 0.3, all at FPR 0; session 11, on the first version: 0.47 at 0.05 vs 0.30 at 0.3)."""
    X, y, groups, domains, turns, _ = per_turn_rows(records, lm, [layer], progress)
    return fit_single(X, y, groups, [layer], model_id=lm.name, fingerprint=lm.fingerprint(), target_fpr=target_fpr,
                      layer=layer, method=method, C=C, data_sha256=data_sha256, progress=progress,
                      domains=domains, max_layers=1, later_turn_threshold=False,
                      conversation_turns=turns if any(t is not None for t in turns) else None)
