"""What the run ledger reads and writes: the records of runs and attempts, the ledger's
errors, the checks a value passes before it joins a shared write, and the builders of
rows and events. Plain data and pure functions; :mod:`dataworkflows.ledger.run_ledger` does the I/O.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from dataworkflows.common.clock import iso_utc
from dataworkflows.common.redaction import Redactor
from dataworkflows.db.models import (
    action_executions,
    workflow_executions,
)
from dataworkflows.events import EventType, RunEvent


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
    #: the W3C trace context the run was queued with (``{"traceparent", "tracestate"?}``)
    trace_context: dict[str, str] | None = None
    #: the run tree (subworkflows): the parent run (None: top level), the top-level run,
    #: this run's depth (0 at the top) and whether its end wakes the waiting parent
    parent_id: uuid.UUID | None = None
    root_id: uuid.UUID | None = None
    depth: int = 0
    wakes_parent: bool = False

    #: ``next_sequence`` right after the claim (set by the ledger)
    claimed_sequence: int = 0
    #: the ids of this run's durable ``Running`` rows by (node id, attempt): the attempt's
    #: next row replaces its ``Running`` row (same id), never adds a second one
    running_rows: dict[tuple[str, int], uuid.UUID] = field(default_factory=dict)

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
    #: what the action wrote to ``ctx.log``: ``[{time, level, message}]`` (None: nothing)
    logs: list[dict[str, Any]] | None = None
    #: run variables the attempt set (``ctx.set_variable``), ``{key: value}``; upserted
    #: into ``run_variables`` in the same transaction as the attempt (None: nothing)
    variables: dict[str, Any] | None = None


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
    #: for observers only (not written): see RunEvent.action_type / duration_seconds
    action_type: str | None = None
    duration_seconds: float | None = None


RUNNING = "Running"
_STEP_EVENT = {
    RUNNING: EventType.STEP_STARTED,
    "Waiting": EventType.STEP_WAITING,
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


def json_problem(value: Any) -> str | None:
    """Why ``value`` is not storable JSON, or None if it is.

    Storable means what both databases accept: ``json.dumps`` without NaN or infinities
    (PostgreSQL's JSONB refuses them), with string keys.
    """
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def check_json(value: Any, path: str) -> None:
    """Raise :class:`UnwritableValue` unless ``value`` is storable JSON (:func:`json_problem`)."""
    problem = json_problem(value)
    if problem is not None:
        raise UnwritableValue(path, f"not storable as JSON ({problem})")


def check_step(step: StepRecord) -> None:
    """Raise :class:`UnwritableRecord` unless every JSON field of ``step`` is storable."""
    for name in ("parameters", "outputs", "error", "logs", "variables"):
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
#: NOTIFYed (PostgreSQL) by every transaction that inserts events: a trigger of migration
#: 0012 does it, once per transaction, on every path that writes events
EVENTS_CHANNEL = "dataworkflows_events"
_CANCELLED_ERROR = {"code": "cancelled", "message": "the run was cancelled before it started"}


def _redacted(step: StepRecord, redactor: Redactor) -> StepRecord:
    if not redactor.active:
        return step
    return replace(
        step,
        parameters=redactor.redact(step.parameters),
        outputs=redactor.redact(step.outputs),
        error=redactor.redact(step.error),
        logs=redactor.redact(step.logs),
        variables=redactor.redact(step.variables),
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
    #: the row id of each step (the id of the ``Running`` row it replaces, if any)
    row_ids: list[uuid.UUID] = field(default_factory=list)
    #: the ids of ``Running`` rows this write replaces (deleted, then inserted again)
    replaces: list[uuid.UUID] = field(default_factory=list)


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
        trace_context=values["trace_context"],
        parent_id=values.get("parent_execution_id"),
        root_id=values.get("root_execution_id"),
        depth=values.get("depth") or 0,
        wakes_parent=bool(values.get("wakes_parent")),
    )


async def _execution_of(conn: Any, execution_id: uuid.UUID) -> dict[str, Any] | None:
    t = workflow_executions
    row = (await conn.execute(select(t).where(t.c.id == execution_id))).one_or_none()
    return dict(row._mapping) if row else None


async def _actions_of(
    conn: Any, execution_id: uuid.UUID, *, logs: bool = True
) -> list[dict[str, Any]]:
    """The run's attempt rows; ``logs=False`` leaves out their step log lines (up to the
    per-run cap), which only the logs read and a restored run need."""
    t = action_executions
    columns = [c for c in t.c if logs or c.name != "logs"]
    rows = await conn.execute(
        select(*columns)
        .where(t.c.execution_id == execution_id)
        # an attempt lost with its worker has no known start: it sorts by when its loss
        # was recorded
        .order_by(func.coalesce(t.c.started_at, t.c.ended_at), t.c.node_id, t.c.attempt)
    )
    return [dict(r._mapping) for r in rows]


def run_started_payload(run: ClaimedRun, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload of a ``RunStarted`` / ``RunResumed`` event: ``payload`` plus the pinned
    ``version``, for a resumed run the time it first started (``startedAt``) and, when the
    run was queued with one, its W3C ``traceContext``: what a tracing plugin in any process
    needs to continue the run's trace."""
    payload = {**payload, "version": run.workflow_version}
    if run.recovered and run.started_at is not None:
        payload["startedAt"] = iso_utc(run.started_at)
    if run.trace_context:
        payload["traceContext"] = dict(run.trace_context)
    return payload


def _finish_key(finish: RunFinish) -> str:
    """Runs that end the same way share one fencing UPDATE."""
    return f"{finish.status}:{json.dumps(finish.error, sort_keys=True, default=str)}"


def _step_event(step: StepRecord) -> NewEvent:
    payload: dict[str, Any] = {"attempt": step.attempt, "status": step.status}
    if step.status == RUNNING and step.started_at is not None:
        payload["startedAt"] = iso_utc(step.started_at)
    duration = None
    if step.status != RUNNING and step.started_at is not None and step.ended_at is not None:
        duration = (step.ended_at - step.started_at).total_seconds()
    return NewEvent(
        _STEP_EVENT[step.status],
        step.node_id,
        payload | ({"error": step.error} if step.error else {}),
        action_type=step.action_type,
        duration_seconds=duration,
    )


def _action_row(run: ClaimedRun, step: StepRecord, row_id: uuid.UUID) -> dict[str, Any]:
    return {
        "id": row_id,
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
        "logs": step.logs,
    }


def _finish_event(finish: RunFinish, correlation_id: str | None) -> NewEvent:
    """The run's terminal event; it carries the run's correlation id (null when it has
    none) so that a client waiting on a command's id finds its end in the event itself."""
    payload = {"status": finish.status} | ({"error": finish.error} if finish.error else {})
    payload["correlationId"] = correlation_id
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
