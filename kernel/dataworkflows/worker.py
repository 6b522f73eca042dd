"""Workers take ``Pending`` runs from the database and hand them to the conductor.

The queue *is* the ``workflow_executions`` table: enqueueing is inserting a ``Pending``
row, claiming is an atomic conditional update (see :meth:`RunLedger.claim`). Any number of
workers, in any number of processes, can share one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dataworkflows.conductor import Conductor
from dataworkflows.ledger import RunLedger

log = logging.getLogger(__name__)


class Worker:
    """Claims and runs up to ``concurrency`` runs at a time.

    Idle workers sleep until :meth:`wake` is called (a run was enqueued in this process)
    or ``poll_interval`` passes (a run was enqueued elsewhere).
    """

    def __init__(
        self,
        ledger: RunLedger,
        conductor: Conductor,
        *,
        concurrency: int = 4,
        poll_interval: float = 1.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.ledger = ledger
        self.conductor = conductor
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        """Claim and execute runs until :meth:`stop` is called."""
        while not self._stopping:
            await self._slots.acquire()
            if self._stopping:
                self._slots.release()
                break
            self._wakeup.clear()
            try:
                run = await self.ledger.claim()
            except Exception:
                log.exception("claiming a run failed; retrying after the poll interval")
                run = None
            if run is None:
                self._slots.release()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.poll_interval)
                continue
            task = asyncio.create_task(self._execute(run), name=f"run-{run.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, run) -> None:  # type: ignore[no-untyped-def]
        try:
            status = await self.conductor.execute(run)
            log.info("run %s of %s ended %s", run.id, run.workflow_id, status)
        except Exception:
            log.exception("run %s crashed in the conductor", run.id)
        finally:
            self._slots.release()
            self.wake()

    async def run_once(self) -> bool:
        """Claim and execute one run in the foreground; False if none was pending."""
        run = await self.ledger.claim()
        if run is None:
            return False
        await self.conductor.execute(run)
        return True

    async def stop(self, grace: float = 30.0) -> None:
        """Stop claiming; wait up to ``grace`` seconds for runs in flight."""
        self._stopping = True
        self.wake()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
