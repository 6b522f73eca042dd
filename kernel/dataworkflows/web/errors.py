"""One middleware turns every error into ``{code, message, details}`` with the right status."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from dataworkflows.errors import ApiError
from dataworkflows.web.keys import kernel_key

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return web.json_response(body, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response(exc.body(), status=exc.status)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[kernel_key].settings.max_body_bytes
        return error_response(
            413,
            "payload_too_large",
            f"the request body is larger than the limit of {limit} bytes",
            {"maxBytes": limit},
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        return error_response(exc.status, _HTTP_CODES.get(exc.status, "http_error"), message)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed to handle the request")


async def read_json_object(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object; 400 for malformed JSON, 422 for a non-object."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ApiError(
                "the request body is empty; a JSON object is expected", code="empty_body"
            )
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            f"the request body is not valid JSON: {exc}", code="malformed_json"
        ) from None
    if not isinstance(data, dict):
        err = ApiError(
            f"the request body must be a JSON object, not {type(data).__name__}",
            code="invalid_request",
        )
        err.status = 422
        raise err
    return data
