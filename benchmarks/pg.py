"""PostgreSQL helpers: scratch databases and the commit counter.

Commits are read from ``pg_stat_database.xact_commit`` of the benchmark's own database,
which nothing but the benchmark uses. PostgreSQL 15 keeps a backend's counters locally and
flushes them at most about once a second while it is busy (later when idle), and always
when the backend exits. So the harness reads the counter only when no backend of that
database is connected: it stops the engine, waits until its backends are gone, then reads
with a fresh connection to *another* database (after ``pg_stat_clear_snapshot()``) until
two reads agree. The harness's own reads of the benchmark database end with ROLLBACK, so
they add no commits; ``harness_commits`` stays 0 and is still subtracted.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url


def plain_url(url: str) -> str:
    """``postgresql://...`` for libpq (drops a ``+psycopg`` driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def database_url(admin_url: str, name: str, *, driver: bool = True) -> str:
    """The URL of database ``name`` on the server of ``admin_url``."""
    parsed = make_url(admin_url).set(database=name)
    parsed = parsed.set(drivername="postgresql+psycopg" if driver else "postgresql")
    return parsed.render_as_string(hide_password=False)


def admin_database(admin_url: str) -> str:
    return make_url(admin_url).database or "postgres"


def connect(admin_url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(plain_url(admin_url), autocommit=True, connect_timeout=10, **kwargs)


_DROP = "DROP DATABASE IF EXISTS {} WITH (FORCE)"


def create_database(admin_url: str, name: str, template: str | None = None) -> None:
    """(Re)create database ``name``, empty or as a copy of ``template``."""
    with connect(admin_url) as conn:
        conn.execute(sql.SQL(_DROP).format(sql.Identifier(name)))
        if template is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )


def drop_database(admin_url: str, name: str) -> None:
    with connect(admin_url) as conn:
        conn.execute(sql.SQL(_DROP).format(sql.Identifier(name)))


def backends(admin_url: str, name: str) -> int:
    """Connections to database ``name`` other than the asking one."""
    with connect(admin_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    return int(row[0]) if row else 0


def wait_no_backends(admin_url: str, name: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if backends(admin_url, name) == 0:
            return True
        time.sleep(0.1)
    return False


def _read_counters(admin_url: str, name: str) -> tuple[int, int]:
    with connect(admin_url) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    if row is None:
        raise LookupError(f"no pg_stat_database row for {name!r}")
    return int(row[0]), int(row[1])


def settled_counters(admin_url: str, name: str, timeout: float = 15.0) -> dict[str, Any]:
    """``xact_commit``/``xact_rollback`` of ``name`` once no backend is connected to it
    and two reads 0.3 s apart agree (bounded by ``timeout``)."""
    start = time.monotonic()
    quiet = wait_no_backends(admin_url, name, timeout)
    previous = _read_counters(admin_url, name)
    stable = False
    while time.monotonic() - start < timeout:
        time.sleep(0.3)
        current = _read_counters(admin_url, name)
        if current == previous:
            stable = True
            break
        previous = current
    return {
        "commits": previous[0],
        "rollbacks": previous[1],
        "tables": table_counters(admin_url, name),
        "quiet": quiet,
        "stable": stable,
        "settle_s": round(time.monotonic() - start, 2),
    }


def table_counters(admin_url: str, name: str) -> dict[str, dict[str, int]]:
    """Rows inserted/updated/deleted so far per table of database ``name`` (read in a
    transaction that is rolled back, so the read adds no commit)."""
    url = database_url(admin_url, name, driver=False)
    with psycopg.connect(url, autocommit=False, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT schemaname || '.' || relname, n_tup_ins, n_tup_upd, n_tup_del"
            " FROM pg_stat_user_tables"
        ).fetchall()
        conn.rollback()
    return {r[0]: {"ins": int(r[1]), "upd": int(r[2]), "del": int(r[3])} for r in rows}


def table_deltas(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], runs: int
) -> dict[str, dict[str, float]]:
    """Per-run row writes by table between two :func:`table_counters` readings."""
    out: dict[str, dict[str, float]] = {}
    for table, counts in sorted(after.items()):
        base = before.get(table, {})
        delta = {k: counts[k] - base.get(k, 0) for k in ("ins", "upd", "del")}
        if any(delta.values()):
            out[table.removeprefix("public.")] = {
                f"{k}_per_run": round(v / max(1, runs), 3) for k, v in delta.items()
            }
    return out


def server_version(admin_url: str) -> str:
    with connect(admin_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


#: how far back ``partition_ledger`` creates partitions: the loaders' old runs are 40 days old
PARTITIONS_FROM_DAYS = 41


def partition_ledger(db_url: str, *, enable: bool = True) -> str:
    """Partition the ledger of ``db_url`` as a user would (``dataworkflows ledger partition
    --enable``, weekly), with partitions from :data:`PARTITIONS_FROM_DAYS` days ago on;
    the command's output. Run it before the engine starts (the conversion locks).
    ``enable=False``: only create the partitions missing from then on (e.g. the one a
    prune dropped, before old runs are loaded again)."""
    import datetime
    import os
    import subprocess
    import sys

    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=PARTITIONS_FROM_DAYS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAWORKFLOWS_")}
    env["DATAWORKFLOWS_DATABASE_URL"] = db_url
    command = [sys.executable, "-m", "dataworkflows.cli.main", "ledger", "partition"]
    command += ["--enable"] if enable else []
    command += ["--from", f"{since:%Y-%m-%d}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"ledger partition --enable failed: {done.stderr[-500:]}")
    return done.stdout


# -- durable commits, read from the WAL itself (issue 22, item 4) --------------------------
#
# ``xact_commit`` counts every transaction that ended in COMMIT, read-only ones included;
# what costs a flush is a transaction that *wrote*: it leaves a ``Transaction/COMMIT``
# record in the WAL, and a read-only one leaves none. ``pg_walinspect`` (contrib,
# PostgreSQL 15+) lists the records between two WAL positions, so the harness counts
# the commit records of transactions that changed a block of the benchmark's own
# database (``block_ref`` names ``tablespace/database/relation``), plus every commit
# record of the server in that window, and reads ``pg_stat_wal`` (WAL bytes, flushes)
# before and after: all from PostgreSQL, none from the engine's own account.

_WAL_STATS = "SELECT wal_records, wal_bytes, wal_write, wal_sync FROM pg_stat_wal"

_WAL_COMMITS = """
WITH r AS (
    SELECT xid, resource_manager, record_type, block_ref, record_length,
           resource_manager = 'Transaction' AND record_type IN ('COMMIT', 'COMMIT_PREPARED')
               AS is_commit
    FROM pg_get_wal_records_info(%(lsn0)s::pg_lsn, %(lsn1)s::pg_lsn)
), writers AS (
    SELECT DISTINCT xid FROM r WHERE block_ref LIKE %(pattern)s AND xid <> '0'::xid
)
SELECT
    count(*) FILTER (WHERE r.is_commit AND r.xid IN (SELECT xid FROM writers)),
    count(*) FILTER (WHERE r.is_commit),
    coalesce(sum(r.record_length) FILTER (
        WHERE r.block_ref LIKE %(pattern)s OR r.xid IN (SELECT xid FROM writers)), 0)
FROM r
"""


#: per committed writer of the database: the relations (file nodes) it changed
_WAL_WRITER_RELATIONS = """
WITH r AS (
    SELECT xid::text AS x, resource_manager, record_type, block_ref
    FROM pg_get_wal_records_info(%(lsn0)s::pg_lsn, %(lsn1)s::pg_lsn)
), committed AS (
    SELECT DISTINCT x FROM r
    WHERE resource_manager = 'Transaction' AND record_type IN ('COMMIT', 'COMMIT_PREPARED')
), touched AS (
    SELECT DISTINCT r.x, m[1]::bigint AS filenode
    FROM r, regexp_matches(r.block_ref, %(rel)s, 'g') AS m
    WHERE r.block_ref LIKE %(pattern)s AND r.x <> '0'
)
SELECT array_agg(filenode ORDER BY filenode) FROM touched
WHERE x IN (SELECT x FROM committed)
GROUP BY x
"""

_TABLE_OF_FILENODE = """
SELECT pg_relation_filenode(c.oid), coalesce(t.relname, c.relname), c.relkind
FROM pg_class c
LEFT JOIN pg_index i ON i.indexrelid = c.oid
LEFT JOIN pg_class t ON t.oid = i.indrelid
WHERE pg_relation_filenode(c.oid) = ANY(%s)
"""


def _writers_by_tables(
    admin_url: str, name: str, oid: int, start: dict[str, Any], end: dict[str, Any]
) -> dict[str, int]:
    """Committed write transactions of database ``name`` in the window, counted by the
    set of tables they changed (an index counts as its table, a sequence not at all;
    ``?<filenode>`` where the relation is gone)."""
    with connect(admin_url) as conn:
        rows = conn.execute(
            _WAL_WRITER_RELATIONS,
            {
                "lsn0": start["lsn"],
                "lsn1": end["lsn"],
                "pattern": f"%/{oid}/%",
                "rel": rf"rel \d+/{oid}/(\d+)",
            },
        ).fetchall()
    nodes = sorted({int(n) for row in rows for n in row[0]})
    names: dict[int, str] = {}
    if nodes:
        with psycopg.connect(database_url(admin_url, name, driver=False)) as conn:
            found = conn.execute(_TABLE_OF_FILENODE, (nodes,)).fetchall()
            conn.rollback()
        # a sequence's WAL (one record per 32 values) would split the sets: left out
        names = {int(f): str(t) for f, t, kind in found if kind != "S"}
        names |= {int(f): "" for f, _, kind in found if kind == "S"}
    out: dict[str, int] = {}
    for row in rows:
        tables = {names.get(int(n), f"?{n}") for n in row[0]} - {""}
        key = "+".join(sorted(tables)) or "(sequences only)"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def lsn_int(lsn: str) -> int:
    """A ``pg_lsn`` (``X/Y``, hexadecimal) as a byte position."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


@functools.lru_cache(maxsize=8)
def _walinspect_error(admin_url: str) -> str | None:
    """Create ``pg_walinspect`` in the admin database once per server and process; why it
    cannot be, or None."""
    with connect(admin_url) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        except psycopg.Error as exc:
            return f"pg_walinspect unavailable: {str(exc).strip()}"
    return None


def wal_mark(admin_url: str) -> dict[str, Any]:
    """The WAL's flushed position and ``pg_stat_wal`` now (the start or end of a window).

    Creates the ``pg_walinspect`` extension in the admin database if it is missing (needs
    a superuser; without it :func:`durable_commits` reports an error instead of a count).
    """
    inspect_error = _walinspect_error(admin_url)
    with connect(admin_url) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        stats = conn.execute(_WAL_STATS).fetchone()
        lsn = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
    assert stats is not None and lsn is not None
    return {
        "lsn": str(lsn[0]),
        "records": int(stats[0]),
        "bytes": int(stats[1]),
        "writes": int(stats[2]),
        "syncs": int(stats[3]),
        "error": inspect_error,
    }


#: the most WAL :func:`durable_commits` reads (``pg_get_wal_records_info`` materialises
#: every record of the window; a server shared with bulk loads writes gigabytes)
MAX_WAL_SCAN = 1 << 30


def durable_commits(
    admin_url: str,
    name: str,
    start: dict[str, Any],
    end: dict[str, Any],
    max_wal_bytes: int = MAX_WAL_SCAN,
) -> dict[str, Any]:
    """Write transactions committed between two :func:`wal_mark` readings.

    ``commits``: commit records of transactions that changed database ``name``;
    ``server_commits``: every commit record in the window (other databases, autovacuum's
    analyze); ``wal_bytes``/``wal_syncs``: the server's ``pg_stat_wal`` deltas (a sync is
    one flush of the WAL to disk, which group commit shares between commits; both count
    every database of the server); ``database_wal_bytes``: the records that touched
    ``name``'s blocks or belong to its writing transactions. A window of more than
    ``max_wal_bytes`` of WAL is not read (an ``error`` says so). ``None`` and
    an ``error`` where the WAL cannot be read.
    """
    out: dict[str, Any] = {
        "commits": None,
        "server_commits": None,
        "wal_bytes": end["bytes"] - start["bytes"],
        "wal_records": end["records"] - start["records"],
        "wal_syncs": end["syncs"] - start["syncs"],
        "database_wal_bytes": None,
    }
    if start.get("error") or end.get("error"):
        out["error"] = start.get("error") or end.get("error")
        return out
    span = lsn_int(end["lsn"]) - lsn_int(start["lsn"])
    if span <= 0:  # nothing was written at all
        out.update(commits=0, server_commits=0, database_wal_bytes=0)
        return out
    if span > max_wal_bytes:
        out["error"] = (
            f"not scanned: the window holds {span / 2**30:.1f} GiB of WAL, more than "
            f"{max_wal_bytes / 2**30:.1f} GiB (the server was busy with other work)"
        )
        return out
    try:
        with connect(admin_url) as conn:
            oid = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if oid is None:
                raise LookupError(f"no database {name!r}")
            row = conn.execute(
                _WAL_COMMITS,
                {"lsn0": start["lsn"], "lsn1": end["lsn"], "pattern": f"%/{int(oid[0])}/%"},
            ).fetchone()
    except (psycopg.Error, LookupError) as exc:
        out["error"] = f"{type(exc).__name__}: {str(exc).strip()}"
        return out
    assert row is not None
    out["commits"] = int(row[0])
    out["server_commits"] = int(row[1])
    out["database_wal_bytes"] = int(row[2])
    try:
        out["by_tables"] = _writers_by_tables(admin_url, name, int(oid[0]), start, end)
    except psycopg.Error as exc:
        out["by_tables_error"] = f"{type(exc).__name__}: {str(exc).strip()}"
    return out


_held = 0


class WalHold:
    """Keeps the server's WAL from its creation on, until :meth:`close` (see
    :func:`hold_wal`); a watchdog thread lets go past ``limit`` bytes held, so a server
    shared with bulk writers never fills its disk for a benchmark's window."""

    def __init__(self, conn: psycopg.Connection[Any], slot: str, limit: int) -> None:
        self.slot = slot
        self.limit = limit
        #: set when the watchdog let go because more than ``limit`` was held
        self.overflowed = False
        self._conn = conn  # used by the watchdog thread only, from here on
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"{slot}-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            while not self._stop.wait(2.0):
                row = self._conn.execute(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)"
                    " FROM pg_replication_slots WHERE slot_name = %s",
                    (self.slot,),
                ).fetchone()
                if row is None or row[0] is None or float(row[0]) > self.limit:
                    self.overflowed = True
                    return
        except psycopg.Error:
            return
        finally:
            self._conn.close()  # a temporary slot goes with its session

    def close(self) -> None:
        """Let the WAL go (drops the temporary slot with its connection)."""
        self._stop.set()
        self._thread.join(30)


def hold_wal(admin_url: str, limit: int = 2 * MAX_WAL_SCAN) -> WalHold | None:
    """Keep the server's WAL from now on until the returned hold is closed: a
    *temporary* physical replication slot that reserves WAL at once (gone with its
    session, so a harness that dies leaves nothing behind; let go past ``limit`` bytes).
    Without it a busy server may recycle the segments of a long window before
    :func:`durable_commits` reads them. Take it before the window's first
    :func:`wal_mark`; None where no slot can be made (no free ``max_replication_slots``,
    no replication privilege)."""
    global _held
    _held += 1
    slot = f"dwbench_wal_{os.getpid()}_{_held}"
    conn = connect(admin_url)
    try:
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true, true)", (slot,))
    except psycopg.Error:
        conn.close()
        return None
    return WalHold(conn, slot, limit)
