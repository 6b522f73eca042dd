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

The bound is per database. A snapshot's in-progress list covers the whole server, so a
long transaction in another database (a bulk load, a report) would hold every stream back
for as long as it ran: shared fate across databases. Those transactions cannot write this
database's rows, so :class:`snapshot_xmin` skips the in-progress ids that
``pg_stat_activity`` (or ``pg_prepared_xacts``) shows belonging to another database, and
keeps every other one — including one that ended since the snapshot was taken (no longer
listed: it may have been ours). Where those views hide other sessions' ids (a role
without ``pg_read_all_stats``), nothing is skipped and the bound is the snapshot's xmin,
as before: slower to settle, never wrong.

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
    """The oldest transaction id still in progress in the statement's snapshot that may
    have written this database (see the module's docstring): every transaction of this
    database below it has ended. On SQLite, a bound above every id."""

    type = BigInteger()
    inherit_cache = True
    name = "snapshot_xmin"


@compiles(current_xid, "postgresql")
def _current_xid_pg(element: Any, compiler: Any, **kw: Any) -> str:
    return "CAST(CAST(pg_current_xact_id() AS TEXT) AS BIGINT)"


@compiles(current_xid)
def _current_xid_other(element: Any, compiler: Any, **kw: Any) -> str:
    return "0"


#: the oldest in-progress transaction of the statement's snapshot that may belong to this
#: database, else the snapshot's xmax (every transaction below it has ended). An xid8 is
#: matched to a backend's 32-bit ``backend_xid`` by its low 32 bits.
_SETTLED_BOUND_PG = """(
SELECT CAST(CAST(coalesce((
    SELECT min(xip) FROM pg_snapshot_xip(s.snap) AS xip
    WHERE NOT EXISTS (
        SELECT 1 FROM pg_stat_activity AS a
        WHERE a.backend_xid IS NOT NULL
          AND a.datid IS DISTINCT FROM (SELECT oid FROM pg_database
                                        WHERE datname = current_database())
          AND CAST(CAST(a.backend_xid AS TEXT) AS BIGINT)
              = mod(CAST(CAST(xip AS TEXT) AS BIGINT), 4294967296)
    ) AND NOT EXISTS (
        SELECT 1 FROM pg_prepared_xacts AS p
        WHERE p.database <> current_database()
          AND CAST(CAST(p.transaction AS TEXT) AS BIGINT)
              = mod(CAST(CAST(xip AS TEXT) AS BIGINT), 4294967296)
    )
), pg_snapshot_xmax(s.snap)) AS TEXT) AS BIGINT)
FROM (SELECT pg_current_snapshot() AS snap) AS s
)"""


@compiles(snapshot_xmin, "postgresql")
def _snapshot_xmin_pg(element: Any, compiler: Any, **kw: Any) -> str:
    return _SETTLED_BOUND_PG


@compiles(snapshot_xmin)
def _snapshot_xmin_other(element: Any, compiler: Any, **kw: Any) -> str:
    return str(_ALL_SETTLED)
