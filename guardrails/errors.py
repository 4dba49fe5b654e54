"""Typed errors. Every failure a user can cause maps to one of these, never to a bare traceback."""

from __future__ import annotations

import re

from .decision import name_hash


class RailguardError(Exception):
    """Base class of every error this SDK raises on purpose."""


class InvalidInputError(RailguardError, ValueError):
    """Text, messages or parameters that cannot be checked (empty, too large, bad encoding, malformed)."""


class ConfigError(RailguardError, ValueError):
    """A configuration value is out of range or inconsistent (threshold outside [0, 1], unknown detector)."""


class _NamedItemError(ConfigError):
    """A settings operation's named item (``kind``: what it is, e.g. a "category") is the problem."""

    def __init__(self, message: str, *, kind: str = "item") -> None:
        super().__init__(message)
        self.kind = kind


class UnknownNameError(_NamedItemError, LookupError):
    """A settings operation names an item the user's settings do not hold. The service answers 404
    ``unknown_<kind>``."""


class NameTakenError(_NamedItemError):
    """A settings operation would create an item under a name the user's settings already hold. The service
    answers 409 ``<kind>_exists``."""


class DataNotAvailableError(ConfigError, FileNotFoundError):
    """Data a plugin reads from disk is missing (e.g. MovieLens, which is not redistributed); says where it looks.

    Raised by a detector factory, it means "this optional detector cannot run on this install": the implicit
    all-detectors set (`Guard.from_registry()`, the CLI, the service) leaves it out with a warning. A guard that
    must never be missing (the fail-closed privacy probe) raises something else, which stops the build."""


class ModelNotInstalledError(RailguardError, RuntimeError):
    """An embedded default model is not installed; the message says how to install it."""


class ModelLoadError(RailguardError, RuntimeError):
    """A model name or path could not be loaded (not found, corrupt, hub access needed while offline)."""


class StoreError(RailguardError, RuntimeError):
    """The settings store cannot be opened, read or written (unreadable or corrupt database)."""


class VersionConflictError(StoreError):
    """An optimistic write lost the race: the stored version is not the one the caller read."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"version conflict on {key}: expected {expected}, found {actual}")
        self.expected = expected
        self.actual = actual


class UnknownUserError(StoreError, KeyError):
    """The user (within its tenant) has no stored settings and the call needs them."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "unknown user"


class DetectorError(RailguardError, RuntimeError):
    """A detector failed while scoring; the pipeline turns this into a fail-open/closed decision."""


class ErasureBusyError(RailguardError, TimeoutError):
    """A user's erasure gave up waiting for that user's checks in flight; nothing was erased, a retry is safe."""


class GuardBlockedError(RailguardError):
    """Raised by strict wrappers when a Decision blocks; carries the Decision."""

    def __init__(self, decision: object, message: str = "blocked by railguard") -> None:
        super().__init__(message)
        self.decision = decision


_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_\-:]{1,64}")


def safe_segment(key: object) -> str:
    """A key as logs, error messages and the audit trail may show it: an identifier as is, anything else (a
    mapping key may be user text) as a short hash."""
    text = str(key)
    if _SAFE_SEGMENT.fullmatch(text):
        return text
    return name_hash(text)


def describe_validation(exc: object, root: str = "value") -> str:
    """A pydantic ValidationError as "where: what" for up to three errors, never the offending values: its own
    str() quotes them (``input_value=...``), and these messages reach logs, HTTP replies and tracebacks. Location
    parts that are not identifiers (a mapping key the user wrote) are hashed (`safe_segment`)."""
    errors = exc.errors(include_url=False)  # type: ignore[attr-defined]  # pydantic.ValidationError
    parts = [f"{'.'.join(map(safe_segment, e['loc'])) or root}: {e['msg']}" for e in errors[:3]]
    more = len(errors) - len(parts)
    return "; ".join(parts)[:600] + (f" (+{more} more)" if more > 0 else "")
