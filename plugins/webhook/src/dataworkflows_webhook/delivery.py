"""The ``POST /hooks/{trigger_id}`` handler of the ``webhook`` trigger: each delivery is
checked in the order :mod:`dataworkflows_webhook.trigger` documents, then fires the trigger.
aiohttp is imported when the handler is made (``register_routes``), not with the plugin."""

from __future__ import annotations

import hmac
import math
from datetime import UTC
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from dataworkflows import CredentialError, JSONLimitError, loads_limited
from dataworkflows_webhook.trigger import (
    DROPPED_HEADERS,
    STANDARD_HEADERS,
    IntakeLimit,
    SignatureConfig,
    Webhook,
    WebhookConfig,
    sign,
    sign_standard,
)

if TYPE_CHECKING:
    from aiohttp import web

    from dataworkflows.plugin_api import PluginAPI
    from dataworkflows.settings import Settings


def _error(status: int, code: str, message: str, details: Any = None) -> web.Response:
    from aiohttp import web  # imported when a delivery arrives, not with the plugin

    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return web.json_response(body, status=status)


def _missing_header(header: str) -> web.Response:
    """401 ``missing_signature``: the request lacks the signature header ``header``."""
    return _error(401, "missing_signature", f"the {header} header is missing", {"header": header})


class _TooLarge(Exception):
    pass


async def _read_limited(request: web.Request, limit: int) -> bytes:
    """The raw body, or :class:`_TooLarge` as soon as it passes ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _timestamp_problem(
    config: SignatureConfig, header: str, value: str, now: float
) -> web.Response | None:
    """401 unless ``value`` is Unix seconds within ``toleranceSeconds`` of ``now``."""
    try:
        sent = int(value)
    except ValueError:
        return _error(401, "invalid_signature", f"{header} must be Unix seconds")
    if abs(now - sent) > config.tolerance_seconds:
        return _error(
            401,
            "stale_timestamp",
            f"the signature timestamp is more than {config.tolerance_seconds} s "
            "away from the server's clock",
            {"toleranceSeconds": config.tolerance_seconds},
        )
    return None


def _verify_standard(
    config: SignatureConfig, secret: str, request: web.Request, body: bytes, now: float
) -> web.Response | None:
    """Standard Webhooks: the three headers, the timestamp window, any ``v1`` signature."""
    values = {name: request.headers.get(name, "").strip() for name in STANDARD_HEADERS}
    missing = [name for name, value in values.items() if not value]
    if missing:
        return _error(
            401,
            "missing_signature",
            f"the {', '.join(missing)} header(s) of Standard Webhooks are missing",
            {"headers": missing},
        )
    stale = _timestamp_problem(config, "webhook-timestamp", values["webhook-timestamp"], now)
    if stale is not None:
        return stale
    try:
        expected = sign_standard(
            secret, values["webhook-id"], int(values["webhook-timestamp"]), body
        ).encode()
    except ValueError as exc:
        return _error(503, "signature_secret_invalid", str(exc))
    for candidate in values["webhook-signature"].split():
        if hmac.compare_digest(expected, candidate.encode("utf-8", "replace")):
            return None
    return _error(
        401, "invalid_signature", "no webhook-signature matches the id, timestamp and body"
    )


def _verify(
    config: SignatureConfig, secret: str, request: web.Request, body: bytes, now: float
) -> web.Response | None:
    if config.scheme == "standard-webhooks":
        return _verify_standard(config, secret, request, body, now)
    provided = request.headers.get(config.header)
    if not provided:
        return _missing_header(config.header)
    timestamp: str | None = None
    if config.timestamp_header is not None:
        timestamp = request.headers.get(config.timestamp_header)
        if not timestamp:
            return _missing_header(config.timestamp_header)
        stale = _timestamp_problem(config, config.timestamp_header, timestamp, now)
        if stale is not None:
            return stale
    expected = (config.prefix + sign(secret, body, timestamp)).encode()
    if not hmac.compare_digest(expected, provided.strip().encode("utf-8", "replace")):
        return _error(401, "invalid_signature", "the signature does not match the body")
    return None


def _headers(request: web.Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        if key in DROPPED_HEADERS:
            continue
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _multi(pairs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            out[key] = [*out[key], value] if isinstance(out[key], list) else [out[key], value]
        else:
            out[key] = value
    return out


def _parse_body(request: web.Request, body: bytes, settings: Settings) -> Any:
    """Parsed body, or an error response (415/400); JSON within the engine's depth and
    number-length limits (checked before parsing: 400 ``json_limit_exceeded``)."""
    if not body:
        return None
    if "Content-Type" not in request.headers:
        return _error(
            415, "unsupported_media_type", "a Content-Type header is required with a body"
        )
    mime = request.content_type.lower()
    try:
        if mime == "application/json" or mime.endswith("+json"):
            return loads_limited(
                body.decode(request.charset or "utf-8"),
                max_depth=settings.json_max_depth,
                max_number_length=settings.json_max_number_length,
            )
        if mime == "application/x-www-form-urlencoded":
            text = body.decode(request.charset or "utf-8")
            return _multi(parse_qsl(text, keep_blank_values=True))
        if mime.startswith("text/"):
            return body.decode(request.charset or "utf-8")
    except JSONLimitError as exc:
        return _error(
            400,
            "json_limit_exceeded",
            f"the {mime} body is refused before parsing: {exc}",
            {"limit": exc.limit, "maximum": exc.maximum},
        )
    except (ValueError, LookupError) as exc:
        return _error(400, "malformed_body", f"the {mime} body cannot be parsed: {exc}")
    return _error(
        415,
        "unsupported_media_type",
        f"{mime} is not accepted; send application/json, "
        "application/x-www-form-urlencoded or text/*",
        {"contentType": mime},
    )


async def _unavailable(api: PluginAPI, trigger_id: str, code: str, message: str) -> web.Response:
    """503: the trigger's own set-up fails (not the sender's fault); shown as its lastError."""
    await api.record_trigger_error(trigger_id, code, message)
    return _error(503, code, message)


async def _over_limit(api: PluginAPI, trigger_id: str, limit: IntakeLimit) -> web.Response | None:
    """429 with ``Retry-After`` when the trigger's intake bucket is empty, else None."""
    retry_after = await api.check_rate_limit(f"trigger:{trigger_id}", limit.per_second, limit.burst)
    if retry_after is None:
        return None
    seconds = max(1, math.ceil(retry_after))
    response = _error(
        429,
        "rate_limited",
        f"this trigger accepts {limit.per_second:g} deliveries per second; retry after {seconds} s",
        {
            "limit": {"perSecond": limit.per_second, "burst": limit.burst},
            "retryAfterSeconds": seconds,
        },
    )
    response.headers["Retry-After"] = str(seconds)
    return response


def _delivery_id(config: WebhookConfig, request: web.Request) -> str | None:
    """Standard Webhooks: the signed ``webhook-id``; else ``deliveryIdHeader``'s value."""
    if config.signature is not None and config.signature.scheme == "standard-webhooks":
        return request.headers.get("webhook-id") or None
    header = config.delivery_id_header
    return (request.headers.get(header) if header else None) or None


def make_handler(api: PluginAPI) -> Any:
    """The ``POST /hooks/{trigger_id}`` handler bound to the kernel's plugin API."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        trigger_id = request.match_info["trigger_id"]
        trigger = await api.get_trigger(trigger_id)
        if trigger is None or trigger.type != Webhook.type or not trigger.enabled:
            return _error(404, "trigger_not_found", "no enabled webhook trigger has this id")
        config: WebhookConfig = trigger.config
        limit = config.max_body_bytes or api.settings.max_body_bytes
        try:
            body = await _read_limited(request, limit)
        except _TooLarge:
            return _error(
                413,
                "payload_too_large",
                f"the request body is larger than the limit of {limit} bytes",
                {"maxBytes": limit},
            )
        now = api.clock.now()
        if config.signature is not None:
            sig = config.signature
            try:
                secret = (
                    sig.secret.get_secret_value()
                    if sig.secret is not None
                    else await api.resolve_secret(sig.secret_name or "", trigger.tenant_id)
                )
            except CredentialError as exc:
                return await _unavailable(
                    api, trigger.id, "signature_secret_unavailable", exc.message
                )
            if not secret:
                return await _unavailable(
                    api,
                    trigger.id,
                    "signature_secret_missing",
                    f"the credential {sig.secret_name!r} this trigger verifies with is not "
                    "available: store it (dataworkflows credentials set) or fix secretName",
                )
            failure = _verify(sig, secret, request, body, now.timestamp())
            if failure is not None:
                return failure
        if config.rate_limit is not None:
            refused = await _over_limit(api, trigger.id, config.rate_limit)
            if refused is not None:
                return refused
        parsed = _parse_body(request, body, api.settings)
        if isinstance(parsed, web.Response):
            return parsed
        delivery_id = _delivery_id(config, request)
        event = {
            "body": parsed,
            "headers": _headers(request),
            "query": _multi(request.query.items()),
            "method": request.method,
            "path": request.path,
            "contentType": request.content_type if body else None,
            "deliveryId": delivery_id,
            "receivedAt": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        }
        result = await api.fire_trigger(
            trigger,
            event,
            key=f"delivery:{delivery_id}" if delivery_id else None,
            correlation_id=(request.headers.get("Correlation-Id") or delivery_id or "")[:200]
            or None,
        )
        if not result.activated:
            # The condition's error is the trigger owner's business (its lastError and
            # conditionErrors counter), not the sender's: it never sees the expression.
            return web.json_response({"activated": False, "reason": result.outcome}, status=200)
        execution_id = result.execution_id
        return web.json_response(
            {
                "executionId": execution_id,
                "statusUrl": f"/api/v1/executions/{execution_id}",
                "activated": True,
                "duplicate": not result.created,
            },
            status=202,
            headers={"Location": f"/api/v1/executions/{execution_id}"},
        )

    return handle
