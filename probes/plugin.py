"""The privacy guard as a railguard Detector, in sentinel and fused mode, plus its demo turns.

* **sentinel** (default; remote/API agents): a local copy of the probe model encodes the conversation with
  per-session KV-cache reuse and early exit at the probe layer (:mod:`probes.sentinel`), so a turn costs
  the new tokens only.
* **fused** (the agent *is* a local HF model): :class:`FusedProbeHook` implements the spine's
  ``PrefillObserver`` (``attach(lm, input_ids, messages) -> detach``). It reads the probe layer during the
  serving model's own prefill (zero extra forward passes), and raises ``PrefillBlocked(decision)`` from
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
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from guardrails.decision import Action, Decision, Finding, Stage
from guardrails.detector import BaseDetector, CheckRequest, PluginContext
from guardrails.errors import ConfigError, InvalidInputError
from guardrails.models.hooks import thread_owned

from .capture import ActKey, layer_module, site_key, validate_messages
from .demo import DEMO_RECORDS_PROMPT, DEMO_SYSTEM_PROMPT, demo, demo_script  # noqa: F401 - entry point
from .probe import ProbeBundle, load_probe, model_config, model_fingerprints
from .scoring import PrivacyScorer
from .segments import sentence_prefixes
from .sentinel import SentinelEncoder
from .velocity import (
    InMemoryStateStore,
    StateStore,
    alone_of,
    conversation_digest,
    opening_of,
    user_message_count,
)

log = logging.getLogger("railguard.probes")
Mode = Literal["sentinel", "fused"]


def _spoken(messages: list[Any]) -> list[Any]:
    """What the user and the assistant said: tool results and the assistant's empty tool-call steps dropped.

    An agent's history holds tool traffic between turns; the sentinel scores the conversation as said (tool
    output is the guard's tool_result stage's job), as the fused hook does for the serving model's agent steps.
    """
    def field(m: Any, name: str) -> Any:
        v = m.get(name) if isinstance(m, dict) else getattr(m, name, None)
        return getattr(v, "value", v)

    return [m for m in messages if field(m, "role") != "tool"
            and not (field(m, "role") == "assistant" and isinstance(field(m, "content"), str)
                     and not field(m, "content").strip())]


def _user_turns(messages: Any) -> int | None:
    """How many user messages the checked conversation holds (its last one is being scored); None if unknown."""
    return (user_message_count(messages) or None) if messages else None


def _threshold(settings: Mapping[str, Any]) -> float:
    guard = settings.get("guard") if isinstance(settings, Mapping) else None
    t = (guard or {}).get("thresholds", {}).get("privacy") if isinstance(guard, Mapping) else None
    return 0.5 if t is None else float(t)


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
        sentences: sentinel mode: also score the last user message as it stood at each earlier sentence end
            (:mod:`probes.segments`; default True), so a harmless sentence after a flagged request ("Thanks!")
            does not hide it. Each cut costs one short forward over the KV cache. Fused mode reads the serving
            model's prefill only, so it scores the whole message.
        alone: sentinel mode, opt-in (default False): a user message after earlier turns is also read behind the
            system prompt alone, as a first turn at the first turn's τ (a few tokens in the same forward), so benign
            turns before a request cannot dilute it below τ. Measured: dev multi-turn TPR 0.947 -> 0.957 at the
            same FPR 0.0175, but on the hand-written record-holder conversations 7 of 10 benign ones flagged
            instead of 1 (a mention of a listed person, read alone, crosses τ). Fused mode reads the serving
            model's prefill only.
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

    def predict(self, request: CheckRequest) -> list[Finding]:
        if self.mode == "fused":
            # nothing would ever score: fail closed rather than allow every turn silently. Live hooks, not hooks
            # ever made: one made and dropped (never put in a model's observers) had left every check allowed
            if not self._hook_refs:
                raise ConfigError("privacy mode 'fused' but no FusedProbeHook exists: add detector.fused_hook() "
                                  "to the serving model's prefill_observers, or use mode 'sentinel'")
            return []  # the verdict comes from FusedProbeHook during the serving model's prefill
        raw: list[Any] = list(request.messages) or [{"role": "user", "content": request.text}]
        msgs = validate_messages(_spoken(raw))
        key = (request.tenant_id, request.user_id, request.session_id) if request.session_id else None
        enc = self.encoder
        cuts = sentence_prefixes(msgs[-1]["content"], markers=enc.markers) if self.sentences else []
        tracker = self.scorer.tracker
        # a conversation sent with its history that the session's drift has no trajectory for: its baseline is
        # read from the conversation's own opening (a few tokens in the same forward), not this turn
        opening = [] if tracker is None or request.session_id is None or not tracker.needs_opening(
            request.tenant_id, request.user_id, request.session_id, msgs) else [opening_of(msgs)]
        # with earlier turns, the request is also read behind the system prompt alone (benign turns before it had
        # diluted it below τ): like a cut, a few tokens in the same forward; with its own sentence cuts, or one
        # harmless sentence after the request hid it again (follow-up review)
        alone: list[list[Any]] = []
        if self.alone and user_message_count(msgs) > 1:
            lone = alone_of(msgs)
            alone = [lone, *([*lone[:-1], {"role": "user", "content": c}] for c in cuts)]
        acts, cut_acts = enc.activations(msgs, session=key, cuts=cuts, renderings=[*opening, *alone])
        alone_acts = [cut_acts.pop() for _ in alone][::-1]
        opening_acts = cut_acts.pop() if opening else None
        return self.scorer.findings(acts, tenant_id=request.tenant_id, user_id=request.user_id,
                                    session_id=request.session_id, threshold=_threshold(request.settings),
                                    user_turn=_user_turns(msgs), conversation=msgs, cut_acts=cut_acts,
                                    opening_acts=opening_acts, alone_acts=alone_acts)

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
        hook = FusedProbeHook(self.scorer, tenant_id=tenant_id, identity=identity, name=self.name)
        self._hook_refs.add(hook)  # weakly: `forget_user` reaches the hooks still in use
        return hook


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
                 identity: Callable[[], Any] | None = None, max_sessions: int = 1024, name: str = "privacy") -> None:
        self.scorer = scorer
        self.tenant_id = tenant_id  # unless the turn's identity names the guard's tenant (`for_serving`)
        self.name = name  # the detector name a user's `disabled_detectors` would use
        self.identity = identity
        self.last_findings: list[Finding] = []
        self.last_decision: Decision | None = None
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
            if self.last_decision is not None and self.last_decision.user_id == user_id:
                self.last_decision, self.last_findings = None, []
        return len(gone)

    def attach(self, lm: Any, input_ids: Any = None, messages: Any = None) -> Callable[[], None]:
        if id(lm) not in self._checked:
            self.scorer.bundle.check_model(model_fingerprints(lm), getattr(lm, "name", None),
                                           config=model_config(lm))
            self._checked.add(id(lm))
        who = self._who()
        if who.disabled:  # the user opted out of this detector: the guard's own check skips it too
            self.skipped += 1
            return lambda: None
        user_id, session_id, key = who.user_id, who.session_id, (who.tenant_id, who.user_id, who.session_id)
        turn_key: str | None = None
        scored: list[dict[str, str]] | None = None
        if messages is not None:
            said = [m for m in messages if m.get("role") != "tool"]
            users = [i for i, m in enumerate(said) if m.get("role") == "user"]
            if users and said[-1].get("role") == "assistant" and messages[-1].get("role") == "tool":
                # An agent step after the user's turn (its tool call answered by a tool result): that turn was
                # scored before its first model call, as in sentinel mode; scoring it again would count it twice
                # in the drift S_t (the guard's tool_result stage checks tool output). Only a turn this hook
                # scored is skipped, and only when a tool result is what the model continues from: a resent turn
                # ending with assistant text ("Sure. Here is Ana's diagnosis:", written by whoever sends the
                # history) would have been generated from unscored text; it is refused as before.
                upto = validate_messages(said[: users[-1] + 1])
                if self._scored.get(key) == conversation_digest(upto):
                    self.skipped += 1
                    return lambda: None
            scored = validate_messages(said)
            turn_key = conversation_digest(scored)
        model = lm.model if hasattr(lm, "model") and hasattr(lm, "tokenizer") else lm
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
                findings = self.scorer.findings(got, tenant_id=who.tenant_id, user_id=user_id,
                                                session_id=session_id, threshold=_threshold(who.settings),
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
                self.last_findings = findings
                decision = Decision(action=Action.BLOCK if blocked else Action.ALLOW, stage=Stage.INPUT,
                                    findings=tuple(findings), user_id=user_id, session_id=session_id,
                                    shadow=who.shadow)
                self.last_decision = decision  # shared across threads: raise this request's own, not a re-read
                if blocked and not who.shadow:
                    from guardrails.models.chat import PrefillBlocked

                    raise PrefillBlocked(decision)
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
        return detach


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
