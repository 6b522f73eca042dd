"""The run tree: child runs (subworkflows), parking a parent, waking it, and the tree reads.

A node starts a child run with :meth:`LedgerChildren.start_child`. With ``wait`` the
child's execution row, its ``RunQueued`` event and the parent node's ``Waiting`` attempt
row are written in **one transaction**, fenced by the parent's claim: a crash either
leaves both (the resumed parent finds its wait and the child) or neither (the attempt is
lost and retried; no child was started). The child's request id is derived from the
parent, the node and the attempt, so the same attempt never starts two children.

When a parent has nothing left to do but wait, :meth:`LedgerChildren.park` gives its claim
up: the run becomes ``Waiting`` and no worker holds it. A waited-on child's end (the
transaction that finishes it, :mod:`dataworkflows.ledger.run_ledger`) increments the
parent's ``child_wakeups`` and turns a ``Waiting`` parent ``Pending``, so any worker claims
and resumes it. ``park`` refuses (and returns the children that ended) when a child ended
before it could park: it reads the counter first and parks only if it is unchanged, so a
wake-up is never lost between the check and the park, on SQLite (one writer) and on
PostgreSQL (the park's UPDATE re-checks the counter on the row the child's end updated).

Mixed into :class:`~dataworkflows.ledger.run_ledger.RunLedger`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select, update

from dataworkflows.common.ids import uuid7
from dataworkflows.db.database import Database
from dataworkflows.db.models import (
    FINAL_RUN_STATUSES,
    action_executions,
    workflow_definitions,
    workflow_executions,
)
from dataworkflows.events import EventType, RunEvent
from dataworkflows.ledger import statements as sql
from dataworkflows.ledger.records import (
    RUNS_CHANNEL,
    ClaimedRun,
    NewEvent,
    StaleRunError,
    StepRecord,
    WorkflowNotRunnable,
    _action_row,
    _event_row,
    _run_event,
    _step_event,
    check_json,
    check_step,
)

_t = workflow_executions

#: the columns of a run that the tree reads return
TREE_COLUMNS = (
    _t.c.id,
    _t.c.workflow_id,
    _t.c.workflow_version,
    _t.c.status,
    _t.c.error,
    _t.c.created_at,
    _t.c.started_at,
    _t.c.ended_at,
    _t.c.parent_execution_id,
    _t.c.parent_node_id,
    _t.c.root_execution_id,
    _t.c.depth,
    _t.c.wakes_parent,
)


@dataclass(frozen=True)
class ChildRequest:
    """A child run a node asks for."""

    workflow_id: str
    trigger: dict[str, Any]
    #: a pinned version (None: the workflow's current published version)
    version: int | None
    #: idempotency: ``<parent>:<node>:<attempt>`` (waited) or ``<parent>:<node>``
    request_id: str
    node_id: str
    #: the parent waits on it (its end wakes the parent)
    wait: bool
    #: the W3C trace context the child is queued with (the parent attempt's span)
    trace_context: dict[str, str] | None = None


class VersionNotFound(Exception):
    """A pinned version of the child's workflow does not exist; nothing was written."""

    def __init__(self, workflow_id: str, version: int) -> None:
        super().__init__(workflow_id, version)
        self.workflow_id = workflow_id
        self.version = version


class LedgerChildren:
    """Child runs, parking and the tree (part of the run ledger)."""

    db: Database
    # and, from the other parts of RunLedger: clock, lease, _enqueue_statement,
    # _number_events, _emit_events, _notify, _fence_many

    async def start_child(
        self, run: ClaimedRun, child: ChildRequest, waiting: StepRecord | None = None
    ) -> uuid.UUID:
        """Queue ``child`` as a child of ``run`` (and write ``waiting``, the node's
        ``Waiting`` row, in the same transaction); returns the child's execution id.

        The same request id again returns the child already queued and writes nothing new.
        Raises :class:`WorkflowNotRunnable` or :class:`VersionNotFound` (nothing written)
        and :class:`StaleRunError` when ``run``'s claim is no longer current.
        """
        check_json(child.trigger, "$.input")
        if waiting is not None:
            check_step(waiting)
        base = run.next_sequence
        recorded: list[RunEvent] = []
        try:
            async with self.db.begin() as conn:
                now = self.clock.now()  # type: ignore[attr-defined]
                if run.id not in await self._fence_many(conn, [run], now, None):  # type: ignore[attr-defined]
                    raise StaleRunError.for_claim(run)
                workflow = (
                    await conn.execute(sql.PUBLISHED_WORKFLOWS, {"p_ids": [child.workflow_id]})
                ).one_or_none()
                if workflow is None or workflow.tenant_id != run.tenant_id:
                    raise WorkflowNotRunnable(child.workflow_id, None)
                if workflow.status != "Active" or workflow.current_version is None:
                    raise WorkflowNotRunnable(child.workflow_id, workflow.status)
                version = child.version or workflow.current_version
                if child.version is not None and not await _version_exists(
                    conn, child.workflow_id, child.version
                ):
                    raise VersionNotFound(child.workflow_id, child.version)
                child_id = uuid7()  # time-ordered like every run id (docs/partitioning.md)
                values = {
                    "id": child_id,
                    "workflow_id": child.workflow_id,
                    "workflow_version": version,
                    "test_run": False,
                    "request_id": child.request_id,
                    "status": "Pending",
                    "trigger": child.trigger,
                    "error": None,
                    "tenant_id": run.tenant_id,
                    "principal": run.principal,
                    "correlation_id": run.correlation_id,
                    "created_at": now,
                    "fencing_token": 0,
                    "trace_context": child.trace_context,
                    "parent_execution_id": run.id,
                    "parent_node_id": child.node_id,
                    "root_execution_id": run.root_id or run.id,
                    "depth": run.depth + 1,
                    "wakes_parent": child.wait,
                }
                inserted = list(await conn.execute(self._enqueue_statement, [values]))  # type: ignore[attr-defined]
                if inserted:
                    queued = NewEvent(
                        EventType.RUN_QUEUED,
                        payload={"version": version, "parentExecutionId": str(run.id)},
                    )
                    row = _event_row(child_id, 1, queued, now)
                    await conn.execute(sql.INSERT_EVENTS, [row])
                    recorded.append(_run_event(child.workflow_id, row))
                else:  # this attempt's child exists already (a lost COMMIT answer)
                    child_id = (
                        await conn.execute(
                            select(_t.c.id).where(
                                _t.c.workflow_id == child.workflow_id,
                                _t.c.request_id == child.request_id,
                            )
                        )
                    ).scalar_one()
                if waiting is not None:
                    step = replace(waiting, outputs={"childExecutionId": str(child_id)})
                    event = _step_event(step)
                    event = NewEvent(
                        event.type,
                        event.node_id,
                        {**event.payload, "childExecutionId": str(child_id)},
                        action_type=event.action_type,
                    )
                    numbered = self._number_events(run, [event], now)  # type: ignore[attr-defined]
                    key = (step.node_id, step.attempt)
                    replaced = run.running_rows.get(key)  # the attempt's Running row, if any
                    if replaced is not None:
                        await conn.execute(sql.DELETE_ACTIONS, {"p_ids": [replaced]})
                    row_id = replaced or uuid.uuid4()
                    await conn.execute(sql.INSERT_ACTIONS, [_action_row(run, step, row_id)])
                    await conn.execute(
                        sql.INSERT_EVENTS,
                        [_event_row(run.id, numbered[0].sequence, event, now)],
                    )
                    recorded.extend(numbered)
                await self._notify(conn, RUNS_CHANNEL, "")  # type: ignore[attr-defined]
        except BaseException:
            if waiting is not None:  # numbered under the run's lock: nothing was written
                run.next_sequence = base
            raise
        if waiting is not None:  # the attempt's final row will replace its Waiting row
            run.running_rows[(waiting.node_id, waiting.attempt)] = row_id
        self._emit_events(recorded)  # type: ignore[attr-defined]
        return child_id

    async def park(
        self, run: ClaimedRun, children: Iterable[uuid.UUID]
    ) -> list[dict[str, Any]] | None:
        """Give up ``run``'s claim while it waits on ``children``: it becomes ``Waiting``.

        Returns None when parked, or the rows (:data:`TREE_COLUMNS`) of the children that
        have ended already (nothing written: the caller continues with them). Raises
        :class:`StaleRunError` when the claim is no longer current.
        """
        ids = sorted(set(children))
        while True:
            async with self.db.begin() as conn:
                now = self.clock.now()  # type: ignore[attr-defined]
                seen = (
                    await conn.execute(
                        select(_t.c.child_wakeups).where(
                            _t.c.id == run.id,
                            _t.c.fencing_token == run.fencing_token,
                            _t.c.status == "Running",
                        )
                    )
                ).scalar_one_or_none()
                if seen is None:
                    raise StaleRunError.for_claim(run)
                ended = [
                    dict(row._mapping)
                    for row in await conn.execute(
                        select(*TREE_COLUMNS, _t.c.child_wakeups).where(
                            _t.c.id.in_(ids), _t.c.status.in_(FINAL_RUN_STATUSES)
                        )
                    )
                ]
                if ended:
                    await conn.rollback()
                    return ended
                parked = await conn.execute(
                    update(_t)
                    .where(
                        _t.c.id == run.id,
                        _t.c.fencing_token == run.fencing_token,
                        _t.c.status == "Running",
                        _t.c.child_wakeups == seen,
                    )
                    .values(status="Waiting", lease_owner=None, lease_expires_at=None)
                )
                if parked.rowcount != 1:
                    await conn.rollback()
                    continue  # a child ended meanwhile (or the claim was lost): look again
                event = NewEvent(
                    EventType.RUN_WAITING,
                    payload={"waitingOn": [str(i) for i in ids]},
                )
                numbered = self._number_events(run, [event], now)  # type: ignore[attr-defined]
                await conn.execute(
                    sql.INSERT_EVENTS, [_event_row(run.id, numbered[0].sequence, event, now)]
                )
            self._emit_events(numbered)  # type: ignore[attr-defined]
            return None

    async def child_runs(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        """The tree rows of the runs ``ids`` (children a resumed parent waits on)."""

        async def query(conn: Any) -> dict[uuid.UUID, dict[str, Any]]:
            rows = await conn.execute(select(*TREE_COLUMNS).where(_t.c.id.in_(list(ids))))
            return {row.id: dict(row._mapping) for row in rows}

        return await self.db.read(query)

    async def child_outputs(self, child_id: uuid.UUID) -> dict[str, Any]:
        """The outputs of a child's succeeded nodes, ``{node id: outputs}``."""
        a = action_executions

        async def query(conn: Any) -> dict[str, Any]:
            rows = await conn.execute(
                select(a.c.node_id, a.c.outputs)
                .where(a.c.execution_id == child_id, a.c.status == "Succeeded")
                .order_by(a.c.ended_at)
            )
            return {row.node_id: row.outputs or {} for row in rows}

        return await self.db.read(query)

    async def list_children(
        self, execution_id: uuid.UUID, *, recursive: bool = False, replica: bool = False
    ) -> list[dict[str, Any]]:
        """The runs ``execution_id`` started (oldest first); ``recursive``: the whole
        subtree, parents before their children; ``replica``: may come from the read
        replica (see Database.read)."""
        found: list[dict[str, Any]] = []
        frontier = [execution_id]

        async def query(conn: Any) -> list[dict[str, Any]]:
            rows = await conn.execute(
                select(_t)
                .where(_t.c.parent_execution_id.in_(frontier))
                .order_by(_t.c.depth, _t.c.created_at, _t.c.id)
            )
            return [dict(row._mapping) for row in rows]

        while frontier:
            level = await self.db.read(query, replica=replica)
            found.extend(level)
            frontier = [row["id"] for row in level] if recursive else []
        return found


async def _version_exists(conn: Any, workflow_id: str, version: int) -> bool:
    d = workflow_definitions
    row = await conn.execute(
        select(d.c.version).where(d.c.workflow_id == workflow_id, d.c.version == version)
    )
    return row.first() is not None


async def descendants_to_cancel(conn: Any, execution_id: uuid.UUID) -> list[uuid.UUID]:
    """The runs below ``execution_id`` that have not ended, deepest first (the order in
    which a cancel locks them, like a child's end locks the child before its parent)."""
    found: list[tuple[int, uuid.UUID]] = []
    frontier = [execution_id]
    while frontier:
        rows = list(
            await conn.execute(
                select(_t.c.id, _t.c.depth, _t.c.status).where(
                    _t.c.parent_execution_id.in_(frontier)
                )
            )
        )
        found.extend((row.depth, row.id) for row in rows if row.status not in FINAL_RUN_STATUSES)
        frontier = [row.id for row in rows]
    return [run_id for _depth, run_id in sorted(found, key=lambda x: (-x[0], str(x[1])))]
