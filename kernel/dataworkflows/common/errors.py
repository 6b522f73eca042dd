"""Errors that carry an HTTP status and the ``{code, message, details}`` body.

Services raise them; the web layer renders them; the CLI prints their message and exits
non-zero. A service that raises one has changed nothing.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def body(self) -> dict[str, Any]:
        """``{code, message, details}``: ``details`` is always there (``{}`` when the
        message says it all), so clients can read it without checking."""
        return {
            "code": self.code,
            "message": self.message,
            "details": self.details if self.details is not None else {},
        }


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    """No credential, or one that is unknown, expired, revoked or not for this API."""

    status = 401
    code = "unauthenticated"


class Forbidden(ApiError):
    """A valid credential whose role may not do this."""

    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Unprocessable(ApiError):
    status = 422
    code = "validation_failed"
