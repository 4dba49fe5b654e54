"""railguard spine: Decision, the Guard pipeline, integrations, per-user store and model runtime.

Three lines to guard a langchain v1 agent::

    guard = Guard.from_registry(store=SettingsStore())
    agent = create_agent(model, tools, middleware=[guard.middleware()])
    agent.invoke({"messages": [...]}, context={"user_id": "alice"})
"""

from typing import TYPE_CHECKING, Any

from .decision import (
    DEFAULT_REFUSAL,
    WITHHELD_MESSAGE,
    Action,
    Decision,
    FailMode,
    Finding,
    Stage,
    name_hash,
    text_hash,
)
from .detector import (
    BaseDetector,
    CheckRequest,
    Detector,
    Message,
    PluginContext,
    Redactor,
    aclose_resources,
    build_detectors,
    close_resources,
    discover,
    offload,
    register,
    release_offload,
)
from .errors import (
    ConfigError,
    DataNotAvailableError,
    DetectorError,
    ErasureBusyError,
    GuardBlockedError,
    InvalidInputError,
    ModelLoadError,
    ModelNotInstalledError,
    NameTakenError,
    RailguardError,
    StoreError,
    UnknownNameError,
    UnknownUserError,
    VersionConflictError,
)
from .pipeline import DetectorSlot, Guard, HistoryScreen, SupportsCheck

if TYPE_CHECKING:  # the lazy names below, for type checkers (SQLAlchemy and httpx load only when used)
    from .client import AsyncRailguardClient as AsyncRailguardClient
    from .client import RailguardClient as RailguardClient
    from .client import RemoteGuard as RemoteGuard
    from .client import ServiceError as ServiceError
    from .store import SettingsStore as SettingsStore

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_REFUSAL",
    "Action",
    "BaseDetector",
    "CheckRequest",
    "ConfigError",
    "DataNotAvailableError",
    "Decision",
    "Detector",
    "DetectorError",
    "DetectorSlot",
    "ErasureBusyError",
    "FailMode",
    "Finding",
    "Guard",
    "GuardBlockedError",
    "HistoryScreen",
    "InvalidInputError",
    "Message",
    "ModelLoadError",
    "ModelNotInstalledError",
    "NameTakenError",
    "PluginContext",
    "AsyncRailguardClient",
    "RailguardClient",
    "RailguardError",
    "RemoteGuard",
    "ServiceError",
    "Redactor",
    "SettingsStore",
    "Stage",
    "StoreError",
    "SupportsCheck",
    "UnknownNameError",
    "UnknownUserError",
    "VersionConflictError",
    "WITHHELD_MESSAGE",
    "aclose_resources",
    "build_detectors",
    "close_resources",
    "discover",
    "offload",
    "register",
    "name_hash",
    "release_offload",
    "text_hash",
]


def __getattr__(name: str) -> Any:
    # Keep `import guardrails` light: the store pulls in SQLAlchemy only when used.
    if name == "SettingsStore":
        from .store import SettingsStore

        return SettingsStore
    if name in ("RailguardClient", "AsyncRailguardClient", "RemoteGuard", "ServiceError"):
        from . import client

        return getattr(client, name)
    raise AttributeError(name)
