"""Run events: the append-only history of every run, and what observers receive."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class EventType(enum.StrEnum):
    """Kinds of rows in the ExecutionEvents table."""

    RUN_QUEUED = "RunQueued"
    RUN_STARTED = "RunStarted"
    RUN_RESUMED = "RunResumed"
    RUN_SUCCEEDED = "RunSucceeded"
    RUN_FAILED = "RunFailed"
    RUN_CANCELLED = "RunCancelled"
    #: the run parked until a child run it waits on ends (no worker holds it meanwhile)
    RUN_WAITING = "RunWaiting"
    #: an attempt began: live (``durable`` False) at once, durable once it runs long enough
    STEP_STARTED = "StepStarted"
    STEP_SUCCEEDED = "StepSucceeded"
    STEP_FAILED = "StepFailed"
    STEP_RETRYING = "StepRetrying"
    STEP_SKIPPED = "StepSkipped"
    STEP_CANCELLED = "StepCancelled"
    #: a subworkflow node started its child run and waits on it (payload ``childExecutionId``)
    STEP_WAITING = "StepWaiting"


TERMINAL_RUN_EVENTS = frozenset(
    {EventType.RUN_SUCCEEDED, EventType.RUN_FAILED, EventType.RUN_CANCELLED}
)


@dataclass(frozen=True)
class RunEvent:
    """One recorded change in a run, as passed to ``on_run_event`` observers.

    ``sequence`` increases by one per event within a run, starting at 1.

    A *live* event (``durable`` False) is not in the ledger: it tells in-process observers
    at once what durability does not need yet (a ``StepStarted`` the moment an attempt
    begins). It takes no number of its own: its ``sequence`` is that of the run's last
    durable event before it, so ``(sequence, durable)`` orders it among them. If the step
    lasts ``DATAWORKFLOWS_STEP_STARTED_AFTER_SECONDS``, a durable ``StepStarted`` follows.

    ``payload`` by type (observers may rely on these keys): ``RunStarted`` / ``RunResumed``:
    ``owner`` (the worker), ``version`` (pinned), ``traceContext`` (``{"traceparent",
    "tracestate"?}``, the W3C trace context of the request that queued the run; absent
    when it had none), and for ``RunResumed`` ``recoveryCount`` and ``startedAt`` (the
    run's first start, ISO 8601); step events: ``attempt``, ``status``, ``error`` (when
    failed), a live ``StepStarted`` also ``actionType`` and ``startedAt``; run ends:
    ``status`` and ``error``.
    """

    execution_id: str
    workflow_id: str
    sequence: int
    type: EventType
    created_at: datetime
    node_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    #: False for a live event that was never written (see above)
    durable: bool = True
    #: step events handed over by the process that wrote them: the attempt's action type
    #: (None on run events and on events read back from the ledger). Since plugin API 1.1.
    action_type: str | None = None
    #: a step's final event (succeeded, failed, retrying, cancelled) handed over by the
    #: process that ran it: seconds from the attempt's start to its end, else None.
    #: Since plugin API 1.1.
    duration_seconds: float | None = None
