"""Built-in input validator: a cheap gate on size, line count and hostile characters.

It is a *gate* (`gate = True`): the Guard runs gates first and skips the expensive detectors when a gate
blocks. Everything here is a single linear pass over the text (regex character classes, `str.count`).
Well-formedness (valid UTF-8, no lone surrogates, not empty, under the hard ceiling) is already enforced by
`guardrails.text.coerce_text` before any detector runs, so it is not repeated here.

Findings never quote the offending characters, only counts and positions.
"""

from __future__ import annotations

import re
from typing import Any

from ..decision import Action, Finding, Stage
from ..detector import BaseDetector, CheckRequest
from ..errors import ConfigError

#: C0 controls other than TAB, LF, CR (NUL has its own category), DEL, and C1 controls.
_CONTROL = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: Zero-width characters (ZWSP, ZWNJ, ZWJ, LRM, RLM, word joiner, invisible operators, BOM/ZWNBSP).
_ZERO_WIDTH = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff]")
#: Joiners with a legitimate job, not counted: ZWJ inside emoji sequences (👨‍👩‍👧), ZWNJ/ZWJ between letters
#: of Arabic-script and Indic scripts (Persian "می‌خواهم", Devanagari half forms).
_LEGIT_JOINER = re.compile(
    "(?<=[\U0001f000-\U0001faff\u2600-\u27bf\ufe0f])\u200d(?=[\U0001f000-\U0001faff\u2600-\u27bf])"
    "|(?<=[\u0600-\u06ff\u0900-\u0dff])[\u200c\u200d](?=[\u0600-\u06ff\u0900-\u0dff])"
)
#: Bidirectional embeddings/overrides and isolates ("Trojan Source").
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
#: Unicode tag characters, which can smuggle invisible ASCII instructions to a model.
_TAGS = re.compile("[\U000e0000-\U000e007f]")

#: Share of control characters above which the text is treated as binary/garbage and blocked.
CONTROL_SHARE_LIMIT = 0.01


def _line_count(text: str) -> int:
    """Lines separated by LF, CR or CRLF; a trailing line break does not open a new line."""
    breaks = text.count("\n") + text.count("\r") - text.count("\r\n")
    return breaks + (0 if text.endswith(("\n", "\r")) else 1)


class InputValidator(BaseDetector):
    """Blocks oversized, binary-looking or invisibly-instrumented text; warns on milder anomalies.

    Categories: "size", "lines", "nul", "control_chars", "invisible_unicode", and "unread_content" (the checked
    turn has media parts, images, audio or files, that the model may read and no detector does; the Guard
    counts them into ``request.metadata["unread_parts"]``). Clean text yields no findings.

    Parameters (stored as given, validated on use, scikit-learn style):
        max_chars: longest accepted text, in characters.
        max_lines: most accepted lines (LF, CR or CRLF separated).
        action: what a hard violation asks for ("block" by default). Soft anomalies (a few control
            characters, zero-width or bidi characters without tag characters) ask for at most "warn".
        non_text: what unread media parts ask for: "warn" by default (the turn goes on, annotated), "block" to
            refuse what no detector can read, "allow" for no finding.
    """

    name = "validator"
    stages = frozenset(Stage)
    gate = True

    def __init__(self, max_chars: int = 32000, max_lines: int = 5000, action: str = "block",
                 non_text: str = "warn"):
        self.max_chars = max_chars
        self.max_lines = max_lines
        self.action = action
        self.non_text = non_text

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"max_chars": self.max_chars, "max_lines": self.max_lines, "action": self.action,
                "non_text": self.non_text}

    def set_params(self, **params: Any) -> InputValidator:
        for key, value in params.items():
            if key not in self.get_params():
                raise ConfigError(f"InputValidator has no parameter {key!r}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"InputValidator({args})"

    def _validated(self) -> tuple[int, int, Action, Action]:
        for key in ("max_chars", "max_lines"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"validator {key} must be a positive integer, got {value!r}")
        try:
            action = Action(self.action)
        except ValueError:
            raise ConfigError(f"validator action must be one of {[a.value for a in Action]}") from None
        if self.non_text not in ("allow", "warn", "block"):
            raise ConfigError(f"validator non_text must be allow, warn or block, got {self.non_text!r}")
        return self.max_chars, self.max_lines, action, Action(self.non_text)

    def predict(self, request: CheckRequest) -> list[Finding]:
        max_chars, max_lines, hard, non_text = self._validated()
        soft = hard if hard.severity < Action.WARN.severity else Action.WARN
        text = request.text
        n = len(text)
        out: list[Finding] = []

        def add(category: str, score: float, threshold: float, explanation: str, action: Action) -> None:
            out.append(
                Finding(
                    detector=self.name,
                    category=category,
                    score=score,
                    threshold=threshold,
                    explanation=explanation,
                    action=action,
                )
            )

        if n > max_chars:
            add("size", min(1.0, n / max_chars), 1.0, f"text has {n} characters (limit {max_chars})", hard)

        lines = _line_count(text)
        if lines > max_lines:
            add("lines", min(1.0, lines / max_lines), 1.0, f"text has {lines} lines (limit {max_lines})", hard)

        nul = text.count("\x00")
        if nul:
            add("nul", 1.0, 1.0, f"{nul} NUL character(s), first at index {text.index(chr(0))}", hard)

        control = len(_CONTROL.findall(text))
        if control:
            share = control / n
            add(
                "control_chars",
                min(1.0, share),
                CONTROL_SHARE_LIMIT,
                f"{control} control character(s) ({share:.2%} of the text)",
                hard if share > CONTROL_SHARE_LIMIT else soft,
            )

        zero_width = len(_ZERO_WIDTH.findall(text))
        if zero_width:  # a leading BOM and script/emoji joiners are legitimate
            zero_width -= len(_LEGIT_JOINER.findall(text)) + (1 if text.startswith("\ufeff") else 0)
        bidi = len(_BIDI.findall(text))
        tags = len(_TAGS.findall(text))
        if zero_width or bidi or tags:
            parts = [
                f"{c} {label}" for c, label in ((zero_width, "zero-width"), (bidi, "bidi control"), (tags, "tag")) if c
            ]
            add(
                "invisible_unicode",
                1.0 if tags else min(1.0, (zero_width + bidi + tags) / n),
                0.0,
                "invisible character(s): "
                + ", ".join(parts)
                + (" (tag characters can smuggle hidden instructions)" if tags else ""),
                hard if tags else soft,
            )
        unread = request.metadata.get("unread_parts", 0)
        if isinstance(unread, int) and unread > 0 and non_text is not Action.ALLOW:
            add("unread_content", 1.0, 1.0, f"{unread} media content part(s) (image, audio, video or file) that "
                "no detector reads, although the model may", non_text)
        return out
