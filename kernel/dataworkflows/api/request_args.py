"""Reading a kernel request: the path's workflow id, flags, audit notes and body fields
(the checks the handlers of ``routes.py`` and ``run_routes.py`` share)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from aiohttp import web

from dataworkflows.api.middleware import audit_note
from dataworkflows.common.errors import Unprocessable
from dataworkflows.common.pagination import parse_page
from dataworkflows.engine.definitions import ID_PATTERN
from dataworkflows.service.audit import check_note
from dataworkflows.service.workflow_reads import workflow_not_found

TRUE = {"1", "true", "yes"}
FALSE = {"0", "false", "no", ""}
WORKFLOW_ID = re.compile(ID_PATTERN)


def flag(request: web.Request, name: str) -> bool:
    """A true/false query parameter (false when absent); 422 for anything else."""
    raw = request.query.get(name, "false").lower()
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise Unprocessable(
        f"query parameter {name} must be true or false",
        code="invalid_query",
        details={"parameter": name, "value": raw[:100]},
    )


def workflow_id(request: web.Request) -> str:
    """The path's workflow id; one no workflow can have is simply not found."""
    value = request.match_info["workflow_id"]
    if not WORKFLOW_ID.fullmatch(value):
        raise workflow_not_found(value[:200])
    return value


def no_unknown_fields(body: dict[str, Any], allowed: set[str]) -> None:
    """422 ``invalid_request`` naming the fields of ``body`` not in ``allowed``."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Unprocessable(
            f"unknown fields: {', '.join(unknown)}",
            code="invalid_request",
            details={"fields": unknown},
        )


def note(request: web.Request, body: dict[str, Any] | None = None) -> str | None:
    """The audit note: the body's ``note`` if given, else the ``X-Audit-Note`` header."""
    if body is not None and body.get("note") is not None:
        return check_note(body["note"])
    return audit_note(request)


def version_field(body: dict[str, Any]) -> int | None:
    """The body's optional ``version``: a positive integer."""
    version = body.get("version")
    if version is not None and (
        not isinstance(version, int) or isinstance(version, bool) or version < 1
    ):
        raise Unprocessable(
            "version must be a positive integer",
            code="invalid_request",
            details={"path": "$.version"},
        )
    return version


def page_query(request: web.Request, kind: str) -> Any:
    """The ``limit``/``cursor`` of a list of ``kind``."""
    return parse_page(request.query, kind)


def request_id_from_key(request: web.Request) -> str | None:
    """``idem:<Idempotency-Key>`` (hashed when long), or None without a key: the request id
    of a run queued without one of its own, so that a retry whose stored response was lost
    (its server died) still finds the first run, which is unique per request id."""
    key = request.headers.get("Idempotency-Key")
    if not key:
        return None
    return "idem:" + (key if len(key) <= 195 else hashlib.sha256(key.encode()).hexdigest())
