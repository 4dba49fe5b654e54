# The two set-up commands of the README: `make demo` (main job) and `make test` (the test suite).
.PHONY: setup demo test test-fast lint
setup:
	./scripts/setup
demo: setup
	.venv/bin/railguard demo
test: setup
	./scripts/test
test-fast: setup
	./scripts/test -m "not model"
lint:
	.venv/bin/ruff check .
	.venv/bin/mypy guardrails probes personalization agents
