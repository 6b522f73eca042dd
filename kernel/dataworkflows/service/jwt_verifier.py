"""JWTs of strict mode (docs/auth.md), verified with PyJWT.

Keys: ``DATAWORKFLOWS_JWT_SECRET`` (HS256), ``DATAWORKFLOWS_JWT_PUBLIC_KEY_FILE`` (a PEM
public key: RS256 or ES256) and ``DATAWORKFLOWS_JWT_JWKS`` (a JWKS file, or an http(s) URL
fetched in a thread and cached; the key is picked by the token's ``kid``). The algorithm a
token names must be one the configured keys serve (never ``none``, never HS256 with a public
key). Always required: ``exp``, ``sub`` and the tenant and role claims; ``aud`` and ``iss``
are checked when configured; ``nbf`` and ``iat`` when present; clock skew is bounded by
``DATAWORKFLOWS_JWT_LEEWAY_SECONDS`` (at most 300 s).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import jwt

from dataworkflows.common.access import ROLES, Identity, valid_tenant
from dataworkflows.common.errors import ApiError, Unauthorized
from dataworkflows.settings import Settings, SettingsError

HMAC_ALGORITHMS = ("HS256",)
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")


class JwksUnavailable(ApiError):
    """The JWKS URL could not be read: the server cannot check any JWT now."""

    status = 503
    code = "jwks_unavailable"


def _refused(reason: str) -> Unauthorized:
    return Unauthorized(f"the bearer token was refused: {reason}", code="invalid_token")


class JwtVerifier:
    """Checks JWTs against the configured keys; :meth:`verify` gives the identity."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._public_key: Any = None
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_client: jwt.PyJWKClient | None = None
        if settings.jwt_public_key_file:
            try:
                pem = Path(settings.jwt_public_key_file).read_bytes()
                self._public_key = _load_public_key(pem)
            except (OSError, ValueError, TypeError) as exc:
                raise SettingsError(
                    f"DATAWORKFLOWS_JWT_PUBLIC_KEY_FILE={settings.jwt_public_key_file!r}: "
                    f"not a readable PEM public key ({exc})"
                ) from None
        source = settings.jwt_jwks
        if source and source.startswith(("http://", "https://")):
            self._jwks_client = jwt.PyJWKClient(source, cache_keys=True, lifespan=300)
        elif source:
            try:
                self._jwks = jwt.PyJWKSet.from_json(Path(source).read_text())
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                raise SettingsError(
                    f"DATAWORKFLOWS_JWT_JWKS={source!r}: not a readable JWKS ({exc})"
                ) from None

    @property
    def configured(self) -> bool:
        """True when some key is set: JWTs are accepted at all."""
        return bool(self.settings.jwt_secret or self._public_key or self._jwks or self._jwks_client)

    async def verify(self, token: str) -> Identity:
        """The identity a valid JWT carries; :class:`Unauthorized` otherwise."""
        if not self.configured:
            raise _refused("not an API token, and no JWT key is configured")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _refused("not an API token nor a well-formed JWT") from None
        algorithm = header.get("alg")
        key = await self._key(algorithm, header.get("kid"))
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway_seconds,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise _refused(str(exc)) from None
        tenant, role = claims.get(s.jwt_tenant_claim), claims.get(s.jwt_role_claim)
        if not isinstance(tenant, str) or not valid_tenant(tenant):
            raise _refused(f"claim {s.jwt_tenant_claim!r} is missing or not a valid tenant id")
        if role not in ROLES:
            raise _refused(f"claim {s.jwt_role_claim!r} must be one of {', '.join(ROLES)}")
        jti = claims.get("jti")
        return Identity(
            tenant=tenant,
            principal=str(claims["sub"])[:200],
            role=role,
            method="jwt",
            token_id=str(jti)[:200] if jti else None,
        )

    async def _key(self, algorithm: Any, kid: Any) -> Any:
        if algorithm in HMAC_ALGORITHMS and self.settings.jwt_secret:
            return self.settings.jwt_secret
        if algorithm not in PUBLIC_KEY_ALGORITHMS:
            raise _refused(f"algorithm {algorithm!r} is not accepted")
        if self._jwks is not None or self._jwks_client is not None:
            return (await self._jwk(kid)).key
        if self._public_key is not None:
            return self._public_key
        raise _refused(f"algorithm {algorithm!r} is not accepted")

    async def _jwk(self, kid: Any) -> jwt.PyJWK:
        if self._jwks_client is not None:
            client = self._jwks_client
            try:
                if kid is not None:  # refetches the set when the kid is new (key rotation)
                    return await asyncio.to_thread(client.get_signing_key, kid)
                keys = await asyncio.to_thread(client.get_jwk_set)
            except jwt.PyJWKClientConnectionError as exc:
                raise JwksUnavailable(f"the JWKS could not be read: {exc}") from None
            except jwt.PyJWKClientError as exc:
                raise _refused(str(exc)) from None
        else:
            assert self._jwks is not None
            keys = self._jwks
        for key in keys.keys:
            if kid is None or key.key_id == kid:
                return key
        raise _refused(f"no key with kid {kid!r} in the JWKS")


def _load_public_key(pem: bytes) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    return load_pem_public_key(pem)
