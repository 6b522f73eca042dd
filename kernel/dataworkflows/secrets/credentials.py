"""Credentials: the encrypted store, tenant-scoped lookup for actions, and the CLI.

Where an action's ``await ctx.credentials.get(name)`` and a plugin's
``await PluginAPI.resolve_secret(name, tenant_id)`` (a webhook's ``secretName``) look, in
order (one resolver,
:meth:`~dataworkflows.secrets.credential_resolver.CredentialService.resolve`):

1. the encrypted store in the database (``credentials`` table), for the run's tenant only;
2. the ``resolve_secret(name, tenant_id)`` hook: plugin providers first, the kernel's
   environment-variable provider (``DATAWORKFLOWS_CREDENTIAL_<NAME>``) last.

A name nobody knows for that tenant is a permanent :class:`~dataworkflows.CredentialError`
raised before the action sends anything; another tenant's stored credential is never
reachable (rows are looked up by tenant, and the ciphertext is bound to its tenant and name,
so a row copied to another tenant does not decrypt). Every secret handed out is registered
with the kernel's :class:`~dataworkflows.common.redaction.Redactor`.

Encryption: AES-256-GCM (``cryptography``'s AEAD), a fresh 96-bit nonce per value, the
tenant and name as associated data. Keys come from ``DATAWORKFLOWS_SECRET_KEY``: one or more
comma-separated url-safe base64 32-byte keys (``dataworkflows credentials generate-key``);
the first encrypts, all decrypt. Without that variable, a SQLite database file gets a key
file beside it (``<database>.key``, mode 0600) generated on first start and announced once
in the log; PostgreSQL, shared by many processes, needs the explicit variable. To rotate,
set ``"new,old"``, run ``dataworkflows credentials re-encrypt`` (which also re-encrypts the
secret fields of triggers, :mod:`dataworkflows.secrets.fields`), then drop the old key.
Without a key the store refuses to write (it never stores plaintext) and reads fail with a
message that says what to do.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from sqlalchemy import delete, select, update

from dataworkflows.actions import Credential
from dataworkflows.common.clock import Clock, iso_utc
from dataworkflows.common.errors import ApiError, Conflict, Unprocessable
from dataworkflows.common.redaction import Redactor
from dataworkflows.common.redaction import redactor as process_redactor
from dataworkflows.db.connector_models import credentials as credentials_table
from dataworkflows.db.database import Database
from dataworkflows.secrets.keys import HOW_TO_MAKE_A_KEY, NO_KEY_MESSAGE, KeyRing, SecretKeyError

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
HOST_PATTERN = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
MIN_SECRET_LENGTH = 6
MAX_SECRET_LENGTH = 65536


class CredentialStoreUnavailable(ApiError):
    """The credential store cannot encrypt or decrypt (no usable secret key)."""

    status = 503
    code = "credential_store_unavailable"


# -- keys and encryption ----------------------------------------------------------------


def check_name(name: Any) -> str:
    """A credential name: 1-128 of letters, digits, ``_ . -``, starting alphanumeric."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise Unprocessable(
            "a credential name is 1-128 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit",
            code="invalid_credential",
            details={"path": "$.name"},
        )
    return name


def _check_secret(secret: Any) -> str:
    # Never echo the value in an error.
    if not isinstance(secret, str):
        raise Unprocessable(
            "secret must be a string", code="invalid_credential", details={"path": "$.secret"}
        )
    if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
        raise Unprocessable(
            f"secret must be {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters long "
            "(shorter values cannot be redacted reliably)",
            code="invalid_credential",
            details={"path": "$.secret"},
        )
    return secret


def _check_hosts(hosts: Any) -> list[str]:
    if hosts is None:
        return []
    if not isinstance(hosts, list) or len(hosts) > 100:
        raise Unprocessable(
            "allowedHosts must be a list of at most 100 host names",
            code="invalid_credential",
            details={"path": "$.allowedHosts"},
        )
    out = []
    for index, host in enumerate(hosts):
        if not isinstance(host, str) or not HOST_PATTERN.match(host):
            raise Unprocessable(
                "allowedHosts entries are host names such as 'api.example.com' or '*.example.com'",
                code="invalid_credential",
                details={"path": f"$.allowedHosts[{index}]"},
            )
        out.append(host.lower())
    return out


def credential_view(row: dict[str, Any]) -> dict[str, Any]:
    """The API shape of a stored credential: metadata only, never the secret."""

    return {
        "name": row["name"],
        "tenantId": row["tenant_id"],
        "description": row["description"],
        "allowedHosts": list(row["allowed_hosts"] or []),
        "keyId": row["key_id"],
        "createdAt": iso_utc(row["created_at"]),
        "updatedAt": iso_utc(row["updated_at"]),
        "createdBy": row["created_by"],
        "updatedBy": row["updated_by"],
    }


# -- the store --------------------------------------------------------------------------


class CredentialStore:
    """Encrypted credentials in the database, per tenant."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        secret_key: str | None,
        *,
        missing: str = "",
        redactor: Redactor | None = None,
    ) -> None:
        """``secret_key``: the key setting (see :func:`resolve_secret_key`); ``missing``:
        the message to give when it is None; ``redactor``: the kernel's (secrets it hands
        out are registered there)."""
        self.db = db
        self.clock = clock
        #: where secrets written or revealed are registered (the kernel's; default the
        #: process-wide one)
        self.redactor = redactor if redactor is not None else process_redactor
        self._keyring: KeyRing | None = None
        self._key_error: SecretKeyError | None = None
        if secret_key:
            try:
                self._keyring = KeyRing.from_setting(secret_key)
            except SecretKeyError as exc:
                self._key_error = exc
        else:
            self._key_error = SecretKeyError(missing or f"{NO_KEY_MESSAGE}; {HOW_TO_MAKE_A_KEY}")

    @property
    def keyring_or_none(self) -> KeyRing | None:
        """The key ring, or None when the store has no usable key."""
        return self._keyring

    @property
    def key_problem(self) -> str | None:
        """Why the store cannot encrypt or decrypt, or None when it can."""
        return str(self._key_error) if self._key_error else None

    def keyring(self) -> KeyRing:
        if self._keyring is None:
            assert self._key_error is not None
            raise self._key_error
        return self._keyring

    def keyring_for_api(self) -> KeyRing:
        """The key ring, or a 503 ``secret_key_missing`` API error that says why not."""
        try:
            return self.keyring()
        except SecretKeyError as exc:
            raise CredentialStoreUnavailable(str(exc), code="secret_key_missing") from None

    async def put(
        self,
        tenant_id: str,
        name: str,
        secret: Any,
        *,
        description: Any = None,
        allowed_hosts: Any = None,
        actor: str | None = None,
        create_only: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Create (or, unless ``create_only``, replace) a credential. Returns (row, created).

        Validates and encrypts before writing: a rejected call changes nothing.
        """
        check_name(name)
        _check_secret(secret)
        hosts = _check_hosts(allowed_hosts)
        if description is not None and (
            not isinstance(description, str) or len(description) > 1000
        ):
            raise Unprocessable(
                "description must be a string of at most 1000 characters",
                code="invalid_credential",
                details={"path": "$.description"},
            )
        keyring = self.keyring_for_api()
        token = keyring.encrypt(secret, tenant_id, name)
        now = self.clock.now()
        new_id = uuid.uuid4()
        t = credentials_table
        stmt = self.db.insert(t).values(
            id=new_id,
            tenant_id=tenant_id,
            name=name,
            description=description,
            allowed_hosts=hosts,
            ciphertext=token,
            key_id=keyring.primary_id,
            created_at=now,
            updated_at=now,
            created_by=actor,
            updated_by=actor,
        )
        if create_only:
            stmt = stmt.on_conflict_do_nothing(index_elements=["tenant_id", "name"])
        else:
            stmt = stmt.on_conflict_do_update(
                index_elements=["tenant_id", "name"],
                set_={
                    "description": description,
                    "allowed_hosts": hosts,
                    "ciphertext": token,
                    "key_id": keyring.primary_id,
                    "updated_at": now,
                    "updated_by": actor,
                },
            )
        async with self.db.begin() as conn:
            row_id = (await conn.execute(stmt.returning(t.c.id))).scalar_one_or_none()
        if row_id is None:
            raise Conflict(
                f"a credential named {name!r} already exists; PUT /api/v1/credentials/{name} "
                "replaces it",
                code="credential_exists",
            )
        self.redactor.add(secret, tenant_id)
        row = await self.get(tenant_id, name)
        assert row is not None
        return row, row_id == new_id

    async def get(self, tenant_id: str, name: str) -> dict[str, Any] | None:
        """A credential's row (with its ciphertext), or None."""
        t = credentials_table
        async with self.db.connect() as conn:
            row = (
                await conn.execute(select(t).where(t.c.tenant_id == tenant_id, t.c.name == name))
            ).one_or_none()
        return dict(row._mapping) if row else None

    async def list(
        self, tenant_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The tenant's credentials by name (``after``/``limit`` for keyset pages)."""
        t = credentials_table
        query = select(t).where(t.c.tenant_id == tenant_id)
        if after is not None:
            query = query.where(t.c.name > after)
        query = query.order_by(t.c.name)
        if limit is not None:
            query = query.limit(limit)
        async with self.db.connect() as conn:
            rows = await conn.execute(query)
        return [dict(r._mapping) for r in rows]

    async def delete(self, tenant_id: str, name: str) -> bool:
        t = credentials_table
        async with self.db.begin() as conn:
            result = await conn.execute(
                delete(t).where(t.c.tenant_id == tenant_id, t.c.name == name)
            )
        return bool(result.rowcount)

    async def reveal(self, tenant_id: str, name: str) -> Credential | None:
        """The decrypted credential of this tenant, None if it has none of that name.

        Raises :class:`SecretKeyError` (with the credential named) when it cannot be opened.
        """
        row = await self.get(tenant_id, name)
        if row is None:
            return None
        try:
            secret = self.keyring().decrypt(row["ciphertext"], tenant_id, name)
        except SecretKeyError as exc:
            raise SecretKeyError(
                f"stored credential {name!r} of tenant {tenant_id!r} cannot be decrypted: {exc}"
            ) from None
        self.redactor.add(secret, tenant_id)
        return Credential(name, secret, tuple(row["allowed_hosts"] or ()), source="store")

    async def re_encrypt(self) -> dict[str, Any]:
        """Re-encrypt every credential not under the first key. Returns a summary:
        ``{"total", "reencrypted", "current", "failed": [{"tenantId", "name", "error"}]}``."""
        keyring = self.keyring()
        t = credentials_table
        async with self.db.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(select(t).order_by(t.c.id))]
        summary: dict[str, Any] = {"total": len(rows), "reencrypted": 0, "current": 0, "failed": []}
        now = self.clock.now()
        for row in rows:
            if row["key_id"] == keyring.primary_id:
                summary["current"] += 1
                continue
            try:
                plain = keyring.decrypt(row["ciphertext"], row["tenant_id"], row["name"])
            except SecretKeyError as exc:
                summary["failed"].append(
                    {"tenantId": row["tenant_id"], "name": row["name"], "error": str(exc)}
                )
                continue
            token = keyring.encrypt(plain, row["tenant_id"], row["name"])
            async with self.db.begin() as conn:
                result = await conn.execute(
                    update(t)
                    .where(t.c.id == row["id"], t.c.ciphertext == row["ciphertext"])
                    .values(ciphertext=token, key_id=keyring.primary_id, updated_at=now)
                )
            if result.rowcount:
                summary["reencrypted"] += 1
            else:  # replaced meanwhile, by a writer that used the current key
                summary["current"] += 1
        return summary
