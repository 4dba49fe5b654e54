"""The privacy guard as a railguard Detector, in sentinel and fused mode, plus its demo turns.

* **sentinel** (default; remote/API agents): a local copy of the probe model encodes the conversation with
  per-session KV-cache reuse and early exit at the probe layer (:mod:`probes.sentinel`), so a turn costs
  the new tokens only.
* **fused** (the agent *is* a local HF model): :class:`probes.fused.FusedProbeHook` implements the spine's
  ``PrefillObserver`` (``attach(lm, input_ids, messages) -> detach``). It reads the probe layer during the
  serving model's own prefill (zero extra forward passes; a turn with other readings, such as sentence cuts, has
  them read in the head of that prefill: ``attach_prefilled``), and raises ``PrefillBlocked(decision)`` from
  inside that forward when the verdict is block, so no token is ever produced. In fused mode the detector's
  ``predict`` returns no findings: the verdict is issued by the hook.

Both modes score the same two findings: ``privacy_request`` (single-turn probe on a_t) and
``privacy_drift`` (S_t = w·(a_t - a_1), per session, persisted through the spine store). Scores are mapped to
(0, 1) with the calibrated threshold at 0.5, so the spine's per-user ``guard.thresholds.privacy`` (in [0, 1])
can tighten or loosen the guard. Raw text is never logged.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Literal

from guardrails.decision import Action, Finding, Stage
from guardrails.detector import BaseDetector, CheckRequest, PluginContext
from guardrails.errors import ConfigError, InvalidInputError

from .capture import validate_messages
from .demo import DEMO_RECORDS_PROMPT, DEMO_SYSTEM_PROMPT, demo, demo_script  # noqa: F401 - entry point
from .fused import FusedProbeHook, _threshold
from .probe import ProbeBundle, load_probe, model_config, model_fingerprints
from .readings import plan_turn, spoken
from .scoring import PrivacyScorer
from .sentinel import SentinelEncoder
from .velocity import (
    InMemoryStateStore,
    StateStore,
)

log = logging.getLogger("railguard.probes")
Mode = Literal["sentinel", "fused"]


class PrivacyDetector(BaseDetector):
    """Activation-probe privacy guard (NeuroFilter) on the input stage. Fails closed: an error blocks the turn.

    Args:
        probe: a probe bundle directory, ``"default"`` (the bundle shipped for ``smollm2-135m-instruct``) or a
            loaded :class:`ProbeBundle`.
        model: the sentinel model's name or path (default: the probe's own ``model_id``); loaded lazily on the
            first check, and refused unless its fingerprint matches the one the probe was trained on.
        lm: an already loaded model (``guardrails.models.load_causal_lm``) to use instead of loading ``model``;
            checked against the probe's fingerprint here (``ProbeMismatchError``). In fused mode pass the serving
            model's, so a mismatch surfaces at construction rather than on the first turn.
        mode: ``"sentinel"`` (default; any agent, also remote/API ones): ``predict`` runs its own forward pass of
            the probe model over the conversation (per-session KV-cache reuse, early exit at the probe layer).
            ``"fused"`` (the agent *is* a local HF model): no forward pass of its own; the verdict comes from
            :meth:`fused_hook`, attached to the serving model, e.g. ``LocalChatModel(prefill_observers=
            [detector.fused_hook()])``, which reads that model's prefill and blocks before the first token. In
            fused mode ``predict`` returns no findings, and raises ``ConfigError`` (so the Guard blocks: fail
            closed) while no hook has been created; ``fused_hook()`` on a sentinel-mode detector raises
            ``ConfigError`` too.
        store: where per-session drift state lives, a :class:`StateStore` (``get_state``/``put_state``, as the
            spine's SettingsStore has; the plugin passes it). Default: in memory, per process, lost on restart.
        device: device for a model this detector loads (default: GPU when present).
        action: the action a triggered finding asks for (default ``Action.BLOCK``; ``Action.WARN`` to alert only).
        max_sessions: sessions whose KV cache the sentinel encoder keeps (least recently used evicted first; also
            bounded by cached tokens). An evicted session is re-encoded in full: slower, same scores.
        max_cached_tokens: tokens of KV cache the sentinel keeps over all sessions. Each costs ~30-36 kB on
            SmolLM2 in fp32 (measured: the default 32,768 holds ~1.1 GB); lower it on a small machine.
        sentences: also score the last user message as it stood at each earlier sentence end
            (:mod:`probes.segments`; default True), so a harmless sentence after a flagged request ("Thanks!")
            does not hide it. Each cut costs a few tokens in the turn's forward over the KV cache; in fused mode, in
            the head of the serving model's prefill (:meth:`FusedProbeHook.attach_prefilled`). Whatever this says,
            the user messages sent since the assistant's last reply are read as one turn, joined, and where each of
            them ends (:func:`probes.segments.joined_turn`; more than 32 are refused).
        alone: sentinel mode, opt-in (default False): a user message after earlier turns is also read behind the
            system prompt alone, as a first turn at the first turn's τ (a few tokens in the same forward), so benign
            turns before a request cannot dilute it below τ. Measured: dev multi-turn TPR 0.947 -> 0.957 at the
            same FPR (0.0351 with the drift probe of session 38, 0.0175 before), but on the hand-written
            record-holder conversations 7 of 10 benign ones flagged instead of 1 (a mention of a listed person,
            read alone, crosses τ). Fused mode reads it in the head of the serving model's prefill.
    """

    name = "privacy"
    stages = frozenset({Stage.INPUT})
    default_fail_mode = "closed"

    def __init__(self, probe: str | ProbeBundle = "default", *, model: str | None = None, lm: Any = None,
                 mode: Mode = "sentinel", store: StateStore | None = None, device: str | None = None,
                 action: Action = Action.BLOCK, max_sessions: int = 32, max_cached_tokens: int = 32_768,
                 sentences: bool = True, alone: bool = False) -> None:
        if mode not in ("sentinel", "fused"):
            raise InvalidInputError(f"unknown privacy mode {mode!r}; expected sentinel or fused")
        self.bundle = probe if isinstance(probe, ProbeBundle) else load_probe(probe)
        self.model_name = model or self.bundle.model_id
        self.mode = mode
        self.device = device
        self.scorer = PrivacyScorer(self.bundle, store if store is not None else InMemoryStateStore(), action)
        # the gates of the Guards over this detector (`bind_erasure_gate`): a fused prefill is admitted through each
        self._erasure_gates: weakref.WeakSet[Any] = weakref.WeakSet()
        self._gates_lock = threading.Lock()  # a Guard built while a prefill lists them: a WeakSet is not thread-safe
        if self.bundle.multiturn is None:  # a bundle without multiturn/ loads: say that multi-turn drift is off
            log.warning("privacy probe bundle has no drift probe (multiturn/): multi-turn attacks are scored turn by "
                        "turn only")
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 0 or \
                isinstance(max_cached_tokens, bool) or not isinstance(max_cached_tokens, int) or max_cached_tokens < 0:
            raise ConfigError("max_sessions and max_cached_tokens must be integers >= 0")
        self.max_sessions, self.max_cached_tokens = max_sessions, max_cached_tokens
        if not isinstance(sentences, bool) or not isinstance(alone, bool):
            raise ConfigError("sentences and alone must be true or false")
        self.sentences, self.alone = sentences, alone
        self._lm = lm
        self._encoder: SentinelEncoder | None = None
        self._hook_refs: weakref.WeakSet[FusedProbeHook] = weakref.WeakSet()
        self._lock = threading.Lock()
        if lm is not None:
            self.bundle.check_model(model_fingerprints(lm), getattr(lm, "name", None), config=model_config(lm))

    @property
    def lm(self) -> Any:
        """The sentinel model, loaded on first use and checked against the probe's model fingerprint."""
        with self._lock:
            if self._lm is None:
                from guardrails.models import load_causal_lm

                lm = load_causal_lm(self.model_name, device=self.device)
                self.bundle.check_model(model_fingerprints(lm), self.model_name, config=model_config(lm))
                self._lm = lm
            return self._lm

    @property
    def encoder(self) -> SentinelEncoder:
        if self._encoder is None:
            lm = self.lm
            with self._lock:  # one encoder (one KV-cache LRU and forward lock) under concurrent first checks
                if self._encoder is None:
                    self._encoder = SentinelEncoder(lm.model, lm.tokenizer, self.scorer.layers,
                                                    max_sessions=self.max_sessions, offsets=self.scorer.offsets,
                                                    max_cached_tokens=self.max_cached_tokens)
        return self._encoder

    def forget_user(self, tenant_id: str, user_id: str, settings: Mapping[str, Any] | None = None) -> int:
        """Drop what this detector holds about one user (`Guard.erase_user`): the sentinel's KV caches of their
        sessions, the fused hooks' per-session digests and last verdict, and, without a spine store, their drift
        state kept in memory. Returns the entries dropped."""
        n = self._encoder.forget_where(lambda k: isinstance(k, tuple) and k[:2] == (tenant_id, user_id)) \
            if self._encoder is not None else 0
        for hook in list(self._hook_refs):
            n += hook.forget_user(user_id, tenant_id)
        store = self.scorer.tracker.store if self.scorer.tracker is not None else None
        if isinstance(store, InMemoryStateStore):
            n += store.erase_user(tenant_id, user_id)["session_state"]
        return n

    def forget_all_users(self) -> int:
        """An erasure in another process over the same store (`guardrails.erasure`): whose is unknown, so every
        session's sentinel KV cache and the fused hooks' digests go (each session re-reads its conversation once;
        drift state lives in the store and stays). Returns the entries dropped."""
        n = self._encoder.forget_where(lambda _key: True) if self._encoder is not None else 0
        for hook in list(self._hook_refs):
            n += hook.forget_all()
        return n

    def predict(self, request: CheckRequest) -> list[Finding]:
        if self.mode == "fused":
            # nothing would ever score: fail closed rather than allow every turn silently. Live hooks, not hooks
            # ever made: one made and dropped (never put in a model's observers) had left every check allowed
            if not self._hook_refs:
                raise ConfigError("privacy mode 'fused' but no FusedProbeHook exists: add detector.fused_hook() "
                                  "to the serving model's prefill_observers, or use mode 'sentinel'")
            return []  # the verdict comes from FusedProbeHook during the serving model's prefill
        raw: list[Any] = list(request.messages) or [{"role": "user", "content": request.text}]
        key = (request.tenant_id, request.user_id, request.session_id) if request.session_id else None
        enc = self.encoder
        said = validate_messages(spoken(raw))
        turn = plan_turn(said, self.scorer, tenant_id=request.tenant_id, user_id=request.user_id,
                         session_id=request.session_id, sentences=self.sentences, alone=self.alone,
                         markers=enc.markers, max_chars=enc.max_chars)
        acts, extra = enc.activations(turn.msgs, session=key, cuts=turn.cuts, renderings=turn.renderings)
        return turn.findings(self.scorer, acts, extra, tenant_id=request.tenant_id, user_id=request.user_id,
                             session_id=request.session_id, threshold=_threshold(request.settings))

    def bind_erasure_gate(self, gate: Any) -> None:
        """A Guard's erasure gate (spine protocol): a fused prefill's scoring is admitted through it like a check,
        so an erasure of the user waits for the drift state it writes, in the store or in this detector's memory.
        Every Guard's, not the last one's: a second Guard over the detector (another store, a store-less one, a
        view) had replaced the first's gate, and the first's erasures stopped waiting (review, session 36)."""
        with self._gates_lock:
            self._erasure_gates.add(gate)

    def _bound_gates(self) -> list[Any]:
        with self._gates_lock:
            return list(self._erasure_gates)

    def fused_hook(self, *, tenant_id: str = "default",
                   identity: Callable[[], Any] | None = None) -> FusedProbeHook:
        """A :class:`FusedProbeHook` for the serving model's ``prefill_observers`` (fused mode only).

        ``tenant_id``: the tenant whose sessions the hook's drift state belongs to; ``identity``: returns the
        (user_id, session_id) of the turn being generated (default: the spine's ``current_identity``). Raises
        ``ConfigError`` unless this detector was built with ``mode="fused"``: a sentinel-mode detector would still
        run its own forward pass on every check, so the hook would only add a second verdict, not save one.
        """
        if self.mode != "fused":
            raise ConfigError(f"fused_hook() needs a detector built with mode='fused' (this one is {self.mode!r}): "
                              "a sentinel-mode detector runs its own forward pass on every check anyway; use "
                              "PrivacyDetector(..., mode='fused') or config {'privacy': {'mode': 'fused'}}")
        hook = FusedProbeHook(self.scorer, tenant_id=tenant_id, identity=identity, name=self.name,
                              erasure_gates=self._bound_gates, sentences=self.sentences, alone=self.alone)
        self._hook_refs.add(hook)  # weakly: `forget_user` reaches the hooks still in use
        return hook


def _config(ctx: PluginContext) -> Mapping[str, Any]:
    cfg = ctx.config if isinstance(ctx.config, Mapping) else {}
    sub = cfg.get("privacy")
    return sub if isinstance(sub, Mapping) else cfg


def build_privacy_detector(ctx: PluginContext) -> PrivacyDetector:
    """Entry point ``railguard.detectors: privacy``. Config (``ctx.config['privacy']``): probe (dir or
    ``default``), mode (sentinel|fused), model (defaults to the probe's model), max_sessions,
    max_cached_tokens (the sentinel's KV-cache bounds), sentences (score sentence prefixes too), alone (also read a
    later user message behind the system prompt alone; default false). The model loads lazily."""
    cfg = _config(ctx)
    return PrivacyDetector(probe=str(cfg.get("probe", "default")), model=cfg.get("model"),
                           mode=cfg.get("mode", "sentinel"), store=ctx.store, device=ctx.device,
                           max_sessions=cfg.get("max_sessions", 32),
                           max_cached_tokens=cfg.get("max_cached_tokens", 32_768),
                           sentences=cfg.get("sentences", True), alone=cfg.get("alone", False))
