"""Subworkflow nodes as the conductor sees them: starting child runs and taking their ends.

An action starts a child with :meth:`~dataworkflows.actions.ActionContext.start_child_run`.
Without waiting, :meth:`ChildRunner._child_starter` queues it at once (request id
``<run>:<node>``: once per node). Waiting, the action returns a ``Waiting`` result and
:meth:`ChildRunner._start_waited_child` queues the child together with the attempt's
``Waiting`` row (request id ``<run>:<node>:<attempt>``: once per attempt, see
:mod:`dataworkflows.ledger.children`). The attempt then waits without a slot and without
a task; when nothing else of the run is left to do the conductor parks the run, and when
the child has ended :meth:`ChildRunner._child_outcome` turns its end into the attempt's
final row: its outputs, or a failure that the node's retry policy retries with a new child.

The child run's trace context is this attempt's (``propagation_headers``), so a tracing
plugin shows the child's run below the parent's node.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from dataworkflows.actions import ActionError, ActionResult, ChildRun, StepOutcome
from dataworkflows.common.clock import Clock
from dataworkflows.engine.output_caps import NotStorable, json_bytes
from dataworkflows.engine.run_state import (
    RETRIABLE,
    SUCCEEDED,
    WAITING,
    Node,
    RunState,
)
from dataworkflows.ledger.children import ChildRequest, VersionNotFound
from dataworkflows.ledger.run_ledger import (
    RunIsFinal,
    RunLedger,
    StepRecord,
    UnwritableValue,
    WorkflowNotRunnable,
)
from dataworkflows.plugins.manager import PluginSet
from dataworkflows.plugins.propagation import propagation_source

log = logging.getLogger(__name__)

#: the error codes a subworkflow node fails with (docs/semantics.md, "Subworkflows")
NOT_RUNNABLE = "subworkflow_not_runnable"
TOO_DEEP = "max_nesting_depth_exceeded"
CHILD_FAILED = "subworkflow_failed"
CHILD_CANCELLED = "subworkflow_cancelled"


class ChildRunner:
    """Child runs of a run's nodes; mixed into the node runner."""

    ledger: RunLedger
    plugins: PluginSet
    clock: Clock
    #: DATAWORKFLOWS_DEFAULT_MAX_NESTING_DEPTH (a definition's maxNestingDepth wins)
    _max_nesting_depth: int

    def _nesting_problem(self, state: RunState) -> ActionError | None:
        """The error of a child that would nest deeper than the run's definition allows."""
        limit = state.plan.definition.max_nesting_depth or self._max_nesting_depth
        depth = state.run.depth + 1
        if depth <= limit:
            return None
        return ActionError(
            f"a child run here would have depth {depth}, over the maxNestingDepth of {limit}",
            code=TOO_DEEP,
            details={"depth": depth, "maxNestingDepth": limit},
        )

    def _request(
        self, state: RunState, node_id: str, attempt: int | None, child: ChildRun
    ) -> ChildRequest:
        run = state.run
        headers = propagation_source(self.plugins, run.id_str, node_id, attempt or 1)
        context = {
            k: v
            for k, v in (headers() if headers else {}).items()
            if k in ("traceparent", "tracestate")
        }
        key = f"{run.id}:{node_id}" if attempt is None else f"{run.id}:{node_id}:{attempt}"
        return ChildRequest(
            workflow_id=child.workflow,
            trigger=dict(child.input),
            version=child.version,
            request_id=key,
            node_id=node_id,
            wait=attempt is not None,
            trace_context=context if "traceparent" in context else run.trace_context,
        )

    async def _start(
        self, state: RunState, request: ChildRequest, waiting: StepRecord | None = None
    ) -> uuid.UUID:
        """Queue the child (with ``waiting``); ledger refusals become :class:`ActionError`."""
        problem = self._nesting_problem(state)
        if problem is not None:
            raise problem
        try:
            if waiting is None:
                return await self.ledger.start_child(state.run, request)
            async with state.lock:  # the parent's events are numbered in this write
                return await self.ledger.start_child(state.run, request, waiting)
        except WorkflowNotRunnable as exc:
            state_ = "does not exist" if exc.status is None else f"is {exc.status}, not Active"
            raise ActionError(
                f"the subworkflow {exc.workflow_id!r} {state_}",
                code=NOT_RUNNABLE,
                details={"workflow": exc.workflow_id, "status": exc.status},
            ) from None
        except VersionNotFound as exc:
            raise ActionError(
                f"the subworkflow {exc.workflow_id!r} has no version {exc.version}",
                code=NOT_RUNNABLE,
                details={"workflow": exc.workflow_id, "version": exc.version},
            ) from None
        except UnwritableValue as exc:
            raise ActionError(
                f"the child run's input cannot be stored: {exc.message}", code="invalid_input"
            ) from None

    def _child_starter(self, state: RunState, node_id: str) -> Callable[[ChildRun], Awaitable[str]]:
        """``ctx.children``: queue a child without waiting; returns its execution id."""

        async def start(child: ChildRun) -> str:
            return str(await self._start(state, self._request(state, node_id, None, child)))

        return start

    async def _start_waited_child(
        self, state: RunState, node: Node, waiting: StepRecord, result: ActionResult
    ) -> ActionResult:
        """Queue the child an attempt waits on, with its ``Waiting`` row. Returns
        ``result`` (still ``Waiting``) or the failure that ends the attempt instead."""
        if result.child is None:
            return ActionResult.failed(
                "the action returned a Waiting result without a child run", code="invalid_result"
            )
        request = self._request(state, node.plan.id, waiting.attempt, result.child)
        try:
            node.waiting_on = await self._start(state, request, waiting)
        except ActionError as exc:
            return exc.to_result()
        return result

    async def _child_outcome(
        self, state: RunState, node: Node, attempt: int
    ) -> tuple[StepRecord, ActionResult]:
        """The row of an attempt whose child has ended, or a ``Waiting`` marker (nothing to
        write) while the child runs."""
        child_id = node.waiting_on
        assert child_id is not None
        row = (await self.ledger.child_runs([child_id])).get(child_id)
        base: dict[str, Any] = {
            "node_id": node.plan.id,
            "action_type": node.plan.node.action_type,
            "attempt": attempt,
            "parameters": node.parameters,
            "started_at": node.running_since,
        }
        if row is not None and row["status"] not in ("Succeeded", "Failed", "Cancelled"):
            marker = StepRecord(**base, status=WAITING, outputs=None, error=None, ended_at=None)
            return marker, ActionResult(StepOutcome.WAITING)
        node.waiting_on = None
        if row is not None and row["status"] == "Succeeded":
            outputs = {
                "executionId": str(child_id),
                "nodes": await self.ledger.child_outputs(child_id),
            }
            try:
                refusal = state.output_budget.admit(json_bytes(outputs))
            except NotStorable:  # pragma: no cover - the child's outputs were stored as JSON
                refusal = ActionResult.failed("child outputs are not JSON", code="invalid_outputs")
            if refusal is None:
                record = StepRecord(
                    **base, status=SUCCEEDED, outputs=outputs, error=None, ended_at=self.clock.now()
                )
                return record, ActionResult.succeeded(outputs)
            result = refusal
        else:
            status = row["status"] if row is not None else "missing"
            child_error = row["error"] if row is not None else None
            message = (child_error or {}).get("message", "no error recorded")
            details = {
                "childExecutionId": str(child_id),
                "childStatus": status,
                "childError": child_error,
            }
            text = f"the child run {child_id} ended {status}: {message}"
            if (child_error or {}).get("code") == TOO_DEEP:
                # nesting too deep below: a new child would nest as deep; not retried
                result = ActionResult.failed(text, code=TOO_DEEP, details=details)
            elif status == "Cancelled":
                result = ActionResult.failed(text, code=CHILD_CANCELLED, details=details)
            else:  # the node's retry policy applies: the next attempt starts a new child
                result = ActionResult.retriable(text, code=CHILD_FAILED, details=details)
        record = StepRecord(
            **base,
            status=RETRIABLE if result.outcome is StepOutcome.RETRIABLE else str(result.outcome),
            outputs=None,
            error=dict(result.error or {}),
            ended_at=self.clock.now(),
        )
        return record, result

    async def _park(self, state: RunState) -> bool:
        """Release the run while its nodes wait on child runs (True), or make the nodes
        whose child has ended ready again (False; nothing was written)."""
        by_child = {n.waiting_on: n for n in state.nodes.values() if n.waiting_on is not None}
        ended = await self.ledger.park(state.run, by_child)
        if ended is None:
            log.info("run %s waits on %d child run(s)", state.run.id, len(by_child))
            return True
        for row in ended:
            by_child[row["id"]].started = False  # its attempt ends when it runs again
        return False

    async def _cancel_children(self, children: list[Any]) -> None:
        """Cancel the child runs that nodes of a run that ended were waiting on."""
        for child_id in children:
            try:
                await self.ledger.request_cancel(child_id)
            except (LookupError, RunIsFinal):
                pass  # it ended meanwhile (or was pruned)
