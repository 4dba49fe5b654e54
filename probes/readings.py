"""What the privacy probes read for one user turn, shared by the sentinel and the fused mode.

A turn is read as the whole conversation (its last run of user messages joined, :func:`probes.segments.joined_turn`)
and also as other renderings of it: the last message cut at earlier sentence ends and where a repeated tail starts,
the conversation without its later system messages, its opening and earlier user turns (a history no session has
checked: a check without a session id, or a session with no trajectory for it), the message behind the system
prompt alone (opt-in). :func:`plan_turn` lists them; :meth:`TurnReadings.findings` routes their activations to
:meth:`probes.scoring.PrivacyScorer.findings`.
The sentinel reads them all in one forward over its KV cache; fused mode reads them in the head of the serving
model's own prefill (:func:`probes.sentinel.packed_forward`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from guardrails.decision import DEFAULT_REFUSAL, Finding

from .capture import ActKey, message_field, reads_blank
from .scoring import PrivacyScorer
from .segments import joined_turn, sentence_prefixes, turn_prefixes, without_later_systems
from .velocity import alone_of, conversation_digest, opening_of, user_message_count

Acts = Mapping[ActKey, np.ndarray]
Messages = list[dict[str, str]]

#: earlier user turns read when no session has checked them (the latest; each costs a few tokens of the forward)
MAX_EARLIER_TURNS = 64
#: sentence cuts of those turns read too, in all (the latest turns' first)
MAX_EARLIER_TURN_CUTS = 32


def spoken(messages: Sequence[Any]) -> list[Any]:
    """What the user and the assistant said: tool results and the assistant's empty tool-call steps dropped.

    An agent's history holds tool traffic between turns; the probes score the conversation as said (tool output is
    the guard's tool_result stage's job), as the fused hook does for the serving model's agent steps.
    """
    field = message_field  # role, content: from a dict or a message object
    # blank as the probes read it: an assistant message of zero-width spaces had ended the user's turn (review)
    return [m for m in messages if field(m, "role") != "tool"
            and not (field(m, "role") == "assistant" and isinstance(field(m, "content"), str)
                     and _blank(field(m, "content")))]


def _blank(text: str) -> bool:
    try:
        return reads_blank(text)
    except (TypeError, ValueError):  # validate_messages refuses it with its own error
        return False


def _refused(msgs: Messages, i: int) -> bool:
    """Whether the user message at ``i`` was answered with railguard's own refusal (`DEFAULT_REFUSAL`)."""
    after = msgs[i + 1] if i + 1 < len(msgs) else None
    return after is not None and after["role"] == "assistant" and after["content"].strip() == DEFAULT_REFUSAL


@dataclass(frozen=True)
class TurnReadings:
    """One user turn's readings: ``msgs`` (the conversation as the probes read it), ``cuts`` (prefixes of its last
    user message), then the other renderings: ``bare`` (without later system messages, then its cuts), ``opening``
    (at most one), ``alone`` (the message behind the system prompt, then its cuts), ``earlier`` (the conversation
    up to each earlier user turn no session had checked, with its turn number); ``grown_from``: digests of the
    turn as a client checking each message as it arrived had sent it."""

    msgs: Messages
    cuts: list[str]
    bare: list[Messages]
    opening: list[Messages]
    alone: list[Messages]
    grown_from: list[str]
    earlier: list[tuple[Messages, int]] = field(default_factory=list)

    @property
    def renderings(self) -> list[Messages]:
        """The conversations other than ``msgs`` and its cuts, in the order :meth:`findings` expects them."""
        return [*self.bare, *self.opening, *self.alone, *(c for c, _ in self.earlier)]

    def conversations(self) -> list[Messages]:
        """Every reading but ``msgs`` as a whole conversation: the cuts', then :attr:`renderings`."""
        head = self.msgs[:-1]
        return [*([*head, {"role": "user", "content": c}] for c in self.cuts), *self.renderings]

    @property
    def extra(self) -> bool:
        """Whether the turn has any reading beside ``msgs``."""
        return bool(self.cuts or self.renderings)

    def findings(self, scorer: PrivacyScorer, acts: Acts, extra: Sequence[Acts], *, tenant_id: str, user_id: str,
                 session_id: str | None, threshold: float) -> list[Finding]:
        """Score ``acts`` (of ``msgs``) and ``extra`` (of :meth:`conversations`, in order)."""
        if len(extra) != len(self.cuts) + len(self.renderings):
            raise ValueError(f"{len(extra)} readings for {len(self.cuts) + len(self.renderings)} renderings")
        parts, at = [], 0
        for n in (len(self.cuts), len(self.bare), len(self.opening), len(self.alone), len(self.earlier)):
            parts.append(list(extra[at:at + n]))
            at += n
        cut_acts, bare_acts, opening_acts, alone_acts, earlier_acts = parts
        return scorer.findings(acts, tenant_id=tenant_id, user_id=user_id, session_id=session_id,
                               threshold=threshold, user_turn=user_message_count(self.msgs) or None,
                               conversation=self.msgs, cut_acts=cut_acts,
                               opening_acts=opening_acts[0] if opening_acts else None, alone_acts=alone_acts,
                               grown_from=self.grown_from, bare_acts=bare_acts,
                               earlier_acts=[(a, k) for a, (_, k) in zip(earlier_acts, self.earlier, strict=True)])


def plan_turn(said: Sequence[dict[str, str]], scorer: PrivacyScorer, *, tenant_id: str, user_id: str,
              session_id: str | None, sentences: bool = True, alone: bool = False, markers: Sequence[str] = (),
              max_chars: int | None = None) -> TurnReadings:
    """The readings of the turn that ends ``said`` (validated messages, tool traffic dropped: :func:`spoken`).

    The user messages sent since the assistant's last reply are one turn, read joined and where each ends; a
    conversation sent with a history that no session has checked (a check without a session id, which keeps no
    state; a session whose drift has no trajectory for it) also reads its own opening (the drift's baseline) and
    each earlier user turn where it ends; with earlier turns and ``alone``, the request behind the system prompt
    alone; a later system message (a framework's reminder) is read where it stands, and the request probes also
    read the conversation without it: they were trained under one leading system prompt, and a reminder just before a
    request diluted it (dev: 40 -> 21 of 60 attacks blocked; session 37)."""
    msgs, cuts = joined_turn(said, sentences=sentences, markers=markers, max_chars=max_chars)
    tracker = scorer.tracker
    # a history no session has checked: a check without a session id (it keeps no state, so it reads what it is
    # sent, every time), or a session with no trajectory for it (a new session id, or a reply forged by the client
    # between a request and "Thanks!"); a session that checked each turn as it came reads only the newest
    unchecked = user_message_count(msgs) > 1 and (
        session_id is None or (tracker is not None and tracker.needs_opening(tenant_id, user_id, session_id, msgs)))
    # the opening: the drift's baseline (with no session, S_t = w·(a_t - a_1) read in this one check)
    opening = [[dict(m) for m in opening_of(msgs)]] if unchecked and tracker is not None else []
    # each earlier user turn is also read where it ends, at its own turn's τ; but not one answered with railguard's
    # refusal (the chat proxy's answer to a blocked turn, kept by an OpenAI client in the history it resends): it was
    # blocked when it was new, and read again it would block every later turn (the drift still reads it in context)
    users = [i for i, m in enumerate(msgs) if m["role"] == "user"][:-1]
    earlier = [([dict(m) for m in msgs[: i + 1]], k) for k, i in enumerate(users, 1)
               if k > len(users) - MAX_EARLIER_TURNS and not _refused(msgs, i)] if unchecked else []
    if sentences:  # each read as it would have been checked: also at its sentence cuts ("request. Thanks!")
        cut_reads: list[tuple[Messages, int]] = []
        for conv, k in reversed(earlier):  # the latest first, MAX_EARLIER_TURN_CUTS in all
            for c in reversed(sentence_prefixes(conv[-1]["content"], markers=markers)):
                if len(cut_reads) < MAX_EARLIER_TURN_CUTS:
                    cut_reads.append(([*conv[:-1], {"role": "user", "content": c}], k))
        earlier += cut_reads[::-1]
    lone: list[Messages] = []
    if alone and user_message_count(msgs) > 1:
        solo = alone_of(msgs)
        lone = [solo, *([*solo[:-1], {"role": "user", "content": c}] for c in cuts)]
    grown_from = [conversation_digest(c) for c in turn_prefixes(said)] if tracker is not None and session_id else []
    lean = without_later_systems(msgs)
    bare = [] if lean == msgs else [lean, *([*lean[:-1], {"role": "user", "content": c}] for c in cuts)]
    return TurnReadings(msgs, cuts, bare, opening, lone, grown_from, earlier)
