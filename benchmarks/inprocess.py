"""W1 in one process, for the cost scripts that count instructions or CPU time
(``benchmarks.metrics_cost``, ``benchmarks.tracing_instructions``): a kernel on a scratch
SQLite database with the embedded worker, and a driver keeping ``inflight`` runs going."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from benchmarks.workloads import w1_definition


@asynccontextmanager
async def w1_kernel(plugins: list[Any]) -> AsyncIterator[Any]:
    """A started kernel with W1's workflow applied and its worker running; closed after."""
    from dataworkflows.kernel import Kernel
    from dataworkflows.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'cost.db'}"
        kernel = Kernel(
            Settings(database_url=url, secret_key_file="", poll_interval=0.05),
            extra_plugins=plugins,
            entrypoints=False,
        )
        await kernel.start()
        try:
            await kernel.service.apply(w1_definition())
            kernel.start_worker()
            yield kernel
        finally:
            await kernel.close()


async def drive_w1(kernel: Any, n: int, inflight: int) -> None:
    """Run W1 ``n`` times, ``inflight`` at once, each to ``Succeeded``."""
    window = asyncio.Semaphore(inflight)

    async def one(i: int) -> None:
        async with window:
            summary, _ = await kernel.service.execute("bench-w1", trigger={"i": i})
            status = await kernel.ledger.wait_until_final(uuid.UUID(summary["executionId"]), 120)
            assert status == "Succeeded", status

    await asyncio.gather(*(one(i) for i in range(n)))
