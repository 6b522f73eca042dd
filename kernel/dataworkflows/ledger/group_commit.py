"""Group commit: writes that arrive while one is being committed share the next transaction.

The durable write is the unit of cost of a workflow engine (one commit is one WAL flush on
PostgreSQL). :class:`GroupCommit` lets many concurrent callers — HTTP requests enqueueing
runs, runs recording their steps — share one transaction without weakening what each of
them is promised, and without making them share fate:

* :meth:`GroupCommit.submit` returns only after *its* rows are committed, and a caller
  whose part of the batch is refused gets its own exception, not the batch's;
* a batch that fails with a transient database error (a dropped connection, a
  serialization failure, SQLite busy) is written again, on a fresh connection, with
  bounded backoff (:mod:`dataworkflows.db.transient`); nobody in it sees the error;
* a batch that fails for any other reason is split: every item is written in a
  transaction of its own, so only the item at fault fails;
* at most ``max_pending`` items wait at a time; further callers wait for room
  (backpressure: an open-loop flood is bounded in memory and in queue wait).

``on_batch``, when given, is told the number of items of every committed batch (metrics).

The first submission of an idle batcher is written on the next turn of the event loop, so
a lone caller pays no waiting; while a batch is in flight, new submissions queue and go
together in the next one (at most ``max_batch`` per transaction).

A writer may be called again with the same items (retry, split), so it must be re-entrant:
it undoes its in-memory effects when its transaction fails, and it can tell whether an
item's rows were in fact committed by an attempt whose COMMIT answer was lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from dataworkflows.db.transient import DEFAULT_RETRY, RetryPolicy, retry_transient, short_error

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

#: writes a batch in one transaction; returns one result (or exception) per item, in order
BatchWriter = Callable[[list[Item]], Awaitable[Sequence["Result | Exception"]]]


class GroupCommit(Generic[Item, Result]):
    """Batches concurrent submissions into one call of ``write`` per transaction."""

    def __init__(
        self,
        write: BatchWriter[Item, Result],
        *,
        max_batch: int = 64,
        max_pending: int = 1024,
        name: str,
        retry: RetryPolicy = DEFAULT_RETRY,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_pending < max_batch:
            raise ValueError("max_pending must be at least max_batch")
        self._write = write
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._name = name
        self._retry = retry
        #: told the size of every batch committed (metrics); must not raise
        self._on_batch = on_batch
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._room = asyncio.Semaphore(max_pending)
        self._pending = 0
        self._flusher: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Items submitted and not yet answered."""
        return self._pending

    async def submit(self, item: Item) -> Result:
        """Write ``item`` in a coming batch; returns its result once its rows committed.

        Waits first while ``max_pending`` items are already waiting. Raises the exception
        the writer returned for this item, or the one its own transaction failed with
        (then nothing of the item was committed).
        """
        await self._room.acquire()
        self._pending += 1
        try:
            future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
            self._queue.append((item, future))
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush(), name=self._name)
            # shielded: a caller that goes away does not cancel the write of its item
            return await asyncio.shield(future)
        finally:
            self._pending -= 1
            self._room.release()

    async def drain(self) -> None:
        """Wait until every submitted item is written (used on shutdown)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                await self._write_batch(batch)
        except asyncio.CancelledError:
            # stopped (event loop closing): nobody may wait forever for an answer
            for _, future in self._queue:
                future.cancel()
            self._queue.clear()
            raise

    async def _write_batch(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await retry_transient(
                lambda: self._write(items), what=self._name, policy=self._retry
            )
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.cancel()
            raise
        except Exception as exc:
            if len(batch) == 1:
                _answer(batch[0][1], exc)
                return
            # Not the database's fault, nor necessarily every item's: write them one by
            # one, so that only the items at fault fail.
            log.warning(
                "%s: a batch of %d failed (%s); writing its items one by one",
                self._name,
                len(batch),
                short_error(exc),
            )
            for entry in batch:
                await self._write_batch([entry])
            return
        if self._on_batch is not None:
            self._on_batch(len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            _answer(future, result)


def _answer(future: asyncio.Future[Result], result: Result | Exception) -> None:
    if future.done():  # nobody waits any more; the rows are committed anyway
        return
    if isinstance(result, Exception):
        future.set_exception(result)
        # a caller that went away must not leave "exception was never retrieved" behind
        future.add_done_callback(_retrieve)
    else:
        future.set_result(result)


def _retrieve(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()
