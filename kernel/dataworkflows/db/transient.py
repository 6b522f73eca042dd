"""Which database errors are worth trying again, and how to try again.

A *transient* error says nothing about the data being written: the connection was lost
(network, ``pg_terminate_backend``, a server restart or failover), the server asked the
transaction to be retried (serialization failure, deadlock), or SQLite was busy. Writing the
same rows again on a fresh connection may succeed. Every other error (a constraint, a value
the database refuses) is *permanent* for those rows: trying again cannot help.

The ledger's writers retry transient errors themselves, with bounded exponential backoff,
so that a dropped connection costs a run a few milliseconds, not its lease and a recovery.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)

T = TypeVar("T")

#: SQLSTATE classes and codes of PostgreSQL errors that are about the session, not the data:
#: 08 connection exception, 40001 serialization failure, 40P01 deadlock, 57P01..57P03
#: admin/crash shutdown and "cannot connect now", 53300 too many connections
_TRANSIENT_SQLSTATE_PREFIXES = ("08",)
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "53300"})
_SQLITE_TRANSIENT = ("database is locked", "database is busy", "database table is locked")


def is_transient(error: BaseException) -> bool:
    """True when ``error`` is a database error that a fresh attempt may not meet again."""
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        return _is_transient_driver_error(error.orig)
    if isinstance(error, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return True  # TimeoutError: no pooled connection became free in time
    return _is_transient_driver_error(error)


def is_data_error(error: BaseException) -> bool:
    """True when the database refused a *value* (SQLSTATE class 22, "data exception": a
    character or number it cannot store, JSON it cannot parse), as opposed to a fault of
    the connection, the schema or the server."""
    if isinstance(error, sa_exc.DataError):
        return True
    orig = error.orig if isinstance(error, sa_exc.DBAPIError) else error
    sqlstate = getattr(orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("22")


def _is_transient_driver_error(error: BaseException | None) -> bool:
    if error is None:
        return False
    sqlstate = getattr(error, "sqlstate", None)  # psycopg 3
    if isinstance(sqlstate, str):
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
    module = type(error).__module__
    if module.startswith("psycopg"):
        # no SQLSTATE: the client noticed the connection is gone (OperationalError with a
        # closed socket, "the connection is closed", ...)
        return type(error).__name__ in ("OperationalError", "InterfaceError")
    if isinstance(error, sqlite3.OperationalError):
        message = str(error).lower()
        return any(text in message for text in _SQLITE_TRANSIENT)
    return isinstance(error, ConnectionError)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter for transient database errors."""

    attempts: int = 8
    initial_delay: float = 0.02
    max_delay: float = 2.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.max_delay, self.initial_delay * 2 ** (retry - 1))
        return random.uniform(ceiling / 2, ceiling)


DEFAULT_RETRY = RetryPolicy()


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    policy: RetryPolicy = DEFAULT_RETRY,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Await ``operation()``; when it fails with a transient error, try again (bounded).

    Each attempt must open its own transaction (a failed one is rolled back and its
    connection discarded by the pool). ``on_retry`` runs before every new attempt, to undo
    in-memory effects of the failed one. The last error is raised when attempts run out.
    """
    retry = 0
    while True:
        try:
            return await operation()
        except Exception as exc:
            retry += 1
            if not is_transient(exc) or retry >= policy.attempts:
                raise
            delay = policy.delay(retry)
            log.warning(
                "%s: transient database error (%s); retrying in %.0f ms (%d/%d)",
                what,
                short_error(exc),
                delay * 1000,
                retry,
                policy.attempts - 1,
            )
            if on_retry is not None:
                on_retry()
            await asyncio.sleep(delay)


def short_error(error: BaseException) -> str:
    """``Type: first line`` of an error, without the SQL and parameters SQLAlchemy adds."""
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
