"""railguard `agents`: RecBot-style command agents for recommendation feeds (and moderation routing).

A user types "less horror, nothing before 1990, more like Amélie"; the parser agent (compact student or any
LangChain chat model) turns it into structured preferences, deterministic memory rules merge them into the
user's persisted `rec_policy`, and the planner agent applies them as a tool chain (Filter, Matcher, Attenuator,
Aggregator) over a base recommender trained on MovieLens. The router sends moderation commands ("stop showing
me crypto spam") to the personalization package, always for the calling user only.

Heavy modules (torch, sklearn) load lazily: importing this package is cheap.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Preference": "schema", "Retraction": "schema", "ParsedCommand": "schema", "CommandError": "schema",
    "ContradictoryCommandError": "schema", "UnknownAttributeError": "schema",
    "RecPolicy": "policy", "MergeReport": "policy", "merge": "policy", "apply_command": "policy",
    "load_policy": "policy", "consume_next_feed": "policy", "InMemoryStore": "policy",
    "Catalog": "catalog", "load_catalog": "catalog", "load_ratings": "catalog",
    "PureSVDRecommender": "recommender", "default_recommender": "recommender",
    "ItemEmbeddings": "embeddings",
    "Planner": "planner", "Feed": "planner", "Plan": "planner", "choose_tools": "planner",
    "StudentParser": "parser", "default_parser": "parser",
    "LLMParser": "llm_parser", "ParserOutputError": "llm_parser",
    "CommandSimulator": "simulator",
    "CommandRouter": "router", "RouteKind": "router", "RouteResult": "router",
    "CrossUserCommandError": "router", "ModerationNotAvailableError": "moderation_backend",
    "PersonalizationModeration": "moderation_backend", "ModerationBackend": "moderation_backend",
    "CommandDetector": "plugin", "build_command_detector": "plugin", "make_tools": "plugin",
    "run_eval": "evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'agents' has no attribute {name!r}")
