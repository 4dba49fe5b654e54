"""Which settings a write changed, named so that the audit trail never holds user text.

An audit row lists the dotted paths a write changed ("moderation.categories.spam.threshold"), never values. Path
segments come from two places: a section model's field names, which are schema and shown as they are, and the keys
of a mapping field, which a user may choose ("moderation.categories.posts-about-jane-doe-s-divorce"). Those keys
are shown as their keyed hash (`name_hash`) unless the model declares them public in a class attribute::

    class ModerationProfile(BaseModel):
        audit_public_keys: ClassVar[Mapping[str, frozenset[str] | str]] = {"categories": frozenset(BASE)}

maps a field to the names shown verbatim, or to `IDENTIFIER_KEYS` for keys an operator chooses (shown by
`safe_segment`: an identifier as is, anything else hashed). A key the models do not describe is hashed.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from ..decision import name_hash
from ..errors import ConfigError, safe_segment

#: The class attribute a section model declares its public mapping keys in.
PUBLIC_KEYS_ATTR = "audit_public_keys"
#: Declares a mapping's keys operator-chosen identifiers (shown by `safe_segment`), not user text.
IDENTIFIER_KEYS = "identifiers"


@dataclass(frozen=True)
class _Map:
    """A mapping whose keys are data: `values` describes each value, `public` which keys are shown verbatim."""

    values: Any  # a model class, a _Map, or None (nothing known below)
    public: frozenset[str] | str = frozenset()


def _shape(annotation: Any) -> Any:
    """What a field annotation says about the JSON below it: a model class, a _Map, or None."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _shape(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        members = [a for a in get_args(annotation) if a is not type(None)]
        return _shape(members[0]) if len(members) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin is dict or (isinstance(origin, type) and issubclass(origin, Mapping)):
        args = get_args(annotation)
        return _Map(_shape(args[1]) if len(args) == 2 else None)
    return None


def _public(model: type[BaseModel], field: str) -> frozenset[str] | str:
    """What `model` declares public among `field`'s keys: a set of names, or `IDENTIFIER_KEYS`. Anything else is a
    plugin's mistake, refused (a string was read as a set of its substrings: "toxic-and-more" showed "and")."""
    declared = getattr(model, PUBLIC_KEYS_ATTR, {})
    public = declared.get(field, frozenset()) if isinstance(declared, Mapping) else None
    if public == IDENTIFIER_KEYS or (isinstance(public, frozenset | set) and all(isinstance(k, str) for k in public)):
        return public if isinstance(public, str) else frozenset(public)
    raise ConfigError(f"{model.__name__}.{PUBLIC_KEYS_ATTR}[{field!r}] must be a set of names or IDENTIFIER_KEYS")


def check_public_keys(model: type[BaseModel]) -> None:
    """Refuse a section model whose `audit_public_keys` is malformed when it is registered, not at its first write
    (nested models are checked when a write reaches them)."""
    declared = getattr(model, PUBLIC_KEYS_ATTR, {})
    if not isinstance(declared, Mapping):
        raise ConfigError(f"{model.__name__}.{PUBLIC_KEYS_ATTR} must map field names to public keys")
    for field in declared:
        _public(model, field)


def _step(shape: Any, key: object) -> tuple[str, Any]:
    """The segment for `key` under `shape`, and the shape of its value."""
    text = str(key)
    if isinstance(shape, Mapping):  # the top level: section names, each described by its model
        return safe_segment(text), shape.get(text)
    if isinstance(shape, type) and issubclass(shape, BaseModel):
        field = shape.model_fields.get(text)
        if field is None:  # not in the schema (data written before a field was dropped): maybe user text
            return name_hash(text), None
        below = _shape(field.annotation)
        if isinstance(below, _Map):
            below = replace(below, public=_public(shape, text))
        return text, below
    if isinstance(shape, _Map):
        if shape.public == IDENTIFIER_KEYS:
            return safe_segment(text), shape.values
        return (text if text in shape.public else name_hash(text)), shape.values
    return name_hash(text), None


def changed_paths(old: Mapping[str, Any], new: Mapping[str, Any],
                  models: Mapping[str, type[BaseModel]] | None = None) -> list[str]:
    """Dotted paths whose value differs between two settings dicts (added, removed or modified), sorted by key.

    Top-level keys are section names, described by `models` (default: the registered `section_models`). The diff
    recurses into dicts (an added or removed dict is listed leaf by leaf); a changed list or scalar is reported at
    its own path, never element-wise, so values never become part of a path.
    """
    if models is None:
        from .settings import section_models

        models = section_models()
    return _diff(old, new, "", models)


def _diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str, shape: Any) -> list[str]:
    paths: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        segment, below = _step(shape, key)
        path = prefix + segment
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if isinstance(a, Mapping | _Missing) and isinstance(b, Mapping | _Missing):
            sub = _diff(a if isinstance(a, Mapping) else {}, b if isinstance(b, Mapping) else {}, path + ".", below)
            paths.extend(sub or ([path] if a != b else []))  # an added/removed empty dict is still a change
        elif a != b or type(a) is not type(b):
            paths.append(path)
    return paths


class _Missing:
    """Marks a key absent on one side of a diff (distinct from a stored None)."""

    def __bool__(self) -> bool:
        return False


_MISSING = _Missing()
