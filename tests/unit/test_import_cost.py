"""Import cost: `railguard --help` (and each plugin's --help) must not load torch; `import guardrails` must not
load SQLAlchemy. Each check runs in a fresh interpreter (this test process has imported everything already)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "sklearn", "guardrails.models")
PLUGINS = ("probes", "harm", "rec")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_mounting_the_plugin_clis_loads_no_heavy_module():
    """What `railguard` does before parsing argv: import the spine app, which mounts every `railguard.cli` entry
    point (guardrails.cli.app._mount_plugins -> discover("railguard.cli") -> EntryPoint.load())."""
    r = _run(f"""
        import sys
        import typer
        import guardrails.cli.app  # noqa: F401  (mounts the plugins at import, as `railguard` does)
        from guardrails.cli import app  # the Typer (it shadows the submodule of the same name)
        from guardrails.detector import discover

        subs = discover("railguard.cli")
        assert all(name in subs for name in {PLUGINS!r}), sorted(subs)  # a plugin that failed to load proves nothing
        assert all(isinstance(subs[n], typer.Typer) for n in {PLUGINS!r})
        mounted = {{g.name for g in app.registered_groups}}
        assert set({PLUGINS!r}) <= mounted, mounted
        loaded = [m for m in {HEAVY!r} if m in sys.modules]
        assert not loaded, loaded
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "failed to load" not in r.stderr, r.stderr[-3000:]


@pytest.mark.parametrize("argv", [[], *([p] for p in PLUGINS)])
def test_help_loads_no_torch(argv):
    r = _run(f"""
        import sys
        sys.argv = ["railguard", *{argv!r}, "--help"]
        from guardrails.cli import main
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        assert "torch" not in sys.modules and "sklearn" not in sys.modules
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Usage" in r.stdout and "failed to load" not in r.stderr


def test_import_guardrails_loads_no_sqlalchemy_until_the_store_is_used():
    r = _run("""
        import sys
        import guardrails
        import guardrails.store
        assert "sqlalchemy" not in sys.modules, "import guardrails loaded SQLAlchemy"
        from guardrails import SettingsStore
        from guardrails.store import ENV_URL, SettingsStore as S2, default_url
        import guardrails.store.sql as sql
        assert SettingsStore is S2 is sql.SettingsStore and ENV_URL == sql.ENV_URL and default_url is sql.default_url
        assert "sqlalchemy" in sys.modules
    """)
    assert r.returncode == 0, r.stderr[-3000:]


def test_probes_package_is_lazy_but_keeps_its_public_names():
    """`probes.capture` stays the public function (as with the old eager imports), even after the submodule of
    the same name has been imported."""
    r = _run("""
        import sys
        import probes
        assert "torch" not in sys.modules
        import probes.plugin  # imports the probes.capture submodule
        from probes import capture
        from probes.capture import capture as fn
        assert capture is fn and probes.capture is fn and callable(capture)
        for name in probes.__all__:
            getattr(probes, name)
    """)
    assert r.returncode == 0, r.stderr[-3000:]
