"""Keyset pagination for every list endpoint: ``?limit=`` and an opaque ``?cursor=``.

A page is ``{"items": [...], "nextCursor": "..." | null}``. The cursor encodes the sort key
of the last item returned (never an offset), so pages stay stable while rows are added:
the next page continues strictly after that item in the list's fixed order. A cursor
belongs to one kind of list; any other, or a tampered one, is a 422 ``invalid_cursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dataworkflows.common.errors import Unprocessable

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
#: the largest value an ``Integer`` column holds (bigger query values are refused up front)
MAX_INT = 2**31 - 1


@dataclass(frozen=True)
class PageRequest:
    """What a client asked for: at most ``limit`` items after the ``after`` key."""

    limit: int
    after: tuple[Any, ...] | None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**63 - 1:
        raise ValueError("not an int")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


def _datetime(value: Any) -> datetime:
    parsed = datetime.fromisoformat(_str(value))
    if parsed.tzinfo is None:
        raise ValueError("naive datetime")
    return parsed.astimezone(UTC)


def _uuid(value: Any) -> uuid.UUID:
    return uuid.UUID(_str(value))


#: how each kind of list decodes the parts of its sort key
KEYS: dict[str, tuple[Callable[[Any], Any], ...]] = {
    "workflows": (_str,),
    "versions": (_int,),
    "audit": (_int,),
    "executions": (_datetime, _uuid),
    "events": (_int,),
    "deadLetters": (_datetime, _uuid),
    "triggers": (_datetime, _str),
    "credentials": (_str,),
    "templates": (_str,),
    "workflowTemplates": (_str,),
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def encode_cursor(kind: str, key: Sequence[Any]) -> str:
    """The opaque cursor continuing a ``kind`` list after the item whose sort key is ``key``."""
    raw = json.dumps({"k": kind, "v": [_jsonable(v) for v in key]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> tuple[Any, ...]:
    """The sort key inside ``cursor``; a 422 ``invalid_cursor`` if it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(data, dict) or data.get("k") != kind:
            raise ValueError("another list's cursor")
        parts = data.get("v")
        decoders = KEYS[kind]
        if not isinstance(parts, list) or len(parts) != len(decoders):
            raise ValueError("wrong key length")
        return tuple(decode(part) for decode, part in zip(decoders, parts, strict=True))
    except (ValueError, TypeError, UnicodeError, binascii.Error, OverflowError):
        raise Unprocessable(
            "cursor is not a cursor of this list; pass the nextCursor of a previous page",
            code="invalid_cursor",
            details={"parameter": "cursor"},
        ) from None


def parse_int(
    query: Mapping[str, str], name: str, low: int, high: int, *, what: str = "an integer"
) -> int | None:
    """``?<name>=``: digits for an integer from ``low`` to ``high``, or None when absent
    (422 ``invalid_query`` naming the parameter otherwise)."""
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
        if not raw.strip().isdigit() or not low <= value <= high:
            raise ValueError
    except ValueError:
        raise Unprocessable(
            f"{name} must be {what} from {low} to {high}",
            code="invalid_query",
            details={"parameter": name, "value": raw[:100]},
        ) from None
    return value


def parse_limit(query: Mapping[str, str], *, default: int = DEFAULT_LIMIT) -> int:
    """``?limit=``: an integer from 1 to :data:`MAX_LIMIT` (422 ``invalid_query`` otherwise)."""
    limit = parse_int(query, "limit", 1, MAX_LIMIT)
    return default if limit is None else limit


def parse_page(query: Mapping[str, str], kind: str) -> PageRequest:
    """``?limit=&cursor=`` of a ``kind`` list."""
    limit = parse_limit(query)
    cursor = query.get("cursor")
    return PageRequest(limit, decode_cursor(kind, cursor) if cursor else None)


def page(
    kind: str,
    rows: Sequence[Mapping[str, Any]],
    request: PageRequest,
    key: Callable[[Mapping[str, Any]], Sequence[Any]],
    view: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """Build the response from ``rows`` fetched with ``LIMIT request.limit + 1``."""
    more = len(rows) > request.limit
    rows = rows[: request.limit]
    next_cursor = encode_cursor(kind, key(rows[-1])) if more and rows else None
    return {"items": [view(r) for r in rows], "nextCursor": next_cursor}


def parse_time(query: Mapping[str, str], name: str) -> datetime | None:
    """An ISO 8601 timestamp query parameter (no offset means UTC); 422 if malformed."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        parsed = datetime.fromisoformat(raw)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise Unprocessable(
            f"{name} must be an ISO 8601 timestamp, e.g. 2026-11-29T12:00:00Z",
            code="invalid_query",
            details={"parameter": name, "value": raw[:100]},
        ) from None


def parse_choice(query: Mapping[str, str], name: str, choices: Sequence[str]) -> str | None:
    """A query parameter that must be one of ``choices`` (absent: None)."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise Unprocessable(
            f"{name} must be one of {', '.join(choices)}",
            code="invalid_query",
            details={"parameter": name, "value": raw[:100], "allowed": list(choices)},
        )
    return raw
