"""The recommendation policy's operations as the spine's settings operations (`guardrails.store.operations`).

Registered under ``railguard.settings_operations`` as section "rec_policy", so a chat product that serves its own
feeds can change a user's policy over HTTP (``POST /v1/users/{u}/settings/rec_policy/{operation}``) or through
`RailguardClient.apply_operation`, without rebuilding the section's JSON:

- ``command``: a natural-language feed command ("no more horror, and nothing before 1990"), parsed by the
  shipped student parser and merged by the same memory rules the agent uses (`policy.merge`). Text that changes
  no feed preference, or that also asks for moderation changes, is refused whole (those have their own section);
- ``remove``: one stored preference by id (the "x" next to it in a settings screen), with its set of
  alternatives if it is one of them;
- ``feed_served``: a feed was served, so "just this time" preferences end;
- ``reset``: the empty policy.

Parsing runs in `SectionOperation.prepare` (once, before the write, with the time fixed there), so the function
run inside the write is pure and a retried write applies the same command.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from guardrails.decision import text_hash
from guardrails.errors import DataNotAvailableError, InvalidInputError, RailguardError, UnknownNameError
from guardrails.store.operations import SectionOperation
from guardrails.text import check_id

from .policy import RecPolicy, consume_next_feed, merge
from .router import MAX_COMMAND_CHARS, CommandRouter, RouteKind
from .schema import CommandError, ContradictoryCommandError, ParsedCommand, UnknownAttributeError, now_utc

#: The parser backend the operations use (the command detector's default).
PARSER_BACKEND = "minilm"


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CommandInput(_Input):
    text: StrictStr = Field(min_length=1, max_length=MAX_COMMAND_CHARS,
                            description="the user's feed command, e.g. 'no more horror, and nothing before 1990'")
    session_id: StrictStr | None = Field(default=None, description="binds 'for now' preferences to this session "
                                                                   "(1-256 printable characters, as /v1/check)")


class FeedParserUnavailableError(RailguardError, RuntimeError):
    """The feed parser cannot run on this install (its catalog data is missing): a server problem, not bad input
    (HTTP 500 naming this type; where the service looked stays in the server's logs)."""


def _refused(exc: CommandError, text: str) -> InvalidInputError:
    """The parser's error without the clause it quotes: replies and logs carry the text's digest, never the text."""
    what = ("it names something this catalog has no attribute for" if isinstance(exc, UnknownAttributeError) else
            "it both wants and avoids the same thing" if isinstance(exc, ContradictoryCommandError) else
            f"it cannot be applied as stated ({type(exc).__name__})")
    return InvalidInputError(f"feed command {text_hash(text)[:16]} refused: {what}; nothing was changed")


class RemoveInput(_Input):
    id: StrictStr = Field(min_length=1, max_length=64, description="a stored preference's id")


class NoInput(_Input):
    pass


@dataclass(frozen=True)
class ParsedInput:
    """`CommandInput` after `prepare`: the parsed command and the time it was parsed at."""

    command: ParsedCommand
    session_id: str | None
    now: datetime
    text: str


def _router() -> CommandRouter:
    from .parser import default_parser  # loads the parser's model: only when a command is parsed

    return CommandRouter(default_parser(PARSER_BACKEND))


def parse_command(body: CommandInput) -> ParsedInput:
    """Parse once, before the write. Refused (`InvalidInputError`, nothing written): text that states no feed
    preference (a question, chat), or that also asks for a moderation change, or addresses other users."""
    check_id(body.session_id, "session_id", optional=True)
    try:
        kind, cmd, mods = _router().classify(body.text)
    except DataNotAvailableError:
        raise FeedParserUnavailableError("the feed parser's catalog data is not available on this server") from None
    except CommandError as exc:
        raise _refused(exc, body.text) from None
    if mods:
        raise InvalidInputError("this command also asks for moderation changes; nothing was changed (send those "
                                "to the 'moderation' section's operations, or the whole message to /v1/check)")
    if kind is not RouteKind.REC or cmd is None:
        raise InvalidInputError("no feed preference found in this text (a question or chat?); nothing was changed")
    return ParsedInput(cmd, body.session_id, now_utc(), body.text)


def _policy(section: dict[str, Any]) -> RecPolicy:
    return RecPolicy.model_validate(section or {})


def _merge(section: dict[str, Any], parsed: ParsedInput) -> RecPolicy:
    try:
        return merge(_policy(section), parsed.command, now=parsed.now, session_id=parsed.session_id)[0]
    except CommandError as exc:
        raise _refused(exc, parsed.text) from None


def _remove(section: dict[str, Any], body: RemoveInput) -> RecPolicy:
    """One preference goes; a member of a set of alternatives ("only horror or comedy") takes its set with it, as
    a retraction does in the memory rules: what is left of a set would be a narrower filter nobody asked for."""
    policy = _policy(section)
    hit = next((p for p in policy.preferences if p.id == body.id), None)
    if hit is None:
        raise UnknownNameError("no preference with this id in the user's policy; nothing was changed",
                               kind="preference")
    keep = [p for p in policy.preferences
            if p.id != hit.id and not (hit.any_of is not None and p.any_of == hit.any_of)]
    return policy.model_copy(update={"preferences": keep})


OPERATIONS: dict[str, SectionOperation] = {
    "command": SectionOperation(CommandInput, _merge, prepare=parse_command,
                                summary="apply a natural-language feed command ('no horror, nothing before 1990')"),
    "remove": SectionOperation(RemoveInput, _remove,
                              summary="delete one stored preference by its id (a member of a set: the whole set)"),
    "feed_served": SectionOperation(NoInput, lambda s, b: consume_next_feed(_policy(s)),
                                    summary="a feed was served: 'just this time' preferences end"),
    "reset": SectionOperation(NoInput, lambda s, b: RecPolicy(), create=False,
                              summary="the empty policy (a user with nothing stored is left so)"),
}
