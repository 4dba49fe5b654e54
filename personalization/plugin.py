"""The `harm` detector plugin: each user's moderation profile decides what is flagged and what is enforced.

Why the profile is read from `request.settings` (not the store): the Guard already loaded the user's settings
for this check, so the detector never touches the store on the hot path and can never read another user's
profile. A missing profile means the default one; an unreadable one also falls back to the default (stricter
than failing open) and says so in the finding's explanation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from guardrails.decision import Action, Finding, Stage
from guardrails.detector import BaseDetector, CheckRequest, PluginContext, aclose_resources, close_resources
from guardrails.errors import ConfigError
from guardrails.text import unanswered_user_turns

from .profile import BASE_CATEGORIES, ModerationProfile, parse_profile
from .service import SECTION, ProfileService
from .windows import DEFAULT_MAX_WINDOWS

_ACTIONS = {"block": Action.BLOCK, "warn": Action.WARN, "allow": Action.ALLOW}


class HarmDetector(BaseDetector):
    """Scores every category of the user's profile; findings enforce the category's action above threshold."""

    name = "harm"
    # Input by default (what the user sends is what their profile is about); enable "output" via config
    # {"harm": {"stages": ["input", "output"]}} to also screen model replies.
    stages = frozenset({Stage.INPUT})

    def __init__(self, backend: Any = None, *, stages: frozenset[Stage] | None = None) -> None:
        if backend is None:
            from .embedding import EmbeddingBackend

            backend = EmbeddingBackend()
        self.backend = backend
        if stages is not None:
            self.stages = stages

    def close(self) -> None:
        """Release what the backend holds (the ICL backend's HTTP connections and threads); see `Guard.close`."""
        close_resources(self.backend)

    async def aclose(self) -> None:
        await aclose_resources(self.backend)

    def forget_user(self, tenant_id: str, user_id: str, settings: Mapping[str, Any] | None = None) -> int:
        """`Guard.erase_user`: drop what the backend derived from users' texts (`forget_users`: every cached
        embedding and compiled category, the ICL prompt prefix), whatever the user's profile is now: the caches
        are keyed by content, not user, so an edited or deleted profile left its older forms behind (review of
        session 34). A backend with only `forget_profile(profile)` drops what the stored profile (`settings`)
        names. The profile itself is the store's to erase."""
        if callable(getattr(self.backend, "forget_users", None)):
            return self.forget_all_users()
        forget = getattr(self.backend, "forget_profile", None)
        data = (settings or {}).get(SECTION)
        if not callable(forget) or not data:
            return 0
        try:
            profile = parse_profile(data)
        except ConfigError:
            return 0  # unreadable: it was never compiled either
        return int(forget(profile))

    def forget_all_users(self) -> int:
        """An erasure in another process (`guardrails.erasure`): whose is unknown, so everything the backend derived
        from users' texts goes (the same as `forget_user` for a backend with `forget_users`)."""
        forget_all = getattr(self.backend, "forget_users", None)
        return int(forget_all()) if callable(forget_all) else 0

    def profile_for(self, request: CheckRequest) -> tuple[ModerationProfile, str]:
        data = request.settings.get(SECTION) if request.settings else None
        try:
            return parse_profile(data), ""
        except ConfigError:
            return ModerationProfile(), "stored profile unreadable; default profile used"

    def findings(self, scores: dict[str, np.ndarray], profile: ModerationProfile, note: str = "",
                 i: int = 0) -> list[Finding]:
        out = []
        for name, cat in profile.categories.items():
            score = float(scores[name][i])
            threshold = 0.5 if cat.threshold is None else float(cat.threshold)
            hit = score >= threshold and score > 0.0  # 0: a counter-example's near-duplicate, even at threshold 0
            action = _ACTIONS[cat.action] if hit else Action.ALLOW
            if cat.action == "allow":
                why = "unblocked by the user's profile (policy mask: scored, never enforced)"
            else:
                kind = "base category" if name in BASE_CATEGORIES else "user category"
                why = f"{kind}; {'above' if hit else 'below'} threshold ({self.backend.name} backend)"
            out.append(Finding(detector=self.name, category=name, score=round(score, 4), threshold=threshold,
                               explanation=why + (f"; {note}" if note else ""), action=action,
                               user_category=name not in BASE_CATEGORIES))
        return out

    def predict(self, request: CheckRequest) -> list[Finding]:
        profile, note = self.profile_for(request)
        texts = turn_texts(request, getattr(self.backend, "max_turn_texts", MAX_TURN_MESSAGES))
        read = getattr(self.backend, "score_read", None)
        if read is None:
            scores, unread = self.backend.score(texts, profile), self._unread(texts)
        else:
            scores, unread = read(texts, profile, total_windows=getattr(self.backend, "max_windows", None))
        return self.findings(_worst(scores), profile, _join(note, _unread_note(unread, self.backend.name)))

    async def apredict(self, request: CheckRequest) -> list[Finding]:
        afn = getattr(self.backend, "ascore", None)
        if afn is None:
            return await super().apredict(request)
        profile, note = self.profile_for(request)
        texts = turn_texts(request, getattr(self.backend, "max_turn_texts", MAX_TURN_MESSAGES))
        scores = await afn(texts, profile)
        return self.findings(_worst(scores), profile, _join(note, _unread_note(self._unread(texts), self.backend.name)))

    def _unread(self, texts: list[str]) -> list[int]:
        """Characters a backend without `score_read` says it leaves unread (`unread_chars`; none if it has none)."""
        fn = getattr(self.backend, "unread_chars", None)
        return list(fn(texts)) if callable(fn) else []


#: Most texts one turn is scored as by a backend that does not say (`max_turn_texts`; the ICL backend's each cost
#: a model call): a turn is one or a few messages; more are read joined (`turn_texts`).
MAX_TURN_MESSAGES = 16


def turn_texts(request: CheckRequest, limit: int = MAX_TURN_MESSAGES) -> list[str]:
    """The texts one check scores: at the input stage, every user message sent since the model last spoke (a
    client may send "<something toxic>", "thanks!" together, and the model reads both), newest last; otherwise,
    or without the conversation, the checked text alone. A message repeated within the turn is scored once, and a
    turn of more than `limit` distinct messages is read as that many texts: its oldest messages joined
    into the first, which is read in windows under the turn's window budget like any long message (so diluted
    like one, README "Known limitations"). Only the newest 16 were read: a toxic message followed by 16 "ok"s was
    allowed, and nothing said so (review, session 36)."""
    msgs = request.messages
    if request.stage is not Stage.INPUT or len(msgs) < 2 or msgs[-1].role != "user":
        return [request.text]
    turns = [msgs[i].content for i in unanswered_user_turns([m.role for m in msgs])]
    earlier = [t for t in dict.fromkeys(turns[:-1]) if t.strip() and t != request.text]
    limit = max(2, limit)
    if len(earlier) > limit - 1:
        cut = len(earlier) - (limit - 2)
        earlier = ["\n".join(earlier[:cut]), *earlier[cut:]]
    return [*earlier, request.text]


def _unread_note(unread: list[int], backend: str) -> str:
    """What the explanation says of characters the backend did not read (the ends of very long messages)."""
    total = sum(unread)
    return f"{total} characters at the end of this turn's long message(s) not read by the {backend} backend" \
        if total else ""


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _worst(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per category, the highest score over the turn's messages (as one row)."""
    return {name: np.asarray([float(np.max(v))]) for name, v in scores.items()}


#: the ICL backend's settings for an HTTP endpoint (`OpenAICompatAdapter` keyword arguments)
_HTTP_KEYS = ("api_key", "timeout", "max_retries", "backoff", "deadline", "structured")
#: the settings each backend reads from the `harm` section (besides `backend` and `stages`)
_KEYS = {"embedding": {"encoder", "target_fpr", "adapter", "max_windows"},
         "icl": {"base_url", "model", "k", "retrieval", "user_demos_per_category", "calibrate", "target_fpr",
                 *_HTTP_KEYS}}


def build_backend(config: dict[str, Any] | None = None) -> Any:
    """Backend from config: {"backend": "embedding"} (default) or {"backend": "icl", "adapter": ...}."""
    cfg = dict(config or {})
    kind = cfg.get("backend", "embedding")
    known = _KEYS.get(kind) if isinstance(kind, str) else None
    unknown = sorted(str(k) for k in set(cfg) - {"backend", "stages"} - (known or set()))
    if known is not None and unknown:  # a typo ("base-url") fell back to the local model without a word
        raise ConfigError(f"harm ({kind} backend): unknown setting(s) {unknown}; known: {sorted(known)}")
    if kind == "embedding":
        from .embedding import EmbeddingBackend

        # "adapter": a LoRA delta file, or null for the plain encoder (default: the shipped harm deltas)
        return EmbeddingBackend(cfg.get("encoder", "all-minilm-l6-v2"), target_fpr=cfg.get("target_fpr", 0.01),
                                adapter=cfg.get("adapter", "default"),
                                max_windows=cfg.get("max_windows", DEFAULT_MAX_WINDOWS))
    if kind == "icl":
        from .adapters import LocalLMAdapter, OpenAICompatAdapter
        from .icl import ICLBackend

        if "base_url" in cfg:
            http = {k: cfg[k] for k in _HTTP_KEYS if k in cfg}
            adapter: Any = OpenAICompatAdapter(cfg["base_url"], cfg.get("model", "default"), **http)
        else:
            remote = sorted(set(cfg) & set(_HTTP_KEYS))
            if remote:
                raise ConfigError(f"harm (icl backend): {remote} apply to an HTTP endpoint; set base_url too")
            adapter = LocalLMAdapter(cfg.get("model", "smollm2-135m-instruct"))
        be = ICLBackend(adapter, k=cfg.get("k", 8), retrieval=cfg.get("retrieval", "random"),
                        user_demos_per_category=cfg.get("user_demos_per_category", 2))
        if cfg.get("calibrate") is None or cfg.get("calibrate") is False:
            return be
        return be.calibrate(cfg["calibrate"], target_fpr=cfg.get("target_fpr", 0.05))
    raise ConfigError(f"unknown harm backend {kind!r}; use 'embedding' or 'icl'")


def build_harm_detector(ctx: PluginContext) -> HarmDetector:
    """Entry point `railguard.detectors: harm`. Config section `harm` (optional): `backend` (embedding | icl),
    `stages`; embedding: `encoder`, `target_fpr`, `adapter` (LoRA delta file for the heads' encoder, null = plain
    encoder, which needs heads rebuilt for it), `max_windows` (128-token windows read per message and per turn,
    default 32); icl: `model`, `k`, `retrieval`, `user_demos_per_category`, `calibrate` (a number of benign
    texts; the local model only) with `target_fpr`, and for an HTTP endpoint `base_url`, `api_key`, `timeout`,
    `max_retries`, `backoff`, `deadline`, `structured`. Unknown keys are a ConfigError."""
    cfg = dict((ctx.config or {}).get("harm", {})) if ctx is not None else {}
    try:
        stages = frozenset(Stage(s) for s in cfg["stages"]) if "stages" in cfg else None
    except (ValueError, TypeError):
        raise ConfigError(f"harm.stages must list stages from {[s.value for s in Stage]}") from None
    return HarmDetector(build_backend(cfg), stages=stages)


DEMO_MESSAGE = "Huge news!!! Buy $MOONCOIN now before it 100x, join our Telegram for the next pump signal"


def demo(ctx: Any) -> list[Any]:
    """Entry point `railguard.demo: harm`: two users, different profiles, the same message, different decisions.

    carol blocks crypto shilling (a user category from one example + a definition); dave unblocks spam and
    keeps the default otherwise. Profiles are written through the store (versioned, audited).
    """
    store, tenant = getattr(ctx, "store", None), getattr(ctx, "tenant_id", "default")
    if store is None:
        raise ConfigError("the harm demo needs ctx.store")
    svc = ProfileService(store, tenant, actor="demo")
    svc.reset("carol")
    svc.block_new("carol", "crypto_shill", examples=["Get in early on $DOGEX, 50x guaranteed, pump starts at 9pm!"],
                  definition="Promotion of crypto coins or tokens with promises of fast gains.")
    svc.reset("dave")
    svc.unblock("dave", "spam")
    rows = [
        {"user_id": "carol", "session_id": "carol-1", "text": DEMO_MESSAGE, "expect": "block",
         "note": "carol blocks crypto shilling (1 example + definition)"},
        {"user_id": "dave", "session_id": "dave-1", "text": DEMO_MESSAGE, "expect": "allow",
         "note": "dave unblocked spam: same message allowed (policy mask)"},
        {"user_id": "dave", "session_id": "dave-1", "text": "You are a worthless idiot and everyone hates you.",
         "expect": "block", "note": "dave still blocks toxic language"},
    ]
    try:
        from guardrails.demo import DemoTurn
    except ImportError:  # spine demo not available: plain dicts
        return rows
    return [DemoTurn.model_validate(r) for r in rows]
