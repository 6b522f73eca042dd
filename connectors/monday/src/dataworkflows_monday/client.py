"""A small client for the monday.com GraphQL API v2 and its error responses.

Requests: ``POST https://api.monday.com/v2`` with ``{"query", "variables"}``, the API token
in the ``Authorization`` header (no ``Bearer`` prefix needed) and the ``API-Version``
header (e.g. ``2025-04``).

Errors come in two families. Transport-level ones have an HTTP status (``401``, ``403``,
``429``, ``5xx``) and usually a ``Retry-After`` header. Application-level ones come with
HTTP 200 and an ``errors`` array, each error having ``message`` and ``extensions.code``
(``COMPLEXITY_BUDGET_EXHAUSTED`` and ``RATE_LIMIT_EXCEEDED`` with
``extensions.retry_in_seconds``; ``UserUnauthorizedException``, ``InvalidColumnIdException``,
``ColumnValueException``...). Versions before 2025-01 also answer in legacy shapes:
``{"error_code", "status_code", "error_message", "errors": ["..."]}`` and
``{"errors": ["Not Authenticated"]}``; both are understood.

Classification: rate and complexity limits and server errors are retriable (after
``retry_in_seconds``, else ``Retry-After``, else the "reset in N seconds" of a legacy
message); authentication/permission errors and everything else (validation) are permanent.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from dataworkflows import ActionContext, ActionError, Credential

DEFAULT_API_URL = "https://api.monday.com/v2"
DEFAULT_API_VERSION = "2025-04"
API_URL_SETTING = "monday_api_url"
API_VERSION_SETTING = "monday_api_version"

RETRIABLE_CODES = frozenset(
    {
        "COMPLEXITY_BUDGET_EXHAUSTED",
        "ComplexityException",
        "RATE_LIMIT_EXCEEDED",
        "Rate Limit Exceeded",
        "RateLimitExceeded",
        "IP_RATE_LIMIT_EXCEEDED",
        "maxConcurrencyExceeded",
        "CONCURRENCY_LIMIT_EXCEEDED",
        "DAILY_LIMIT_EXCEEDED",
        "API_TEMPORARILY_BLOCKED",
        "INTERNAL_SERVER_ERROR",
        "InternalServerError",
    }
)
AUTH_CODES = frozenset(
    {
        "UNAUTHENTICATED",
        "Unauthorized",
        "UNAUTHORIZED",
        "UserUnauthorizedException",
        "USER_UNAUTHORIZED",
        "USER_ACCESS_DENIED",
        "missingRequiredPermissions",
        "Not Authenticated",
    }
)
_RESET_IN = re.compile(r"reset in (\d+(?:\.\d+)?) seconds?", re.IGNORECASE)
MAX_DETAIL = 2000


class MondayError(ActionError):
    """A failed monday.com call, already classified (retriable or permanent)."""


def _retry_after_header(headers: Any) -> float | None:
    raw = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except (TypeError, ValueError):
        return None


def _normalise_errors(body: Any) -> list[dict[str, Any]]:
    """Every error in a response body as ``{"message", "code", "extensions"}``."""
    if not isinstance(body, dict):
        return []
    out: list[dict[str, Any]] = []
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            extensions = error.get("extensions") or {}
            out.append(
                {
                    "message": str(error.get("message", "")),
                    "code": str(extensions.get("code") or ""),
                    "extensions": extensions,
                }
            )
        else:  # legacy: a list of strings
            out.append({"message": str(error), "code": "", "extensions": {}})
    legacy_code = body.get("error_code")
    if legacy_code or body.get("error_message"):
        message = str(body.get("error_message") or legacy_code)
        out = [e for e in out if e["message"] != message]
        out.insert(
            0,
            {
                "message": message,
                "code": str(legacy_code or ""),
                "extensions": {"status_code": body.get("status_code")},
            },
        )
    for error in out:
        if not error["code"] and error["message"] in AUTH_CODES:
            error["code"] = error["message"]
    return out


def classify(status: int, body: Any, headers: Any) -> MondayError | None:
    """The error a response stands for, or None when it succeeded."""
    errors = _normalise_errors(body)
    if status < 400 and not errors:
        return None
    codes = {e["code"] for e in errors}
    details: dict[str, Any] = {
        "status": status,
        "errors": [{"message": e["message"][:MAX_DETAIL], "code": e["code"]} for e in errors],
    }
    first = errors[0]["message"] if errors else f"HTTP {status}"
    retry_after = None
    for error in errors:
        seconds = error["extensions"].get("retry_in_seconds")
        if isinstance(seconds, int | float):
            retry_after = float(seconds)
            break
        match = _RESET_IN.search(error["message"])
        if match:
            retry_after = float(match.group(1))
            break
    if retry_after is None:
        retry_after = _retry_after_header(headers)
    if status == 429 or codes & RETRIABLE_CODES:
        code = "monday_rate_limited"
        if codes & {"COMPLEXITY_BUDGET_EXHAUSTED", "ComplexityException"}:
            code = "monday_complexity_budget_exhausted"
        return MondayError(
            f"monday.com rate limit: {first}",
            code=code,
            retriable=True,
            details=details,
            retry_after=retry_after,
        )
    if status >= 500:
        return MondayError(
            f"monday.com server error: {first}",
            code="monday_server_error",
            retriable=True,
            details=details,
            retry_after=retry_after,
        )
    if status in (401, 403) or codes & AUTH_CODES:
        return MondayError(
            f"monday.com refused the credentials: {first}",
            code="monday_auth_error",
            details=details,
        )
    return MondayError(
        f"monday.com rejected the request: {first}", code="monday_invalid_request", details=details
    )


async def graphql(
    ctx: ActionContext,
    credential: Credential,
    query: str,
    variables: dict[str, Any],
    *,
    timeout: float,
) -> dict[str, Any]:
    """Run one GraphQL operation; returns ``data`` or raises :class:`MondayError`."""
    url = ctx.settings.get(API_URL_SETTING) or DEFAULT_API_URL
    version = ctx.settings.get(API_VERSION_SETTING) or DEFAULT_API_VERSION
    host = urlsplit(url).hostname
    if not url.startswith(("https://", "http://")):
        raise MondayError(
            "DATAWORKFLOWS_MONDAY_API_URL must be an http(s) URL", code="invalid_setting"
        )
    if not credential.allows_host(host):
        raise MondayError(
            f"credential {credential.name!r} may not be sent to {host}",
            code="credential_host_not_allowed",
            details={"host": host, "allowedHosts": list(credential.allowed_hosts)},
        )
    import aiohttp  # imported when a request is sent, not with the plugin

    headers = {
        **ctx.propagation_headers(),  # the attempt's traceparent (tracing plugin)
        "Authorization": credential.secret,
        "API-Version": version,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    try:
        async with ctx.http.post(
            url,
            json={"query": query, "variables": variables},
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as resp:
            status, text = resp.status, await resp.text()
            response_headers = resp.headers
    except TimeoutError:
        raise MondayError(
            f"monday.com did not answer within {timeout:g} s", code="timeout", retriable=True
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise MondayError(
            f"cannot reach monday.com: {type(exc).__name__}: {exc}",
            code="connection_error",
            retriable=True,
        ) from None
    try:
        body = json.loads(text) if text.strip() else None
    except ValueError:
        body = None
    error = classify(status, body, response_headers)
    if error is not None:
        raise error
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise MondayError(
            "monday.com answered without a data object",
            code="monday_invalid_response",
            retriable=status >= 500,
            details={"status": status, "body": text[:MAX_DETAIL]},
        )
    return body["data"]
