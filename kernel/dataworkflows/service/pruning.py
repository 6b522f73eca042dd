"""The background pruner: every ``DATAWORKFLOWS_PRUNE_INTERVAL_SECONDS`` it deletes the
finished runs the retention policy no longer keeps (:mod:`dataworkflows.ledger.retention`),
after dropping the whole time partitions it can on a partitioned PostgreSQL ledger
(and creating the ones ahead: :mod:`dataworkflows.ledger.partitions`),
one small batch at a time, pausing between batches as long as the last one took, so
that the engine's own work keeps at least half of the time.

It runs in ``serve`` (beside the scheduler). Several ``serve`` processes on one
PostgreSQL database take turns: a cycle runs only in the process that holds the
pruner's advisory lock, and the others skip it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from dataworkflows.common.clock import Clock
from dataworkflows.ledger.partitions import maintain
from dataworkflows.ledger.retention import Pruner

log = logging.getLogger(__name__)

#: the shortest pause between two batches of one cycle
BATCH_PAUSE = 0.05
#: the first cycle runs this soon after start at the latest
FIRST_CYCLE_AFTER = 60.0


class PruneLoop:
    """Runs :meth:`Pruner.prune` every ``interval`` seconds until stopped."""

    def __init__(self, pruner: Pruner, clock: Clock, interval: float) -> None:
        self.pruner = pruner
        self.clock = clock
        self.interval = interval
        self._stop = asyncio.Event()
        #: completed cycles (tests wait on this instead of sleeping)
        self.cycles = 0
        self.cycle_done = asyncio.Condition()

    async def run(self) -> None:
        wait = min(self.interval, FIRST_CYCLE_AFTER)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)
            if self._stop.is_set():
                return
            wait = self.interval
            await self.cycle()

    async def cycle(self) -> None:
        """One pass; failures are logged and retried at the next interval."""
        try:
            # partitions ahead of the wall clock: run ids are taken from it
            try:
                await maintain(self.pruner.db, datetime.now(UTC))
            except Exception:  # pruning goes on: the default partition takes new runs
                log.exception("creating the ledger's partitions ahead failed")
            report = await self.pruner.prune(self.clock.now(), pause=paced, exclusive=True)
        except Exception:
            log.exception("pruning the ledger failed; retrying in %g s", self.interval)
        else:
            if report.runs:
                log.info(
                    "pruned %d finished run(s) past retention (%s) in %d batch(es)",
                    report.runs,
                    ", ".join(f"{n} {t}" for t, n in report.rows.items()),
                    report.batches,
                )
        async with self.cycle_done:
            self.cycles += 1
            self.cycle_done.notify_all()

    def stop(self) -> None:
        self._stop.set()


async def paced(took: float) -> None:
    """Pause after a batch that took ``took`` seconds as long again (at least
    :data:`BATCH_PAUSE`): pruning takes at most about half of the database's and this
    process's time, whatever the batch costs on this machine."""
    await asyncio.sleep(max(BATCH_PAUSE, took))
