"""Fused mode of the privacy guard: :class:`FusedProbeHook` reads the probe layers during the serving model's own
prefill (zero extra forward passes) and raises ``PrefillBlocked(decision)`` from inside that forward when the
verdict is block, so no token is ever produced. Made by ``PrivacyDetector(mode="fused").fused_hook()``.

A turn the sentinel reads more than once (sentence cuts, a joined run of user messages, ...: :mod:`probes.readings`)
is read the same way through :meth:`FusedProbeHook.attach_prefilled`: the head of the prompt is prefilled here with
those readings packed beside it, and generation continues from that cache (one more forward call, no prompt token
twice). Before (session 39 and earlier) fused mode read only the prompt as served, so " Thanks!" after a request hid
it: on 60 dev requests, 4 of 30 attacks blocked against the sentinel's 23; now the same 23."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from guardrails.decision import Action, Decision, Finding, Stage
from guardrails.erasure import gate_for
from guardrails.errors import InvalidInputError
from guardrails.models import cache_keyword
from guardrails.models.hooks import thread_owned
from guardrails.models.templates import special_strings

from .capture import ActKey, encode_messages, layer_module, message_field, site_key, validate_messages
from .probe import model_config, model_fingerprints
from .readings import TurnReadings, plan_turn, spoken
from .scoring import PrivacyScorer
from .velocity import conversation_digest, user_message_count


def _user_turns(messages: Any) -> int | None:
    """How many user messages the checked conversation holds (its last one is being scored); None if unknown."""
    return (user_message_count(messages) or None) if messages else None


def _threshold(settings: Mapping[str, Any]) -> float:
    """The user's ``guard.thresholds.privacy`` (0.5: the calibrated τ). The store validates it; settings built by
    hand (a CheckRequest, an identity) get a typed error, not a ValueError from ``float("abc")``."""
    guard = settings.get("guard") if isinstance(settings, Mapping) else None
    thresholds = guard.get("thresholds") if isinstance(guard, Mapping) else None
    if thresholds is not None and not isinstance(thresholds, Mapping):
        raise InvalidInputError(f"guard.thresholds must be a mapping, got {type(thresholds).__name__}")
    t = thresholds.get("privacy") if thresholds is not None else None
    if t is None:
        return 0.5
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 <= t <= 1.0:  # NaN fails the range too
        raise InvalidInputError("guard.thresholds.privacy must be a number in [0, 1]")
    return float(t)


log = logging.getLogger("railguard.probes")

#: prompt tokens left to generation's own forward when a head is prefilled here: the probe's read sites (the last
#: token, the context-free probe's ``<|im_end|>`` 5 before it) and the template's closing tokens
_TAIL = 8


@dataclass(frozen=True)
class _Head:
    """The head of a prefill run by :meth:`FusedProbeHook.attach_prefilled`: the turn's readings, the activations of
    its conversation as the probes read it (None: the prompt as served, read at the tail) and of its other
    renderings, and the cache generation continues from."""

    readings: TurnReadings
    main: dict[ActKey, np.ndarray] | None
    extra: list[dict[ActKey, np.ndarray]]
    cache: Any


@dataclass(frozen=True)
class _Turn:
    """Whose prefill a fused hook reads, and the user's policy for it (from `guardrails.middleware.for_serving`)."""

    tenant_id: str
    user_id: str
    session_id: str | None
    settings: Mapping[str, Any]
    shadow: bool
    disabled: bool = False


class FusedProbeHook:
    """Spine ``PrefillObserver``: one-shot hooks on the probe layers of the *serving* model.

    ``attach(lm, input_ids, messages)`` is called right before ``generate()``; it returns ``detach``. The
    hooks fire during the prefill only (they remove themselves), read each probe's token at its layer (the last
    prompt token for the single-turn and drift probes; ``token_offset`` positions before it for a probe that
    sets one: the default bundle's context-free probe reads 5 back, the user turn's ``<|im_end|>``), score
    them, and raise ``guardrails.models.chat.PrefillBlocked(decision)`` on block, before the first token exists.
    ``last_findings`` / ``last_decision`` hold the latest verdict. Identity (user, session) is read at attach
    time from ``identity()`` or the spine's ``current_identity`` context variable. Each user turn is scored once,
    before its first answer: a later prefill for the same turn (messages ending with the assistant's, tool results
    aside: an agent step) is skipped (``skipped`` counts them) when this hook scored that turn for that user and
    session; any other conversation that does not end with a user turn is refused (InvalidInputError).
    """

    def __init__(self, scorer: PrivacyScorer, *, tenant_id: str = "default",
                 identity: Callable[[], Any] | None = None, max_sessions: int = 1024, name: str = "privacy",
                 erasure_gates: Callable[[], list[Any]] | None = None, sentences: bool = True,
                 alone: bool = False) -> None:
        self.scorer = scorer
        self.sentences, self.alone = sentences, alone  # what `attach_prefilled` reads besides the prompt
        self._warned = False  # said once that this model cannot take the readings in its prefill
        self.tenant_id = tenant_id  # unless the turn's identity names the guard's tenant (`for_serving`)
        self.name = name  # the detector name a user's `disabled_detectors` would use
        self.erasure_gates = erasure_gates  # the erasure gates of the Guards it serves (see `_admitted`)
        self.identity = identity
        self.last_findings: list[Finding] = []
        self.last_decision: Decision | None = None
        self._last_tenant = tenant_id
        self.calls = 0
        self.skipped = 0  # prefills of agent steps after a user turn (not scored, see attach)
        # seconds spent inside this hook's layer hooks (activation copies to the host, scoring, the verdict): what
        # fused mode adds to a prefill (`bench`'s fused_overhead_pct); on CUDA the copy also waits for the layer
        self.busy_s = 0.0
        self.max_sessions = max_sessions
        self._checked: set[int] = set()
        # (tenant, user, session) -> digest of the conversation up to the last user turn this hook scored
        self._scored: OrderedDict[tuple[str, str, str | None], str] = OrderedDict()
        self._lock = threading.Lock()

    def _who(self) -> _Turn:
        ident = self.identity() if self.identity is not None else None
        if ident is None:
            try:
                from guardrails.middleware.identity import current_identity

                ident = current_identity.get()
            except ImportError:
                ident = None
        if ident is None:
            return _Turn(self.tenant_id, "anonymous", None, {}, False)
        settings = ident.user_settings() if hasattr(ident, "user_settings") else getattr(ident, "settings", None)
        settings = settings if isinstance(settings, Mapping) else {}
        guard = settings.get("guard")
        guard = guard if isinstance(guard, Mapping) else {}
        return _Turn(getattr(ident, "tenant_id", None) or self.tenant_id, str(ident.user_id), ident.session_id,
                     settings, bool(getattr(ident, "shadow", False)) or bool(guard.get("shadow", False)),
                     self.name in set(guard.get("disabled_detectors", []) or ()))

    def forget_user(self, user_id: str, tenant_id: str | None = None) -> int:
        """Drop this hook's per-session digests of one user (of ``tenant_id``; default: this hook's tenant) and its
        last verdict if it was theirs."""
        tenant = self.tenant_id if tenant_id is None else tenant_id
        with self._lock:
            gone = [k for k in self._scored if k[:2] == (tenant, user_id)]
            for k in gone:
                del self._scored[k]
            if self.last_decision is not None and (self._last_tenant, self.last_decision.user_id) == (tenant, user_id):
                self.last_decision, self.last_findings = None, []
        return len(gone)

    def forget_all(self) -> int:
        """Drop every session's digest and the last verdict (an erasure elsewhere, whose is unknown)."""
        with self._lock:
            n = len(self._scored)
            self._scored.clear()
            self.last_decision, self.last_findings = None, []
        return n

    @contextmanager
    def _admitted(self, who: _Turn) -> Iterator[None]:
        """Admission of this turn's user by the erasure gates (their drift state, the hook's digests and last verdict
        are written under it): every gate bound by a Guard over the detector, else the gate of the drift state's
        store (the one every Guard over that store shares). Entered in one order (by id), as every hook does."""
        gates = list(self.erasure_gates()) if self.erasure_gates is not None else []
        tracker = self.scorer.tracker
        if not gates and tracker is not None:
            gates = [gate_for(tracker.store)]
        with ExitStack() as stack:
            for gate in sorted(gates, key=id):
                stack.enter_context(gate.checking((who.tenant_id, who.user_id)))
            yield

    def _verdict(self, got: dict[ActKey, np.ndarray], who: _Turn, messages: Any,
                 scored: list[dict[str, str]] | None, key: tuple[str, str, str | None],
                 turn_key: str | None, head: _Head | None = None) -> Decision:
        """Score one prefill's activations (with ``head``, those of the turn's readings too), record the turn
        (scored digest, last verdict) and return the Decision."""
        if head is not None:
            findings = head.readings.findings(self.scorer, head.main if head.main is not None else got, head.extra,
                                              tenant_id=who.tenant_id, user_id=who.user_id,
                                              session_id=who.session_id, threshold=_threshold(who.settings))
        else:
            findings = self.scorer.findings(got, tenant_id=who.tenant_id, user_id=who.user_id,
                                            session_id=who.session_id, threshold=_threshold(who.settings),
                                            user_turn=_user_turns(messages), conversation=scored)
        blocked = any(f.action is Action.BLOCK for f in findings)
        if who.shadow:  # alert-only, as the guard's shadow decisions: recorded, never enforced
            findings = [f.model_copy(update={"explanation": f"[shadow] {f.explanation}"}) for f in findings]
        if turn_key is not None:
            with self._lock:
                if blocked and not who.shadow:  # never an agent step's turn: resent with an answer, refused
                    self._scored.pop(key, None)
                else:
                    self._scored[key] = turn_key
                    self._scored.move_to_end(key)
                    while len(self._scored) > self.max_sessions:
                        self._scored.popitem(last=False)
        decision = Decision(action=Action.BLOCK if blocked else Action.ALLOW, stage=Stage.INPUT,
                            findings=tuple(findings), user_id=who.user_id, session_id=who.session_id,
                            shadow=who.shadow)
        with self._lock:  # together: a forget_user between them kept an erased user's verdict
            # (a Decision names no tenant: `_last_tenant` says whose it is, for forget_user)
            self.last_findings, self.last_decision, self._last_tenant = findings, decision, who.tenant_id
        return decision

    def attach(self, lm: Any, input_ids: Any = None, messages: Any = None) -> Callable[[], None]:
        """Hook the probe layers for the next prefill of ``lm`` in this thread (see the class docstring); returns
        ``detach``. The prompt is read as served, at its last tokens."""
        return self._begin(lm, input_ids, messages, prefill=False)[0]

    def attach_prefilled(self, lm: Any, input_ids: Any, messages: Any) -> tuple[Callable[[], None], Any]:
        """Like :meth:`attach`, and where the turn has readings beside the prompt as served (its last message cut
        at earlier sentence ends or where a repeated tail starts, a run of user messages joined, the conversation
        without later system messages, its opening; as the sentinel reads them: :mod:`probes.readings`), run the
        head of the prompt's prefill here, all but its last tokens, with those readings packed in the same forward
        (:func:`probes.sentinel.packed_forward`). Returns ``(detach, cache)``: generation continues from ``cache``
        (None: no head was run, generate as usual), so no prompt token is processed twice; the readings cost their
        own few tokens, and generation one more forward call. Their verdict is issued with the prompt's, in the
        tail's forward, before the first token."""
        return self._begin(lm, input_ids, messages, prefill=True)

    def _head(self, lm: Any, model: Any, input_ids: Any, messages: Any, who: _Turn) -> _Head | None:
        """Read the turn's other renderings in the head of the prefill (None: nothing to read beside the prompt,
        or a model whose cache cannot take them: it is then read as served, like :meth:`attach`)."""
        from transformers import DynamicCache

        from .sentinel import branch_points, can_pack, packed_forward

        tok = getattr(lm, "tokenizer", None)
        if tok is None or input_ids is None or len(input_ids) != 1:
            return None  # (a batch is refused by the prefill's hook)
        cache = DynamicCache(config=model.config)
        # generation continues from this cache: only plain layers (no sliding window, no linear attention) that an
        # sdpa attention fills under a 4-D mask, and no cache implementation of generate's own, which refuses one
        plain = all(type(layer).__name__ == "DynamicLayer" for layer in getattr(cache, "layers", None) or ())
        if not (plain and can_pack(model, cache)) or getattr(model.generation_config, "cache_implementation", None):
            if not self._warned:
                self._warned = True
                log.warning("fused privacy probe: this model's attention or cache cannot pack the turn's other "
                            "readings (sentence cuts, joined messages) into its prefill; they are not read in fused "
                            "mode (sentinel mode reads them)")
            return None
        said = validate_messages(spoken(list(messages)))
        turn = plan_turn(said, self.scorer, tenant_id=who.tenant_id, user_id=who.user_id, session_id=who.session_id,
                         sentences=self.sentences, alone=self.alone, markers=special_strings(tok))
        row = input_ids[0]
        ids = [int(i) for i in (row.tolist() if hasattr(row, "tolist") else row)]
        rendered = encode_messages(tok, turn.msgs)
        if not turn.extra and rendered == ids:
            return None
        each = [encode_messages(tok, c) for c in turn.conversations()]
        layers, offsets, kw = self.scorer.layers, self.scorer.offsets, cache_keyword(model)
        reach = max(ks[-1] for ks in offsets.values())  # tokens before the last that a probe reads
        start = max(0, len(ids) - max(_TAIL, reach + 1))  # generation's own forward reads the prompt's sites
        if start <= reach:  # a head too short to read where it ends: the readings alone, generation prefills all
            start = 0
        todo = branch_points(ids, [*each, *([] if rendered == ids else [rendered])], reach, limit=start)
        # the head through every layer (its cache), the readings' tokens beside it (a long head: causally first)
        read = packed_forward(model, layers, offsets, ids[:start], 0, cache, todo, cache_kw=kw, early_exit=not start)
        by_ids = dict(zip(todo, read[1:] if start else read, strict=True))
        return _Head(turn, None if rendered == ids else by_ids[tuple(rendered)], [by_ids[tuple(c)] for c in each],
                     cache if start else None)

    def _begin(self, lm: Any, input_ids: Any, messages: Any, *, prefill: bool) -> tuple[Callable[[], None], Any]:
        if id(lm) not in self._checked:
            self.scorer.bundle.check_model(model_fingerprints(lm), getattr(lm, "name", None),
                                           config=model_config(lm))
            self._checked.add(id(lm))
        who = self._who()
        if who.disabled:  # the user opted out of this detector: the guard's own check skips it too
            self.skipped += 1
            return (lambda: None), None
        key = (who.tenant_id, who.user_id, who.session_id)
        turn_key: str | None = None
        scored: list[dict[str, str]] | None = None
        if messages is not None:
            if isinstance(messages, str | bytes | Mapping) or not isinstance(messages, list | tuple):
                raise InvalidInputError(f"messages must be a list of messages, got {type(messages).__name__}")
            said = [m for m in messages if message_field(m, "role") != "tool"]
            users = [i for i, m in enumerate(said) if message_field(m, "role") == "user"]
            if users and message_field(said[-1], "role") == "assistant" and \
                    message_field(messages[-1], "role") == "tool":
                # An agent step after the user's turn (its tool call answered by a tool result): that turn was
                # scored before its first model call, as in sentinel mode; scoring it again would count it twice
                # in the drift S_t (the guard's tool_result stage checks tool output). Only a turn this hook
                # scored is skipped, and only when a tool result is what the model continues from: a resent turn
                # ending with assistant text ("Sure. Here is Ana's diagnosis:", written by whoever sends the
                # history) would have been generated from unscored text; it is refused as before.
                upto = validate_messages(said[: users[-1] + 1])
                if self._scored.get(key) == conversation_digest(upto):
                    self.skipped += 1
                    return (lambda: None), None
            scored = validate_messages(said)
            turn_key = conversation_digest(scored)
        model = lm.model if hasattr(lm, "model") and hasattr(lm, "tokenizer") else lm
        # before this prefill's hooks exist: the head's forward is not the prompt's read
        head = self._head(lm, model, input_ids, messages, who) if prefill and messages is not None else None
        layers = self.scorer.layers
        offsets = self.scorer.offsets
        n_sites = sum(len(ks) for ks in offsets.values())
        got: dict[ActKey, np.ndarray] = {}
        handles: list[Any] = []

        def detach() -> None:
            for h in handles:
                h.remove()
            handles.clear()

        def make(li: int) -> Callable[..., None]:
            def hook(_m: Any, _i: Any, out: Any) -> None:
                h = out[0] if isinstance(out, tuple | list) else out
                if h.shape[0] != 1:  # one conversation per prefill: row 0 alone was read, the others went unscored
                    raise InvalidInputError(f"fused privacy probe reads one conversation per prefill, got a batch "
                                            f"of {h.shape[0]}")
                if h.shape[1] <= offsets[li][-1]:
                    raise InvalidInputError("prompt shorter than the probe's token offset")
                for k in offsets[li]:  # fp32 upcast before the dot product
                    got[site_key(li, k)] = h[0, -1 - k].detach().float().cpu().numpy()
                if len(got) < n_sites:
                    return
                detach()  # one-shot: decode steps never reach the probe
                with self._lock:
                    self.calls += 1
                # Admitted like a check of the user (`guardrails.erasure`): an erasure of this user waits for the
                # drift state this prefill writes, and erases it, instead of being undone by it.
                with self._admitted(who):
                    verdict = self._verdict(got, who, messages, scored, key, turn_key, head)
                if verdict.action is Action.BLOCK and not who.shadow:
                    from guardrails.models.chat import PrefillBlocked

                    raise PrefillBlocked(verdict)
            return hook

        first = next(model.parameters(), None)
        on_cuda = first is not None and first.device.type == "cuda"

        def timed(fn: Callable[..., None]) -> Callable[..., None]:
            def run(*args: Any) -> None:
                if on_cuda:  # the layer's queued kernels are prefill, not hook work: wait for them outside the timing
                    import torch  # (the hook's host copy would wait for them anyway: no added cost)

                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                try:
                    fn(*args)
                finally:
                    with self._lock:
                        self.busy_s += time.perf_counter() - t0
            return run

        for li in layers:
            # the serving model object is shared (a sentinel check, a second chat): only this thread's prefill
            handles.append(layer_module(model, li).register_forward_hook(thread_owned(timed(make(li)))))
        return detach, None if head is None else head.cache
