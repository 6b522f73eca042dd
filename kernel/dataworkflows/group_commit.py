"""Group commit: writes that arrive while one is being committed share the next transaction.

The durable write is the unit of cost of a workflow engine (one commit is one WAL flush on
PostgreSQL). :class:`GroupCommit` lets many concurrent callers — HTTP requests enqueueing
runs, runs recording their steps — share one transaction without weakening what each of
them is promised: :meth:`GroupCommit.submit` returns only after *its* rows are committed,
and a caller whose part of the batch is refused gets its own exception, not the batch's.

The first submission of an idle batcher is written on the next turn of the event loop, so
a lone caller pays no waiting; while a batch is in flight, new submissions queue and go
together in the next one (at most ``max_batch`` per transaction).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

#: writes a batch in one transaction; returns one result (or exception) per item, in order
BatchWriter = Callable[[list[Item]], Awaitable[Sequence["Result | Exception"]]]


class GroupCommit(Generic[Item, Result]):
    """Batches concurrent submissions into one call of ``write`` per transaction."""

    def __init__(self, write: BatchWriter[Item, Result], *, max_batch: int = 64, name: str) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._write = write
        self.max_batch = max_batch
        self._name = name
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """Write ``item`` in the next batch; returns its result once the batch committed.

        Raises the exception the writer returned for this item, or the one that failed the
        whole batch (then nothing of the batch was committed).
        """
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=self._name)
        return await future

    async def _flush(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                results = await self._write([item for item, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # its caller went away; the rows are committed anyway
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
