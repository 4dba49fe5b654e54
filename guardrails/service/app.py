"""The FastAPI app factory: check endpoints, health/readiness/metrics, error mapping, request hygiene.

Request hygiene lives in one pure-ASGI middleware that runs before routing and before any JSON parsing:
bodies are capped (413, without reading past the cap), non-JSON content types are refused (415), and every
request is measured by route *template*. Rejected requests never reach a route, so nothing is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import timedelta
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..decision import Decision, Stage
from ..errors import (
    ConfigError,
    ErasureBusyError,
    InvalidInputError,
    NameTakenError,
    RailguardError,
    StoreError,
    UnknownNameError,
    UnknownUserError,
    VersionConflictError,
)
from ..jsonio import DuplicateKeyError, loads_unique
from ..pipeline import Guard
from .auth import KeyRing, Principal
from .deps import ChatConfig, ServiceState, log, require_tenant, state
from .env import ServiceEnv
from .lifecycle import _build_guard, _ping, _prune_state, _retry_warm_up, _warm_up, _watch_erasures
from .observability import Metrics, failed_detectors
from .schemas import CheckBody, ErrorOut, Health, ScreenBody, ScreenedDecision, ScreenOut

ADMIN_ENV = "RAILGUARD_ADMIN_KEY"
DEFAULT_MAX_BODY = 1 << 20  # 1 MiB
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorOut} for s in (400, 401, 403, 404, 409, 413, 415, 422)}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "status": status, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


class HygieneMiddleware:
    """Body cap, content-type check, request id, per-route metrics and a JSON access log line."""

    def __init__(self, app: Any, *, metrics: Metrics, max_body_bytes: int,
                 inflight: set[asyncio.Task[Any]] | None = None) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body_bytes
        self.inflight = inflight if inflight is not None else set()  # what the lifespan waits for at shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, cancelled = time.perf_counter(), [500], False
        request_id = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex[:16]
        task = asyncio.current_task()
        if task is not None:
            self.inflight.add(task)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode()[:64])]
            await send(message)

        try:
            rejected, replay = await self._read_body(scope, receive)
            if rejected is not None:
                await rejected(scope, receive, send_wrapper)
            else:
                await self.app(scope, replay, send_wrapper)
        except asyncio.CancelledError:
            cancelled = True  # e.g. still running at shutdown: no answer was (completely) sent
            raise
        finally:
            self.inflight.discard(task)  # type: ignore[arg-type]
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            seconds = time.perf_counter() - started
            self.metrics.observe_request(scope["method"], route, status[0], seconds)
            log.info("request", extra={"fields": {
                "event": "request", "request_id": request_id, "method": scope["method"], "route": route,
                "status": status[0], "ms": round(seconds * 1000, 2),
                "tenant_id": scope.get("state", {}).get("tenant_id"), **({"cancelled": True} if cancelled else {})}})

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[Response | None, Receive]:
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return None, receive
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return self._too_large(), receive
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if declared == "0" or (declared is None and "transfer-encoding" not in headers):
            return None, receive  # an empty POST (e.g. "create a key", an erasure) carries no media type to check
        if ctype != "application/json" and not ctype.endswith("+json"):
            return error_response(415, "unsupported_media_type",
                                  f"send JSON with 'Content-Type: application/json' (got {ctype or 'none'!r})"), receive
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return Response(status_code=400), receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:  # stop reading: a chunked body may be arbitrarily large
                return self._too_large(), receive
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, delivered = b"".join(chunks), False
        try:  # json.loads keeps the last of two equal keys: {"action": "block", "action": "allow"} would store allow
            loads_unique(body)
        except DuplicateKeyError as exc:
            return error_response(422, "duplicate_key", str(exc)), receive
        except (ValueError, RecursionError):
            pass  # not JSON: the route's own parsing answers it, in its usual words

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the client's disconnect, as usual

        return None, replay

    def _too_large(self) -> Response:
        return error_response(413, "payload_too_large", f"request body exceeds {self.max_body} bytes")


def _install_error_handlers(app: FastAPI) -> None:
    """Every failure becomes `{"error": {code, message, status}}`; internal errors never echo their message."""

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and str(exc.detail) == "There was an error parsing the body":
            # FastAPI's wording for a body json.loads cannot even decode: bytes that are not UTF-8, or JSON nested
            # past the parser's recursion limit
            try:
                (await request.body()).decode("utf-8")
            except UnicodeDecodeError:
                return error_response(400, "invalid_encoding", "request body is not UTF-8 encoded JSON")
            except Exception:  # noqa: BLE001 - the body cannot be read again here: say what both cases share
                return error_response(400, "invalid_json", "request body could not be parsed as JSON")
            return error_response(400, "invalid_json", "request body is not valid JSON (nested too deeply, or a number "
                                  "too long to parse)")
        code = getattr(exc, "code", None) or {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code,
                                                                                             "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "details", None),
                              getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "invalid_json", "request body is not valid JSON")
        # Locations and messages only: pydantic's `input` field would echo the caller's text back into logs.
        shown = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                 for e in errors[:20]]
        return error_response(422, "invalid_request", "request does not match the schema", {"errors": shown})

    @app.exception_handler(VersionConflictError)
    async def _conflict(_: Request, exc: VersionConflictError) -> JSONResponse:
        return error_response(409, "version_conflict", str(exc), {"expected": exc.expected, "actual": exc.actual})

    @app.exception_handler(ErasureBusyError)
    async def _erasure_busy(_: Request, exc: ErasureBusyError) -> JSONResponse:
        return error_response(409, "erasure_busy", str(exc))

    @app.exception_handler(UnknownUserError)
    async def _unknown(_: Request, exc: UnknownUserError) -> JSONResponse:
        return error_response(404, "unknown_user", str(exc))

    @app.exception_handler(UnknownNameError)
    async def _unknown_name(_: Request, exc: UnknownNameError) -> JSONResponse:
        return error_response(404, f"unknown_{exc.kind}", str(exc)[:2000])

    @app.exception_handler(NameTakenError)
    async def _name_taken(_: Request, exc: NameTakenError) -> JSONResponse:
        return error_response(409, f"{exc.kind}_exists", str(exc)[:2000])

    @app.exception_handler(InvalidInputError)
    async def _invalid(_: Request, exc: InvalidInputError) -> JSONResponse:
        return error_response(422, "invalid_input", str(exc))

    @app.exception_handler(ConfigError)
    async def _config(_: Request, exc: ConfigError) -> JSONResponse:
        return error_response(422, "invalid_settings", str(exc)[:2000])

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> JSONResponse:
        log.error("store error", extra={"fields": {"event": "store_error", "type": type(exc).__name__}})
        return error_response(503, "store_unavailable", "the settings store is unavailable; retry later")

    @app.exception_handler(RailguardError)
    async def _railguard(_: Request, exc: RailguardError) -> JSONResponse:
        return error_response(500, "railguard_error", type(exc).__name__)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", extra={"fields": {"event": "internal_error", "type": type(exc).__name__}})
        return error_response(500, "internal_error", "internal server error")


def create_app(guard: Guard | None = None, store: Any = None, *, admin_key: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY, chat: ChatConfig | None = None,
               detectors: list[str] | None = None, key_cache_ttl_s: float = 5.0,
               state_ttl: timedelta | None = None) -> FastAPI:
    """Build the service. `guard` defaults to every registered detector (or `detectors`), `store` to the
    default SettingsStore ($RAILGUARD_DB_URL), `admin_key` to $RAILGUARD_ADMIN_KEY (admin API off when unset).
    `state_ttl` (default: a store passed in keeps its own `state_ttl`; one made here uses $RAILGUARD_STATE_TTL_DAYS,
    30 days; 0 = keep forever): per-session state (velocity trajectories) not written for that long is deleted,
    hourly and at start-up, so abandoned sessions go away."""
    from ..store import SettingsStore

    # only what this function uses: an embedder passing its own arguments is not refused over another variable
    own_store = store is None
    env = ServiceEnv.from_environ(only={"strict_detectors", "warmup", "fail_modes"} | (
        {"state_ttl_days"} if state_ttl is None and own_store else set()))
    # a store made here leaves pruning to the lifespan (below); a caller's store keeps its own settings
    store = SettingsStore(state_ttl=None) if own_store else store
    if guard is None:
        guard, unavailable = _build_guard(detectors, store, env.strict_detectors, env.fail_modes or {})
    else:
        unavailable = dict(guard.unavailable)
    st = ServiceState(guard=guard, store=store, keys=KeyRing(store.engine, cache_ttl_s=key_cache_ttl_s),
                      metrics=Metrics(), admin_key=admin_key or os.environ.get(ADMIN_ENV) or None,
                      chat=chat or ChatConfig(), unavailable_detectors=unavailable,
                      strict_detectors=env.strict_detectors)
    app_inflight = st.inflight
    if state_ttl is not None:
        ttl = state_ttl
    elif own_store:
        ttl = timedelta(days=env.state_ttl_days)
    else:  # the caller's store: its own TTL (it also prunes itself when state is written)
        ttl = getattr(store, "state_ttl", None) or timedelta(0)
    if ttl < timedelta(0):
        raise ConfigError(f"state_ttl must be >= 0 (0 keeps session state forever), got {ttl}")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        st.chat_lock = asyncio.Lock()
        pruner = asyncio.create_task(_prune_state(store, ttl)) if ttl > timedelta(0) else None
        watcher = asyncio.create_task(_watch_erasures(store))  # other workers' erasures reach this one's caches
        warming: asyncio.Task[None] | None = None
        try:
            if env.warmup == "background":  # serve /healthz at once; /readyz says when warm
                warming = asyncio.create_task(_retry_warm_up(st, first_s=0.0))
            else:
                # Default: load models before this worker accepts connections. With several workers sharing one
                # socket, a cold worker otherwise takes requests while loading (seen: p99 45 s vs 5 s under
                # load), and /readyz, answered by whichever worker, cannot tell that another is still cold.
                await _warm_up(st)
                if not st.ready:  # retried in the background until it passes
                    warming = asyncio.create_task(_retry_warm_up(st))
            yield
        finally:
            for task in (pruner, warming, watcher):
                if task is not None:
                    task.cancel()
            # uvicorn cancels requests still running after its graceful-shutdown timeout and then runs this at
            # once: give them a moment to unwind, so each still gets its request log line and metric.
            running = {t for t in app_inflight if not t.done()}
            if running:
                await asyncio.wait(running, timeout=2.0)
            # The chat proxy's upstream client is bound to this loop (its pooled connections too): close it,
            # so that a later lifespan of this app (another loop) creates a fresh one instead of reusing it.
            client, st.http_client = st.http_client, None
            if client is not None:
                await client.aclose()
            await st.guard.aclose()  # detectors' pooled connections and worker threads (re-acquired if restarted)

    app = FastAPI(title="railguard", version=__version__, lifespan=lifespan,
                  description="Guardrail checks, per-user settings and a guarded OpenAI-compatible proxy.")
    app.state.rg = st
    if max_body_bytes <= 0:
        raise ConfigError(f"max_body_bytes must be > 0, got {max_body_bytes}")
    app.add_middleware(HygieneMiddleware, metrics=st.metrics, max_body_bytes=max_body_bytes, inflight=st.inflight)
    _install_error_handlers(app)

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        """Process is up (no dependency checks: a liveness probe must not restart a pod for a slow DB)."""
        return Health(status="ok", version=__version__)

    @app.get("/readyz", response_model=Health, tags=["ops"], responses={503: {"model": Health}})
    async def readyz(request: Request) -> Response:
        """Detectors warmed up (models loaded) and the store answers."""
        s = state(request)
        body = Health(status="ok" if s.ready else "starting", version=__version__,
                      detectors=s.guard.detector_names,
                      details={"unavailable_detectors": s.unavailable_detectors} if s.unavailable_detectors else None)
        if s.ready:
            try:
                await asyncio.to_thread(_ping, s.store)
            except Exception as exc:
                details = {**(body.details or {}), "store": type(exc).__name__}
                body = body.model_copy(update={"status": "unavailable", "details": details})
        elif s.ready_error:
            details = {**(body.details or {}), "warmup": s.ready_error}
            body = body.model_copy(update={"status": "unavailable", "details": details})
        return Response(body.model_dump_json(), status_code=200 if body.status == "ok" else 503,
                        media_type="application/json")

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus text format (per process; see the report on multi-worker aggregation)."""
        return Response(state(request).metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/check/{stage}", response_model=Decision, tags=["check"], responses=ERRORS)
    async def check(stage: Stage, body: CheckBody, request: Request,
                    principal: Principal = Depends(require_tenant)) -> Response:
        """Run one text (or the last message of a conversation) through the tenant's pipeline."""
        s = state(request)
        content: Any = body.text if body.text is not None else \
            [m.model_dump(exclude_none=True) for m in body.messages or ()]
        started = time.perf_counter()
        decision = await s.guard_for(principal.tenant_id).acheck(
            content, user_id=body.user_id, session_id=body.session_id, stage=stage, metadata=body.metadata)
        s.metrics.observe_decision(decision, time.perf_counter() - started)
        log.info("check", extra={"fields": {
            "event": "check", "tenant_id": principal.tenant_id, "key_id": principal.key_id, "stage": stage.value,
            "action": decision.action.value, "shadow": decision.shadow, "text_sha256": decision.text_sha256,
            "latency_ms": decision.latency_ms, "findings": [f.detector + "/" + f.log_name for f in
                                                            decision.findings if f.action.value != "allow"],
            "failed_detectors": failed_detectors(decision)}})
        return Response(decision.model_dump_json(), media_type="application/json")

    @app.post("/v1/screen/history", response_model=ScreenOut, tags=["check"], responses=ERRORS)
    async def screen_history(body: ScreenBody, request: Request,
                             principal: Principal = Depends(require_tenant)) -> Response:
        """The earlier messages of a resent conversation through the tenant's text-level detectors (what
        `RemoteGuard.wrap` forwards to its model; the chat proxy does the same internally)."""
        s = state(request)
        # every message sent here is an earlier one: the last is /v1/check's
        screen = await s.guard_for(principal.tenant_id).ascreen_history(
            [m.model_dump(exclude_none=True) for m in body.messages], user_id=body.user_id,
            session_id=body.session_id, include_last=True)
        for _, d in screen.decisions:
            s.metrics.observe_decision(d, history=True)
        out = ScreenOut(messages=screen.messages, blocked=screen.blocked,
                        decisions=[ScreenedDecision(index=i, decision=d) for i, d in screen.decisions])
        log.info("screen", extra={"fields": {
            "event": "screen_history", "tenant_id": principal.tenant_id, "key_id": principal.key_id,
            "n": len(body.messages), "changed": [i for i, d in screen.decisions if d.action.value != "allow"],
            "failed_detectors": sorted({n for _, d in screen.decisions for n in failed_detectors(d)}),
            "blocked": screen.blocked is not None}})
        return Response(out.model_dump_json(), media_type="application/json")

    from .chat import router as chat_router
    from .users import admin_router, operations_router, users_router

    app.include_router(users_router)
    app.include_router(operations_router)
    app.include_router(admin_router)
    app.include_router(chat_router)
    return app
