"""Per-user settings store: versioned settings with compare-and-set writes, an audit trail that records
changed paths and digests (never values), and a small per-session key/value store for detector state.

    from guardrails.store import SettingsStore
    with SettingsStore() as store:  # sqlite under the user data dir, or $RAILGUARD_DB_URL
        store.update_section("default", "alice", "guard", lambda g: {**g, "shadow": True}, actor="admin")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import StoreError, UnknownUserError, VersionConflictError
from .audit_paths import IDENTIFIER_KEYS, PUBLIC_KEYS_ATTR, changed_paths
from .operations import OPERATIONS_GROUP, SectionOperation, run_operation, section_operations
from .settings import (
    BUILTIN_SECTIONS,
    DEFAULT_TENANT,
    SETTINGS_GROUP,
    AuditEntry,
    GuardSettings,
    StoredSettings,
    digest,
    section_models,
    validate_sections,
)

if TYPE_CHECKING:  # the lazy names below, for type checkers (SQLAlchemy loads only when the store is used)
    from .sql import ENV_URL as ENV_URL
    from .sql import SettingsStore as SettingsStore
    from .sql import default_url as default_url

_LAZY_SQL = ("ENV_URL", "SettingsStore", "default_url")

__all__ = [
    "BUILTIN_SECTIONS",
    "DEFAULT_TENANT",
    "ENV_URL",
    "SETTINGS_GROUP",
    "AuditEntry",
    "GuardSettings",
    "IDENTIFIER_KEYS",
    "OPERATIONS_GROUP",
    "PUBLIC_KEYS_ATTR",
    "SectionOperation",
    "SettingsStore",
    "StoreError",
    "StoredSettings",
    "UnknownUserError",
    "VersionConflictError",
    "changed_paths",
    "default_url",
    "digest",
    "run_operation",
    "section_models",
    "section_operations",
    "validate_sections",
]


def __getattr__(name: str) -> Any:
    # `.sql` pulls in SQLAlchemy (~70 ms); `import guardrails` (the pipeline reads `.settings`) must not pay for it
    if name in _LAZY_SQL:
        from . import sql

        return getattr(sql, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
