"""Input coercion shared by the Guard, the CLI and the HTTP service: one place decides what text is checkable."""

from __future__ import annotations

import itertools
import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from .detector import Message
from .errors import InvalidInputError

#: Hard ceiling for any single text handed to the Guard. Beyond it nothing runs (not even the validator),
#: so a hostile 100 MB body cannot pin a model. The validator detector blocks far smaller texts by policy.
MAX_TEXT_CHARS = 4_000_000
MAX_MESSAGES = 1_000


def coerce_text(value: object, *, allow_empty: bool = False) -> str:
    """Return `value` as a well-formed str or raise InvalidInputError (bytes must be valid UTF-8)."""
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"text is not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(value, str):
        raise InvalidInputError(f"text must be str or UTF-8 bytes, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"text contains an unpaired surrogate at index {exc.start}") from None
    if len(value) > MAX_TEXT_CHARS:
        raise InvalidInputError(f"text too large: {len(value)} characters (limit {MAX_TEXT_CHARS})")
    if not allow_empty and not value.strip():
        raise InvalidInputError("text is empty or whitespace-only")
    return value


# LangChain message types and tuple roles, as the chat roles the Guard uses
_ROLE_ALIASES = {"human": "user", "ai": "assistant", "developer": "system", "HumanMessageChunk": "user",
                 "AIMessageChunk": "assistant", "SystemMessageChunk": "system", "ToolMessageChunk": "tool",
                 "function": "tool", "FunctionMessageChunk": "tool"}  # a legacy function result is a tool result


def message_role(message: object) -> object:
    """The chat role of a LangChain message (duck-typed): its type mapped to a role, or a ChatMessage's own
    ``role`` field; what the Guard and the local chat model's prompt both read (an unknown one is returned as is,
    for the caller to refuse)."""
    kind = getattr(message, "type", None)
    if kind in ("chat", "ChatMessageChunk"):  # ChatMessage(role="user", ...): the role is its own field
        kind = getattr(message, "role", kind)
    return _ROLE_ALIASES.get(kind, kind) if isinstance(kind, str) else kind


def _is_chat_message(value: object) -> bool:
    """A LangChain BaseMessage (duck-typed: the spine does not need langchain to read one)."""
    return not isinstance(value, Mapping) and isinstance(getattr(value, "type", None), str) and hasattr(
        value, "content")


def message_content(content: object) -> object:
    """A message's content as every entry point reads it: `content_text`, and a null (an OpenAI assistant
    tool-call turn's) as empty."""
    return content_text("" if content is None else content)


def content_text(content: object, _depth: int = 0) -> object:
    """Text of a message content, the one reading every entry point shares (Guard, middleware, wrapped
    runnables, the local chat model's prompt, the HTTP service): a str as is; a list of content parts (OpenAI,
    Anthropic, LangChain standard blocks) as the text each part carries, joined by newlines:
    - a str part; a part's str ``text`` whatever its ``type`` ("text", "input_text", "output_text", ...) and its
      ``refusal`` (not a reasoning part's ``reasoning`` / ``thinking``: this reading is also what is forwarded to a
      model, which must not get a reply's reasoning as its visible text; the agent middleware checks reasoning
      parts on their own);
    - a part's own ``content`` (Anthropic ``tool_result``: a str or parts), and a ``document``'s title, context
      and text or content source (``{"type": "text", "data": ...}``, ``{"type": "content", "content": [...]}``).
    Parts without text (images, audio, tool-use blocks, a streamed citations update) add nothing. A ``text`` or
    ``refusal`` that is not a str, a part that is neither a str nor an object, or parts nested past 8 levels are an
    InvalidInputError. Anything else is returned as is (coerce_text types it)."""
    if not isinstance(content, list | tuple):
        return content
    if _depth > 8:
        raise InvalidInputError("content parts nested too deeply")
    parts: list[str] = []
    for i, part in enumerate(content):
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, Mapping):
            parts += _part_texts(part, i, _depth)
        else:
            raise InvalidInputError(f"content part {i} must be a string or an object, not {type(part).__name__}")
    return "\n".join(p for p in parts if p)


def _part_texts(part: Mapping[str, Any], i: int, depth: int) -> list[str]:
    out = []
    for key in ("text", "refusal"):
        value = part.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"content part {i}: {key!r} is not a string")
        out.append(value or "")
    if part.get("type") == "document":  # Anthropic: the model reads a document's title and context too
        out += [v for v in (part.get("title"), part.get("context")) if isinstance(v, str)]
    nested = part.get("content")
    if isinstance(nested, str | list | tuple):
        out.append(str(content_text(nested, depth + 1)))
    source = part.get("source")
    if isinstance(source, Mapping):
        if source.get("type") == "text" and isinstance(source.get("data"), str):
            out.append(source["data"])
        elif source.get("type") == "content" and isinstance(source.get("content"), str | list | tuple):
            out.append(str(content_text(source["content"], depth + 1)))
    return out


#: Part types that carry media a model may read but no text the Guard does (OpenAI, Anthropic, LangChain blocks).
_MEDIA_TYPES = frozenset({"image", "image_url", "input_image", "audio", "input_audio", "video", "video_url",
                          "input_video", "file", "input_file"})  # not "file_search_call" and the like
#: Metadata key under which a caller that turns messages into text first (the agent middleware) passes how many
#: of the checked turn's parts it could not read; the Guard keeps the larger of it and its own count.
UNREAD_PARTS_KEY = "unread_parts"


def unread_parts(content: object, _depth: int = 0) -> int:
    """How many content parts of a message carry media (an image, audio, video, a file, a document given as a
    binary source) that no detector reads, although the model may: `content_text` reads only their text. Parts
    nested in a part's ``content`` (an Anthropic tool result's image) count too; a str content has none."""
    if not isinstance(content, list | tuple) or _depth > 8:
        return 0
    count = 0
    for part in content:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        text_of_its_own = any(isinstance(part.get(k), str) and part.get(k) for k in ("text", "refusal"))
        media = isinstance(kind, str) and kind.lower() in _MEDIA_TYPES
        document = kind == "document" and (_binary_source(part) or not any(_part_texts(part, 0, _depth)))
        if (media or document) and not text_of_its_own:
            count += 1
        nested = part.get("content")
        if isinstance(nested, list | tuple):
            count += unread_parts(nested, _depth + 1)
    return count


def _binary_source(part: Mapping[str, Any]) -> bool:
    """A document whose source is data the Guard does not read (base64 PDF, a URL, a file id)."""
    source = part.get("source")
    return isinstance(source, Mapping) and source.get("type") not in ("text", "content")


def unread_metadata(unread: int) -> dict[str, int] | None:
    """Check metadata telling the Guard how many media parts the caller left out of the text it passes."""
    return {UNREAD_PARTS_KEY: unread} if unread > 0 else None


def last_unread_parts(content: object) -> int:
    """`unread_parts` of the turn a check judges: a message list's last message and the user messages sent with it
    since the model last spoke (dicts, LangChain messages, ``(role, content)`` pairs), or one message. 0 for a str
    and for an iterator (read once, by the check)."""
    if _is_chat_message(content) or isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, list | tuple) or not content:
        return 0
    pairs = [_loose_role_content(m) for m in content]
    turn = set(unanswered_user_turns([r for r, _ in pairs])) | {len(pairs) - 1}
    return sum(unread_parts(pairs[i][1]) for i in sorted(turn))


def _loose_role_content(item: object) -> tuple[object, object]:
    """`_as_role_content` with the role aliases applied; (None, None) for anything else (counted as nothing)."""
    try:
        role, content = _as_role_content(item, 0)
    except InvalidInputError:
        return None, None
    return (_ROLE_ALIASES.get(role, role) if isinstance(role, str) else role), content


def _as_role_content(item: object, i: int) -> tuple[object, object]:
    if isinstance(item, Mapping):
        return item.get("role"), item.get("content")
    if _is_chat_message(item):
        return message_role(item), getattr(item, "content")  # noqa: B009 - duck-typed BaseMessage
    if isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str):
        return item[0], item[1]
    raise InvalidInputError(f"messages[{i}] must be a {{role, content}} object, a (role, content) pair or a "
                            "chat message")


def coerce_messages(value: object) -> tuple[Message, ...]:
    """Validate a conversation into Messages: OpenAI-style dicts ([{"role", "content"}, ...]), (role, content)
    pairs, LangChain messages (or one of them), with str content or content parts (text parts are read); a null
    content (an assistant's tool-call turn) is empty, as the HTTP service reads it."""
    if _is_chat_message(value):
        value = [value]
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidInputError("messages must be a list of {role, content} objects")
    items = list(itertools.islice(value, MAX_MESSAGES + 1))  # an endless iterator is "too many", not a hang
    if not items:
        raise InvalidInputError("messages must not be empty")
    if len(items) > MAX_MESSAGES:
        raise InvalidInputError(f"too many messages: {len(items)} (limit {MAX_MESSAGES})")
    out: list[Message] = []
    for i, item in enumerate(items):
        if isinstance(item, Message):
            out.append(item)
            continue
        role, content = _as_role_content(item, i)
        role = _ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
        try:
            msg = Message.model_validate({"role": role, "content": coerce_text(message_content(content),
                                                                                allow_empty=True)})
        except ValidationError as exc:
            raise InvalidInputError(f"messages[{i}]: {exc.errors()[0]['msg']}") from None
        out.append(msg)
    return tuple(out)


def last_text(messages: tuple[Message, ...], role: str | None = None) -> str:
    """Content of the last message (of `role`, when given); the text a stage check looks at."""
    for msg in reversed(messages):
        if role is None or msg.role == role:
            return msg.content
    raise InvalidInputError(f"no {role or 'any'} message in the conversation")


def as_dicts(messages: Iterable[Message]) -> list[dict[str, Any]]:
    return [m.model_dump() for m in messages]


def call_text(name: str | None, args: Any) -> str:
    """The text a tool call is checked as: ``name(<args as sorted JSON>)`` (a raw argument string as is)."""
    body = args if isinstance(args, str) else json.dumps(args if args is not None else {}, ensure_ascii=False,
                                                         sort_keys=True, default=str)
    return f"{name or ''}({body})"


_JOINERS = frozenset("\u200c\u200d")  # zero-width non-joiner (Persian, Indic scripts) and joiner (emoji sequences)


def id_chars_ok(value: str) -> bool:
    """The one character rule for ids and store keys (user, session, tenant, actor): no control character (C0, C1),
    no lone surrogate, no line or paragraph separator, and no invisible format character ("alice" and
    "alice\u200b" would be two users that look alike; bidirectional controls reverse the text around them), except
    the joiners emoji sequences and some scripts need (ZWJ, ZWNJ) and the tags of subdivision flags. Letters of any
    script, no-break spaces and emoji are fine."""
    return not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")
                   or (unicodedata.category(c) == "Cf" and c not in _JOINERS and not "\U000e0020" <= c <= "\U000e007f")
                   for c in value)


def check_id(value: object, what: str = "user_id", *, optional: bool = False) -> str | None:
    """Ids (user, session, tenant) are 1-256 printable characters (`id_chars_ok`, the store's keys' rule too: a
    session id the Guard took and the store refused failed every check of that session closed); anything else is a
    typed error."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > 256 or not id_chars_ok(value):
        raise InvalidInputError(f"{what} must be a string of 1-256 printable characters")
    return value


def unanswered_user_turns(roles: Sequence[object]) -> list[int]:
    """Indices of the user messages after the last assistant one (by their roles, in order): the turn a model
    call answers is the last, the others were sent with it."""
    start = next((i + 1 for i in range(len(roles) - 1, -1, -1) if roles[i] == "assistant"), 0)
    return [i for i in range(start, len(roles)) if roles[i] == "user"]
