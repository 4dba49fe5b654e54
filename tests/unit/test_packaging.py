"""What an installed (non-editable) railguard needs at run time is inside its packages.

The wheel ships `guardrails`, `probes`, `personalization` and `agents` only: `railguard bench` used to read its
parser texts from `tests/agents/fixtures`, which a `pip install` does not have, so the installed bench silently
lost `parser_ms_p50` (a CONTRACT key)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["guardrails", "probes", "personalization", "agents"]


def test_the_wheel_ships_every_package():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert cfg["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == PACKAGES
    sdist = cfg["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]
    assert all(p.startswith("/") for p in sdist), "unanchored sdist patterns also match tests/<name>/"
    assert "/LICENSE" in sdist and (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_no_package_module_reads_the_test_tree():
    offenders = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"""["']tests/|/\s*["']tests["']""", line):
                    offenders.append(f"{path.relative_to(ROOT)}:{i}")
    assert not offenders, offenders


def test_bench_parser_texts_are_package_data():
    import agents
    from agents.train import load_paraphrases

    texts = load_paraphrases()
    assert len(texts) >= 50
    assert (Path(agents.__file__).parent / "data" / "paraphrases.jsonl").is_file()
