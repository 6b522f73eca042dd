"""Runs: queue one, read one or a page of them, cancel, requeue dead letters, events.

The run half of :class:`~dataworkflows.service.workflows.WorkflowService` (which inherits
:class:`RunOperations`), with the API views of runs, attempts, events and dead letters.
Kept apart from the workflow lifecycle (create, version, publish, archive) because it talks
to the ledger and the worker, not to the workflow store.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Protocol

from dataworkflows.common import tracecontext
from dataworkflows.common.errors import Conflict, NotFound, Unprocessable
from dataworkflows.common.logcontext import current_correlation_id
from dataworkflows.common.pagination import DEFAULT_LIMIT, PageRequest
from dataworkflows.common.pagination import page as paged
from dataworkflows.ledger.queries import RunQueries
from dataworkflows.ledger.run_ledger import (
    AlreadyRequeued,
    Enqueued,
    RequestIdReused,
    RunIsFinal,
    RunLedger,
    UnwritableValue,
    WorkflowNotRunnable,
)
from dataworkflows.service.views import (
    dead_letter_view,
    event_view,
    execution_summary,
    execution_view,
    log_lines_view,
    run_summary,
    variable_view,
)
from dataworkflows.service.workflow_reads import workflow_not_found


class RunIntake(Protocol):
    """Where runs are queued: this process's worker (:meth:`Worker.enqueue
    <dataworkflows.engine.worker.Worker.enqueue>`), which takes a run at once when it
    has a free slot, and hears of cancel requests for the runs it holds."""

    async def enqueue(
        self,
        *,
        workflow_id: str,
        trigger: dict[str, Any],
        request_id: str | None,
        tenant_id: str,
        principal: str | None,
        correlation_id: str | None,
        redelivery_may_differ: bool,
        test_version: int | None,
        version: int | None = None,
        trace_context: dict[str, str] | None,
    ) -> Enqueued: ...

    def cancel_requested(self, execution_id: uuid.UUID) -> None: ...

    def wake(self) -> None: ...


class RunOperations:
    """Run use cases; mixed into :class:`~dataworkflows.service.workflows.WorkflowService`."""

    ledger: RunLedger
    runs: RunQueries
    _intake: RunIntake

    async def execute(
        self,
        workflow_id: str,
        *,
        trigger: dict[str, Any] | None = None,
        request_id: str | None = None,
        tenant_id: str = "default",
        principal: str | None = None,
        correlation_id: str | None = None,
        redelivery_may_differ: bool = False,
        test_version: int | None = None,
        version: int | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Enqueue a run of the workflow's published version. Returns (run summary, created).

        A ``request_id`` already used with another trigger payload is a 409
        ``request_id_reused`` unless ``redelivery_may_differ`` (events of triggers, whose
        request id is the event's identity).

        The run pins that version: publishing later never changes it. Without an explicit
        ``correlation_id`` the run takes the one bound to the current request
        (:mod:`dataworkflows.common.logcontext`), so webhook-started runs carry theirs too.
        ``version`` pins another version of the Active workflow (command workflows).
        Likewise it stores the request's W3C trace context, if any
        (:mod:`dataworkflows.common.tracecontext`), for tracing plugins.
        """
        if trigger is not None and not isinstance(trigger, dict):
            raise Unprocessable(
                "trigger must be a JSON object",
                code="invalid_request",
                details={"path": "$.trigger"},
            )
        if request_id is not None and (
            not isinstance(request_id, str) or not request_id or len(request_id) > 200
        ):
            raise Unprocessable(
                "requestId must be a non-empty string of at most 200 characters",
                code="invalid_request",
                details={"path": "$.requestId"},
            )
        try:
            enqueued = await self._intake.enqueue(
                workflow_id=workflow_id,
                trigger=trigger or {},
                request_id=request_id,
                tenant_id=tenant_id,
                principal=principal,
                correlation_id=correlation_id or current_correlation_id(),
                redelivery_may_differ=redelivery_may_differ,
                test_version=test_version,
                version=version,
                trace_context=tracecontext.current(),
            )
        except RequestIdReused as exc:
            raise Conflict(
                f"requestId {request_id!r} already started run {exc.args[0]} with another "
                "trigger payload; use a new requestId for a new run",
                code="request_id_reused",
                details={"executionId": str(exc.args[0]), "path": "$.requestId"},
            ) from None
        except UnwritableValue as exc:
            raise Unprocessable(
                f"the run cannot be stored: {exc.message}",
                code=exc.code,
                details={"path": exc.path},
            ) from None
        except WorkflowNotRunnable as exc:
            if exc.status is None:
                raise workflow_not_found(workflow_id) from None
            raise Conflict(
                f"workflow {workflow_id!r} is {exc.status}; only Active workflows execute",
                code="workflow_not_active",
                details={"status": exc.status},
            ) from None
        return run_summary(enqueued.execution), enqueued.created

    async def _execution(
        self, execution_id: str, tenant_id: str | None, *, replica: bool = False
    ) -> dict[str, Any]:
        """The run's row; another tenant's run is "not found" like a missing one.
        ``replica``: a read to show, which the read replica may serve (docs/scaling.md)."""
        row = await self.ledger.get_execution(_uuid(execution_id), replica=replica)
        return _visible(row, execution_id, tenant_id)

    async def get_execution(
        self, execution_id: str, *, tenant_id: str | None = None, replica: bool = False
    ) -> dict[str, Any]:
        """The run with every attempt. ``tenant_id`` None: any tenant (internal callers).
        ``replica``: the read replica may serve it (a view to show, which may lag; a caller
        that just waited for the run's end on the primary reads the primary)."""
        row, actions = await self.ledger.get_execution_with_actions(
            _uuid(execution_id), replica=replica
        )
        return execution_view(_visible(row, execution_id, tenant_id), actions)

    async def list_executions(
        self,
        *,
        tenant_id: str = "default",
        page: PageRequest | None = None,
        workflow_id: str | None = None,
        status: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> dict[str, Any]:
        """A page of the tenant's runs, newest first, without their attempts."""
        page = page or PageRequest(DEFAULT_LIMIT, None)
        rows = await self.runs.executions(
            tenant_id,
            workflow_id=workflow_id,
            status=status,
            created_from=created_from,
            created_to=created_to,
            after=page.after,  # type: ignore[arg-type]
            limit=page.limit + 1,
            replica=True,
        )
        return paged(
            "executions", rows, page, lambda r: [r["created_at"], r["id"]], execution_summary
        )

    async def cancel(self, execution_id: str, *, tenant_id: str | None = None) -> dict[str, Any]:
        """Cancel a run: a Pending run never starts, a Running one is stopped by its worker,
        a Waiting one is resumed to end; the runs below it (subworkflows) with it."""
        key = (await self._execution(execution_id, tenant_id))["id"]
        flagged: list[uuid.UUID] = []
        try:
            status = await self.ledger.request_cancel(key, flagged)
        except LookupError:
            raise NotFound(f"no execution {execution_id!r}", code="execution_not_found") from None
        except RunIsFinal as exc:
            raise Conflict(
                f"execution {execution_id} already ended {exc.args[0]}; it cannot be cancelled",
                code="execution_finished",
                details={"status": exc.args[0]},
            ) from None
        for run_id in flagged:  # the run and the runs below it (subworkflows)
            self._intake.cancel_requested(run_id)
        return {
            "executionId": str(key),
            "status": status,
            "cancelRequested": True,
            "statusUrl": f"/api/v1/executions/{key}",
        }

    async def list_dead_letters(
        self, *, tenant_id: str = "default", page: PageRequest | None = None
    ) -> dict[str, Any]:
        """A page of the tenant's dead letters, newest first."""
        page = page or PageRequest(DEFAULT_LIMIT, None)
        rows = await self.runs.dead_letters(
            tenant_id,
            after=page.after,  # type: ignore[arg-type]
            limit=page.limit + 1,
        )
        return paged(
            "deadLetters", rows, page, lambda r: [r["created_at"], r["id"]], dead_letter_view
        )

    async def requeue_dead_letter(
        self, dead_letter_id: str, *, tenant_id: str = "default"
    ) -> dict[str, Any]:
        try:
            key = uuid.UUID(dead_letter_id)
            new_id = await self.ledger.requeue_dead_letter(key, tenant_id)
        except (ValueError, LookupError):
            raise NotFound(
                f"no dead letter {dead_letter_id!r}", code="dead_letter_not_found"
            ) from None
        except AlreadyRequeued as exc:
            raise Conflict(
                f"dead letter {dead_letter_id} was already requeued as {exc.args[0]}",
                code="already_requeued",
                details={"executionId": str(exc.args[0])},
            ) from None
        self._intake.wake()
        return {
            "executionId": str(new_id),
            "status": "Pending",
            "statusUrl": f"/api/v1/executions/{new_id}",
        }

    async def get_events(
        self, execution_id: str, *, after: int = 0, tenant_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The run's events after sequence ``after`` (at most 1000)."""
        row = await self._execution(execution_id, tenant_id, replica=True)
        events = await self.ledger.list_events(row["id"], after=after, replica=True)
        return [event_view(e) for e in events]

    async def events_page(
        self,
        execution_id: str,
        *,
        after: int = 0,
        tenant_id: str | None = None,
        page: PageRequest | None = None,
    ) -> dict[str, Any]:
        """A page of the run's events in sequence order, after ``after`` and the cursor."""
        page = page or PageRequest(DEFAULT_LIMIT, None)
        row = await self._execution(execution_id, tenant_id, replica=True)
        start = max(after, page.after[0] if page.after else 0)
        rows = await self.ledger.list_events(
            row["id"], after=start, limit=page.limit + 1, replica=True
        )
        return paged("events", rows, page, lambda e: [e["sequence"]], event_view)

    async def execution_logs(
        self,
        execution_id: str,
        *,
        tenant_id: str | None = None,
        node_id: str | None = None,
        attempt: int | None = None,
    ) -> dict[str, Any]:
        """The run's step log lines (of one node / attempt if given), in the order the
        attempts ran; another tenant's run is not found."""
        row, actions = await self.ledger.get_execution_with_actions(
            _uuid(execution_id), logs=True, replica=True
        )
        _visible(row, execution_id, tenant_id)
        selected = [
            a
            for a in actions
            if (node_id is None or a["node_id"] == node_id)
            and (attempt is None or a["attempt"] == attempt)
        ]
        return {"items": log_lines_view(selected)}

    async def execution_variables(
        self, execution_id: str, *, tenant_id: str | None = None
    ) -> dict[str, Any]:
        """The run's variables by key (``ctx.set_variable``); another tenant's run, like a
        missing one or an id that is not a UUID, is not found (as for the other run routes)."""
        run_id = _uuid(execution_id)
        row = await self.ledger.get_execution(run_id, replica=True)
        _visible(row, execution_id, tenant_id)
        variables = await self.ledger.list_variables(run_id, replica=True)
        return {"items": [variable_view(v) for v in variables]}

    async def execution_children(
        self, execution_id: str, *, tenant_id: str | None = None, recursive: bool = False
    ) -> dict[str, Any]:
        """The runs this run started with subworkflow nodes (``recursive``: the whole
        tree below it, parents first); an unknown or another tenant's run is not found."""
        run_id = _uuid(execution_id)
        _visible(await self.ledger.get_execution(run_id, replica=True), execution_id, tenant_id)
        rows = await self.ledger.list_children(run_id, recursive=recursive, replica=True)
        return {"items": [execution_summary(row) for row in rows]}


def _visible(
    row: dict[str, Any] | None, execution_id: str, tenant_id: str | None
) -> dict[str, Any]:
    """The run's row; another tenant's run is "not found" like a missing one."""
    if row is None or (tenant_id is not None and row["tenant_id"] != tenant_id):
        raise NotFound(f"no execution {execution_id!r}", code="execution_not_found")
    return row


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"no execution {value!r}", code="execution_not_found") from None
