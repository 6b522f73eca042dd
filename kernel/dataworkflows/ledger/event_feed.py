"""The ledger's events as one commit-ordered feed, for the live stream (``/events/stream``).

Events are read in ``(commit_xid, id)`` order, up to the oldest transaction still in
progress (:mod:`dataworkflows.db.commit_order`): what a reader has passed can never gain a
row afterwards, so a :class:`FeedCursor` resumes without a gap or a duplicate, from any
process. Tenant-scoped: a feed never reads another tenant's runs.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, tuple_

from dataworkflows.db.commit_order import snapshot_xmin
from dataworkflows.db.database import Database
from dataworkflows.db.models import event_stream_watchers, execution_events, workflow_executions

_TOKEN = re.compile(r"(\d{1,19})-(\d{1,19})")
_MAX = 2**63 - 1
#: events read per query (a stream far behind reads again at once)
PAGE = 500


@dataclass(frozen=True, order=True)
class FeedCursor:
    """A position in the feed: everything up to ``(xid, id)`` has been delivered."""

    xid: int
    id: int

    @property
    def token(self) -> str:
        """The cursor as text (the stream's SSE ``id``): ``<xid>-<id>``."""
        return f"{self.xid}-{self.id}"

    @classmethod
    def parse(cls, token: str) -> FeedCursor:
        """The cursor of ``token``; ``ValueError`` when it is not one."""
        match = _TOKEN.fullmatch(token.strip())
        if match is None or max(int(match[1]), int(match[2])) > _MAX:
            raise ValueError(f"not an event stream id: {token[:50]!r}")
        return cls(int(match[1]), int(match[2]))


#: before every event
START = FeedCursor(0, 0)


@dataclass(frozen=True)
class FeedFilter:
    """Which events a stream wants: always one tenant's; the others combine (AND)."""

    tenant_id: str
    execution_id: uuid.UUID | None = None
    workflow_id: str | None = None
    correlation_id: str | None = None

    def admits(self, scope: RunScope) -> bool:
        """Whether events of a run with ``scope`` pass the filter (live events)."""
        return (
            scope.tenant_id == self.tenant_id
            and (self.execution_id is None or scope.execution_id == self.execution_id)
            and (self.workflow_id is None or scope.workflow_id == self.workflow_id)
            and (self.correlation_id is None or scope.correlation_id == self.correlation_id)
        )


@dataclass(frozen=True)
class RunScope:
    """What a filter looks at in a run."""

    execution_id: uuid.UUID
    tenant_id: str
    workflow_id: str
    correlation_id: str | None


@dataclass
class FeedPage:
    """Events after a cursor, in commit order, each with its own cursor."""

    events: list[tuple[FeedCursor, dict[str, Any]]] = field(default_factory=list)
    #: committed events exist after these whose transactions are not settled yet (an
    #: older transaction is still open): read again shortly
    held_back: bool = False
    #: the page is full: read again at once
    full: bool = False


_e = execution_events
_r = workflow_executions
_COLUMNS = (
    _e.c.id,
    _e.c.commit_xid,
    _e.c.execution_id,
    _e.c.sequence,
    _e.c.type,
    _e.c.node_id,
    _e.c.payload,
    _e.c.created_at,
    _r.c.workflow_id,
    _r.c.correlation_id,
    (_e.c.commit_xid < snapshot_xmin()).label("settled"),
)


class EventFeed:
    """Reads of the commit-ordered event feed (read connections only)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def read(self, after: FeedCursor, where: FeedFilter, limit: int = PAGE) -> FeedPage:
        """The settled events after ``after`` that pass ``where``, oldest commit first."""
        statement = (
            select(*_COLUMNS)
            .join(_r, _r.c.id == _e.c.execution_id)
            .where(
                _r.c.tenant_id == where.tenant_id,
                tuple_(_e.c.commit_xid, _e.c.id) > tuple_(after.xid, after.id),
            )
            .order_by(_e.c.commit_xid, _e.c.id)
            .limit(limit)
        )
        if where.execution_id is not None:
            statement = statement.where(_e.c.execution_id == where.execution_id)
        if where.workflow_id is not None:
            statement = statement.where(_r.c.workflow_id == where.workflow_id)
        if where.correlation_id is not None:
            statement = statement.where(_r.c.correlation_id == where.correlation_id)

        async def query(conn: Any) -> list[Any]:
            return list(await conn.execute(statement))

        rows = await self.db.read(query, what="event stream")
        page = FeedPage(full=len(rows) == limit)
        for row in rows:
            if not row.settled:  # ordered by xid: every later row is unsettled too
                page.held_back, page.full = True, False
                break
            values = dict(row._mapping)
            page.events.append((FeedCursor(values.pop("commit_xid"), values["id"]), values))
        return page

    async def head(self) -> FeedCursor:
        """A cursor after every event settled now (a new stream's "from now")."""

        async def query(conn: Any) -> FeedCursor:
            if self.db.is_sqlite:
                last = (await conn.execute(select(func.max(_e.c.id)))).scalar_one()
                return FeedCursor(0, last or 0)
            xmin = (await conn.execute(select(snapshot_xmin()))).scalar_one()
            return FeedCursor(max(int(xmin) - 1, 0), _MAX)

        return await self.db.read(query, what="event stream head")

    async def run_scope(self, execution_id: uuid.UUID) -> RunScope | None:
        """The tenant, workflow and correlation id of a run (None if there is none)."""
        statement = select(_r.c.tenant_id, _r.c.workflow_id, _r.c.correlation_id).where(
            _r.c.id == execution_id
        )

        async def query(conn: Any) -> Any:
            return (await conn.execute(statement)).one_or_none()

        row = await self.db.read(query, what="run scope")
        if row is None:
            return None
        return RunScope(execution_id, row.tenant_id, row.workflow_id, row.correlation_id)

    async def watch(self, watcher_id: str, seconds: float) -> None:
        """Announce that ``watcher_id`` streams events for ``seconds`` more (PostgreSQL):
        until then, every transaction that inserts events NOTIFYs. Drops the announcements
        that have expired (processes that died with streams open)."""
        w = event_stream_watchers
        until = func.now() + timedelta(seconds=seconds)
        upsert = self.db.insert(w).values(id=watcher_id, until=until)
        upsert = upsert.on_conflict_do_update(index_elements=["id"], set_={"until": until})
        async with self.db.begin() as conn:
            await conn.execute(delete(w).where(w.c.until < func.now()))
            await conn.execute(upsert)

    async def unwatch(self, watcher_id: str) -> None:
        """Withdraw ``watcher_id``'s announcement (its last stream ended)."""
        w = event_stream_watchers
        async with self.db.begin() as conn:
            await conn.execute(delete(w).where(w.c.id == watcher_id))
