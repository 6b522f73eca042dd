"""The credential store's keys: generating one, the key ring (encrypt with the first key,
decrypt with any), the key file SQLite creates on first start, and which key setting is
in force. :mod:`dataworkflows.secrets.credentials` stores and resolves credentials with them, and
:mod:`dataworkflows.secrets.fields` seals plugins' secret fields.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from dataworkflows.settings import Settings

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
TOKEN_VERSION = "v1"


class SecretKeyError(RuntimeError):
    """``DATAWORKFLOWS_SECRET_KEY`` is missing, malformed or does not open a credential."""


def generate_key() -> str:
    """A new random key for ``DATAWORKFLOWS_SECRET_KEY`` (url-safe base64 of 32 bytes)."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


def key_id(key: bytes) -> str:
    """A short public identifier of a key (recorded beside each ciphertext)."""
    return hashlib.sha256(b"dataworkflows-credential-key\0" + key).hexdigest()[:16]


def _associated_data(tenant_id: str, name: str) -> bytes:
    return b"dataworkflows-credential\0" + tenant_id.encode() + b"\0" + name.encode()


@dataclass(frozen=True)
class _Key:
    id: str
    aead: AESGCM
    #: key of the synthetic nonces of deterministic encryption (derived, never stored)
    siv: bytes


class KeyRing:
    """The keys of ``DATAWORKFLOWS_SECRET_KEY``; the first one encrypts."""

    def __init__(self, keys: Iterable[bytes]) -> None:
        self._keys: list[_Key] = []
        for key in keys:
            if len(key) != KEY_BYTES:
                raise SecretKeyError(f"a credential key must be {KEY_BYTES} bytes long")
            kid = key_id(key)
            if all(k.id != kid for k in self._keys):
                siv = hashlib.sha256(b"dataworkflows-synthetic-nonce\0" + key).digest()
                self._keys.append(_Key(kid, AESGCM(key), siv))
        if not self._keys:
            raise SecretKeyError("no credential key given")

    @classmethod
    def from_setting(cls, value: str) -> KeyRing:
        """Parse ``DATAWORKFLOWS_SECRET_KEY`` (comma-separated keys, newest first)."""
        keys = []
        parts = [p.strip() for p in value.split(",")]
        for index, part in enumerate(parts, start=1):
            if not part:
                continue
            try:
                raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != KEY_BYTES:
                raise SecretKeyError(
                    f"DATAWORKFLOWS_SECRET_KEY: key #{index} is not the url-safe base64 form "
                    f"of {KEY_BYTES} bytes; create one with `dataworkflows credentials "
                    "generate-key`"
                )
            keys.append(raw)
        if not keys:
            raise SecretKeyError("DATAWORKFLOWS_SECRET_KEY is empty")
        return cls(keys)

    @property
    def primary_id(self) -> str:
        return self._keys[0].id

    @property
    def ids(self) -> list[str]:
        return [k.id for k in self._keys]

    def encrypt(
        self, plaintext: str, tenant_id: str, name: str, *, deterministic: bool = False
    ) -> str:
        """``v1.<key id>.<base64url(nonce + ciphertext + tag)>`` under the first key.

        ``deterministic``: the nonce is an HMAC of the associated data and the plaintext
        (a synthetic nonce, as in SIV modes) instead of random, so the same value at the
        same place under the same key gives the same token. Nonces then never repeat for
        different plaintexts; what leaks is only whether two tokens hold the same value.
        Used for workflow definitions, whose checksums must stay equal for equal inputs.
        """
        key = self._keys[0]
        data = _associated_data(tenant_id, name)
        if deterministic:
            digest = hmac.new(key.siv, data + b"\0" + plaintext.encode(), hashlib.sha256)
            nonce = digest.digest()[:NONCE_BYTES]
        else:
            nonce = os.urandom(NONCE_BYTES)
        sealed = key.aead.encrypt(nonce, plaintext.encode(), data)
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{TOKEN_VERSION}.{key.id}.{body}"

    def decrypt(self, token: str, tenant_id: str, name: str) -> str:
        """The plaintext; :class:`SecretKeyError` if no key opens it."""
        version, kid, body = _split_token(token)
        if version != TOKEN_VERSION:
            raise SecretKeyError(f"unknown credential format {version!r}")
        key = next((k for k in self._keys if k.id == kid), None)
        if key is None:
            raise SecretKeyError(
                f"it was encrypted with key {kid}, which is not in DATAWORKFLOWS_SECRET_KEY "
                f"(keys {', '.join(self.ids)}); set the new key first and the old one after "
                'it ("new,old") and run `dataworkflows credentials re-encrypt`'
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = key.aead.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], _associated_data(tenant_id, name)
            )
        except (InvalidTag, ValueError, binascii.Error):
            raise SecretKeyError(
                "its ciphertext failed authentication (tampered with, or copied from another "
                "tenant or name)"
            ) from None
        return plain.decode()


# -- where the key comes from -----------------------------------------------------------

NO_KEY_MESSAGE = (
    "DATAWORKFLOWS_SECRET_KEY is not set, so stored credentials and secret fields can be "
    "neither written nor read"
)
HOW_TO_MAKE_A_KEY = (
    "create a key with `dataworkflows credentials generate-key` and set "
    "DATAWORKFLOWS_SECRET_KEY to it in every process that uses this database"
)


def key_file_path(settings: Settings) -> Path | None:
    """The key file of these settings: ``secret_key_file`` if set (``""``: none), else
    ``<database file>.key`` beside a SQLite database file, else None (PostgreSQL,
    in-memory SQLite)."""
    if settings.secret_key_file is not None:
        return Path(settings.secret_key_file).expanduser() if settings.secret_key_file else None
    if not settings.is_sqlite:
        return None
    from sqlalchemy.engine import make_url

    database = make_url(settings.database_url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database + ".key")


def read_or_create_key_file(path: Path, *, create: bool) -> tuple[str | None, bool]:
    """(key, created): the key kept in ``path``; when the file does not exist and
    ``create`` is true, a new key is written there first (mode 0600, atomically: of two
    processes starting together, one creates it and both use it)."""
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        if not create:
            return None, False
    key = generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # fails if another process created it meanwhile
        except FileExistsError:
            return path.read_text().strip(), False
    finally:
        temporary.unlink(missing_ok=True)
    return key, True


def resolve_secret_key(settings: Settings) -> tuple[str | None, str]:
    """(key, problem hint): ``DATAWORKFLOWS_SECRET_KEY`` if set, else the key file
    (generated on SQLite's first start, and logged once with its location), else None
    with the message that says how to make a key."""
    if settings.secret_key:
        return settings.secret_key, ""
    path = key_file_path(settings)
    if path is None:
        if settings.is_sqlite and settings.secret_key_file is None:
            # an in-memory database lives as long as the process: so may its key
            log.info("secret key: generated for this in-memory database only")
            return generate_key(), ""
        backend = "PostgreSQL is shared by many processes, so no key is generated: "
        return None, f"{NO_KEY_MESSAGE}; " + (backend if not settings.is_sqlite else "") + (
            HOW_TO_MAKE_A_KEY
        )
    key, created = read_or_create_key_file(path, create=settings.is_sqlite)
    if key is None:
        return None, f"{NO_KEY_MESSAGE} and {path} does not exist; {HOW_TO_MAKE_A_KEY}"
    if created:
        log.warning(
            "generated the secret key of the credential store in %s (mode 0600): back it "
            "up, but not beside the database's backups; without it stored credentials and "
            "trigger secrets cannot be decrypted (DATAWORKFLOWS_SECRET_KEY overrides it)",
            path.resolve(),
        )
    return key, ""


def _split_token(token: str) -> tuple[str, str, str]:
    parts = token.split(".", 2)
    if len(parts) != 3:
        raise SecretKeyError("the stored value is not an encrypted credential")
    return parts[0], parts[1], parts[2]


# -- validation -------------------------------------------------------------------------
