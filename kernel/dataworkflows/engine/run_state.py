"""The in-memory state of a run in flight and of its nodes, and how it changes: rebuilt
from the recorded attempts on resume (:func:`restore`), nodes skipped or made ready
(:func:`scan`), a node's final attempt taken (:func:`mark`), the run timed out
(:func:`timed_out`). No I/O: the conductor (the graph) and the node runner (one node's
attempts) read and change this state; the statuses are defined here too.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from dataworkflows.common.clock import Clock
from dataworkflows.engine.output_caps import OutputBudget
from dataworkflows.engine.plan import ExecutionPlan, PlanEdge, PlanNode
from dataworkflows.engine.step_logs import RunLogBudget
from dataworkflows.engine.templating import TemplateBudgetExceeded
from dataworkflows.ledger.run_ledger import RUNNING, ClaimedRun, StepRecord

log = logging.getLogger(__name__)

SUCCEEDED = "Succeeded"
FAILED = "Failed"
RETRIABLE = "RetriableFailure"
TIMED_OUT = "TimedOut"
SKIPPED = "Skipped"
CANCELLED = "Cancelled"
#: a subworkflow node's attempt waiting on its child run (not final; its row is replaced
#: by the attempt's final row once the child ends)
WAITING = "Waiting"
#: statuses a node never leaves (TimedOut is final only when no attempt is left)
FINAL_STATUSES = frozenset({SUCCEEDED, FAILED, SKIPPED, CANCELLED})
FAILURES = frozenset({FAILED, TIMED_OUT})
#: error codes of a node that failed because an edge condition could not be evaluated
CONDITION_ERRORS = frozenset({"condition_error", TemplateBudgetExceeded.code})


@dataclass
class Node:
    """What the conductor knows about one node of one run."""

    plan: PlanNode
    status: str | None = None  # the final status, once known
    attempts: int = 0  # attempts recorded so far
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None  # rendered, reused by retries
    started: bool = False
    #: the start of attempt ``attempts + 1`` if its ``Running`` row says when (on resume)
    running_since: datetime | None = None
    #: the child run attempt ``attempts`` waits on (a ``Waiting`` row), else None
    waiting_on: uuid.UUID | None = None

    @property
    def next_attempt(self) -> int:
        """The attempt this node continues with: the one that waits, or a new one."""
        return self.attempts if self.waiting_on is not None else self.attempts + 1

    def view(self) -> dict[str, Any]:
        """The node as templates see it under ``nodes.<id>``."""
        return {
            "status": self.status,
            "outputs": self.outputs or {},
            "error": self.error,
            "attempts": self.attempts,
        }


@dataclass
class RunState:
    """One run in flight."""

    run: ClaimedRun
    plan: ExecutionPlan
    nodes: dict[str, Node]
    slots: asyncio.Semaphore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: set when nodes in flight must stop (failure, timeout, cancel request)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    edges: dict[PlanEdge, bool] = field(default_factory=dict)  # fired (True) or dead (False)
    failure: dict[str, Any] | None = None
    #: why nodes in flight are being cancelled: (reason code, message)
    stop_reason: tuple[str, str] = ("run_cancelled", "the run was cancelled")
    #: the bytes of step log lines the run may still keep (engine/step_logs.py)
    log_budget: RunLogBudget = field(default_factory=lambda: RunLogBudget(1024 * 1024))
    #: the bytes of step outputs the run holds and may hold (engine/output_caps.py)
    output_budget: OutputBudget = field(default_factory=OutputBudget)
    #: the run's committed variables (``vars`` in templates), updated after each write
    variables: dict[str, Any] = field(default_factory=dict)


def restore(state: RunState, rows: Iterable[Mapping[str, Any]]) -> None:
    """Rebuild node states from the recorded attempts of this run."""
    last: dict[str, Mapping[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["node_id"], r["attempt"])):
        node = state.nodes.get(row["node_id"])
        if node is None:
            log.warning("run %s: ledger row for unknown node %r", state.run.id, row["node_id"])
            continue
        state.log_budget.restore(row.get("logs"))
        if row["status"] == WAITING:
            # waiting on a child run: the attempt goes on (its final row replaces this one)
            state.run.running_rows[(row["node_id"], row["attempt"])] = row["id"]
            node.running_since = row["started_at"]
            node.waiting_on = uuid.UUID(str((row["outputs"] or {})["childExecutionId"]))
            node.attempts = max(node.attempts, row["attempt"])
            node.parameters = row["parameters"]
            last.pop(row["node_id"], None)
            continue
        if row["status"] == RUNNING:
            # an attempt that was in flight: not recorded yet; its next row replaces this
            state.run.running_rows[(row["node_id"], row["attempt"])] = row["id"]
            node.running_since = row["started_at"]
            continue
        node.attempts = max(node.attempts, row["attempt"])
        last[row["node_id"]] = row
    for node_id, row in last.items():
        node = state.nodes[node_id]
        status = row["status"]
        node.started = True
        node.error = row["error"]
        if status in FINAL_STATUSES or (
            status == TIMED_OUT and node.attempts >= node.plan.retry.max_attempts
        ):
            node.status = status
            node.outputs = row["outputs"] if status == SUCCEEDED else None
            state.output_budget.restore(node.outputs)
        elif node.attempts >= node.plan.retry.max_attempts:
            node.status = FAILED  # no attempt left; nothing more to write
        else:
            node.parameters = row["parameters"]
            node.started = False  # continues with attempt ``attempts + 1`` when ready


def waiting(state: RunState) -> bool:
    """Whether a node of the run waits on a child run (and nothing can run meanwhile)."""
    return any(n.waiting_on is not None and n.started for n in state.nodes.values())


def scan(state: RunState, clock: Clock) -> tuple[list[StepRecord], list[Node]]:
    """Skip the nodes whose incoming edges are all dead; return (skip rows, ready nodes)."""
    skipped: list[StepRecord] = []
    ready: list[Node] = []
    for node_id in state.plan.order:
        node = state.nodes[node_id]
        if node.status is not None or node.started:
            continue
        if node_id == state.plan.start:
            ready.append(node)
            continue
        incoming = [state.edges.get(e) for e in node.plan.incoming]
        if any(fired is None for fired in incoming):
            continue
        if any(incoming):
            ready.append(node)
            continue
        now = clock.now()
        record = StepRecord(
            node_id=node_id,
            action_type=node.plan.node.action_type,
            attempt=node.attempts + 1,
            status=SKIPPED,
            parameters=None,
            outputs=None,
            error=None,
            started_at=now,
            ended_at=now,
        )
        mark(node, record)
        for edge in node.plan.outgoing:
            state.edges[edge] = False
        skipped.append(record)
    return skipped, ready


def mark(node: Node, record: StepRecord) -> None:
    node.status = record.status
    node.attempts = max(node.attempts, record.attempt)
    node.outputs = record.outputs if record.status == SUCCEEDED else None
    node.error = record.error


def timed_out(state: RunState) -> None:
    timeout = state.plan.timeout or 0
    state.failure = {
        "code": "workflow_timeout",
        "message": f"the run did not finish within its timeout of {timeout:g} s",
    }
    state.stop_reason = ("workflow_timeout", "the workflow timed out")


def failed_routing(error: Mapping[str, Any] | None) -> bool:
    """True for the error of a node that failed because one of its edge conditions did."""
    error = error or {}
    path = str((error.get("details") or {}).get("path", ""))
    return error.get("code") in CONDITION_ERRORS and path.endswith(".condition")


def sanitised(record: StepRecord, message: str) -> StepRecord:
    """A row the database will take in place of one it refused: its values are dropped,
    what happened stays (a final attempt that could not be recorded failed)."""
    return replace(
        record,
        status=record.status if record.status in (FAILED, CANCELLED, SKIPPED) else FAILED,
        parameters=None,
        outputs=None,
        error={"code": "unserializable_result", "message": message},
        links=(),
        logs=None,
        variables=None,
    )


def lost_attempt(node: Node, now: datetime, *, final: bool = False) -> StepRecord:
    """The row of an attempt a dead worker may have been running, noticed at ``now``.

    ``final``: no attempt follows (the run goes to the dead letters).
    """
    attempt = node.attempts + 1
    record = StepRecord(
        node_id=node.plan.id,
        action_type=node.plan.node.action_type,
        attempt=attempt,
        status=FAILED if final or attempt >= node.plan.retry.max_attempts else RETRIABLE,
        parameters=node.parameters,
        outputs=None,
        error={
            "code": "worker_lost",
            "message": "the worker running this node stopped before the attempt ended; "
            "its outcome is unknown",
        },
        # when it started is known only if its Running row was written; otherwise
        # null, not a guess; it is known to have ended by now, when its loss was noticed
        started_at=node.running_since,
        ended_at=now,
    )
    if record.status == FAILED:
        mark(node, record)
    else:
        node.attempts = attempt
    return record


def cancelled_attempt(
    state: RunState,
    node: Node,
    attempt: int,
    started: datetime,
    now: datetime,
    parameters: dict[str, Any] | None = None,
) -> StepRecord:
    """The ``Cancelled`` row of a node in flight when the run stopped (``state.stop_reason``)."""
    return StepRecord(
        node_id=node.plan.id,
        action_type=node.plan.node.action_type,
        attempt=attempt,
        status=CANCELLED,
        parameters=parameters,
        outputs=None,
        error={
            "code": "cancelled",
            "message": f"cancelled: {state.stop_reason[1]}",
            "reason": state.stop_reason[0],
        },
        started_at=started,
        ended_at=now,
    )
