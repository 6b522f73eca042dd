"""The run ledger: every write a run makes goes through :class:`RunLedger`.

Durable-write budget per run (see DESIGN.md, "Performance"): one transaction to enqueue
(execution row + ``RunQueued``, the workflow's published version read in it), one to claim
and start it (``Running`` + ``RunStarted``), one per step attempt (attempt row + its
events), and the run's end rides in the transaction of its last step. Concurrent runs share
these transactions (group commit, :mod:`dataworkflows.group_commit`): enqueues with
enqueues, claims with claims, step writes with step writes — so under load a run costs
well under one commit, while each caller still returns only after its own rows are durable.
This class is the one seam where writes are batched; callers never see it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, tuple_, update

from dataworkflows import ledger_statements as sql
from dataworkflows.clock import Clock
from dataworkflows.db.database import Database
from dataworkflows.db.models import (
    FINAL_RUN_STATUSES,
    action_executions,
    dead_letters,
    execution_events,
    workflow_executions,
)
from dataworkflows.db.transient import is_data_error, retry_transient
from dataworkflows.events import EventType, RunEvent
from dataworkflows.group_commit import GroupCommit
from dataworkflows.redaction import Redactor
from dataworkflows.redaction import redactor as process_redactor
from dataworkflows.resources import insert_links, link_rows

log = logging.getLogger(__name__)


@dataclass
class ClaimedRun:
    """A run this process owns while it executes it."""

    id: uuid.UUID
    workflow_id: str
    workflow_version: int
    trigger: dict[str, Any]
    tenant_id: str
    principal: str | None
    correlation_id: str | None
    next_sequence: int
    started_at: datetime
    #: the claim's fencing token; every write of this run carries it
    fencing_token: int = 1
    #: claimed after another worker's lease expired: resume from the ledger
    recovered: bool = False
    #: how often the run was taken over after its worker stopped (see max_recoveries)
    recovery_count: int = 0
    #: set when a cancel was requested (by the API, from any process)
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)

    #: ``next_sequence`` right after the claim (set by the ledger)
    claimed_sequence: int = 0

    @property
    def id_str(self) -> str:
        return str(self.id)

    @property
    def has_history(self) -> bool:
        """Whether the ledger may hold attempts of this run (resumed, or written since)."""
        return self.recovered or self.next_sequence != self.claimed_sequence


@dataclass(frozen=True)
class StepRecord:
    """One attempt of one node, as written to ``action_executions``."""

    node_id: str
    action_type: str
    attempt: int
    status: str
    parameters: dict[str, Any] | None
    outputs: dict[str, Any] | None
    error: dict[str, Any] | None
    started_at: datetime | None
    ended_at: datetime | None
    #: :class:`~dataworkflows.ResourceLink` values the attempt returned; written in the same
    #: transaction as the attempt (``workflow_resource_links``)
    links: tuple[Any, ...] = ()


@dataclass(frozen=True)
class RunFinish:
    """The end of a run, written together with the step that caused it."""

    status: str  # Succeeded | Failed | Cancelled
    error: dict[str, Any] | None = None
    #: also record the run in ``dead_letters`` (it was recovered too often)
    dead_letter: bool = False


@dataclass(frozen=True)
class Enqueued:
    """What :meth:`RunLedger.enqueue` did."""

    #: the execution row (the existing one when ``created`` is False)
    execution: dict[str, Any]
    #: False when the request id was taken and the existing run came back
    created: bool
    #: the run, already claimed for the worker named by ``start_as`` (else None)
    claimed: ClaimedRun | None = None
    #: what the enqueue committed (``RunQueued``, and ``RunStarted`` when claimed), for
    #: observers
    events: list[RunEvent] = field(default_factory=list)


@dataclass(frozen=True)
class NewEvent:
    type: EventType
    node_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)


_STEP_EVENT = {
    "Succeeded": EventType.STEP_SUCCEEDED,
    "Failed": EventType.STEP_FAILED,
    "TimedOut": EventType.STEP_FAILED,
    "RetriableFailure": EventType.STEP_RETRYING,
    "Skipped": EventType.STEP_SKIPPED,
    "Cancelled": EventType.STEP_CANCELLED,
}
_RUN_EVENT = {
    "Succeeded": EventType.RUN_SUCCEEDED,
    "Failed": EventType.RUN_FAILED,
    "Cancelled": EventType.RUN_CANCELLED,
}


class RunLedger:
    """Writes and reads of runs, steps and events."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        observe: Callable[[RunEvent], None] | None = None,
        *,
        lease_seconds: float = 30.0,
        max_recoveries: int = 3,
        queue_limit: int = 1024,
        redactor: Redactor | None = None,
    ) -> None:
        self.db = db
        #: the kernel's secrets, removed from what is written (default: the process-wide)
        self.redactor = redactor if redactor is not None else process_redactor
        self.clock = clock
        self._observe = observe
        self.lease = timedelta(seconds=lease_seconds)
        self.max_recoveries = max_recoveries
        self._finished: dict[uuid.UUID, list[asyncio.Future[str]]] = {}
        #: runs this process executes, so a cancel request can reach them at once
        self.local_runs: dict[uuid.UUID, ClaimedRun] = {}
        #: group commit of enqueues and of step writes (see enqueue, record_steps)
        self._enqueues: GroupCommit[_EnqueueRequest, Enqueued | None] = GroupCommit(
            self._write_enqueues,
            name="ledger-enqueue",
            max_batch=min(64, queue_limit),
            max_pending=queue_limit,
        )
        self._step_writes: GroupCommit[_StepWrite, list[RunEvent] | StaleRunError] = GroupCommit(
            self._write_batch,
            name="ledger-flush",
            max_batch=min(64, queue_limit),
            max_pending=queue_limit,
        )
        self._claim_statement = sql.claim_statement(skip_locked=not db.is_sqlite)
        self._enqueue_statement = sql.enqueue_statement(db)

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
        workflow Active); the run is marked ``test_run``.

        Concurrent calls share one transaction (group commit); each returns only after its
        run is committed.
        """
        check_json(trigger, "$.trigger")
        execution_id = uuid.uuid4()
        request = _EnqueueRequest(
            {
                "id": execution_id,
                "workflow_id": workflow_id,
                "workflow_version": test_version,
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
                    if not values["test_run"]:  # a test run comes with its version
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
                        NewEvent(EventType.RUN_STARTED, payload={"owner": values["lease_owner"]})
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

    # -- claim ----------------------------------------------------------------------------

    async def claim(self, owner: str = "local") -> ClaimedRun | None:
        """Take the oldest claimable run and mark it ``Running`` under a lease, or return None.

        Claimable: ``Pending``, or ``Running`` whose lease has expired (its worker died or
        stalled). Atomic on both backends — a conditional UPDATE under ``BEGIN IMMEDIATE``
        on SQLite, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL — so two workers never hold the
        same run. Every claim increases the run's fencing token. A run recovered more than
        ``max_recoveries`` times comes back with :attr:`ClaimedRun.recovery_count` over the
        limit: the conductor records its lost attempt and moves it to the dead letters
        (:meth:`is_over_recovery_limit`).
        """
        runs = await self.claim_many(owner, 1)
        return runs[0] if runs else None

    def is_over_recovery_limit(self, run: ClaimedRun) -> bool:
        """True when the run was taken over from stopped workers too often."""
        return run.recovery_count > self.max_recoveries

    def dead_letter_finish(self, run: ClaimedRun) -> RunFinish:
        """The end of a run that keeps stopping its worker (see :meth:`claim`)."""
        reason = (
            f"the run was recovered {run.recovery_count} times (limit {self.max_recoveries}): "
            "a step keeps stopping its worker"
        )
        error = {"code": "recovery_limit", "message": reason, "recoveries": run.recovery_count}
        return RunFinish("Failed", error, dead_letter=True)

    async def claim_many(self, owner: str, limit: int) -> list[ClaimedRun]:
        """Claim up to ``limit`` runs in one transaction (see :meth:`claim`).

        A transient database error is retried on a fresh connection. (Should the server
        have committed a claim whose answer was lost, that run is taken over when its lease
        expires, as after a crash.)
        """
        return await retry_transient(lambda: self._claim_batch(owner, limit), what="claim")

    async def _claim_batch(self, owner: str, limit: int) -> list[ClaimedRun]:
        claimed: list[ClaimedRun] = []
        recorded: list[tuple[ClaimedRun, list[RunEvent]]] = []
        async with self.db.begin() as conn:
            now = self.clock.now()  # inside the transaction: after the write lock is held
            rows = (
                await conn.execute(
                    self._claim_statement,
                    {
                        "p_now": now,
                        "p_owner": owner,
                        "p_lease_until": now + self.lease,
                        "p_limit": limit,
                    },
                )
            ).all()
            if not rows:
                # nothing claimed: roll back rather than commit an empty transaction
                await conn.rollback()
                return []
            rows.sort(key=lambda r: r.created_at)
            # A first claim (fencing token 1) follows only RunQueued (sequence 1): nothing
            # else writes events for a run that never ran. Others read where they stopped.
            resumed = [r.id for r in rows if r.fencing_token > 1]
            last_seq: dict[uuid.UUID, int] = {}
            if resumed:
                last_seq = dict(
                    (
                        await conn.execute(
                            select(
                                execution_events.c.execution_id,
                                func.max(execution_events.c.sequence),
                            )
                            .where(execution_events.c.execution_id.in_(resumed))
                            .group_by(execution_events.c.execution_id)
                        )
                    ).all()
                )
            events: list[dict[str, Any]] = []
            for row in rows:
                run = ClaimedRun(
                    id=row.id,
                    workflow_id=row.workflow_id,
                    workflow_version=row.workflow_version,
                    trigger=row.trigger,
                    tenant_id=row.tenant_id,
                    principal=row.principal,
                    correlation_id=row.correlation_id,
                    next_sequence=last_seq.get(row.id, 1) + 1,
                    started_at=row.started_at,
                    fencing_token=row.fencing_token,
                    recovered=row.fencing_token > 1,
                    recovery_count=row.recovery_count,
                )
                if row.cancel_requested:
                    run.cancel_requested.set()
                if run.recovered:
                    event = NewEvent(
                        EventType.RUN_RESUMED,
                        payload={"recoveryCount": row.recovery_count, "owner": owner},
                    )
                else:
                    event = NewEvent(EventType.RUN_STARTED, payload={"owner": owner})
                numbered = self._number_events(run, [event], now)
                run.claimed_sequence = run.next_sequence
                events.append(_event_row(run.id, numbered[0].sequence, event, now))
                claimed.append(run)
                recorded.append((run, numbered))
            if events:
                await conn.execute(sql.INSERT_EVENTS, events)
        for _run, numbered in recorded:
            self._emit_events(numbered)
        return claimed

    def _dead_letter_row(self, run: ClaimedRun, finish: RunFinish, now: datetime) -> dict[str, Any]:
        return {
            "id": uuid.uuid4(),
            "execution_id": run.id,
            "workflow_id": run.workflow_id,
            "tenant_id": run.tenant_id,
            "reason": (finish.error or {}).get("message", "dead letter"),
            "details": {"recoveries": run.recovery_count, "limit": self.max_recoveries},
            "created_at": now,
        }

    # -- steps and the end of a run -------------------------------------------------------

    async def record_step(
        self, run: ClaimedRun, step: StepRecord, finish: RunFinish | None = None
    ) -> None:
        """Write one attempt (and, if given, the end of the run) in one transaction."""
        await self.record_steps(run, [step], finish)

    async def record_steps(
        self, run: ClaimedRun, steps: Sequence[StepRecord], finish: RunFinish | None = None
    ) -> None:
        """Write attempts (and, if given, the end of the run), durably, before returning.

        Raises :class:`StaleRunError`, writing nothing for this run, when this claim no
        longer holds the run (its lease was taken over) or the run is already final.

        Group commit: writes that arrive while another is being committed share the next
        transaction (steps of *different* runs; a run's own writes are sequential). Every
        caller still returns only after its rows are committed, so nothing that depends on
        a step starts before the step is durable.
        """
        # secrets handed to actions never reach the ledger (dataworkflows.redaction)
        steps = [_redacted(step, self.redactor) for step in steps]
        if finish is not None and finish.error:
            finish = replace(finish, error=self.redactor.redact(finish.error))
        # checked before joining a batch: a value of this run cannot fail another run's write
        for step in steps:
            check_step(step)
        if finish is not None:
            try:
                check_json(finish.error, "$.error")
            except UnwritableValue as exc:
                raise UnwritableRecord(exc.path, exc.message) from None
        write = _StepWrite(run, steps, finish, base=run.next_sequence)
        try:
            recorded = await self._step_writes.submit(write)
        except Exception as exc:
            run.next_sequence = write.base  # nothing of it was written
            if not is_data_error(exc):
                raise
            raise UnwritableRecord(
                "$", f"the database refused the run's step rows: {_db_message(exc)}"
            ) from exc
        self._emit_events(recorded)
        if finish is not None:
            self._resolve(run.id, finish.status)

    async def _write_batch(self, batch: list[_StepWrite]) -> list[list[RunEvent] | StaleRunError]:
        """One transaction for many runs' writes; each run is fenced on its own.

        Re-entrant (group commit may call it again with the same writes, see
        :mod:`dataworkflows.group_commit`): each write is numbered from its own base again,
        and a write that an earlier attempt did commit — its COMMIT answer was lost with the
        connection — is recognised by its events and not written twice.
        """
        results: list[list[RunEvent] | StaleRunError] = [[] for _ in batch]
        unsure = [write for write in batch if write.attempted]
        for write in batch:
            write.attempted = True
            write.run.next_sequence = write.base
        async with self.db.begin() as conn:
            now = self.clock.now()  # inside the transaction: after the write lock is held
            written: dict[uuid.UUID, list[RunEvent]] = {}
            if unsure:
                written = await self._already_written(conn, unsure)
            todo: list[tuple[int, _StepWrite]] = []
            for index, write in enumerate(batch):
                events_of = written.get(write.run.id)
                if events_of is not None:
                    write.run.next_sequence = events_of[-1].sequence + 1
                    results[index] = events_of
                else:
                    todo.append((index, write))
            # Fence every run of the batch: one UPDATE for the runs that go on (extend the
            # lease), one per distinct end for the runs that end (usually all Succeeded).
            groups: dict[str, tuple[RunFinish | None, list[ClaimedRun]]] = {}
            for _index, write in todo:
                key = "" if write.finish is None else _finish_key(write.finish)
                groups.setdefault(key, (write.finish, []))[1].append(write.run)
            held: set[uuid.UUID] = set()
            for finish, runs in groups.values():
                held.update(await self._fence_many(conn, runs, now, finish))
            actions: list[dict[str, Any]] = []
            links: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            dead: list[dict[str, Any]] = []
            for index, write in todo:
                run, steps, finish = write.run, write.steps, write.finish
                if run.id not in held:
                    results[index] = StaleRunError.for_claim(run)
                    continue
                actions.extend(_action_row(run, step) for step in steps)
                for step in steps:
                    links.extend(
                        link_rows(
                            step.links,
                            workflow_id=run.workflow_id,
                            tenant_id=run.tenant_id,
                            execution_id=run.id,
                            node_id=step.node_id,
                            now=now,
                        )
                    )
                new = [_step_event(step) for step in steps]
                if finish is not None:
                    new.append(_finish_event(finish))
                    if finish.dead_letter:
                        dead.append(self._dead_letter_row(run, finish, now))
                recorded = self._number_events(run, new, now)
                events.extend(
                    _event_row(run.id, e.sequence, n, now)
                    for e, n in zip(recorded, new, strict=True)
                )
                results[index] = recorded
            if actions:
                await conn.execute(sql.INSERT_ACTIONS, actions)
            if links:
                await insert_links(conn, self.db, links)
            if events:
                await conn.execute(sql.INSERT_EVENTS, events)
            if dead:
                await conn.execute(dead_letters.insert(), dead)
        return results

    async def _already_written(
        self, conn: Any, writes: list[_StepWrite]
    ) -> dict[uuid.UUID, list[RunEvent]]:
        """The events of ``writes`` that an earlier attempt committed, by run."""
        t = execution_events
        firsts = {write.run.id: write for write in writes}
        rows = await conn.execute(
            select(t)
            .where(
                t.c.execution_id.in_(list(firsts)),
                t.c.sequence >= min(write.base for write in writes),
            )
            .order_by(t.c.execution_id, t.c.sequence)
        )
        found: dict[uuid.UUID, list[RunEvent]] = {}
        for row in rows:
            write = firsts[row.execution_id]
            if row.sequence >= write.base:
                found.setdefault(row.execution_id, []).append(
                    _run_event(write.run.workflow_id, row._mapping)
                )
        return found

    async def finish(self, run: ClaimedRun, finish: RunFinish) -> None:
        """End a run without a step (e.g. a definition that can no longer be loaded)."""
        await self.record_steps(run, [], finish)

    async def _fence_many(
        self, conn: Any, runs: Sequence[ClaimedRun], now: datetime, finish: RunFinish | None
    ) -> set[uuid.UUID]:
        """First statement of every write of claimed runs: prove each lease is still ours.

        Matches a run only while it is ``Running`` under its claim's fencing token, so a
        zombie worker (its lease taken over) or a write after the end changes nothing.
        Extends the leases, or ends the runs with ``finish``. Returns the ids still held; a
        run missing from it must have nothing of its own written in this transaction (its
        caller gets :class:`StaleRunError`).
        """
        claims = [(run.id, run.fencing_token) for run in runs]
        if finish is None:
            statement = sql.FENCE_ONGOING
            params: dict[str, Any] = {"p_claims": claims, "p_lease_until": now + self.lease}
        else:
            statement = sql.FENCE_FINISH
            params = {
                "p_claims": claims,
                "p_status": finish.status,
                "p_error": finish.error,
                "p_now": now,
            }
        return {row.id for row in await conn.execute(statement, params)}

    def _number_events(
        self, run: ClaimedRun, events: Iterable[NewEvent], now: datetime
    ) -> list[RunEvent]:
        recorded = []
        for event in events:
            recorded.append(
                RunEvent(
                    execution_id=run.id_str,
                    workflow_id=run.workflow_id,
                    sequence=run.next_sequence,
                    type=event.type,
                    created_at=now,
                    node_id=event.node_id,
                    payload=event.payload,
                )
            )
            run.next_sequence += 1
        return recorded

    def _emit_events(self, events: Iterable[RunEvent]) -> None:
        """Hand committed events to the observer (``on_run_event``), in sequence order.

        Called once per committed write, after its COMMIT, on every path that writes events.
        """
        if self._observe is None:
            return
        for event in events:
            try:
                self._observe(event)
            except Exception:
                log.exception("an on_run_event observer failed (run %s)", event.execution_id)

    # -- leases ---------------------------------------------------------------------------

    async def renew(self, owner: str, runs: list[ClaimedRun]) -> list[ClaimedRun]:
        """Extend the leases of ``runs``; returns the ones whose lease was lost.

        Also delivers cancel requests: a run whose ``cancel_requested`` flag is set in the
        database gets its :attr:`ClaimedRun.cancel_requested` event set.
        """
        if not runs:
            return []
        t = workflow_executions

        async def renew_once() -> list[Any]:
            async with self.db.begin() as conn:
                now = self.clock.now()
                return list(
                    await conn.execute(
                        update(t)
                        .where(
                            # the claim, not only the owner: a run this worker claimed again
                            # after losing it must not keep the old claim alive
                            tuple_(t.c.id, t.c.fencing_token).in_(
                                [(r.id, r.fencing_token) for r in runs]
                            ),
                            t.c.status == "Running",
                            t.c.lease_owner == owner,
                        )
                        .values(lease_expires_at=now + self.lease)
                        .returning(t.c.id, t.c.fencing_token, t.c.cancel_requested)
                    )
                )

        rows = await retry_transient(renew_once, what="lease renewal")
        held = {row.id: row for row in rows}
        lost = []
        for run in runs:
            row = held.get(run.id)
            if row is None or row.fencing_token != run.fencing_token:
                lost.append(run)
            elif row.cancel_requested:
                run.cancel_requested.set()
        return lost

    async def release(self, owner: str, runs: list[ClaimedRun]) -> None:
        """Give runs back (graceful shutdown): another worker may claim them at once."""
        if not runs:
            return
        t = workflow_executions

        async def release_once() -> None:
            async with self.db.begin() as conn:
                now = self.clock.now()
                for run in runs:
                    await conn.execute(
                        update(t)
                        .where(
                            t.c.id == run.id,
                            t.c.status == "Running",
                            t.c.fencing_token == run.fencing_token,
                        )
                        .values(lease_owner=None, lease_expires_at=now)
                    )
                await self._notify(conn, RUNS_CHANNEL, "")

        await retry_transient(release_once, what="releasing runs")

    # -- cancellation ---------------------------------------------------------------------

    async def request_cancel(self, execution_id: uuid.UUID) -> str:
        """Cancel a run. Returns its status afterwards (``Cancelled`` or ``Running``).

        A ``Pending`` run is cancelled at once and never starts. A ``Running`` run gets its
        ``cancel_requested`` flag; the worker holding it (in this or any process) stops its
        in-flight steps and ends it ``Cancelled``. A final run raises :class:`RunIsFinal`.
        """
        t = workflow_executions
        recorded: RunEvent | None = None
        async with self.db.begin() as conn:
            now = self.clock.now()  # inside the transaction: after the write lock is held
            cancelled = (
                await conn.execute(
                    update(t)
                    .where(t.c.id == execution_id, t.c.status == "Pending")
                    .values(status="Cancelled", ended_at=now, error=_CANCELLED_ERROR)
                    .returning(t.c.workflow_id)
                )
            ).one_or_none()
            if cancelled is not None:
                last = (
                    await conn.execute(
                        select(func.max(execution_events.c.sequence)).where(
                            execution_events.c.execution_id == execution_id
                        )
                    )
                ).scalar_one()
                event = NewEvent(EventType.RUN_CANCELLED, payload={"status": "Cancelled"})
                row = _event_row(execution_id, (last or 0) + 1, event, now)
                await conn.execute(sql.INSERT_EVENTS, [row])
                recorded = _run_event(cancelled.workflow_id, row)
                status = "Cancelled"
            else:
                row = (
                    await conn.execute(
                        update(t)
                        .where(t.c.id == execution_id, t.c.status == "Running")
                        .values(cancel_requested=True)
                        .returning(t.c.status)
                    )
                ).one_or_none()
                if row is None:
                    current = (
                        await conn.execute(select(t.c.status).where(t.c.id == execution_id))
                    ).scalar_one_or_none()
                    if current is None:
                        raise LookupError(str(execution_id))
                    raise RunIsFinal(current)
                await self._notify(conn, CANCEL_CHANNEL, str(execution_id))
                status = "Running"
        if recorded is not None:
            self._emit_events([recorded])
            self._resolve(execution_id, "Cancelled")
        else:
            local = self.local_runs.get(execution_id)
            if local is not None:
                local.cancel_requested.set()
        return status

    # -- dead letters ---------------------------------------------------------------------

    async def list_dead_letters(self, tenant_id: str, limit: int = 100) -> list[dict[str, Any]]:
        t = dead_letters
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(t)
                .where(t.c.tenant_id == tenant_id)
                .order_by(t.c.created_at.desc())
                .limit(limit)
            )
        return [dict(r._mapping) for r in rows]

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
            new_id = uuid.uuid4()
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

    # -- waiting for runs (in this process) -----------------------------------------------

    def _resolve(self, execution_id: uuid.UUID, status: str) -> None:
        for future in self._finished.pop(execution_id, []):
            if not future.done():
                future.set_result(status)

    async def wait_until_final(
        self, execution_id: uuid.UUID, timeout: float = 30.0, poll: float = 0.5
    ) -> str:
        """Wait until a run is final; returns its status.

        Wakes at once when this process finishes the run, and re-reads the database every
        ``poll`` seconds for runs finished elsewhere. Raises ``TimeoutError``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            future: asyncio.Future[str] = loop.create_future()
            self._finished.setdefault(execution_id, []).append(future)
            row = await self.get_execution(execution_id)
            if row is None:
                raise LookupError(f"no execution {execution_id}")
            if row["status"] in FINAL_RUN_STATUSES:
                return str(row["status"])
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"run {execution_id} is still {row['status']}")
            try:
                return await asyncio.wait_for(asyncio.shield(future), min(poll, remaining))
            except TimeoutError:
                continue
            finally:
                waiters = self._finished.get(execution_id, [])
                if future in waiters:
                    waiters.remove(future)

    # -- reads ----------------------------------------------------------------------------

    async def get_execution(self, execution_id: uuid.UUID) -> dict[str, Any] | None:
        return await self.db.read(lambda conn: _execution_of(conn, execution_id))

    async def get_execution_by_request(
        self, workflow_id: str, request_id: str
    ) -> dict[str, Any] | None:
        t = workflow_executions
        statement = select(t).where(t.c.workflow_id == workflow_id, t.c.request_id == request_id)

        async def query(conn: Any) -> dict[str, Any] | None:
            row = (await conn.execute(statement)).one_or_none()
            return dict(row._mapping) if row else None

        return await self.db.read(query)

    async def list_actions(self, execution_id: uuid.UUID) -> list[dict[str, Any]]:
        return await self.db.read(lambda conn: _actions_of(conn, execution_id))

    async def get_execution_with_actions(
        self, execution_id: uuid.UUID
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The run's row and its attempts, on one connection (None, [] if there is none)."""

        async def query(conn: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
            row = await _execution_of(conn, execution_id)
            if row is None:
                return None, []
            return row, await _actions_of(conn, execution_id)

        return await self.db.read(query)

    async def list_events(
        self, execution_id: uuid.UUID, after: int = 0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        t = execution_events
        statement = (
            select(t)
            .where(t.c.execution_id == execution_id, t.c.sequence > after)
            .order_by(t.c.sequence)
            .limit(limit)
        )

        async def query(conn: Any) -> list[dict[str, Any]]:
            return [dict(r._mapping) for r in await conn.execute(statement)]

        return await self.db.read(query)


class StaleRunError(RuntimeError):
    """A worker tried to change a run that is already final (or no longer its own)."""

    @classmethod
    def for_claim(cls, run: ClaimedRun) -> StaleRunError:
        return cls(
            f"run {run.id}: write rejected, the claim with fencing token "
            f"{run.fencing_token} is no longer current (taken over or already final)"
        )


class WorkflowNotRunnable(Exception):
    """No run was enqueued: the tenant has no such workflow (``status`` None), or it is not
    ``Active``."""

    def __init__(self, workflow_id: str, status: str | None) -> None:
        super().__init__(workflow_id, status)
        self.workflow_id = workflow_id
        self.status = status


class UnwritableValue(ValueError):
    """A value cannot be stored (not JSON, or refused by the database); nothing was written.

    ``path`` locates it (``$.trigger``, ``$.steps[0].outputs``); the message says why. It is
    the fault of the value, never of the database: the same value always fails.
    """

    code = "unwritable_value"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class UnwritableRecord(UnwritableValue):
    """Step rows of a run that cannot be stored (see :meth:`RunLedger.record_steps`)."""

    code = "unserializable_result"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)
        #: the rows that were refused (set by the conductor that tried to write them)
        self.records: list[StepRecord] = []


def check_json(value: Any, path: str) -> None:
    """Raise :class:`UnwritableValue` unless ``value`` is storable JSON.

    Storable means what both databases accept: ``json.dumps`` without NaN or infinities
    (PostgreSQL's JSONB refuses them), with string keys.
    """
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UnwritableValue(path, f"not storable as JSON ({exc})") from None


def check_step(step: StepRecord) -> None:
    """Raise :class:`UnwritableRecord` unless every JSON field of ``step`` is storable."""
    for name in ("parameters", "outputs", "error"):
        try:
            check_json(getattr(step, name), f"$.nodes.{step.node_id}.{name}")
        except UnwritableValue as exc:
            raise UnwritableRecord(exc.path, exc.message) from None


def _db_message(error: BaseException) -> str:
    """The database's own words for a refusal: its message and detail, no SQL."""
    orig = getattr(error, "orig", None) or error
    lines = str(orig).strip().splitlines()
    message = lines[0] if lines else type(orig).__name__
    detail = getattr(getattr(orig, "diag", None), "message_detail", None)
    return f"{message} ({detail})" if detail else message


def _run_event(workflow_id: str, row: Mapping[str, Any]) -> RunEvent:
    """An ``execution_events`` row (or the values of one) as observers receive it."""
    return RunEvent(
        execution_id=str(row["execution_id"]),
        workflow_id=workflow_id,
        sequence=row["sequence"],
        type=EventType(row["type"]),
        created_at=row["created_at"],
        node_id=row["node_id"],
        payload=row["payload"],
    )


class RequestIdReused(Exception):
    """The request id already named a run with another trigger payload; ``args[0]`` is
    that run's id. Nothing was written."""


class RunIsFinal(Exception):
    """The run has already ended; ``args[0]`` is its status."""


class AlreadyRequeued(Exception):
    """The dead letter was requeued before; ``args[0]`` is the new run's id."""


RUNS_CHANNEL = "dataworkflows_runs"
CANCEL_CHANNEL = "dataworkflows_cancel"
_CANCELLED_ERROR = {"code": "cancelled", "message": "the run was cancelled before it started"}


def _redacted(step: StepRecord, redactor: Redactor) -> StepRecord:
    if not redactor.active:
        return step
    return replace(
        step,
        parameters=redactor.redact(step.parameters),
        outputs=redactor.redact(step.outputs),
        error=redactor.redact(step.error),
        links=tuple(
            replace(
                link,
                external_id=redactor.redact_text(link.external_id),
                url=redactor.redact_text(link.url) if link.url else link.url,
            )
            for link in step.links
        ),
    )


@dataclass
class _StepWrite:
    """One caller's part of a group-committed step write."""

    run: ClaimedRun
    steps: list[StepRecord]
    finish: RunFinish | None
    #: the sequence number of the write's first event
    base: int
    #: an attempt was made: it may have committed although its caller saw an error
    attempted: bool = False


@dataclass
class _EnqueueRequest:
    #: the ``workflow_executions`` row; version and creation time are set in the batch
    values: dict[str, Any]
    #: the owner of a worker that takes the run at once (see RunLedger.enqueue)
    start_as: str | None = None
    #: the request id may come back with another payload (see RunLedger.enqueue)
    redelivery_may_differ: bool = False


def _claimed_at_enqueue(values: dict[str, Any]) -> ClaimedRun:
    return ClaimedRun(
        id=values["id"],
        workflow_id=values["workflow_id"],
        workflow_version=values["workflow_version"],
        trigger=values["trigger"],
        tenant_id=values["tenant_id"],
        principal=values["principal"],
        correlation_id=values["correlation_id"],
        next_sequence=2,  # after RunQueued
        started_at=values["started_at"],
        fencing_token=1,
    )


async def _execution_of(conn: Any, execution_id: uuid.UUID) -> dict[str, Any] | None:
    t = workflow_executions
    row = (await conn.execute(select(t).where(t.c.id == execution_id))).one_or_none()
    return dict(row._mapping) if row else None


async def _actions_of(conn: Any, execution_id: uuid.UUID) -> list[dict[str, Any]]:
    t = action_executions
    rows = await conn.execute(
        select(t)
        .where(t.c.execution_id == execution_id)
        # an attempt lost with its worker has no known start: it sorts by when its loss
        # was recorded
        .order_by(func.coalesce(t.c.started_at, t.c.ended_at), t.c.node_id, t.c.attempt)
    )
    return [dict(r._mapping) for r in rows]


def _finish_key(finish: RunFinish) -> str:
    """Runs that end the same way share one fencing UPDATE."""
    return f"{finish.status}:{json.dumps(finish.error, sort_keys=True, default=str)}"


def _step_event(step: StepRecord) -> NewEvent:
    return NewEvent(
        _STEP_EVENT[step.status],
        step.node_id,
        {"attempt": step.attempt, "status": step.status}
        | ({"error": step.error} if step.error else {}),
    )


def _action_row(run: ClaimedRun, step: StepRecord) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "execution_id": run.id,
        "node_id": step.node_id,
        "action_type": step.action_type,
        "attempt": step.attempt,
        "status": step.status,
        "parameters": step.parameters,
        "outputs": step.outputs,
        "error": step.error,
        "started_at": step.started_at,
        "ended_at": step.ended_at,
    }


def _finish_event(finish: RunFinish) -> NewEvent:
    payload = {"status": finish.status} | ({"error": finish.error} if finish.error else {})
    return NewEvent(_RUN_EVENT[finish.status], payload=payload)


def _event_row(
    execution_id: uuid.UUID, sequence: int, event: NewEvent, now: datetime
) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "sequence": sequence,
        "type": str(event.type),
        "node_id": event.node_id,
        "payload": event.payload,
        "created_at": now,
    }
