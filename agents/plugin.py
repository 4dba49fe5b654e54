"""Spine integration: the "commands" input detector, LangChain tools and the demo turns.

Why a detector: the guard already sees every user turn with the caller's authenticated ids, so routing commands
there applies them for exactly that user without any extra plumbing. Command findings never block chat
(action allow); they carry an explanation of what changed so the demo and the audit can show it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from guardrails.decision import Action, Finding, Stage
from guardrails.detector import BaseDetector, CheckRequest, PluginContext
from guardrails.errors import RailguardError
from guardrails.text import unanswered_user_turns

from .moderation_backend import (
    _BASE,
    ModerationNotAvailableError,
    PersonalizationModeration,
    base_category_named,
    category_name,
)
from .moderation_clauses import split_moderation
from .router import MAX_COMMAND_CHARS, CommandRouter, RouteKind

log = logging.getLogger("railguard.agents")
#: The detector that enforces the `moderation` section this plugin's moderation commands write.
_HARM = "harm"
_SENTENCES = re.compile(r"(?<=[.!?])\s+")
_CLOSING_WORDS = r"thanks|thank you|thx|ty|please|pls|plz"
_CLOSING = re.compile(rf"\b(?:{_CLOSING_WORDS})\b", re.I)
#: A sentence that is only thanks, please or a smiley ("Thanks!", "Thank you so much :)"): it carries nothing. No
#: two parts can match the same characters (a smiley starts with ":", ";" or "<", never a separator), so a miss
#: fails fast: an overlapping form backtracked exponentially over " :)" repeated (review of session 35).
_CLOSING_ONLY = re.compile(
    rf"(?:(?:{_CLOSING_WORDS}|cheers)(?:\s+(?:so much|very much|a lot))?|[:;]-?[()DPp]|<3)"
    r"(?:[\s.!?,]+(?:[:;]-?[()DPp]|<3))*[\s.!?,]*", re.I)


def _without_closing(text: str) -> str:
    """`text` less its trailing sentences that only thank or smile ("unblock crypto spam. Thanks!")."""
    sentences = _SENTENCES.split(text)
    while len(sentences) > 1 and _CLOSING_ONLY.fullmatch(sentences[-1]):
        sentences.pop()
    return " ".join(sentences)


def _moderation_backend(store: Any) -> Any:
    try:
        return PersonalizationModeration(store)
    except ModerationNotAvailableError as exc:
        log.info("moderation commands disabled: %s", exc)
        return None


class CommandDetector(BaseDetector):
    """Routes each user message; applies recommendation/moderation commands for request.user_id only."""

    name = "commands"
    stages = frozenset({Stage.INPUT})
    # it applies the command as it checks: the Guard runs it last, and not at all for a message it blocks
    side_effects = True

    def __init__(self, router: CommandRouter) -> None:
        self.router = router

    def predict(self, request: CheckRequest) -> list[Finding]:
        if request.messages and request.messages[-1].role != "user":
            # Only the user's own words may change their settings: a tool result, an assistant prefill or a
            # system message that reads like a command ("unblock toxic messages") is content, not an instruction.
            return self._findings(RouteKind.NEITHER, "")
        res = self.router.route(request.text, user_id=request.user_id, tenant_id=request.tenant_id,
                                session_id=request.session_id)
        if res.kind is RouteKind.REJECTED:
            return self._findings(res.kind, "refused: " + res.explanation)  # the refusal quotes nothing
        return self._findings(res.kind, _summary(res), res.explanation)

    def lifts(self, request: CheckRequest, blocking: list[Finding]) -> bool | frozenset[tuple[str, str]]:
        """Whether this blocked message is the user's own command to unblock exactly the categories that block it:
        "unblock crypto spam" is about crypto spam, so the category made from "stop showing me crypto spam" blocked
        every message that could unblock it. Only the user's own words, only a message that does nothing but
        unblock, only categories of the user's own moderation profile that the harm detector enforces, and never a
        base category (toxic, spam, negative: "stop blocking insults, you idiot" stays blocked and changes
        nothing). The Guard then applies the command and judges the message again under the settings it left."""
        if request.stage is not Stage.INPUT or not request.messages or request.messages[-1].role != "user":
            return False
        if len(request.text) > MAX_COMMAND_CHARS:  # no command is this long (`classify` refuses it too), and the
            return False  # clause patterns cost more than linear time on long runs of spaces (review, session 35)
        text = _without_closing(request.text.strip())
        if len(_SENTENCES.split(text)) != 1 or _CLOSING.sub("", split_moderation(text)[1]).strip(" \t.,;:!?"):
            return False  # one sentence that is all moderation: nothing else rides on the lifted block
        try:
            kind, _cmd, mods = self.router.classify(text)
        except (RailguardError, ValueError):
            return False
        if kind is not RouteKind.MODERATION or not mods or any(m.op != "unblock" for m in mods):
            return False
        own = {n for n in (request.settings.get("moderation") or {}).get("categories") or {} if n not in _BASE}
        # every target is one of the user's own chat-made categories: a target without one falls back to a base
        # category in the unblock ("unblock rude jokes and insults" unblocked toxic too, review of session 32)
        # ... by today's name of the whole target (`category_name`): an older name is cut to 48 characters without
        # a hash, so any target starting with a long category's words matched it ("unblock <category> buy ...")
        named = {category_name(m.target) for m in mods}
        if not all(f.detector == _HARM and f.category in own for f in blocking):
            return False  # a base category (toxic ...) or another detector blocks: never lifted
        if named <= own and all(f.category in named for f in blocking):
            return True  # the unblock lifts exactly what blocks it: judged again under the settings it leaves
        # Blocked by one of the user's own categories while unblocking base ones only: "unblock spam" by a category
        # made from "posts about crypto coins" (review of session 33), so the user could not unblock spam by chat.
        # The message is nothing but base categories' words (each target one word of one): those findings are waived
        # on it, and stay on every other message. A message that also unblocks an own category is the case above
        # or stays blocked ("unblock crypto spam and scams", review of session 32).
        # ... only when it is the turn's one user message: the harm detector scores every unanswered one, so a
        # blocked text sent along with "unblock spam" would have been waived with it (review of session 33)
        alone = len(unanswered_user_turns([m.role for m in request.messages])) == 1
        if alone and not named & own and all(base_category_named(m.target) for m in mods):
            return frozenset((f.detector, f.category) for f in blocking)
        return False

    def _findings(self, kind: RouteKind, expl: str, detail: str = "") -> list[Finding]:
        rec = kind in (RouteKind.REC, RouteKind.BOTH, RouteKind.REJECTED)
        mod = kind in (RouteKind.MODERATION, RouteKind.BOTH)
        return [
            Finding(detector=self.name, category="rec_command", score=1.0 if rec else 0.0, threshold=0.5,
                    explanation=expl if rec else "", detail=detail if rec else "", action=Action.ALLOW),
            Finding(detector=self.name, category="moderation_command", score=1.0 if mod else 0.0, threshold=0.5,
                    explanation=expl if mod else "", detail=detail if mod else "", action=Action.ALLOW),
        ]


def _summary(res: Any) -> str:
    """What a command did, in counts and kinds only: the explanation is logged, so it never quotes the user's words
    (`RouteResult.explanation`, which names the targets, goes to the finding's caller-only `detail`)."""
    parts = []
    if res.rec_report is not None:
        r = res.rec_report
        counts = [f"{len(getattr(r, k))} {k.replace('_', ' ')}" for k in ("added", "replaced", "retracted",
                                                                          "unmatched_retractions") if getattr(r, k)]
        parts.append("recommendation policy: " + (("reset; " if r.reset else "") + ", ".join(counts) or "no change"))
    elif res.rec is not None:
        parts.append("recommendation command: not applied" + (f" ({res.error})" if res.error else ""))
    elif res.error and not res.moderation:  # refused while parsing (contradictory, unknown attribute, bad text)
        parts.append(f"command refused ({res.error}); nothing changed")
    for op in ("block", "unblock"):
        done = [m for m in res.moderation if m.op == op]
        if done:
            ok = sum(1 for m in done if not m.result.startswith(("not applied", "nothing to")))
            parts.append(f"moderation {op}: {ok} of {len(done)} applied")
    return " | ".join(parts) or ("not a command" if res.kind is RouteKind.NEITHER else "no change")


def build_router(store: Any = None, *, backend: str = "minilm") -> CommandRouter:
    from .parser import default_parser

    return CommandRouter(default_parser(backend), store, _moderation_backend(store))


def build_command_detector(ctx: PluginContext) -> CommandDetector:
    """Entry point `railguard.detectors: commands`. config: rec_parser = "minilm" (default) | "bow"."""
    backend = str((ctx.config or {}).get("rec_parser", "minilm"))
    return CommandDetector(build_router(ctx.store, backend=backend))


def make_tools(router: CommandRouter, *, user_id: str, tenant_id: str = "default",
               session_id: str | None = None, recommend: Any = None) -> list[Any]:
    """LangChain tools bound to one user. The ids are closed over: a model calling the tools cannot pick them."""
    from langchain_core.tools import StructuredTool

    def apply_feed_command(command: str) -> str:
        """Apply the user's natural-language feed or moderation command (e.g. 'no horror, more like Amelie')."""
        res = router.route(command, user_id=user_id, tenant_id=tenant_id, session_id=session_id)
        return f"{res.kind.value}: {res.explanation}"

    def show_feed_policy() -> str:
        """Show the user's active recommendation preferences."""
        if router.store is None:
            return "no store configured"
        from .policy import load_policy

        pol = load_policy(router.store, tenant_id, user_id, session_id=session_id)
        return "; ".join(p.describe() for p in pol.preferences) or "no active preferences"

    tools = [StructuredTool.from_function(apply_feed_command),
             StructuredTool.from_function(show_feed_policy)]
    if recommend is not None:
        def recommend_movies(k: int = 10) -> str:
            """Recommend k movies for the user under their current feed policy."""
            feed = recommend(user_id=user_id, k=max(1, min(int(k), 50)))
            if router.store is not None:  # "no horror just this time": next_feed preferences end with this feed
                from .policy import load_policy, mark_feed_served

                try:  # only when there is one to end: serving a feed is not itself a settings change
                    if any(p.scope == "next_feed" for p in load_policy(router.store, tenant_id, user_id,
                                                                         session_id=session_id).preferences):
                        mark_feed_served(router.store, tenant_id, user_id,
                                         actor=router.actor_for("rec_policy.feed_served"))
                except RailguardError as exc:  # the feed is served anyway; the preference ends with a later one
                    log.warning("could not end next-feed preferences (%s)", type(exc).__name__)
            note = f" ({feed.plan.explanation})" if feed.plan.relaxed or feed.plan.infeasible else ""
            return "; ".join(feed.titles) + note

        tools.append(StructuredTool.from_function(recommend_movies))
    return tools


def demo(ctx: Any) -> list[Any]:
    """Entry point `railguard.demo: rec` -- scripted turns: commands, isolation, chat pass-through."""
    from .catalog import load_catalog

    load_catalog()  # without MovieLens: DataNotAvailableError, and the demo runs without these turns
    turns: list[dict[str, Any]] = [
        dict(user_id="carol", session_id="carol-1", text="No horror movies, and more comedies for now please.",
             expect="allow", note="rec command: hard genre filter + soft boost, applied to carol only"),
        dict(user_id="carol", session_id="carol-1", text="Forget the horror filter; nothing before 1990.",
             expect="allow", note="rec command: retraction by reference + hard year bound"),
        dict(user_id="dave", session_id="dave-1", text="Stop showing me crypto spam and give me more westerns",
             expect="allow", note="both: moderation block (personalized harm profile) + rec soft preference"),
        dict(user_id="dave", session_id="dave-1", text="Apply this to user 42: only horror movies.",
             expect="allow", note="refused: ids never come from text; nobody's policy changes"),
        dict(user_id="carol", session_id="carol-1", text="What's a good pasta recipe?",
             expect="allow", note="neither: ordinary chat passes through"),
    ]
    try:
        from guardrails.demo import DemoTurn
    except ImportError:  # pragma: no cover - older spine without guardrails.demo: plain dicts
        return turns
    return [DemoTurn.model_validate(t) for t in turns]
