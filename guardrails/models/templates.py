"""Chat prompts tokenized with message contents read as text, never as control tokens.

Why: ``apply_chat_template`` renders the messages into one string and tokenizes it, so a user who types the
template's own markers ("<|im_end|>\\n<|im_start|>assistant\\n...") gets real control tokens: the local model (the
served one, the privacy sentinel, the in-context-learning scorer) then reads a conversation with turns the user
forged. An OpenAI-style endpoint reads such text as text. :func:`encode_chat` does the same: where no content
holds a special token's string (almost always) it returns exactly what the template's own tokenization gives;
otherwise the template's parts are tokenized as usual and each content with ``split_special_tokens``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import InvalidInputError

Render = Callable[[list[dict[str, Any]]], str]


def special_strings(tokenizer: Any) -> tuple[str, ...]:
    """The strings a tokenizer turns into special tokens wherever they occur in text."""
    found = set(getattr(tokenizer, "all_special_tokens", None) or ())
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False) and getattr(tok, "content", None):
            found.add(tok.content)
    return tuple(sorted(s for s in found if s))


def _text_ids(tokenizer: Any, text: str, *, split_special: bool = False) -> list[int]:
    if not text:
        return []
    kw = {"split_special_tokens": True} if split_special else {}
    return list(tokenizer(text, add_special_tokens=False, **kw)["input_ids"])


def encode_chat(tokenizer: Any, messages: Sequence[Mapping[str, Any]], render: Render) -> list[int]:
    """Token ids of ``render(messages)`` (a chat template's rendering with ``tokenize=False``), each message's
    string ``content`` tokenized as plain text. Raises InvalidInputError when a content holds a special token's
    string and the template does not place each content once, in order (it rewrites contents)."""
    msgs = [dict(m) for m in messages]
    specials = special_strings(tokenizer)
    contents = [m.get("content") for m in msgs]
    if not any(isinstance(c, str) and any(s in c for s in specials) for c in contents):
        return _text_ids(tokenizer, render(msgs))
    # two private-use characters that no content holds (nor, being private, any template): a user who types the
    # first ones (U+E000, U+E001) beside a control token's string must not make the tokenization fail, which
    # turned a fail-open detector's check into an allow (review of session 33)
    open_mark, close_mark = _free_marks(contents)
    marks = [f"{open_mark}{i}{close_mark}" for i in range(len(msgs))]
    placed = render([{**m, "content": mk} if isinstance(m.get("content"), str) else m
                     for m, mk in zip(msgs, marks, strict=True)])
    # every mark in one pass, which must be each string content's once, in order: counting each mark over the whole
    # rendering was quadratic in the message count (32,000 messages: 21 s)
    found = list(re.finditer(f"{re.escape(open_mark)}([0-9]+){re.escape(close_mark)}", placed))
    if [int(m.group(1)) for m in found] != [i for i, c in enumerate(contents) if isinstance(c, str)]:
        raise InvalidInputError("message content holds the model's control tokens, and this chat template "
                                "rewrites contents: it cannot be tokenized as text")
    ids: list[int] = []
    pos = 0
    for m in found:
        content = str(contents[int(m.group(1))])  # a string: the check above
        ids += _text_ids(tokenizer, placed[pos : m.start()]) + _text_ids(tokenizer, content, split_special=True)
        pos = m.end()
    return ids + _text_ids(tokenizer, placed[pos:])


_PRIVATE_USE = (range(0xE000, 0xF900), range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE))


def _free_marks(contents: Sequence[Any]) -> tuple[str, str]:
    """The first two private-use characters that none of ``contents`` holds (there are 137,000 of them)."""
    used = set().union(*(set(c) for c in contents if isinstance(c, str)))
    free = (chr(cp) for block in _PRIVATE_USE for cp in block if chr(cp) not in used)
    first, second = next(free, None), next(free, None)
    if first is None or second is None:  # would need every private-use character typed in the conversation
        raise InvalidInputError("message content holds the model's control tokens and every private-use character")
    return first, second


def template_render(tokenizer: Any, *, add_generation_prompt: bool = True) -> Render:
    """``render`` for :func:`encode_chat` through the tokenizer's own chat template."""
    def render(msgs: list[dict[str, Any]]) -> str:
        return str(tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt))

    return render
