"""Workers take runs from the database and hand them to the conductor.

The queue *is* the ``workflow_executions`` table: enqueueing inserts a ``Pending`` row,
claiming is an atomic conditional update under a lease (see :meth:`RunLedger.claim`). Any
number of workers, in any number of processes or machines, share one database:

* idle workers sleep until woken — by :meth:`Worker.wake` in this process, by PostgreSQL
  ``LISTEN/NOTIFY`` across processes — or until ``poll_interval`` passes (the fallback);
* a heartbeat renews the leases of the runs a worker holds; a run whose lease is lost
  (the worker stalled past it and another took over) is stopped at once, and its writes
  would be rejected anyway by the fencing token;
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

from dataworkflows.common import logcontext
from dataworkflows.engine.conductor import Conductor
from dataworkflows.ledger.run_ledger import CANCEL_CHANNEL, RUNS_CHANNEL, ClaimedRun, RunLedger

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
        #: slots promised to runs being enqueued in this process (see reserve)
        self._reserved = 0
        self._releasing: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wakeup.set()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def reserve(self) -> str | None:
        """Promise a free slot to a run this process is about to enqueue.

        Returns this worker's owner name (for :meth:`RunLedger.enqueue`'s ``start_as``), or
        None when the worker is not running here, is stopping or has no free slot. Every
        reservation must be followed by exactly one :meth:`adopt`.
        """
        if not self._started or self._stopping:
            return None
        if len(self._running) + self._reserved >= self.concurrency:
            return None
        self._reserved += 1
        return self.owner

    def adopt(self, run: ClaimedRun | None) -> None:
        """Fill a reserved slot with the run claimed at enqueue, or give the slot back."""
        self._reserved -= 1
        if run is None:
            self.wake()  # the slot is free again
        elif self._stopping:
            # stopped meanwhile: give the run back at once for another worker
            task = asyncio.create_task(self.ledger.release(self.owner, [run]))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)
        else:
            self._start(run)

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
            # runs given back while stopping (see adopt): their release is written
            await asyncio.gather(*self._releasing, return_exceptions=True)
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
        self.ledger.local_runs[run.id] = run
        task = asyncio.create_task(self._execute(run), name=f"run-{run.id}")
        self._running[run.id] = (run, task)

    async def _execute(self, run: ClaimedRun) -> None:
        try:
            with logcontext.bind(correlation_id=run.correlation_id, execution_id=run.id_str):
                status = await self.conductor.execute(run)
                log.info("run %s of %s ended %s", run.id, run.workflow_id, status)
        except asyncio.CancelledError:
            log.warning("run %s stopped on this worker (lease lost or shutdown)", run.id)
        except Exception:
            log.exception("run %s crashed in the conductor", run.id)
        finally:
            self._running.pop(run.id, None)
            self.ledger.local_runs.pop(run.id, None)
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

        url = libpq_url(self.ledger.db.url)
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
            entry = self._running.get(uuid.UUID(payload))
            if entry is not None:
                entry[0].cancel_requested.set()

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
