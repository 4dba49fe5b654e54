"""The pure operations on a moderation profile (`personalization.profile`): profile in, new profile out, so each
can run inside ``store.update_section(..., fn)`` and be unit-tested without a store. ``unblock`` is a policy mask
(the category's action becomes ``allow``), deterministic whatever the backend says."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from guardrails.errors import InvalidInputError, NameTakenError, UnknownNameError

from .profile import (
    BASE_CATEGORIES,
    Action,
    Category,
    Generalize,
    ModerationProfile,
    _describe,
    _same_text,
    _validated,
    check_contradictions,
    check_name,
    default_categories,
    parse_profile,
)
from .user_texts import as_texts, clean_list, with_variations

__all__ = ["block_new", "extend", "list_categories", "reblock", "remove", "reset", "set_action", "set_threshold",
           "unblock"]


def _with(profile: ModerationProfile, name: str, cat: Category | None) -> ModerationProfile:
    cats = dict(profile.categories)
    if cat is None:
        cats.pop(name, None)
    else:
        cats[name] = cat
    return parse_profile({"schema_version": 1, "categories": {k: v.model_dump() for k, v in cats.items()}})


def _profile(profile: Any) -> ModerationProfile:
    if not isinstance(profile, ModerationProfile):  # None or a dict had raised AttributeError
        raise InvalidInputError(f"expected a ModerationProfile, got {type(profile).__name__} (parse_profile reads one)")
    return profile


def _category(profile: ModerationProfile, name: str) -> Category:
    _profile(profile)
    check_name(name)
    if name not in profile.categories:
        raise UnknownNameError(f"unknown category {name!r}; known: {sorted(profile.categories)}", kind="category")
    return profile.categories[name]


def block_new(
    profile: ModerationProfile,
    name: str,
    *,
    examples: Iterable[str] = (),
    definition: str = "",
    counter_examples: Iterable[str] = (),
    action: Action = "block",
    threshold: float | None = None,
    generalize: Generalize = "auto",
) -> ModerationProfile:
    """Add a new category from ≥ 1 example and/or a definition. Existing names are refused (use extend).

    ``generalize="examples"`` keeps the category narrow (see `Category.generalize`)."""
    _profile(profile)
    check_name(name)
    if name in profile.categories:
        raise NameTakenError(f"category {name!r} already exists; use extend/unblock/reblock instead",
                             kind="category")
    ex = as_texts(examples, "examples")
    cx = as_texts(counter_examples, "counter_examples")
    try:
        cat = Category(definition=definition, examples=ex, counter_examples=cx, action=action, threshold=threshold,
                       generalize=generalize)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid category {name!r}: {_describe(exc)}") from None
    if not cat.examples and not cat.definition:
        raise InvalidInputError(f"category {name!r} needs at least one example or a definition")
    check_contradictions(name, cat)
    return _with(profile, name, cat)


def set_action(profile: ModerationProfile, name: str, action: Action,
               threshold: float | None = None) -> ModerationProfile:
    """Change a category's policy (and optionally its threshold) without touching its examples."""
    cat = _category(profile, name)
    upd: dict[str, Any] = {"action": action}
    if threshold is not None:
        upd["threshold"] = threshold
    return _with(profile, name, _validated({**cat.model_dump(), **upd}, name))


def set_threshold(profile: ModerationProfile, name: str, threshold: float | None) -> ModerationProfile:
    """Per-category threshold on the calibrated scale (None → the backend's calibrated operating point)."""
    cat = _category(profile, name)
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)
                                  or not 0.0 <= threshold <= 1.0):
        raise InvalidInputError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return _with(profile, name, _validated({**cat.model_dump(), "threshold": threshold}, name))


def unblock(profile: ModerationProfile, name: str) -> ModerationProfile:
    """Deterministic policy mask: the category is still scored but its findings always allow."""
    return set_action(profile, name, "allow")


def reblock(profile: ModerationProfile, name: str, action: Action = "block") -> ModerationProfile:
    """Undo `unblock`: the category acts again, with ``action`` ("block" by default, or "warn"); its examples and
    threshold are kept. Same as `set_action`, named for the personalization protocol; "allow" is `unblock`'s job
    and is refused here (as the HTTP operation refuses it)."""
    if action not in ("block", "warn"):
        raise InvalidInputError(f"reblock takes action 'block' or 'warn', got {str(action)[:20]!r} (use unblock)")
    return set_action(profile, name, action)


def extend(
    profile: ModerationProfile,
    name: str,
    texts: Iterable[str] | str,
    *,
    counter: bool = False,
    n_variations: int = 0,
    seed: int = 0,
) -> ModerationProfile:
    """Extend a category to a flagged text (and optionally generated variations of it).

    ``counter=True`` adds the texts as counter-examples instead (a per-category false-positive fix).
    """
    cat = _category(profile, name)
    items = with_variations(as_texts(texts, "texts"), n_variations, seed=seed)
    field = "counter_examples" if counter else "examples"
    other = "examples" if counter else "counter_examples"
    data = cat.model_dump()
    new = clean_list(items, what=field)
    if not new:  # "   " or "" cleaned to nothing: an extend that adds nothing is an error, as block_new's
        raise InvalidInputError(f"extend {name!r}: no text to add (empty after removing whitespace and control "
                                "characters)")
    # The newest call wins a contradiction: moving a text between lists is how a user corrects themselves.
    moved = {_same_text(t) for t in new}
    data[other] = [t for t in data[other] if _same_text(t) not in moved]
    data[field] = clean_list(data[field] + new, what=field)
    return _with(profile, name, _validated(data, name))


def remove(profile: ModerationProfile, name: str) -> ModerationProfile:
    """Delete a user category; base categories are reset to their defaults instead."""
    _category(profile, name)
    if name in BASE_CATEGORIES:
        return _with(profile, name, default_categories()[name])
    return _with(profile, name, None)


def reset(profile: ModerationProfile | None = None) -> ModerationProfile:
    """A fresh default profile: base categories at their defaults, every user category gone. ``profile`` is
    ignored (accepted so `reset` composes like the other operations)."""
    return ModerationProfile()


def list_categories(profile: ModerationProfile) -> list[dict[str, Any]]:
    """Summaries without the texts themselves (safe to print or log)."""
    _profile(profile)
    return [
        {"name": n, "builtin": n in BASE_CATEGORIES, "action": c.action, "threshold": c.threshold,
         "n_examples": len(c.examples), "n_counter_examples": len(c.counter_examples),
         "has_definition": bool(c.definition), "generalize": c.generalize}
        for n, c in sorted(profile.categories.items())
    ]
