"""JSONL input shared by every eval command: one reader, one set of typed errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, BinaryIO

from .errors import InvalidInputError

#: the largest JSONL file an eval reads (the dev splits are a few MB): past it, a typed error, not all the memory
MAX_JSONL_BYTES = 1 << 29


def read_bounded(source: str | Path | BinaryIO, limit: int, *, name: str | None = None) -> bytes:
    """A file's bytes (a pipe's too: ``--file /dev/stdin``; or an open binary stream's, such as
    ``sys.stdin.buffer``), at most ``limit`` of them: a bigger file, or an endless one (/dev/zero), is an
    InvalidInputError naming it (``name``, else the path) before it fills memory (OSError as the callers' own
    errors)."""
    if isinstance(source, str | Path):
        with open(source, "rb") as fh:
            data = fh.read(limit + 1)
    else:
        data = source.read(limit + 1)
    if len(data) > limit:
        raise InvalidInputError(f"{name or source} is larger than {limit} bytes")
    return data


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """The objects of a JSONL file with their 1-based line numbers (blank lines skipped).

    An unreadable file, invalid UTF-8, a line that is not JSON or not a JSON object is an InvalidInputError
    naming the file and line; callers validate their own fields.
    """
    try:
        # "\n" only: str.splitlines() also splits at U+2028, U+0085 ..., which JSON strings may hold raw
        lines = read_bounded(path, MAX_JSONL_BYTES).decode("utf-8-sig").split("\n")  # a BOM is not data
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    out: list[tuple[int, dict[str, Any]]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)  # a "\r" left by Windows line ends is whitespace to JSON
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
        except ValueError as exc:  # an integer of more than 4300 digits
            raise InvalidInputError(f"{path}:{n}: invalid JSON ({exc})") from None
        except RecursionError:
            raise InvalidInputError(f"{path}:{n}: JSON nested too deeply") from None
        if not isinstance(obj, dict):
            raise InvalidInputError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
        out.append((n, obj))
    return out
