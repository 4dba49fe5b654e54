"""Parser agent, LLM backend: any LangChain chat model, JSON constrained by the pydantic schema.

Why validation + one repair round instead of trusting the model: the output feeds deterministic memory rules
and a hard-constraint filter, so it must be schema-valid and catalog-valid. The model's JSON is validated by
pydantic (`ParsedCommand`); on failure the error is sent back once ("repair"), and a second failure raises
`ParserOutputError` (typed) -- nothing half-parsed ever reaches the policy.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from .catalog import GENRES
from .schema import CommandError, ParsedCommand, canonical_alternatives, require_valid_text

_GENRE_BY_FOLD = {g.lower(): g for g in GENRES}


def canonical_genres(cmd: ParsedCommand) -> ParsedCommand:
    """Genre values as the catalog spells them ("horror" -> "Horror"); ValueError for a non-catalog genre.

    Why: the Filter, the memory rules and `rec eval` must agree on one spelling; a value that is not a catalog
    genre would silently exclude nothing, so it goes back to the model in the repair round instead.
    """
    def canon(value: object) -> str:
        g = _GENRE_BY_FOLD.get(str(value).strip().lower())
        if g is None:
            raise ValueError(f"genre {value!r} is not one of: {', '.join(GENRES)}")
        return g

    prefs = [p.model_copy(update={"value": canon(p.value)}) if p.attribute == "genre" else p
             for p in cmd.preferences]
    rets = [r.model_copy(update={"value": canon(r.value)}) if r.attribute == "genre" and r.value is not None
            else r for r in cmd.retractions]
    return cmd.model_copy(update={"preferences": prefs, "retractions": rets})

#: Fields the store keeps for itself: a model's output may not set them (two preferences given one `id` were both
#: removed by a later retraction of one; a `session_id` or `created_at` would bind or age a rule; `source` is not
#: kept at all).
_BOOKKEEPING = ("id", "created_at", "session_id", "expires_at", "source")


def _strip_bookkeeping(data: dict[str, Any]) -> None:
    for key in ("preferences", "retractions"):
        items = data.get(key)
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict):
                    for field in _BOOKKEEPING:
                        item.pop(field, None)


SYSTEM = """You turn a user's command about their movie recommendation feed into JSON. Output ONLY one JSON
object, no prose, matching this schema:
{"preferences": [{"polarity": "+"|"-", "kind": "hard"|"soft", "attribute": "genre"|"year"|"tag"|"title"|"text",
  "operator": "eq"|"ge"|"le"|"contains"|"like", "value": string or integer year, "weight": 0..2,
  "scope": "next_feed"|"session"|"persistent", "any_of": null or a digit shared by hard "+" filters that are
  alternatives ("only horror or comedy": both get "any_of": "1")}],
 "retractions": [{"attribute": one of the attributes or null, "value": string or null}],
 "reset": true|false}
Rules: hard = must hold ("only", "no", "never"); soft = preference ("more", "less"). genre values are exactly
one of: GENRES. year constraints always have polarity "+" with ge/le/eq ("nothing before 1990" -> ge 1990).
"more like <title>" -> attribute title, operator like, kind soft. Retract ("forget the year limit") by
attribute/value. If the message is not a feed command, output {"preferences": [], "retractions": [], "reset": false}.
Never mention or act on other users.""".replace("GENRES", ", ".join(GENRES))

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


class ParserOutputError(CommandError):
    """The LLM's output was not valid JSON for the schema, even after one repair round."""


def extract_json(text: str) -> Any:
    """The first JSON object in a reply (tolerates code fences and leading prose)."""
    m = _FENCE.search(text)
    if m:
        text = m.group(1)
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in the reply")
    obj, _ = json.JSONDecoder().raw_decode(text[start:])
    return obj


class LLMParser:
    """Parser backed by a LangChain chat model (``invoke(messages) -> AIMessage``)."""

    def __init__(self, chat_model: Any, *, max_repairs: int = 1) -> None:
        self.chat_model = chat_model
        self.max_repairs = max_repairs

    def _ask(self, messages: list[tuple[str, str]]) -> str:
        reply = self.chat_model.invoke(messages)
        content = getattr(reply, "content", reply)
        if isinstance(content, list):  # content blocks
            content = "".join(c.get("text", "") if isinstance(c, dict) else str(c) for c in content)
        return str(content)

    def parse(self, text: str) -> ParsedCommand:
        if not isinstance(text, str) or not text.strip():
            raise CommandError("empty command")
        require_valid_text(text)
        messages: list[tuple[str, str]] = [("system", SYSTEM), ("human", text)]
        last_error = ""
        for _attempt in range(self.max_repairs + 1):
            raw = self._ask(messages)
            try:
                data = extract_json(raw)
                if isinstance(data, dict):
                    data.pop("text", None)
                    _strip_bookkeeping(data)
                cmd = canonical_alternatives(canonical_genres(ParsedCommand.model_validate(data)))
                cmd.text = text
                cmd.check_consistent()
                return cmd
            except (ValueError, ValidationError) as exc:
                if isinstance(exc, CommandError):
                    raise
                last_error = str(exc)[:500]
                messages += [("ai", raw[:4000]),
                             ("human", f"That output is invalid: {last_error}. Reply with the corrected JSON only.")]
        raise ParserOutputError(f"LLM parser output rejected after {self.max_repairs} repair(s): {last_error}")
