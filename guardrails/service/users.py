"""Per-user settings, audit and tenant administration endpoints.

Every user route is scoped by the caller's tenant (from its key): the same user id in two tenants is two
users, so a key can neither read nor write another tenant's users (it simply cannot name them).

Versioning is optimistic: reads return the version (also as an ETag); whole-settings writes must name the
version they replace (`expected_version` or `If-Match`), and a stale one is a 409. A section write without a
version is an atomic server-side read-modify-write of that section only, which loses no concurrent updates.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi.responses import Response
from pydantic import TypeAdapter

from ..decision import text_hash
from ..store import AuditEntry, StoredSettings, run_operation, section_models, section_operations
from ..store.settings import named_detectors, safe_segment
from .auth import Principal, TenantExistsError
from .deps import ApiError, log, require_admin, require_tenant, state, user_id_param
from .schemas import ApiKeyOut, ErrorOut, SectionOut, SectionPut, SettingsPut, TenantCreate

_ERR: dict[int | str, dict[str, Any]] = {s: {"model": ErrorOut} for s in (401, 404, 409, 413, 415, 422, 428)}
users_router = APIRouter(prefix="/v1/users/{user_id:path}", tags=["settings"], responses=_ERR)
operations_router = APIRouter(prefix="/v1/settings", tags=["settings"], responses=_ERR)
admin_router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=_ERR,
                         dependencies=[Depends(require_admin)])
_audit_list = TypeAdapter(list[AuditEntry])


def _settings_response(s: StoredSettings, status: int = 200) -> Response:
    return Response(s.model_dump_json(), status_code=status, media_type="application/json",
                    headers={"ETag": f'"{s.version}"'})


def _expected(if_match: str | None, body_version: int | None) -> int | str | None:
    """The version a write was based on, from the body or an If-Match header ("3", W/"3" or *)."""
    header: int | str | None = None
    if if_match is not None:
        raw = if_match.strip().removeprefix("W/").strip('"')
        if raw == "*":
            header = "*"
        elif re.fullmatch(r"[0-9]{1,18}", raw):  # str.isdigit() also takes '²' and 5,000-digit numbers (a 500)
            header = int(raw)
        else:
            raise ApiError(400, "invalid_if_match", "If-Match must be a version number, e.g. \"3\", or *")
    if header is not None and body_version is not None and header != body_version:
        raise ApiError(400, "version_mismatch", "If-Match and expected_version disagree")
    return body_version if body_version is not None else header


async def _check_detector_names(request: Request, settings: Any, tenant_id: str, user_id: str) -> None:
    """A `guard` section may only name detectors this service runs (or knows but could not load): a typo such as
    `disabled_detectors: ["pi"]` or `thresholds: {"harmm": 0.5}` would otherwise be stored and change nothing.
    Names already stored are not re-judged (a detector this service no longer runs must not block unrelated
    edits that carry it back). Nothing is written on refusal."""
    guard = settings.get("guard") if isinstance(settings, dict) else None
    named = named_detectors(guard)
    if not named:
        return  # absent or malformed: section validation reports the latter
    st = state(request)
    known = set(st.guard.detector_names) | set(st.guard.unavailable) | set(st.unavailable_detectors)
    unknown = named - known
    if unknown:
        stored = await st.store.aget(tenant_id, user_id)
        unknown -= named_detectors(stored.settings.get("guard"))
    if unknown:
        raise ApiError(422, "unknown_detector", "the guard section names detector(s) this service does not run",
                       {"unknown": sorted(safe_segment(n) for n in unknown), "known": sorted(known)})


def _known_section(section: str) -> str:
    if section not in section_models():
        raise ApiError(404, "unknown_section", f"unknown settings section {section!r}",
                       {"known": sorted(section_models())})
    return section


@users_router.get("/settings", response_model=StoredSettings)
async def get_settings(request: Request, user_id: str = Depends(user_id_param),
                       p: Principal = Depends(require_tenant)) -> Response:
    """All sections and the current version; 404 if the user has no stored settings."""
    return _settings_response(await state(request).store.arequire(p.tenant_id, user_id))


@users_router.put("/settings", response_model=StoredSettings)
async def put_settings(body: SettingsPut, request: Request, user_id: str = Depends(user_id_param),
                       p: Principal = Depends(require_tenant),
                       if_match: str | None = Header(default=None)) -> Response:
    """Replace all settings. Requires the version being replaced (0 = create); `If-Match: *` overwrites."""
    store, expected = state(request).store, _expected(if_match, body.expected_version)
    await _check_detector_names(request, body.settings, p.tenant_id, user_id)
    if expected is None:
        raise ApiError(428, "precondition_required",
                       "give expected_version (0 to create) or an If-Match header; If-Match: * overwrites")
    if expected == "*":
        new = body.settings
        saved = await store.aupdate(p.tenant_id, user_id, lambda _old: new, actor=p.actor)
    else:
        saved = await store.aput(p.tenant_id, user_id, body.settings, expected_version=expected, actor=p.actor)
    return _settings_response(saved)


@users_router.delete("/settings", status_code=204, response_class=Response)
async def delete_settings(request: Request, user_id: str = Depends(user_id_param),
                          p: Principal = Depends(require_tenant)) -> Response:
    """Remove all of a user's settings (audited; the audit trail survives)."""
    await state(request).store.adelete(p.tenant_id, user_id, actor=p.actor)
    return Response(status_code=204)


@users_router.post("/erase", tags=["settings"])
async def erase_user(request: Request, user_id: str = Depends(user_id_param),
                     p: Principal = Depends(require_tenant)) -> dict[str, Any]:
    """Erase what is held about one user of the caller's tenant (a data-subject erasure request): what detectors
    cache about them, then settings, session state and the audit trail (see `Guard.erase_user`). Not audited per
    user (the audit trail is what is erased); logged with the user id hashed. An unknown user erases nothing."""
    # the raw path, decoded except for "%2F" (which routing decodes too: "%65rase" is "erase"); without one, the
    # decoded path, where a literal and an encoded "/" cannot be told apart (refused rather than guessed)
    raw = request.scope.get("raw_path")
    path = re.sub(r"%2[Ff]", "\x00", bytes(raw).decode("latin-1")) if raw else request.scope.get("path", "")
    # "/v1/users/<one or more characters>/settings/<section>/erase": the tail by regex, the prefix by `in` (an
    # unanchored "/v1/users/.+" backtracked from every "/v1/users/" of a long path: quadratic; review, session 35)
    decoded = unquote(path)
    tail = re.search(r"/settings/[^/]+/erase/?$", decoded)
    if tail and "/v1/users/" in decoded[:max(0, tail.start() - 1)]:
        # `{user_id:path}`: ".../alice/settings/moderation/erase" is a section operation named "erase", not an
        # erasure of user "alice/settings/moderation" (whose id the client sends percent-encoded)
        raise ApiError(404, "unknown_operation", "this path names a section operation; to erase a user whose id "
                       "holds '/', percent-encode it")
    st = state(request)
    erased = await st.guard_for(p.tenant_id).aerase_user(user_id)
    log.info("user erased", extra={"fields": {"event": "user_erased", "tenant_id": p.tenant_id,
                                              "key_id": p.key_id, "user_sha256": text_hash(user_id),
                                              "erased": erased}})
    return {"erased": erased}


@users_router.get("/settings/{section}", response_model=SectionOut)
async def get_section(section: str, request: Request, user_id: str = Depends(user_id_param),
                      p: Principal = Depends(require_tenant)) -> Response:
    """One section's data ({} when never set) and the user's settings version."""
    _known_section(section)
    s = await state(request).store.arequire(p.tenant_id, user_id)
    out = SectionOut(section=section, data=s.section(section), version=s.version)
    return Response(out.model_dump_json(), media_type="application/json", headers={"ETag": f'"{s.version}"'})


@users_router.put("/settings/{section}", response_model=StoredSettings)
async def put_section(section: str, body: SectionPut, request: Request, user_id: str = Depends(user_id_param),
                      p: Principal = Depends(require_tenant),
                      if_match: str | None = Header(default=None)) -> Response:
    """Replace one section (validated by its registered model). See the module docstring for versioning."""
    store, expected = state(request).store, _expected(if_match, body.expected_version)
    _known_section(section)
    data = body.data
    if section == "guard":
        await _check_detector_names(request, {"guard": data}, p.tenant_id, user_id)
    if expected is None or expected == "*":
        saved = await store.aupdate_section(p.tenant_id, user_id, section, lambda _old: data, actor=p.actor)
    else:
        current = await store.aget(p.tenant_id, user_id)
        new = {**current.settings, section: data}
        # put() re-checks the version inside its write transaction, so a write between our read and it is a 409.
        saved = await store.aput(p.tenant_id, user_id, new, expected_version=expected, actor=p.actor)
    return _settings_response(saved)


@users_router.delete("/settings/{section}", response_model=StoredSettings)
async def delete_section(section: str, request: Request, user_id: str = Depends(user_id_param),
                         p: Principal = Depends(require_tenant)) -> Response:
    """Drop one section (atomic read-modify-write); 404 if the user has no settings."""
    store = state(request).store
    _known_section(section)
    await store.arequire(p.tenant_id, user_id)
    saved = await store.aupdate(p.tenant_id, user_id, lambda s: {k: v for k, v in s.items() if k != section},
                                actor=p.actor)
    return _settings_response(saved)


@users_router.post("/settings/{section}/{operation}", response_model=StoredSettings)
async def apply_operation(section: str, operation: str, request: Request,
                          body: dict[str, Any] | None = Body(default=None), user_id: str = Depends(user_id_param),
                          p: Principal = Depends(require_tenant)) -> Response:
    """Apply an operation the section's plugin registered (`guardrails.store.operations`; list them at
    `GET /v1/settings/operations`): the input is validated by its model and applied in one write of that section
    (atomic, versioned, audited; a user without settings gets them). Answers the user's whole settings."""
    _known_section(section)
    known = section_operations().get(section, {})
    if operation not in known:
        raise ApiError(404, "unknown_operation", f"section {section!r} has no operation {safe_segment(operation)!r}",
                       {"known": sorted(known)})
    saved = await asyncio.to_thread(run_operation, state(request).store, p.tenant_id, user_id, section,
                                    known[operation], body, actor=p.actor)
    return _settings_response(saved)


@operations_router.get("/operations")
async def list_operations(_: Principal = Depends(require_tenant)) -> dict[str, Any]:
    """{section: {operation: {summary, input: JSON schema}}} for `POST /v1/users/{u}/settings/{section}/{op}`."""
    return {section: {name: {"summary": op.summary, "input": op.body.model_json_schema()}
                      for name, op in sorted(ops.items())}
            for section, ops in sorted(section_operations().items())}


@users_router.get("/audit", response_model=list[AuditEntry])
async def audit(request: Request, user_id: str = Depends(user_id_param), p: Principal = Depends(require_tenant),
                limit: int = Query(default=100, ge=1, le=1000)) -> Response:
    """Audit entries, newest first: who changed which paths when, with digests (never values)."""
    entries = await state(request).store.ahistory(p.tenant_id, user_id, limit=limit)
    return Response(_audit_list.dump_json(entries), media_type="application/json")


# ---- tenant administration (admin key only) ----------------------------------------------------------------
@admin_router.post("/tenants", response_model=ApiKeyOut, status_code=201)
async def create_tenant(body: TenantCreate, request: Request) -> ApiKeyOut:
    """Create a tenant and its first API key. The key is in this response only; store it now."""
    try:
        key_id, key = await asyncio.to_thread(state(request).keys.create_tenant, body.tenant_id)
    except TenantExistsError:
        raise ApiError(409, "tenant_exists", f"tenant {body.tenant_id!r} already exists") from None
    return ApiKeyOut(tenant_id=body.tenant_id, key_id=key_id, api_key=key)


@admin_router.get("/tenants")
async def list_tenants(request: Request) -> dict[str, list[str]]:
    return {"tenants": await asyncio.to_thread(state(request).keys.list_tenants)}


@admin_router.post("/tenants/{tenant_id}/keys", response_model=ApiKeyOut, status_code=201)
async def create_key(tenant_id: str, request: Request) -> ApiKeyOut:
    """An extra key for a tenant (rotate: create a new key, deploy it, revoke the old one)."""
    from ..errors import ConfigError

    try:
        key_id, key = await asyncio.to_thread(state(request).keys.create_key, tenant_id)
    except ConfigError:
        raise ApiError(404, "unknown_tenant", f"unknown tenant {tenant_id!r}") from None
    return ApiKeyOut(tenant_id=tenant_id, key_id=key_id, api_key=key)


@admin_router.delete("/keys/{key_id}", status_code=204, response_class=Response)
async def revoke_key(key_id: str, request: Request) -> Response:
    """Revoke a key; every worker stops accepting it within the key cache TTL (seconds)."""
    if not await asyncio.to_thread(state(request).keys.revoke, key_id):
        raise ApiError(404, "unknown_key", "no active key with that id")
    return Response(status_code=204)
