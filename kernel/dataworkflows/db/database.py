"""The database handle: one async engine, dialect helpers, SQLite tuning."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from dataworkflows.db.transient import retry_transient
from dataworkflows.settings import SQLITE_SYNCHRONOUS

T = TypeVar("T")


class DatabaseURLError(ValueError):
    """The database URL names a backend the engine does not support."""


def normalise_url(url: str) -> str:
    """Map the URLs people type to the async drivers the engine uses.

    ``sqlite:///x.db`` → ``sqlite+aiosqlite:///x.db``; ``postgresql://`` and
    ``postgres://`` → ``postgresql+psycopg://``. Other backends are refused.
    """
    parsed = make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "aiosqlite", "pysqlite"):
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise DatabaseURLError(
        f"unsupported database URL {parsed.render_as_string()!r}: use sqlite+aiosqlite:///FILE "
        "or postgresql+psycopg://USER@HOST/DB"
    )


def sync_url(url: str) -> str:
    """The same database through a synchronous driver (used by Alembic)."""
    parsed = make_url(normalise_url(url))
    if parsed.drivername == "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite")
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The URL as plain libpq/psycopg understands it (``postgresql://...``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Database:
    """An async engine plus the few dialect differences the kernel cares about.

    Writes go through :meth:`begin`; on SQLite they take the write lock up front
    (``BEGIN IMMEDIATE``) so that concurrent writers wait on ``busy_timeout`` instead of
    failing with "database is locked" halfway through a transaction. Reads use
    :meth:`connect` and never block writers (WAL).
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        echo: bool = False,
        sqlite_synchronous: str = "FULL",
        listen_url: str | None = None,
        replica_url: str | None = None,
        prepared_statements: bool = True,
    ) -> None:
        """``sqlite_synchronous``: SQLite's ``PRAGMA synchronous`` on every connection
        (``FULL``: a commit is on disk when it returns; ``NORMAL``: faster, may lose the
        last commits on power loss). Ignored on PostgreSQL. ``listen_url``: where the
        ``LISTEN`` connections go (default ``url``; see :attr:`listen_url`). ``replica_url``:
        a PostgreSQL read replica for the reads that ask for it (:meth:`read`).
        ``prepared_statements``: PostgreSQL statements a connection runs often are prepared
        on the server (planned once); false behind a pooler that cannot keep them."""
        self.url = normalise_url(url)
        #: the URL of ``LISTEN`` connections (PostgreSQL): a session of its own, so behind
        #: a transaction-mode pooler (PgBouncer) it must reach the server directly
        self.listen_url = normalise_url(listen_url) if listen_url else self.url
        self.sqlite_synchronous = sqlite_synchronous.strip().upper()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        else:
            # No pool_pre_ping: on psycopg it is an autocommitted round trip (a commit in
            # pg_stat_database) per checkout. Stale connections are recycled instead.
            # Server-side prepared statements after 5 runs of a statement (psycopg's
            # default): planned once per connection. psycopg drops them only after a
            # rollback of an open transaction (rare: reads autocommit, writes commit).
            kwargs.update(
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_recycle=1800,
                connect_args={"prepare_threshold": 5 if prepared_statements else None},
            )
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _tune_sqlite(self.engine, synchronous=self.sqlite_synchronous)
            self._read_engine = self.engine.execution_options(dw_read_only=True)
        else:
            # Reads autocommit: under READ COMMITTED every statement has its own snapshot
            # anyway, and BEGIN + ROLLBACK around them were two round trips per read.
            self._read_engine = self.engine.execution_options(
                dw_read_only=True, isolation_level="AUTOCOMMIT"
            )
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        #: the read replica's engine (autocommit), or None: replica reads go to ``url``
        self._replica_engine: AsyncEngine | None = None
        if replica_url:
            if self.is_sqlite:
                raise DatabaseURLError("a read replica is for a PostgreSQL database")
            self._replica_engine = create_async_engine(
                normalise_url(replica_url), **kwargs
            ).execution_options(dw_read_only=True, isolation_level="AUTOCOMMIT")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def insert(self, table: Table) -> Any:
        """A dialect-specific INSERT supporting ``on_conflict_do_nothing``."""
        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)

    @asynccontextmanager
    async def begin(self, *, durable: bool = True) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on success and rolled back on error.

        On SQLite the writers of this process queue on an asyncio lock: SQLite admits one
        writer at a time anyway, and waiting on the lock is instant where SQLite's own busy
        handler would sleep and retry (1, 2, 5, 10, ... ms). Other processes still meet
        ``busy_timeout``.

        ``durable=False``: the commit does not wait for the disk (SQLite
        ``synchronous=NORMAL``, PostgreSQL ``synchronous_commit=off``, for this transaction
        only). It is still atomic, visible at once and ordered before every later commit,
        which makes it durable along with the next durable one; only a power loss (SQLite)
        or a server crash (PostgreSQL) before that can undo it. For writes whose loss
        costs nothing, such as a scheduler's lease on a trigger.
        """
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                if not durable:
                    await conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
                yield conn
            return
        async with self._write_lock, self.engine.connect() as conn:
            if durable:
                async with conn.begin():
                    yield conn
                return
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            # outside a transaction (the driver runs in autocommit mode; see _tune_sqlite)
            await driver.execute("PRAGMA synchronous=NORMAL")
            try:
                async with conn.begin():
                    yield conn
            finally:
                await driver.execute(f"PRAGMA synchronous={self.sqlite_synchronous}")

    async def notify(self, conn: AsyncConnection, channel: str, payload: str = "") -> None:
        """PostgreSQL ``NOTIFY`` inside the writing transaction ``conn`` (delivered to
        listeners when it commits, and only then); nothing on SQLite."""
        if not self.is_sqlite:
            await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})

    @asynccontextmanager
    async def connect(self, *, replica: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection for reads: never write through it.

        SQLite: a deferred transaction, rolled back at the end (one snapshot for all reads).
        PostgreSQL: autocommit, each statement its own READ COMMITTED snapshot.
        ``replica``: on the read replica if one is configured (``replica_url``).
        """
        engine = self._replica_engine if replica and self._replica_engine else self._read_engine
        async with engine.connect() as conn:
            yield conn

    @property
    def has_replica(self) -> bool:
        """True when reads that ask for it go to a read replica."""
        return self._replica_engine is not None

    async def read(
        self,
        query: Callable[[AsyncConnection], Awaitable[T]],
        what: str = "read",
        *,
        replica: bool = False,
    ) -> T:
        """``await query(conn)`` on a read connection, again on a fresh one after a
        transient error (a connection the server dropped; see
        :mod:`dataworkflows.db.transient`). ``query`` must only read.

        ``replica``: the read may be served by the read replica (``replica_url``), which
        lags the primary: only for reads shown to people (the API's and the console's
        history), never for a read the engine decides on.
        """

        async def once() -> T:
            async with self.connect(replica=replica) as conn:
                return await query(conn)

        return await retry_transient(once, what=what)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._replica_engine is not None:
            await self._replica_engine.dispose()


def _tune_sqlite(engine: AsyncEngine, *, synchronous: str) -> None:
    """Pragmas on every new connection, and BEGIN IMMEDIATE for writes.

    ``synchronous``: ``FULL`` (the default) fsyncs the WAL on every commit, so a commit
    that returned survives a power loss, as the ledger promises; ``NORMAL`` fsyncs only at
    checkpoints (faster; the last commits may be lost on power loss, not on a crash of
    the process).
    """
    level = synchronous.upper()
    if level not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"PRAGMA synchronous={synchronous!r}: expected FULL or NORMAL")
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, emit BEGIN (see the "begin" listener).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={level}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("dw_read_only"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
