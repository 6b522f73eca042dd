"""Steps in flight, visible without a write per step.

The durable-write budget is one write per attempt, made when it ends (DESIGN.md,
"Performance"). A step that has just started is something users need to *see* but
durability does not, so when an attempt begins:

* its start is published at once as a **live** ``StepStarted`` event to this process's
  observers (``on_run_event`` with ``event.durable`` False; no write);
* if it is still running after ``DATAWORKFLOWS_STEP_STARTED_AFTER_SECONDS`` (1 s), its
  ``Running`` row and a durable ``StepStarted`` event are written (one group-committed
  write, fenced like every other write of the run), so that every process reading the
  database sees the node as ``Running`` with its start time;
* when it ends, its row replaces the ``Running`` row (same id, same attempt number), in
  the attempt's usual single write.

A step shorter than the threshold therefore costs no extra write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any, Protocol

from dataworkflows.ledger.run_ledger import RUNNING, ClaimedRun, StepRecord

log = logging.getLogger(__name__)


class _Ledger(Protocol):
    def publish_live(self, run: ClaimedRun, step: StepRecord) -> None: ...

    async def record_steps(self, run: ClaimedRun, steps: list[StepRecord]) -> None: ...


class InFlight:
    """One attempt in flight: its live event is out; its durable row may follow."""

    def __init__(
        self, ledger: _Ledger, run: ClaimedRun, lock: asyncio.Lock, step: StepRecord
    ) -> None:
        self._ledger = ledger
        self._run = run
        self._lock = lock
        self._step = step
        self._timer: asyncio.TimerHandle | None = None
        self._write: asyncio.Task[None] | None = None

    @classmethod
    def begin(
        cls,
        ledger: _Ledger,
        run: ClaimedRun,
        lock: asyncio.Lock,
        after: float,
        *,
        node_id: str,
        action_type: str,
        attempt: int,
        parameters: dict[str, Any] | None,
        started_at: datetime,
    ) -> InFlight:
        """An attempt begins: publish it live now, write its Running row after ``after`` s."""
        step = StepRecord(
            node_id=node_id,
            action_type=action_type,
            attempt=attempt,
            status=RUNNING,
            parameters=parameters,
            outputs=None,
            error=None,
            started_at=started_at,
            ended_at=None,
        )
        in_flight = cls(ledger, run, lock, step)
        in_flight.start(after)
        return in_flight

    def start(self, after: float) -> None:
        self._ledger.publish_live(self._run, self._step)
        if after >= 0:
            self._timer = asyncio.get_running_loop().call_later(after, self._due)

    def _due(self) -> None:
        self._timer = None
        self._write = asyncio.ensure_future(self._record())

    async def _record(self) -> None:
        # under the run's lock: the ledger numbers a run's events from the ClaimedRun
        async with self._lock:
            try:
                await self._ledger.record_steps(self._run, [self._step])
            except Exception as exc:
                # only visibility is lost (stale claim, a value the database refuses, ...):
                # the attempt's own write says what happened
                log.warning(
                    "run %s: the Running row of %s (attempt %d) was not written: %s",
                    self._run.id,
                    self._step.node_id,
                    self._step.attempt,
                    exc,
                )

    async def end(self) -> None:
        """The attempt ended: no Running row from now on; one being written is awaited,
        so that the attempt's own row replaces it rather than joining it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._write is not None:
            write, self._write = self._write, None
            with contextlib.suppress(Exception):
                await asyncio.shield(write)
