"""Probe arithmetic shared by the privacy detector's two modes: activations at the probe layers -> Findings
(``privacy_request`` from the per-turn probes, ``privacy_drift`` from the session's velocity tracker)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from guardrails.decision import Action, Finding
from guardrails.errors import InvalidInputError

from .capture import ActKey
from .probe import ProbeBundle, margin_to_unit
from .velocity import StateStore, VelocityTracker, has_history, user_message_count


def _where(layers: list[int]) -> str:
    return f"layer {layers[0]}" if len(layers) == 1 else f"layers {'+'.join(map(str, layers))}"


class PrivacyScorer:
    """Probe arithmetic shared by both modes: activations at the probe layers -> Findings.

    The drift is enforced only on turns checked with their conversation (the messages before the newest one).
    A client that sends only its newest message still advances the session (its turn count picks the per-turn
    probes' later-turn τ), but S_t then compares two messages each read on its own, which no training turn
    was. Measured (session 24) on the 265 dev conversations sent that way, one user message per check: the drift
    fired on 35 of 171 benign conversations and added 8 of 94 attacks to the per-turn probes' 49 (flagged 57 /
    94 at 42 / 171, against 49 / 94 at 7 / 171 without it: `probes eval --alone`); a τ recalibrated on
    training conversations sent that way (1 % FPR: 25.1 against 11.4) caught no more attacks. Without a
    ``conversation`` (unknown: a fused hook attached without messages, direct use of the scorer) the drift is
    enforced as before. A check without a session id keeps no state: sent with its history, its drift is the
    conversation's own, S_t = w·(a_t - a_1) from the opening read in the same check (``opening_acts``), as a new
    session's first check reads it, and nothing is stored; sent without history, it has no drift."""

    def __init__(self, bundle: ProbeBundle, store: StateStore | None = None, action: Action = Action.BLOCK) -> None:
        self.bundle = bundle
        self.action = action
        self.tracker = VelocityTracker(bundle.multiturn, store) if bundle.multiturn is not None else None
        self.layers = bundle.layers
        self.offsets = bundle.offsets  # per layer, the token offsets read there (0 = the last prompt token)

    def findings(self, acts: Mapping[ActKey, np.ndarray], *, tenant_id: str, user_id: str, session_id: str | None,
                 threshold: float = 0.5, user_turn: int | None = None,
                 conversation: list[dict[str, str]] | None = None,
                 cut_acts: Sequence[Mapping[ActKey, np.ndarray]] = (),
                 opening_acts: Mapping[ActKey, np.ndarray] | None = None,
                 alone_acts: Sequence[Mapping[ActKey, np.ndarray]] = (),
                 grown_from: Sequence[str] = (),
                 bare_acts: Sequence[Mapping[ActKey, np.ndarray]] = (),
                 earlier_acts: Sequence[tuple[Mapping[ActKey, np.ndarray], int]] = ()) -> list[Finding]:
        """``cut_acts``: activations of the last user message cut at its earlier sentence ends
        (:mod:`probes.segments`); the request probes take the largest margin over them and the whole message
        (the drift, the whole message only).
        ``user_turn``: which user message of its conversation this is (1-based, from the checked messages).
        It picks the per-turn probe's τ (later turns have their own, see ``ProbeArtifact.threshold_for``). With
        a session, its drift turn count also counts (a client may send only the newest message): the larger
        of the two wins; with neither, turn 1. ``conversation`` (the validated messages scored) lets the
        session's drift tell a retry of the scored turn and a rewritten history from a new turn
        (``VelocityTracker.update``). ``opening_acts``: activations of the conversation's opening (its first user
        turn), where the session's drift has no trajectory yet for a conversation sent with its history
        (``VelocityTracker.needs_opening``): its baseline. ``alone_acts``: the last user message read behind the
        system prompt only, as a first turn, then its sentence cuts read the same way; the request probes also
        score them, at the first turn's τ (earlier benign turns had diluted a request the same probes block on its
        own: 0.705 alone, 0.472 after two). ``grown_from``: see ``VelocityTracker.update``. ``bare_acts``: the
        conversation without its later system messages, then its cuts; read like the cuts. ``earlier_acts``: the
        conversation up to each of its earlier user turns, with that turn's number, where the session had not
        checked them (:func:`probes.readings.plan_turn`); each is scored at its own turn's τ."""
        if not 0.0 <= threshold <= 1.0:
            raise InvalidInputError("privacy threshold must lie in [0, 1]")
        if user_turn is not None and user_turn < 1:
            raise InvalidInputError("user_turn counts from 1")
        every = [acts, *cut_acts]
        before = [one for one, _ in earlier_acts]
        if any(k < 1 for _, k in earlier_acts):
            raise InvalidInputError("user_turn counts from 1")
        read = [*every, *bare_acts, *alone_acts, *before, *([] if opening_acts is None else [opening_acts])]
        if not all(np.isfinite(a).all() for one in read for a in one.values()):
            raise InvalidInputError("non-finite activation: refusing to score")
        t = user_turn or 1
        scored_reads = [*every, *bare_acts, *before]
        if not all(np.isfinite(list(self.bundle.request_margins(one, t).values())).all() for one in scored_reads):
            # before any state changes
            raise InvalidInputError("non-finite probe score (corrupt or overflowing probe weights): refusing to score")
        drift: list[Finding] = []
        m = self.bundle.multiturn
        stateless = (session_id is None and opening_acts is not None and conversation is not None
                     and has_history(conversation))
        if self.tracker is not None and m is not None and (session_id is not None or stateless):
            if session_id is not None:
                score, turn = self.tracker.update(tenant_id, user_id, session_id, m.features(acts),
                                                  conversation=conversation,
                                                  opening=None if opening_acts is None else m.features(opening_acts),
                                                  grown_from=grown_from)
            else:  # no session: the conversation's own trajectory, from its opening, in this check (nothing stored)
                assert opening_acts is not None and conversation is not None
                st = self.tracker.start(m.features(opening_acts), m.features(acts), user_message_count(conversation))
                score, turn = st.score, st.turn
            unit_d = m.unit_score(score)
            # A later turn checked as the newest message alone was read without its conversation, unlike every
            # turn the drift probe was calibrated on: reported, never enforced (see the class docstring).
            alone = turn >= 2 and conversation is not None and not has_history(conversation)
            scored_d = turn >= 2 and not alone
            fire = scored_d and unit_d > threshold
            note = ("; not enforced: the check held only the newest message (send the conversation's messages for "
                    "drift)") if alone else ("; no session id: read from the conversation's own opening, nothing "
                                             "stored") if stateless else ""
            drift.append(Finding(detector="privacy", category="privacy_drift", score=unit_d if scored_d else 0.0,
                                 threshold=threshold,
                                 explanation=f"cumulative drift S_{turn} = {score:.3f} vs tau "
                                             f"{m.meta.threshold:.3f} ({_where(m.layers)}; turn 1 is the baseline)"
                                             + note,
                                 action=self.action if fire else Action.ALLOW))
            t = max(t, turn)
        reads = [(one, t) for one in every] + [(one, 1) for one in alone_acts] + [(one, t) for one in bare_acts] + \
            list(earlier_acts)
        scored = [{name: float(m) for name, m in self.bundle.request_margins(one, turn_of).items()}
                  for one, turn_of in reads]
        at = max(range(len(reads)), key=lambda i: max(scored[i].values()))  # ties: the whole message
        margins, t_read = scored[at], reads[at][1]
        unit = margin_to_unit(max(margins.values()))
        parts = []
        for name, p in self.bundle.request_probes.items():
            tau = p.threshold_for(t_read)
            off = f", {p.meta.token_offset} tokens before the last" if p.meta.token_offset else ""
            parts.append(f"{'single-turn' if name == 'single' else 'context-free'} probe ({_where(p.layers)}{off}): "
                         f"raw {margins[name] * p.meta.score_scale + tau:.3f} vs tau {tau:.3f}")
        if at >= len(every) + len(alone_acts) + len(bare_acts):
            where = f", read at its earlier user turn {t_read}, " + (
                "which this session had not checked" if session_id is not None else "as a check without a session "
                "id reads every turn it is sent")
        elif at >= len(every) + len(alone_acts):
            k = at - len(every) - len(alone_acts)
            where = ", read without its later system messages" + (f", up to its sentence {k} of {len(every)}"
                                                                  if k else "")
        elif at >= len(every):
            where = ", the message read without the earlier turns"
        else:
            where = f", the message up to its sentence {at} of {len(every)}" if at else ""
        return [Finding(detector="privacy", category="privacy_request", score=unit, threshold=threshold,
                        explanation="; ".join(parts) + f" (user turn {t}{where})",
                        action=self.action if unit > threshold else Action.ALLOW), *drift]
