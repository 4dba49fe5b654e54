"""The moderation profile's operations as the spine's settings operations (`guardrails.store.operations`).

Registered under ``railguard.settings_operations`` as section "moderation", so the HTTP service offers them as
``POST /v1/users/{u}/settings/moderation/{block,unblock,reblock,extend,set_threshold,remove,reset}`` and
`RailguardClient.apply_operation` calls them: a chat product lets its users block a category from one example
without rebuilding the section's JSON. Each input model is the wire format (unknown fields refused); each
function is the same pure operation `ProfileService` runs, so both paths give the same profile.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from guardrails.store.operations import SectionOperation

from . import profile as P
from . import profile_ops as ops
from .user_texts import as_texts, with_variations

_MAX_ITEMS = P.MAX_RAW_ITEMS


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Named(_Input):
    name: StrictStr = Field(description="category name (lowercase letters, digits, _ and -)")


class BlockInput(Named):
    examples: list[StrictStr] = Field(default_factory=list, max_length=_MAX_ITEMS)
    definition: StrictStr = ""
    counter_examples: list[StrictStr] = Field(default_factory=list, max_length=_MAX_ITEMS)
    action: P.Action = "block"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, strict=True)  # strict: no True, no "0.7"
    generalize: P.Generalize = "auto"


class ReblockInput(Named):
    action: Literal["block", "warn"] = "block"


class ThresholdInput(Named):
    threshold: float | None = Field(ge=0.0, le=1.0, strict=True, description="null: the calibrated default")


class ExtendInput(Named):
    texts: list[StrictStr] = Field(min_length=1, max_length=_MAX_ITEMS)
    counter: StrictBool = Field(default=False, description="add them as counter-examples (not this category)")
    n_variations: StrictInt = Field(default=0, ge=0, le=P.MAX_EXAMPLES - 1,
                                    description="generated variations of each text, added too")


class NoInput(_Input):
    pass


def _profile(section: dict[str, Any]) -> P.ModerationProfile:
    return P.parse_profile(section or None)


def _extend_prepared(body: ExtendInput) -> ExtendInput:
    """Variations are generated once, before the write (`SectionOperation.prepare`)."""
    texts = with_variations(as_texts(list(body.texts), "texts"), body.n_variations)
    return body.model_copy(update={"texts": texts, "n_variations": 0})


OPERATIONS: dict[str, SectionOperation] = {
    "block": SectionOperation(
        BlockInput, lambda s, b: ops.block_new(_profile(s), b.name, examples=b.examples, definition=b.definition,
                                               counter_examples=b.counter_examples, action=b.action,
                                               threshold=b.threshold, generalize=b.generalize),
        summary="block a new category from >= 1 example and/or a definition (an existing name is refused)"),
    "unblock": SectionOperation(Named, lambda s, b: ops.unblock(_profile(s), b.name),
                                summary="policy mask: the category is still scored but never enforced"),
    "reblock": SectionOperation(ReblockInput, lambda s, b: ops.reblock(_profile(s), b.name, b.action),
                                summary="undo unblock: the category acts again (block or warn)"),
    "extend": SectionOperation(ExtendInput, lambda s, b: ops.extend(_profile(s), b.name, b.texts, counter=b.counter),
                               prepare=_extend_prepared,
                               summary="add texts (and variations of them) as examples, or as counter-examples"),
    "set_threshold": SectionOperation(ThresholdInput, lambda s, b: ops.set_threshold(_profile(s), b.name, b.threshold),
                                      summary="score at or above which the category acts (0.5 = calibrated)"),
    "remove": SectionOperation(Named, lambda s, b: ops.remove(_profile(s), b.name),
                               summary="delete a user category; a base category goes back to its default"),
    "reset": SectionOperation(NoInput, lambda s, b: ops.reset(), create=False,
                              summary="the default profile: every user category dropped (a user with nothing "
                                      "stored is left so)"),
}
