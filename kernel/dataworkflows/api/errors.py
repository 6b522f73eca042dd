"""One middleware turns every error into ``{code, message, details}`` with the right status."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from dataworkflows.api.keys import kernel_key
from dataworkflows.common.errors import ApiError, Unprocessable
from dataworkflows.common.jsonlimits import JSONLimitError, loads_limited

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
    """The error body every answer ≥ 400 has: ``{code, message, details}`` (``details``
    is ``{}`` when there is nothing to add)."""
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "details": details if details is not None else {},
    }
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
        details: dict[str, Any] = {}
        if exc.status == 404:
            message = f"there is no {request.path!r}: see /api/v1/openapi.json for the routes"
            details = {"path": request.path}
        elif exc.status == 405:
            allowed = sorted(
                {m.strip() for m in exc.headers.get("Allow", "").split(",") if m.strip()}
            )
            message = f"{request.method} is not allowed on {request.path!r}"
            details = {"method": request.method, "allowed": allowed}
        response = error_response(
            exc.status, _HTTP_CODES.get(exc.status, "http_error"), message, details
        )
        if "Allow" in exc.headers:  # 405: which methods the path does take
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "the server failed to handle the request")


async def read_json_object(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object.

    400 ``empty_body`` / ``malformed_json`` (also ``NaN``/``Infinity``, which are not JSON,
    and floats out of range); 400 ``json_limit_exceeded`` for nesting deeper than
    ``json_max_depth`` or a number longer than ``json_max_number_length`` (found before
    parsing, see :mod:`dataworkflows.common.jsonlimits`); 422 ``invalid_request`` for a value
    that is not an object, and for strings no database can store (NUL characters, lone surrogates).
    """
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ApiError(
                "the request body is empty; a JSON object is expected", code="empty_body"
            )
        return {}
    settings = request.app[kernel_key].settings
    try:
        data = loads_limited(
            raw,
            max_depth=settings.json_max_depth,
            max_number_length=settings.json_max_number_length,
        )
    except JSONLimitError as exc:
        raise ApiError(
            f"the request body is refused before parsing: {exc}",
            code="json_limit_exceeded",
            details={"limit": exc.limit, "maximum": exc.maximum},
        ) from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}",
            code="malformed_json",
            details={"line": exc.lineno, "column": exc.colno},
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            f"the request body is not valid JSON: {exc}", code="malformed_json", details={}
        ) from None
    except RecursionError:
        raise ApiError(
            "the request body is nested too deeply to parse", code="malformed_json"
        ) from None
    if not isinstance(data, dict):
        raise Unprocessable(
            f"the request body must be a JSON object, not {type(data).__name__}",
            code="invalid_request",
        )
    bad = _unstorable_string(data)
    if bad is not None:
        raise Unprocessable(
            "strings in the request body must not contain NUL characters or lone surrogates",
            code="invalid_request",
            details={"path": bad},
        )
    return data


def _unstorable_string(data: Any) -> str | None:
    """The JSON path of the first key or string value the database cannot store, or None."""
    stack: list[tuple[str, Any]] = [("$", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if not _storable(key):
                    return path
                stack.append((f"{path}.{key}", item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str) and not _storable(value):
            return path
    return None


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
