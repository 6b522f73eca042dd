"""Reading rows in the order their transactions committed (the live event stream's cursor).

On PostgreSQL a ``bigserial`` id is taken when a row is inserted, not when its transaction
commits: transaction T1 inserts id 10, T2 inserts id 11 and commits first. A reader that
has seen 11 and then asks for ``id > 11`` never sees 10. So every ``execution_events`` row
also records its writing transaction's id (``commit_xid``, :class:`current_xid`, filled by
the INSERT itself: no extra statement), and a reader only takes rows of transactions older
than the oldest one still in progress in its snapshot (:class:`snapshot_xmin`): those are
all finished, and every transaction that writes later has a larger id. Ordered by
``(commit_xid, id)`` and read up to that bound, rows form an append-only sequence that a
``(commit_xid, id)`` cursor can resume without a gap or a duplicate.

Transaction ids here are PostgreSQL's 64-bit ``xid8`` (``pg_current_xact_id()``, 13+),
which never wrap around. SQLite serialises writers (one write transaction at a time), so its
ids are already commit-ordered: ``commit_xid`` is 0 and every row is settled.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

#: larger than any transaction id: on SQLite every committed row is settled
_ALL_SETTLED = 2**63 - 1


class current_xid(FunctionElement[int]):
    """The writing transaction's id (``pg_current_xact_id()``); 0 on SQLite."""

    type = BigInteger()
    inherit_cache = True
    name = "current_xid"


class snapshot_xmin(FunctionElement[int]):
    """The oldest transaction id still in progress in the statement's snapshot: every
    transaction below it has ended. On SQLite, a bound above every id."""

    type = BigInteger()
    inherit_cache = True
    name = "snapshot_xmin"


@compiles(current_xid, "postgresql")
def _current_xid_pg(element: Any, compiler: Any, **kw: Any) -> str:
    return "CAST(CAST(pg_current_xact_id() AS TEXT) AS BIGINT)"


@compiles(current_xid)
def _current_xid_other(element: Any, compiler: Any, **kw: Any) -> str:
    return "0"


@compiles(snapshot_xmin, "postgresql")
def _snapshot_xmin_pg(element: Any, compiler: Any, **kw: Any) -> str:
    return "CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT)"


@compiles(snapshot_xmin)
def _snapshot_xmin_other(element: Any, compiler: Any, **kw: Any) -> str:
    return str(_ALL_SETTLED)
