"""Workers take runs from the database and hand them to the conductor.

The queue *is* the ``workflow_executions`` table: enqueueing inserts a ``Pending`` row,
claiming is an atomic conditional update under a lease (see :meth:`RunLedger.claim`). Any
number of workers, in any number of processes or machines, share one database:

* idle workers sleep until woken — by :meth:`Worker.wake` in this process, by PostgreSQL
  ``LISTEN/NOTIFY`` across processes — or until ``poll_interval`` passes (the fallback);
* a heartbeat renews the leases of the runs a worker holds; a run whose lease is lost
  (the worker stalled past it and another took over) is stopped at once, and its writes
  would be rejected anyway by the fencing token;
* :meth:`Worker.enqueue` is how this process queues runs: a free slot here takes the run
  in the enqueue transaction;
* a cancel request reaches the worker holding the run (in-process at once, across
  processes by NOTIFY or at the next heartbeat);
* :meth:`Worker.stop` stops claiming, lets in-flight runs finish within a grace period and
  releases what is left for another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Any

from dataworkflows.common import logcontext
from dataworkflows.engine.conductor import Conductor
from dataworkflows.engine.run_logging import run_log_ids
from dataworkflows.ledger.run_ledger import (
    CANCEL_CHANNEL,
    RUNS_CHANNEL,
    ClaimedRun,
    Enqueued,
    RunLedger,
)

log = logging.getLogger(__name__)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """Claims and runs up to ``concurrency`` runs at a time."""

    def __init__(
        self,
        ledger: RunLedger,
        conductor: Conductor,
        *,
        concurrency: int = 16,
        poll_interval: float = 1.0,
        heartbeat_interval: float = 10.0,
        owner: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.ledger = ledger
        self.conductor = conductor
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.owner = owner or default_owner()
        self._wakeup = asyncio.Event()
        self._running: dict[uuid.UUID, tuple[ClaimedRun, asyncio.Task[None]]] = {}
        self._stopping = False
        self._grace = 30.0
        self._started = False
        self._stopped = asyncio.Event()
        #: slots promised to runs being enqueued in this process (see enqueue)
        self._reserved = 0
        #: enqueue writes in flight (see enqueue); awaited before the worker stops
        self._intake: set[asyncio.Task[Enqueued]] = set()

    def wake(self) -> None:
        self._wakeup.set()

    async def enqueue(self, **fields: Any) -> Enqueued:
        """Queue a run (:meth:`RunLedger.enqueue`'s arguments); the one path by which a run
        queued in this process starts here at once.

        When this worker runs in this process and has a free slot, the run is written
        already claimed by it (``Running`` under a lease, in the enqueue transaction) and
        starts without a claim round trip. Otherwise it is queued ``Pending`` for any
        worker. The write and the hand-over of the run are one task this worker owns: a
        caller that goes away meanwhile neither cancels the write nor leaks the slot.
        """
        owner = self._reserve()
        intake = asyncio.create_task(self._write_and_take(owner, fields))
        self._intake.add(intake)
        intake.add_done_callback(self._intake.discard)
        return await asyncio.shield(intake)

    def _reserve(self) -> str | None:
        """Promise a free slot to a run being enqueued: this worker's owner name, or None
        when the worker is not running here, is stopping or has no free slot."""
        if not self._started or self._stopping:
            return None
        if self.ledger.tenant_caps is not None:
            return None  # tenant caps: only the claim, which counts running runs, starts runs
        if len(self._running) + self._reserved >= self.concurrency:
            return None
        self._reserved += 1
        return self.owner

    async def _write_and_take(self, owner: str | None, fields: dict[str, Any]) -> Enqueued:
        try:
            enqueued = await self.ledger.enqueue(**fields, start_as=owner)
        except BaseException:
            if owner is not None:
                self._reserved -= 1
                self.wake()  # the slot is free again
            raise
        if owner is not None:
            self._reserved -= 1
        if enqueued.claimed is None:
            if enqueued.created or owner is not None:
                self.wake()  # a new Pending run, or a slot free again
        elif self._stopping:
            # stopped meanwhile: give the run back at once for another worker
            await self.ledger.release(self.owner, [enqueued.claimed])
        else:
            self._start(enqueued.claimed)
        return enqueued

    def cancel_requested(self, execution_id: uuid.UUID) -> None:
        """A cancel request was written for a run: stop it if it runs here (runs in other
        processes hear of it by ``NOTIFY`` or at their next heartbeat)."""
        entry = self._running.get(execution_id)
        if entry is not None:
            entry[0].cancel_requested.set()

    async def run(self) -> None:
        """Claim and execute runs until a stop is requested, then drain (see :meth:`stop`)."""
        self._started = True
        helpers = [asyncio.create_task(self._heartbeat(), name="worker-heartbeat")]
        if not self.ledger.db.is_sqlite:
            helpers.append(asyncio.create_task(self._listen(), name="worker-listen"))
        try:
            await self._claim_loop()
            await self._drain(self._grace)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            # runs enqueued while stopping are given back (see enqueue): wait for that
            await asyncio.gather(*self._intake, return_exceptions=True)
            self._stopped.set()

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            free = self.concurrency - len(self._running) - self._reserved
            if free <= 0:
                await self._wakeup.wait()  # a run ended (or stop was requested)
                continue
            try:
                runs = await self.ledger.claim_many(self.owner, free)
            except Exception:
                log.exception("claiming runs failed; trying again after the poll interval")
                runs = []
            if not runs:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.poll_interval)
                continue
            for run in runs:
                self._start(run)

    def _start(self, run: ClaimedRun) -> None:
        task = asyncio.create_task(self._execute(run), name=f"run-{run.id}")
        self._running[run.id] = (run, task)

    async def _execute(self, run: ClaimedRun) -> None:
        try:
            with logcontext.bind(**run_log_ids(run)):
                status = await self.conductor.execute(run)
                log.info("run %s of %s ended %s", run.id, run.workflow_id, status)
        except asyncio.CancelledError:
            log.warning("run %s stopped on this worker (lease lost or shutdown)", run.id)
        except Exception:
            log.exception("run %s crashed in the conductor", run.id)
        finally:
            self._running.pop(run.id, None)
            self.wake()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            runs = [run for run, _ in self._running.values()]
            try:
                lost = await self.ledger.renew(self.owner, runs)
            except Exception:
                log.exception("renewing leases failed; the runs may be taken over")
                continue
            for run in lost:
                entry = self._running.get(run.id)
                if entry is not None:
                    log.error("run %s: lease lost to another worker; stopping it here", run.id)
                    entry[1].cancel()

    async def _listen(self) -> None:
        """Wake on NOTIFY (PostgreSQL): new runs, and cancel requests for runs held here."""
        import psycopg

        from dataworkflows.db.database import libpq_url

        url = libpq_url(self.ledger.db.listen_url)
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {RUNS_CHANNEL}")
                    await conn.execute(f"LISTEN {CANCEL_CHANNEL}")
                    async for note in conn.notifies():
                        if note.channel == RUNS_CHANNEL:
                            self.wake()
                        elif note.channel == CANCEL_CHANNEL:
                            self._deliver_cancel(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("LISTEN connection lost; polling until it is back", exc_info=True)
                await asyncio.sleep(self.poll_interval)

    def _deliver_cancel(self, payload: str) -> None:
        with contextlib.suppress(ValueError):
            self.cancel_requested(uuid.UUID(payload))

    async def run_once(self) -> bool:
        """Claim and execute one run in the foreground; False if none was claimable."""
        run = await self.ledger.claim(self.owner)
        if run is None:
            return False
        await self.conductor.execute(run)
        return True

    def request_stop(self, grace: float | None = None) -> None:
        """Stop claiming (safe to call from a signal handler); :meth:`run` then drains."""
        if grace is not None:
            self._grace = grace
        self._stopping = True
        self.wake()

    async def stop(self, grace: float = 30.0) -> None:
        """Stop claiming; let runs in flight finish for ``grace`` seconds, then release them."""
        self.request_stop(grace)
        if self._started:
            await self._stopped.wait()
        else:
            await self._drain(grace)

    async def _drain(self, grace: float) -> None:
        tasks = [task for _, task in self._running.values()]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        if not pending:
            return
        leftover = [run for run, task in self._running.values() if task in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        try:
            await self.ledger.release(self.owner, leftover)
            log.warning("released %d unfinished run(s) for other workers", len(leftover))
        except Exception:
            log.exception("releasing runs failed; their leases will expire instead")
