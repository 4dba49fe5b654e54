"""Per-user settings models and section validation (the audit trail's diff is `audit_paths`).

Settings are stored as ``{section_name: section_data}``. The spine only knows the ``guard`` section; every
other section (moderation profile, recommendation policy, ...) is owned by a plugin that registers its pydantic
model under the ``railguard.settings`` group. Validating through those models at write time means a typo or an
out-of-range value is rejected before it reaches the database, instead of surfacing later inside a detector.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..detector import discover
from ..errors import ConfigError, InvalidInputError, describe_validation, safe_segment
from ..text import id_chars_ok
from .audit_paths import IDENTIFIER_KEYS, check_public_keys

SETTINGS_GROUP = "railguard.settings"
DEFAULT_TENANT = "default"
MAX_KEY_LEN = 256
AuditOp = Literal["put", "update", "delete"]


class GuardSettings(BaseModel):
    """The built-in ``guard`` section: pipeline-level switches every deployment has."""

    # Forbid unknown fields: a misspelt switch ("shaddow") must fail loudly, not be silently ignored.
    model_config = ConfigDict(extra="forbid")
    # threshold keys are "detector" or "detector.category" names an operator writes (audit_paths)
    audit_public_keys: ClassVar[Mapping[str, frozenset[str] | str]] = {"thresholds": IDENTIFIER_KEYS}

    shadow: bool = False
    disabled_detectors: list[str] = Field(default_factory=list)
    # strict: true or "0.7" is a client bug to report, not a threshold of 1.0 / 0.7
    thresholds: dict[str, Annotated[float, Field(strict=True)]] = Field(default_factory=dict)

    @field_validator("thresholds")
    @classmethod
    def _thresholds_in_unit_interval(cls, v: dict[str, float]) -> dict[str, float]:
        names = [k for k in v if not _THRESHOLD_KEY.fullmatch(k)]
        if names:  # never quoted: a key that is not a name may be any text
            raise ValueError(f"{len(names)} threshold key(s) are not 'detector' or 'detector.category' names")
        bad = sorted(safe_segment(k) for k, t in v.items() if not 0.0 <= t <= 1.0)
        if bad:  # keys as identifiers or hashes: a key may be user text, and this message is logged and returned
            raise ValueError(f"thresholds must lie in [0, 1]; out of range: {bad[:5]}")
        return v


_THRESHOLD_KEY = re.compile(r"[A-Za-z0-9_\-]{1,64}(?:\.[A-Za-z0-9_\-:]{1,64})?")


def named_detectors(guard: Any) -> set[str]:
    """The detectors a `guard` section names: disabled ones and the detector part of threshold keys
    ("detector" or "detector.category"); empty for a missing or malformed section."""
    if not isinstance(guard, Mapping):
        return set()
    named = {n for n in guard.get("disabled_detectors") or [] if isinstance(n, str)}
    thresholds = guard.get("thresholds")
    if isinstance(thresholds, Mapping):
        named |= {str(k).split(".", 1)[0] for k in thresholds}
    return named


BUILTIN_SECTIONS: dict[str, type[BaseModel]] = {"guard": GuardSettings}


def as_utc(value: datetime | None) -> datetime | None:
    """Timestamps are always aware UTC (SQLite hands back naive datetimes; we only ever write UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class StoredSettings(BaseModel):
    """One user's settings as read from the store. ``version`` 0 means "no row yet" (never written)."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    user_id: str
    version: int
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    updated_at: datetime | None = None

    @field_validator("updated_at")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return as_utc(v)

    def section(self, name: str) -> dict[str, Any]:
        """The data of one section, or {} when the user never set it."""
        return dict(self.settings.get(name, {}))


class AuditEntry(BaseModel):
    """One audit row. Holds paths and a digest only, never values: settings may contain user-written text."""

    model_config = ConfigDict(frozen=True)

    id: int
    tenant_id: str
    user_id: str
    version: int
    actor: str
    at: datetime
    op: AuditOp
    changed: tuple[str, ...] = ()
    digest: str | None = None

    @field_validator("at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime | None:
        return as_utc(v)


def check_key(name: str, value: object) -> str:
    """Validate an identifier (tenant, user, session, state key, actor): 1-256 printable characters, by the rule ids
    follow everywhere (`guardrails.text.id_chars_ok`)."""
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_LEN or not id_chars_ok(value):
        raise InvalidInputError(f"{name} must be a non-empty string of at most {MAX_KEY_LEN} printable characters")
    return value


def canonical_json(data: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) so equal settings always give the same digest."""
    try:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")  # an unpaired surrogate ("\udcff", valid in JSON) cannot be stored: a 500 before
    except RecursionError:
        raise InvalidInputError("value is nested too deeply") from None
    except UnicodeEncodeError:
        raise InvalidInputError("value holds an unpaired surrogate (not UTF-8 text)") from None
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"value is not JSON-serialisable: {exc}") from exc
    return text


def digest(data: Any) -> str:
    """sha256 hex of the canonical JSON: lets auditors prove which content was active without storing it."""
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


def section_models() -> dict[str, type[BaseModel]]:
    """Registered section models plus the built-ins (which a plugin cannot replace)."""
    models: dict[str, type[BaseModel]] = {}
    for name, model in discover(SETTINGS_GROUP).items():
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigError(f"settings plugin {name!r} is not a pydantic model class (got {model!r})")
        check_public_keys(model)
        models[name] = model
    models.update(BUILTIN_SECTIONS)
    return models


def validate_sections(
    settings: Mapping[str, Any], models: Mapping[str, type[BaseModel]] | None = None,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Validate every section by its model and return the normalised JSON-able form.

    ``models`` lets a caller resolve the registry once and reuse it (the store does so outside its write
    transaction, so entry-point scanning never happens while the database write lock is held).
    ``previous``: the stored settings a write replaces. A section equal to what is stored is kept as stored (a
    rule added since it was written must not refuse an unrelated write, or the section's own repair), and a changed
    one is validated with ``context={"previous": <stored section or None>}`` (a model may then allow what a
    section already held, but not more).
    """
    if not isinstance(settings, Mapping):
        raise ConfigError(f"settings must be a mapping of section name to object, got {type(settings).__name__}")
    known = section_models() if models is None else models
    out: dict[str, dict[str, Any]] = {}
    for name, data in settings.items():
        if name not in known:
            raise ConfigError(f"unknown settings section {name!r}; known sections: {sorted(known)}")
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        if not isinstance(data, Mapping):
            raise ConfigError(f"settings section {name!r} must be an object, got {type(data).__name__}")
        if previous is not None and previous.get(name) == data:
            out[name] = dict(data)
            continue
        try:
            context = None if previous is None else {"previous": previous.get(name)}
            model = known[name].model_validate(dict(data), context=context)
        except ValidationError as exc:
            # not str(exc): pydantic quotes the input (a user's example texts) in it; nor chained (tracebacks)
            raise ConfigError(f"invalid settings section {name!r}: {describe_validation(exc, name)}") from None
        out[name] = model.model_dump(mode="json")
    return out


