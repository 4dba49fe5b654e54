"""Named operations on one settings section, contributed by the plugin that owns the section.

A section's raw form is writable whole (`PUT /v1/users/{u}/settings/{section}`), but a client that only wants to
"block this category from one example" should not have to rebuild the section's JSON and know its rules. A plugin
therefore registers, under the entry-point group ``railguard.settings_operations``, one mapping per section
(entry name = section name) of operation name → `SectionOperation`: a pydantic model of the operation's input and
a pure function of (stored section, input) → new section. The spine never imports the plugin: it discovers the
mapping, validates the input by the model, and runs the function inside `SettingsStore.update_section` (one write
transaction: concurrent operations never lose each other's updates; versioned and audited like any write; the new
section is validated by the section's registered model). The HTTP service exposes each operation as
``POST /v1/users/{u}/settings/{section}/{operation}`` and lists them at ``GET /v1/settings/operations``.

    # pyproject.toml of a plugin
    [project.entry-points."railguard.settings_operations"]
    moderation = "personalization.operations:OPERATIONS"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ..detector import discover
from ..errors import ConfigError, InvalidInputError, describe_validation

OPERATIONS_GROUP = "railguard.settings_operations"


@dataclass(frozen=True)
class SectionOperation:
    """One named change of a settings section.

    `body`: the input's pydantic model (the wire format; forbid extra fields so a typo is an error, not ignored).
    `apply(section, body)`: the new section from the stored one ({} when never set) and the validated input; pure,
    because a write that meets a concurrent writer runs it again; an exception it raises aborts the write.
    `prepare(body)`: optional, runs once before the write transaction for anything slow or random (generating
    variations), so it neither holds the store's write lock nor differs between retries.
    `create`: False for an operation that means nothing to a user with no stored settings (a reset to the defaults
    such a user reads anyway): there it writes nothing (no version, no audit row) and returns the version-0 read.
    """

    body: type[BaseModel]
    apply: Callable[[dict[str, Any], Any], Mapping[str, Any] | BaseModel]
    prepare: Callable[[Any], Any] | None = None
    summary: str = ""
    create: bool = True

    def parse(self, payload: Any) -> BaseModel:
        """The validated input (`InvalidInputError` naming the fields, never their values)."""
        if payload is None:
            payload = {}
        if not isinstance(payload, Mapping):
            raise InvalidInputError(f"an operation's input must be a JSON object, got {type(payload).__name__}")
        try:
            return self.body.model_validate(dict(payload))
        except ValidationError as exc:
            raise InvalidInputError(f"invalid input: {describe_validation(exc, 'body')}") from None

    def section_fn(self, body: BaseModel) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """`apply` bound to `body`, as `SettingsStore.update_section` takes it."""
        def fn(section: dict[str, Any]) -> dict[str, Any]:
            out = self.apply(dict(section or {}), body)
            return out.model_dump(mode="json") if isinstance(out, BaseModel) else dict(out)
        return fn


def section_operations() -> dict[str, dict[str, SectionOperation]]:
    """{section: {operation: SectionOperation}} from every registered plugin (a malformed entry is a ConfigError
    naming it; a built-in section such as "guard" takes none)."""
    from .settings import BUILTIN_SECTIONS

    out: dict[str, dict[str, SectionOperation]] = {}
    for section, ops in discover(OPERATIONS_GROUP).items():
        if section in BUILTIN_SECTIONS:  # the spine's own sections keep the spine's checks (as in section_models)
            continue
        if not isinstance(ops, Mapping) or not all(isinstance(k, str) and isinstance(v, SectionOperation)
                                                   for k, v in ops.items()):
            raise ConfigError(f"settings operations plugin {section!r} must map names to SectionOperation")
        out[section] = dict(ops)
    return out


def run_operation(store: Any, tenant_id: str, user_id: str, section: str, operation: SectionOperation,
                  payload: Any, *, actor: str) -> Any:
    """Validate `payload`, prepare it, and apply the operation in one section write (returns `StoredSettings`)."""
    body = operation.parse(payload)
    if operation.prepare is not None:
        body = operation.prepare(body)
    return store.update_section(tenant_id, user_id, section, operation.section_fn(body), actor=actor,
                                create=operation.create)
