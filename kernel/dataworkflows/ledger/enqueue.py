"""Putting runs in the queue: :meth:`RunLedger.enqueue` (group-committed) and the
requeue of a dead letter. Part of :class:`~dataworkflows.ledger.run_ledger.RunLedger`, which
inherits :class:`LedgerEnqueues`; see :mod:`dataworkflows.ledger.run_ledger` for the write budget.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text, update

from dataworkflows.common.ids import uuid7
from dataworkflows.db.models import (
    dead_letters,
    workflow_executions,
)
from dataworkflows.db.transient import is_data_error
from dataworkflows.events import EventType
from dataworkflows.ledger import statements as sql
from dataworkflows.ledger.records import (
    RUNS_CHANNEL,
    AlreadyRequeued,
    Enqueued,
    NewEvent,
    RequestIdReused,
    UnwritableValue,
    WorkflowNotRunnable,
    _claimed_at_enqueue,
    _db_message,
    _EnqueueRequest,
    _event_row,
    _run_event,
    check_json,
    run_started_payload,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


class LedgerEnqueues:
    """Enqueue and requeue: the writes that create runs."""

    # -- enqueue --------------------------------------------------------------------------

    async def close(self) -> None:
        """Wait until every submitted write is committed (on shutdown)."""
        await self._enqueues.drain()
        await self._step_writes.drain()

    async def enqueue(
        self,
        *,
        workflow_id: str,
        trigger: dict[str, Any],
        request_id: str | None,
        tenant_id: str = "default",
        principal: str | None = None,
        correlation_id: str | None = None,
        start_as: str | None = None,
        redelivery_may_differ: bool = False,
        test_version: int | None = None,
        version: int | None = None,
        trace_context: dict[str, str] | None = None,
    ) -> Enqueued:
        """Record a ``Pending`` run of the workflow's published version.

        The version is read in the transaction that inserts the run, so a run never pins a
        version that was not published when it was committed. Raises
        :class:`WorkflowNotRunnable` (nothing written) when the tenant has no such workflow
        or it is not ``Active``. The same ``request_id`` for the same workflow returns the
        existing run and creates nothing (``created`` is False), also under concurrent calls;
        with another trigger payload it raises :class:`RequestIdReused`, unless
        ``redelivery_may_differ`` (triggers: a redelivered event may carry other delivery
        details, such as its receipt time, under the same event id).

        ``start_as`` (a worker's owner name, when that worker has a free slot in this
        process): insert the run already claimed by it — ``Running`` under a lease with
        fencing token 1, ``RunQueued`` and ``RunStarted`` in the same transaction — and
        return it as :attr:`Enqueued.claimed`. It saves the claim transaction and the wake
        up; a crash before the run ends is recovered like any lost lease.

        ``test_version``: a *test run* of that version, which need not be published (nor the
        workflow Active); the run is marked ``test_run``. ``version``: run that version of
        an ``Active`` workflow instead of its current one (the kernel's command workflows,
        :mod:`dataworkflows.service.commands`, keep one version per parameter shape).

        ``trace_context``: the W3C trace context of the request that queues the run
        (:mod:`dataworkflows.common.tracecontext`), stored with it and handed to observers
        in the ``traceContext`` payload of ``RunStarted`` / ``RunResumed``.

        Concurrent calls share one transaction (group commit); each returns only after its
        run is committed.
        """
        check_json(trigger, "$.trigger")
        execution_id = uuid7()
        request = _EnqueueRequest(
            {
                "id": execution_id,
                "workflow_id": workflow_id,
                "workflow_version": test_version if test_version is not None else version,
                "test_run": test_version is not None,
                "request_id": request_id or str(execution_id),
                "status": "Pending",
                "trigger": trigger,
                "error": None,
                "tenant_id": tenant_id,
                "principal": principal,
                "correlation_id": correlation_id,
                "created_at": None,
                "started_at": None,
                "ended_at": None,
                "lease_owner": None,
                "lease_expires_at": None,
                "fencing_token": 0,
                "trace_context": trace_context,
            },
            start_as,
            redelivery_may_differ,
        )
        try:
            outcome = await self._enqueues.submit(request)
        except WorkflowNotRunnable:
            raise
        except Exception as exc:
            if not is_data_error(exc):
                raise  # the database's fault (or ours), not the value's: a 5xx
            raise UnwritableValue(
                "$.trigger", f"the database refused the run: {_db_message(exc)}"
            ) from exc
        if outcome is None:
            outcome = await self._existing_enqueue(execution_id, request)
        self._emit_events(outcome.events)
        return outcome

    async def _existing_enqueue(
        self, execution_id: uuid.UUID, request: _EnqueueRequest
    ) -> Enqueued:
        """The run that holds the request id: another caller's, or our own whose COMMIT
        answer was lost to a dropped connection (then it is reported as ours)."""
        values = request.values
        existing = await self.get_execution_by_request(values["workflow_id"], values["request_id"])
        if existing is None:  # pragma: no cover - would need the row deleted in between
            raise RuntimeError("request id conflict but no existing execution found")
        if existing["id"] != execution_id:
            if not request.redelivery_may_differ and existing["trigger"] != json.loads(
                json.dumps(values["trigger"])
            ):
                raise RequestIdReused(existing["id"])
            return Enqueued(existing, False)
        events = [
            _run_event(existing["workflow_id"], row) for row in await self.list_events(execution_id)
        ]
        claimed = None
        if (
            request.start_as is not None
            and existing["status"] == "Running"
            and existing["lease_owner"] == request.start_as
            and existing["fencing_token"] == 1
        ):
            claimed = _claimed_at_enqueue(existing)
            claimed.next_sequence = claimed.claimed_sequence = len(events) + 1
        return Enqueued(existing, True, claimed, events)

    async def _write_enqueues(
        self, batch: list[_EnqueueRequest]
    ) -> list[Enqueued | Exception | None]:
        """One transaction for many enqueues: check the workflows, insert runs and events.

        Per request: what was inserted, None (its request id was taken: the caller reads the
        existing run), or :class:`WorkflowNotRunnable`.
        """
        results: list[Enqueued | Exception | None] = [None] * len(batch)
        async with self.db.begin() as conn:
            now = self.clock.now()  # inside the transaction: after the write lock is held
            published = {
                row.id: row
                for row in await conn.execute(
                    sql.PUBLISHED_WORKFLOWS,
                    {"p_ids": sorted({r.values["workflow_id"] for r in batch})},
                )
            }
            rows: dict[tuple[str, str], dict[str, Any]] = {}
            for index, request in enumerate(batch):
                values = request.values
                workflow = published.get(values["workflow_id"])
                if workflow is None or workflow.tenant_id != values["tenant_id"]:
                    results[index] = WorkflowNotRunnable(values["workflow_id"], None)
                elif not values["test_run"] and (
                    workflow.status != "Active" or workflow.current_version is None
                ):
                    results[index] = WorkflowNotRunnable(values["workflow_id"], workflow.status)
                else:
                    if values["workflow_version"] is None:  # else pinned by the caller
                        values["workflow_version"] = workflow.current_version
                    values["created_at"] = now
                    if request.start_as is not None:
                        values.update(
                            status="Running",
                            started_at=now,
                            lease_owner=request.start_as,
                            lease_expires_at=now + self.lease,
                            fencing_token=1,
                        )
                    # a request id repeated within the batch: the first one inserts
                    rows.setdefault((values["workflow_id"], values["request_id"]), values)
            if not rows:
                await conn.rollback()
                return results
            inserted = {
                row.id for row in await conn.execute(self._enqueue_statement, list(rows.values()))
            }
            events: list[dict[str, Any]] = []
            done: dict[uuid.UUID, Enqueued] = {}
            pending = 0
            for values in rows.values():
                if values["id"] not in inserted:
                    continue
                run = _claimed_at_enqueue(values)
                queued: dict[str, Any] = {"version": values["workflow_version"]}
                if values["test_run"]:
                    queued["testRun"] = True
                new = [NewEvent(EventType.RUN_QUEUED, payload=queued)]
                if values["lease_owner"] is not None:
                    new.append(
                        NewEvent(
                            EventType.RUN_STARTED,
                            payload=run_started_payload(run, {"owner": values["lease_owner"]}),
                        )
                    )
                run.next_sequence = 1
                numbered = self._number_events(run, new, now)
                run.claimed_sequence = run.next_sequence
                events.extend(
                    _event_row(run.id, e.sequence, n, now)
                    for e, n in zip(numbered, new, strict=True)
                )
                if values["lease_owner"] is not None:
                    done[run.id] = Enqueued(values, True, run, numbered)
                else:
                    done[run.id] = Enqueued(values, True, None, numbered)
                    pending += 1
            if events:
                await conn.execute(sql.INSERT_EVENTS, events)
            if pending:  # runs left Pending: wake the workers
                await self._notify(conn, RUNS_CHANNEL, "")
        for index, request in enumerate(batch):
            key = request.values["id"]
            if results[index] is None and key in done:
                results[index] = done[key]
        return results

    # -- dead letters ---------------------------------------------------------------------

    async def requeue_dead_letter(self, dead_letter_id: uuid.UUID, tenant_id: str) -> uuid.UUID:
        """Queue a new run with the dead run's workflow version and trigger."""
        t = dead_letters
        async with self.db.begin() as conn:
            now = self.clock.now()  # inside the transaction: after the write lock is held
            row = (
                await conn.execute(
                    select(
                        t,
                        workflow_executions.c.workflow_version,
                        workflow_executions.c.trigger,
                        workflow_executions.c.principal,
                        workflow_executions.c.correlation_id,
                        workflow_executions.c.request_id,
                    )
                    .join(workflow_executions, workflow_executions.c.id == t.c.execution_id)
                    .where(t.c.id == dead_letter_id, t.c.tenant_id == tenant_id)
                )
            ).one_or_none()
            if row is None:
                raise LookupError(str(dead_letter_id))
            if row.requeued_execution_id is not None:
                raise AlreadyRequeued(row.requeued_execution_id)
            new_id = uuid7()
            await conn.execute(
                workflow_executions.insert().values(
                    id=new_id,
                    workflow_id=row.workflow_id,
                    workflow_version=row.workflow_version,
                    request_id=f"{row.request_id}:requeue:{new_id}",
                    status="Pending",
                    trigger=row.trigger,
                    tenant_id=row.tenant_id,
                    principal=row.principal,
                    correlation_id=row.correlation_id,
                    created_at=now,
                )
            )
            event = NewEvent(
                EventType.RUN_QUEUED,
                payload={"version": row.workflow_version, "requeuedFrom": str(row.execution_id)},
            )
            queued = _event_row(new_id, 1, event, now)
            await conn.execute(sql.INSERT_EVENTS, [queued])
            await conn.execute(
                update(t)
                .where(t.c.id == dead_letter_id)
                .values(requeued_at=now, requeued_execution_id=new_id)
            )
            await self._notify(conn, RUNS_CHANNEL, "")
        self._emit_events([_run_event(row.workflow_id, queued)])
        return new_id

    async def _notify(self, conn: Any, channel: str, payload: str) -> None:
        """PostgreSQL NOTIFY inside the writing transaction (delivered on commit)."""
        if not self.db.is_sqlite:
            await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})
