"""A counter that tasks can wait on: the scheduler counts its ticks and sleeps with it
so that tests wait for them instead of sleeping."""

from __future__ import annotations

import asyncio


class WaitableCounter:
    """A counter that tasks can wait on (``await counter.reached(n)``), without polling."""

    def __init__(self) -> None:
        self.value = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def bump(self) -> None:
        """Add one and release the waiters whose target is reached."""
        self.value += 1
        remaining = []
        for target, future in self._waiters:
            if target > self.value:
                remaining.append((target, future))
            elif not future.done():
                future.set_result(None)
        self._waiters = remaining

    async def reached(self, target: int, timeout: float) -> None:
        """Return once the value is ``target`` or more (TimeoutError after ``timeout`` s)."""
        if self.value >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        await asyncio.wait_for(future, timeout)
