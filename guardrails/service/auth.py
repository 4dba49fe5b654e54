"""Tenants and API keys, in the settings database (its own tables, the store's engine).

Why this shape:
- A key is ``rgk_<key_id>.<secret>``. Only ``key_id`` (a lookup handle, not a secret), a random per-key salt
  and ``HMAC-SHA256(salt, secret)`` are stored, so a leaked database (or a grep of the SQLite file) yields no
  usable key. Verification compares digests in constant time.
- Verified keys are cached per process for a few seconds: a check request must not pay a database round trip,
  and revocation still propagates to every worker within ``cache_ttl_s``.
- The admin key is never stored: it comes from the environment (``RAILGUARD_ADMIN_KEY``) or an argument.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..errors import ConfigError, StoreError
from ..store.schema import serialize_ddl

KEY_PREFIX = "rgk_"
meta = sa.MetaData()
tenants = sa.Table(
    "railguard_tenants", meta,
    sa.Column("tenant_id", sa.String(256), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
api_keys = sa.Table(
    "railguard_api_keys", meta,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("tenant_id", sa.String(256), sa.ForeignKey("railguard_tenants.tenant_id"), nullable=False),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),  # hex HMAC-SHA256(salt, secret)
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)


class TenantExistsError(StoreError):
    """`create_tenant` for an id that is already taken."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a tenant (through one of its keys). `actor` is what the audit trail records."""

    tenant_id: str
    key_id: str

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"


def _digest(salt: str, secret: str) -> str:
    return hmac.new(salt.encode(), secret.encode(), hashlib.sha256).hexdigest()


def split_key(api_key: str) -> tuple[str, str] | None:
    """``rgk_<id>.<secret>`` → (id, secret); None for anything else (never raises on hostile input)."""
    if not api_key.startswith(KEY_PREFIX) or len(api_key) > 200:
        return None
    key_id, dot, secret = api_key[len(KEY_PREFIX):].partition(".")
    if not dot or not key_id.isalnum() or not secret:
        return None
    return key_id, secret


class KeyRing:
    """Create tenants and keys, and resolve a bearer key to its tenant."""

    def __init__(self, engine: sa.Engine, *, cache_ttl_s: float = 5.0) -> None:
        self.engine = engine
        if isinstance(cache_ttl_s, bool) or not isinstance(cache_ttl_s, (int, float)) \
                or not 0 <= cache_ttl_s < math.inf:  # NaN or inf: a revoked key would be accepted forever
            raise ConfigError(f"key_cache_ttl_s must be a finite number of seconds >= 0, got {cache_ttl_s!r}")
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, str, str, str]] = {}  # key_id -> (expires, tenant, salt, digest)
        self._lock = threading.Lock()
        try:
            with self._write() as conn, conn.begin():
                serialize_ddl(conn)  # several workers or instances starting together on one fresh database
                meta.create_all(conn)
        except Exception as exc:  # pragma: no cover - same failure modes as the store's own create_all
            raise StoreError(f"cannot create tenant tables: {exc}") from exc

    def _write(self) -> sa.Connection:
        # The store's SQLite hook opens "BEGIN IMMEDIATE" for connections carrying this option: writers queue
        # on the file lock instead of failing with "database is locked" when several workers share the file.
        return self.engine.connect().execution_options(railguard_write=True)

    def create_tenant(self, tenant_id: str) -> tuple[str, str]:
        """Create a tenant and its first key; returns (key_id, api_key). The key is not recoverable later."""
        now = datetime.now(UTC)
        try:
            with self._write() as conn, conn.begin():
                conn.execute(sa.insert(tenants).values(tenant_id=tenant_id, created_at=now))
                return self._insert_key(conn, tenant_id, now)
        except IntegrityError:
            raise TenantExistsError(f"tenant {tenant_id!r} already exists") from None

    def create_key(self, tenant_id: str) -> tuple[str, str]:
        """An additional key for an existing tenant (rotation: create the new one, then revoke the old)."""
        with self._write() as conn, conn.begin():
            found = conn.execute(sa.select(tenants.c.tenant_id).where(tenants.c.tenant_id == tenant_id)).first()
            if found is None:
                raise ConfigError(f"unknown tenant {tenant_id!r}")
            return self._insert_key(conn, tenant_id, datetime.now(UTC))

    @staticmethod
    def _insert_key(conn: sa.Connection, tenant_id: str, now: datetime) -> tuple[str, str]:
        key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_hex(16)
        conn.execute(sa.insert(api_keys).values(key_id=key_id, tenant_id=tenant_id, salt=salt,
                                                digest=_digest(salt, secret), created_at=now))
        return key_id, f"{KEY_PREFIX}{key_id}.{secret}"

    def revoke(self, key_id: str) -> bool:
        """Revoke a key; True if it existed and was active."""
        with self._write() as conn, conn.begin():
            res = conn.execute(sa.update(api_keys).where(api_keys.c.key_id == key_id,
                                                         api_keys.c.revoked_at.is_(None))
                               .values(revoked_at=datetime.now(UTC)))
        with self._lock:
            self._cache.pop(key_id, None)
        return res.rowcount == 1

    def list_tenants(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(tenants.c.tenant_id).order_by(tenants.c.tenant_id)).scalars())

    def verify_cached(self, api_key: str) -> Principal | Literal[False] | None:
        """Cache-only verification (no I/O, safe on the event loop): a Principal, None (rejected), or False
        when the key is not cached and `verify` must ask the database."""
        parts = split_key(api_key)
        if parts is None:
            return None
        with self._lock:
            hit = self._cache.get(parts[0])
        if hit is None or hit[0] < time.monotonic():
            return False
        return self._match(parts[0], parts[1], hit)

    @staticmethod
    def _match(key_id: str, secret: str, hit: tuple[float, str, str, str]) -> Principal | None:
        _, tenant_id, salt, digest = hit
        if not hmac.compare_digest(_digest(salt, secret), digest):
            return None
        return Principal(tenant_id=tenant_id, key_id=key_id)

    def verify(self, api_key: str) -> Principal | None:
        """The tenant a key belongs to, or None (unknown, malformed, revoked or wrong secret)."""
        parts = split_key(api_key)
        if parts is None:
            return None
        key_id, secret = parts
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key_id)
        if hit is None or hit[0] < now:
            c = api_keys.c
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(c.tenant_id, c.salt, c.digest)
                                   .where(c.key_id == key_id, c.revoked_at.is_(None))).first()
            if row is None:
                return None
            hit = (now + self.cache_ttl_s, row.tenant_id, row.salt, row.digest)
            with self._lock:
                if len(self._cache) > 10_000:  # bound memory against key-id spraying
                    self._cache.clear()
                self._cache[key_id] = hit
        return self._match(key_id, secret, hit)


def admin_ok(presented: str | None, admin_key: str | None) -> bool:
    """Constant-time admin check; no admin key configured means admin endpoints are disabled."""
    if not admin_key or not presented:
        return False
    return hmac.compare_digest(presented.encode(), admin_key.encode())
