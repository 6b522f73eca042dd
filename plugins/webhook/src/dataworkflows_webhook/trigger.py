"""``webhook``: start runs from HTTP calls to ``POST /hooks/{triggerId}``.

Each delivery is checked in this order, and the first failure answers:

1. the trigger exists, is a webhook and is enabled → else **404** ``trigger_not_found``;
2. the body fits ``maxBodyBytes`` (default: the engine's ``DATAWORKFLOWS_MAX_BODY_BYTES``)
   → else **413** ``payload_too_large`` (from ``Content-Length`` before reading, or while
   reading a chunked body);
3. with ``signature`` configured: with ``scheme: "standard-webhooks"`` (recommended), a
   ``v1`` signature of ``webhook-signature`` matches the HMAC-SHA256 of
   ``"<webhook-id>.<webhook-timestamp>.<body>"``; with the default ``hmac-sha256``, an
   HMAC-SHA256 of the raw body (prefixed by ``"<timestamp>."`` when ``timestampHeader``
   is set) matches the signature header; compared in constant time, and the timestamp is
   within ``toleranceSeconds`` of the engine's clock → else **401**
   (``missing_signature``, ``invalid_signature``, ``stale_timestamp``);
4. with ``rateLimit`` configured: the trigger's token bucket has room → else **429**
   ``rate_limited`` with ``Retry-After`` (nothing is queued);
5. the body parses: JSON (``application/json``, ``*/*+json``), form fields
   (``application/x-www-form-urlencoded``) or text (``text/*``) → else **415**
   ``unsupported_media_type`` or **400** ``malformed_body``;
6. the kernel evaluates the trigger's ``activationCondition`` and queues the run.

Answers: **202** ``{"executionId", "statusUrl", "activated": true, "duplicate"}`` once
the run is durably queued (never waiting for the run; a failed insert is a 5xx);
**200** ``{"activated": false, "reason"}`` when the activation condition is false;
**409** ``workflow_not_active``. The same delivery id (``webhook-id`` with Standard
Webhooks, else ``deliveryIdHeader``) twice starts one run and both calls get 202 with the
same execution id.

The run's ``trigger`` (templates) is::

    {"body": <parsed body or null>, "headers": {<lower-case name>: <value>},
     "query": {<name>: <value or list>}, "method": "POST", "path": "/hooks/<id>",
     "contentType": "application/json", "deliveryId": <header value or null>,
     "receivedAt": "<ISO 8601 UTC>", "triggerId": "<id>", "triggerType": "webhook"}

``Authorization``, ``Cookie`` and ``Proxy-Authorization`` headers are not passed on.
Payload values are data: they are never rendered as templates.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.alias_generators import to_camel

from dataworkflows import CredentialError, TriggerType

if TYPE_CHECKING:
    from dataworkflows.plugin_api import PluginAPI

__all__ = [
    "ROUTE",
    "IntakeLimit",
    "SignatureConfig",
    "Webhook",
    "WebhookConfig",
    "sign",
    "sign_standard",
]

ROUTE = "/hooks/{trigger_id}"
#: headers that never reach the run's payload
DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
#: the hard ceiling of a per-trigger maxBodyBytes
MAX_BODY_CEILING = 100 * 1024 * 1024


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        use_attribute_docstrings=True,  # field docstrings: the schema's descriptions
    )


class SignatureConfig(_Model):
    """Request signing: Standard Webhooks (recommended) or a generic HMAC-SHA256 header.

    ``standard-webhooks`` (https://www.standardwebhooks.com): the sender signs
    ``"<webhook-id>.<webhook-timestamp>.<body>"`` with HMAC-SHA256 under the base64 key of
    a ``whsec_...`` secret and sends ``webhook-id``, ``webhook-timestamp`` (Unix seconds)
    and ``webhook-signature`` (``v1,<base64>``, several separated by spaces while keys
    rotate). The delivery id is signed, so a captured delivery cannot be replayed as a new
    one, and ``webhook-id`` is the delivery id that deduplicates.

    ``hmac-sha256`` (the default, for senders that cannot do the above): the sender
    computes ``hex(HMAC-SHA256(secret, message))`` where ``message`` is the raw body, or
    ``"<timestamp>." + body`` when ``timestampHeader`` is set, and sends ``prefix + hex``
    in ``header``. The delivery id header is not signed: within the tolerance window a
    signed body can be sent again under another delivery id.
    """

    scheme: Literal["hmac-sha256", "standard-webhooks"] = "hmac-sha256"
    """``standard-webhooks`` (recommended: the delivery id is signed) or ``hmac-sha256``
    (a signature header over the body and a timestamp). Default: ``hmac-sha256``."""

    #: the shared secret, stored with the trigger; ``SecretStr`` declares it secret, so
    #: the kernel encrypts it at rest and shows it as ``**********``
    secret: SecretStr | None = None
    """The shared secret, stored with the trigger (encrypted at rest) and shown as
    ``**********``. Give exactly one of ``secret`` and ``secretName``."""
    #: or: the name of a credential, resolved by the kernel's one resolver (encrypted
    #: store, providers, environment; see ``PluginAPI.resolve_secret``)
    secret_name: str | None = None
    """Or: the name of a credential holding the shared secret (the credential store, a
    credential provider or ``DATAWORKFLOWS_CREDENTIAL_<NAME>``)."""
    header: str = "X-Signature-256"
    """hmac-sha256: the request header carrying the signature. Default:
    ``X-Signature-256``."""
    prefix: str = "sha256="
    """hmac-sha256: text before the hex digest in the signature header. Default:
    ``sha256=``."""
    #: None: the body alone is signed and no replay window is enforced
    timestamp_header: str | None = "X-Signature-Timestamp"
    """hmac-sha256: the header carrying the signing time (Unix seconds); the signed
    message is then
    ``"<timestamp>." + body``. Default: ``X-Signature-Timestamp``. null: the body alone
    is signed and old deliveries are not refused."""
    tolerance_seconds: int = Field(default=300, ge=1, le=86400)
    """How far, in seconds, the signing time may be from the engine's clock (1 to 86400,
    default 300); older or newer deliveries are refused (401 ``stale_timestamp``)."""

    @model_validator(mode="after")
    def _one_secret(self) -> SignatureConfig:
        if (self.secret is None) == (self.secret_name is None):
            raise ValueError("give exactly one of secret and secretName")
        if self.secret is not None and not self.secret.get_secret_value():
            raise ValueError("secret must not be empty")
        if self.scheme == "standard-webhooks" and self.secret is not None:
            try:
                standard_key(self.secret.get_secret_value())
            except ValueError as exc:
                raise ValueError(str(exc)) from None
        return self


class IntakeLimit(_Model):
    """How many deliveries this trigger accepts: a token bucket of ``perSecond`` with bursts
    of ``burst``, shared by every engine process on PostgreSQL. A delivery over it gets
    **429** ``rate_limited`` with ``Retry-After`` and starts nothing."""

    per_second: float = Field(gt=0, le=100_000)
    """Deliveries per second on average (more than 0, at most 100000)."""
    burst: int = Field(default=0, ge=0, le=1_000_000)
    """Deliveries accepted at once after a quiet spell (0 to 1000000). Default 0: one
    second's worth (``perSecond`` rounded up, at least 1)."""


class WebhookConfig(_Model):
    """Configuration of a ``webhook`` trigger: each ``POST /hooks/{triggerId}`` starts a
    run whose ``trigger`` holds the request's parsed body, headers and query."""

    signature: SignatureConfig | None = None
    """Check an HMAC-SHA256 signature of each delivery (401 when it does not match).
    Default: null, no check: anyone who knows the URL can start runs."""
    #: the header carrying the sender's delivery id (dedup); None: every call is new
    delivery_id_header: str | None = "X-Delivery-Id"
    """The header carrying the sender's delivery id: a delivery id seen before starts no
    second run. Default: ``X-Delivery-Id``. null: every call starts a run."""
    #: body size limit for this trigger; None: the engine's max_body_bytes
    max_body_bytes: int | None = Field(default=None, ge=1, le=MAX_BODY_CEILING)
    """The largest request body accepted, in bytes (at most 104857600, 100 MiB); larger
    ones get 413. Default: the engine's ``DATAWORKFLOWS_MAX_BODY_BYTES``."""
    rate_limit: IntakeLimit | None = None
    """Deliveries accepted per second (checked after the signature, so forged calls use
    none of it); over it, 429 with ``Retry-After`` and no run. Default: null, no limit."""


def sign(secret: str | bytes, body: bytes, timestamp: int | str | None = None) -> str:
    """The hex signature a sender puts after the prefix (useful in tests and clients)."""
    key = secret.encode() if isinstance(secret, str) else secret
    message = body if timestamp is None else f"{timestamp}.".encode() + body
    return hmac.new(key, message, hashlib.sha256).hexdigest()


STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_<base64>`` (or the bare base64);
    raises ValueError for anything else."""
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "a standard-webhooks secret is 'whsec_' followed by base64 (e.g. "
            "'whsec_' + base64 of 24 random bytes)"
        ) from None
    if not key:
        raise ValueError("a standard-webhooks secret must not be empty")
    return key


def sign_standard(secret: str, delivery_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``webhook-signature`` value a Standard Webhooks sender sends: ``v1,<base64>``."""
    message = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_key(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class Webhook(TriggerType):
    """Runs started by HTTP deliveries to ``POST /hooks/{triggerId}``."""

    type = "webhook"
    title = "Start runs from HTTP calls to /hooks/{triggerId} (HMAC-SHA256, dedup)"
    Config = WebhookConfig

    @classmethod
    def describe(cls, trigger_id: str, config: WebhookConfig) -> dict[str, Any]:
        return {"path": ROUTE.format(trigger_id=trigger_id), "method": "POST"}

    @classmethod
    async def check(
        cls, config: WebhookConfig, api: PluginAPI, tenant_id: str
    ) -> list[dict[str, str]]:
        """A ``secretName`` that names no credential (yet): deliveries would get 503."""
        name = config.signature.secret_name if config.signature else None
        if not name:
            return []
        try:
            found = await api.resolve_secret(name, tenant_id) is not None
        except CredentialError as exc:
            return [{"code": "secret_unavailable", "message": exc.message}]
        if found:
            return []
        return [
            {
                "code": "secret_missing",
                "message": f"the credential {name!r} this trigger verifies signatures with "
                "does not exist: store it (dataworkflows credentials set, or POST "
                "/api/v1/credentials); until then deliveries are answered 503",
            }
        ]
