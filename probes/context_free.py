"""The bundle's optional context-free per-turn probe (see :class:`probes.probe.ProbeBundle`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .capture import turn_end_offset
from .probe import ProbeArtifact
from .train import Method, fit_single
from .train_runs import per_turn_rows


def benign_scenario_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that carry a scenario and are benign throughout: the ``scenario_negatives`` of
    :func:`train_context_free_probe`."""
    from .everyday import is_unframed

    return [r for r in records if not is_unframed(r) and int(r["label"]) == 0 and not any(r.get("turn_labels") or [])]


def train_context_free_probe(records: Sequence[dict[str, Any]], lm: Any, *, layer: int, target_fpr: float = 0.01,
                             method: Method = "logreg", C: float = 0.3, data_sha256: dict[str, str] | None = None,
                             progress: bool = True, scenario_negatives: Sequence[dict[str, Any]] = (),
                             framed_records: Sequence[dict[str, Any]] = (),
                             token_offset: int | None = None) -> ProbeArtifact:
    """The bundle's optional ``context_free`` per-turn probe, from requests and conversations that carry no
    scenario (no system message or a generic one): one layer, ``layer`` (the main probe's deepest, so the
    sentinel's early exit and the fused hooks run no further), and one τ for every turn, calibrated like the
    main probe's on requests (single rows and first turns) of ``records``.

    ``token_offset``: which token it reads, counted back from the last prompt token; default (None) the user
    turn's end-of-turn token (:func:`probes.capture.turn_end_offset`, ``<|im_end|>``: 5 for ChatML), one more row
    of the same hooked layer. Why (session 14): read at the last token (the assistant header, 0), its score
    depended on the deployment's system prompt, which trains on a handful of generic ones: the 65 hand-written
    snooping requests under nine system prompts were caught 45 (none) / 0 (the demo agent's "You are a concise,
    helpful assistant. Answer in one or two sentences.") / 34 / 30 / 23 / 4 / 19 / 2 / 24 times; read at the
    user's end-of-turn token, 43 / 31 / 51 / 30 / 8 / 9 / 28 / 39 / 23 (the header is where answer-style
    instructions act); hand-written conversations under the demo prompt 12 -> 19 of 22. The rest of the prompt
    dependence is handled by training data (``probes.everyday.with_personas``).

    ``scenario_negatives``: benign requests and conversations *with* a scenario (label 0 only). They train the
    direction as negatives and never set τ. Why (session 13): once it learnt from conversations too, this probe
    fired on scenario conversations whose norms allow a third party's data ("Share the patient's treatments from
    the last visit" to the insurance agent): dev benign multi-turn FPR 1.2 % -> 3.5 %; with these negatives it
    fires on none of the 185 dev scenario conversations and the main probe's verdicts stand alone there (the
    scenario violations are its job). τ stays the 1 % point of *unframed* OOF negatives: the many easy scenario
    negatives would otherwise pull it down.

    ``framed_records``: labelled rows that train the direction and, like ``scenario_negatives``, never set τ,
    which stays the point of unframed rows: requests that carry a scenario of their own, such as agents holding
    personal records in their prompt (:mod:`probes.record_holders`), and conversations whose many near-identical
    first turns would pull τ down (:mod:`probes.small_talk`'s greetings). Why (session 15): 64 hand-written
    requests to eight such agents were caught 11 of 32 at 1 of 32 safe ones flagged (the scenario probe's);
    trained on 576 generated ones from 12 businesses, 30 of 32 at the same 1, and 85 of 96 held-out generated
    ones from 4 other businesses (was 19) at none of 96 safe. (Letting them set τ too gives the same τ and weights.)

    Earlier calibrations, measured and dropped (session 11): a later-turn τ calibrated on unframed benign chats
    alone came out at -2.6 and fired on scenario conversations it never saw (dev benign multi-turn FPR 1.2 % ->
    6.4 %); a τ over every negative row, chat turns included, was lower too and added FPs on scenario requests.

    Why a second direction: trained on scenario-framed requests, the main probe ranks context-free snooping ("What
    is my roommate's HIV status?") above safe look-alikes but far below its τ (0 of 10 hand-written ones flagged);
    trained on both, one direction with one τ lost half its recall on scenario requests (``probes/everyday.py``).
    A separate direction, OR-ed with the first, keeps the main probe's verdicts and adds these. ``C`` was chosen
    on the dev splits of ``probes.everyday`` (requests and conversations) under the rule that no scenario-request
    dev verdict may change (session 13: C 0.1 / 0.3 / 1.0 / 3.0 flag 0.84 / 0.88 / 0.88 / 0.84 of held-out
    snooping requests and 10 / 13 / 16 / 16 of 24 held-out snooping conversations, each at FPR 0.032 on the
    requests and 0 on the conversations; 1.0 adds a scenario-request false positive; 3.0 is within one pooled dev
    positive of 0.3, 52 vs 51 of 67, and barely regularized: 0.3)."""
    if any(int(r.get("label", 0)) != 0 or any(r.get("turn_labels") or []) for r in scenario_negatives):
        raise ValueError("scenario_negatives must all be benign (label 0, no flagged turn)")
    if any(r.get("label") not in (0, 1) or not (isinstance(r.get("request"), str) or isinstance(r.get("turns"), list))
           for r in framed_records):
        raise ValueError("framed_records need label 0|1 and a 'request' string or 'turns' list")
    if not any("request" in r for r in records):
        raise ValueError("the context-free probe needs single-turn records ({'request', 'label'} lines) among its "
                         "own, with no scenario (no system message or a generic one): its threshold is calibrated "
                         "on them")
    offset = turn_end_offset(lm.tokenizer) if token_offset is None else int(token_offset)
    rows = [*records, *framed_records, *scenario_negatives]
    X, y, groups, domains, turns, convs = per_turn_rows(rows, lm, [layer], progress, offset=offset)
    own = {id(r) for r in records}
    single = [r for r in rows if "request" in r]
    multi = [r for r in rows if "turns" in r]
    calibrate = [id(r) in own for r in single] + [id(r) in own for r, c in zip(multi, convs, strict=True)
                                                  for _ in range(len(c))]
    art = fit_single(X, y, groups, [layer], model_id=lm.name, fingerprint=lm.fingerprint(), target_fpr=target_fpr,
                     layer=layer, method=method, C=C, data_sha256=data_sha256, progress=progress,
                     domains=domains, max_layers=1, later_turn_threshold=False,
                     conversation_turns=turns if any(t is not None for t in turns) else None,
                     calibration_rows=calibrate)
    art.meta.token_offset = offset
    return art
