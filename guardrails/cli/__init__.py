"""The `railguard` command line (typer). Plugin sub-commands are mounted from the `railguard.cli` group."""

from .app import app, main

__all__ = ["app", "main"]
