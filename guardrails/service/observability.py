"""Prometheus metrics and JSON-line logs for the service.

Labels are bounded and content-free on purpose: route *templates* (``/v1/users/{user_id}/settings``, never the
filled-in path), stage, action, status. User ids, tenant ids and text never become labels (unbounded
cardinality, and they would leak into every scrape). Logs carry decisions and text hashes, never text or keys
(the LiteLLM #20240 failure: guardrail logs that stored prompts and bearer tokens).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """One registry per app, so several apps in one process (tests) never collide on metric names."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("railguard_http_requests_total", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("railguard_http_request_seconds", "HTTP request latency by route template",
                                 ["method", "route"], buckets=_BUCKETS, registry=self.registry)
        self.decisions = Counter("railguard_decisions_total", "Guard decisions by stage and action",
                                 ["stage", "action", "shadow"], registry=self.registry)
        self.check_latency = Histogram("railguard_check_seconds", "Guard check latency by stage",
                                       ["stage"], buckets=_BUCKETS, registry=self.registry)
        self.detector_errors = Counter("railguard_detector_errors_total",
                                       "Detector failures (the detector's fail mode decided) by stage and detector",
                                       ["stage", "detector"], registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # The method is caller input (uvicorn's h11 parser accepts any token, before auth): a fixed set, or one
        # request per made-up method would add a series each (measured: 10k requests -> /metrics 17.8 MB).
        method = method if method in _METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_decision(self, decision: Any, seconds: float | None = None, *, history: bool = False) -> None:
        """Count one Decision (and time it, when `seconds` is given). A detector that failed is counted under its
        name (a bounded label: the detectors this service runs), so a fail-open allow is told from a clean one.
        `history`: a decision on an earlier message of a resent conversation, counted under stage "history" (a
        card redacted on turn 1 is met again on every later turn; it must not inflate the turns' own rates)."""
        stage = "history" if history else decision.stage.value
        self.decisions.labels(stage, decision.action.value, str(decision.shadow).lower()).inc()
        if seconds is not None:
            self.check_latency.labels(stage).observe(seconds)
        for name in failed_detectors(decision):
            self.detector_errors.labels(stage, name).inc()

    def render(self) -> bytes:
        """This process's metrics, or, with several workers (PROMETHEUS_MULTIPROC_DIR set by `run_server`
        before the workers start), the sum over every worker, so a scrape that lands on any one is complete."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def failed_detectors(decision: Any) -> list[str]:
    """Names of the detectors that failed in this decision (their fail mode decided), sorted. Told by the Guard's
    own failure finding, not by the category alone (a user may name a moderation category "error")."""
    return sorted({f.detector for f in decision.findings if f.category == "error"
                   and f.explanation.removeprefix("[shadow] ").startswith("detector failed (")})


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Structured fields come from ``extra={"fields": {...}}``; a message that is
    itself a JSON object (the Guard logs ``json.dumps(decision.log_record())``) is embedded, not re-quoted."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        msg = record.getMessage()
        if msg.startswith("{"):
            try:
                out["record"] = json.loads(msg)
            except ValueError:
                out["msg"] = msg
        else:
            out["msg"] = msg
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: messages and tracebacks can quote request content.
            out["exc_type"] = record.exc_info[0].__name__
        return json.dumps(out, default=str, sort_keys=True)


def configure_json_logging(level: str = "info") -> None:
    """Route railguard and uvicorn loggers to JSON lines on stderr (called by `run_server`, not by tests)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("railguard", "uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.setLevel(level.upper())
        lg.propagate = False
    # Model loading must not write progress bars into the JSON stream (each worker process calls this).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a core dependency
        pass


def now() -> float:
    return time.perf_counter()
