"""Time as the kernel sees it. Tests swap in a :class:`FakeClock` instead of sleeping.

A clock tells the time (:meth:`Clock.now`) and lets a task sleep until a point in its
own time or until something happens (:meth:`Clock.sleep_until`): the scheduler sleeps
this way until the next fire time, so that a :class:`FakeClock` wakes it exactly when a
test moves the time past that fire time, and never before.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol, overload


@overload
def iso_utc(value: datetime) -> str: ...
@overload
def iso_utc(value: None) -> None: ...
def iso_utc(value: datetime | None) -> str | None:
    """A time as the API shows it: ISO 8601 in UTC with a ``Z`` (None stays None). A naive
    value is taken to be UTC already (what SQLite gives back)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep_until(self, when: datetime | None, wake: asyncio.Event) -> bool:
        """Sleep until this clock reads ``when`` or later (``None``: no deadline) or until
        ``wake`` is set, whichever comes first. Returns True if ``wake`` is set."""
        ...


async def _wait_event(wake: asyncio.Event, timeout: float | None) -> bool:
    """Wait for ``wake`` at most ``timeout`` seconds of real time; True if it is set."""
    if wake.is_set():
        return True
    if timeout is not None and timeout <= 0:
        return False
    try:
        await asyncio.wait_for(wake.wait(), timeout)
    except TimeoutError:
        return wake.is_set()
    return True


class SystemClock:
    """The real time. Sleeps on the event loop's timer (monotonic), so a jump of the
    wall clock moves a wake-up by as much; the scheduler bounds its sleeps for that."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime | None, wake: asyncio.Event) -> bool:
        """See :meth:`Clock.sleep_until`."""
        timeout = None if when is None else (when - self.now()).total_seconds()
        return await _wait_event(wake, timeout)


class FakeClock:
    """A clock that moves only when told to.

    :meth:`sleep_until` returns when :meth:`advance` or :meth:`set` moves the time to the
    deadline or past it (at once, from inside that call: no real time passes), or when the
    event is set. :attr:`sleepers` lists the deadlines slept on, so a test can see when a
    task will wake without waiting for it.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, asyncio.Event]] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float = 0, **kwargs: float) -> datetime:
        """Move the time forward (``timedelta`` keywords accepted) and wake due sleepers."""
        self._now += timedelta(seconds=seconds, **kwargs)
        self._wake_due()
        return self._now

    def set(self, when: datetime) -> None:
        """Set the time (it may go backwards) and wake due sleepers."""
        if when.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware datetime")
        self._now = when
        self._wake_due()

    @property
    def sleepers(self) -> list[datetime]:
        """The deadlines of the tasks sleeping in :meth:`sleep_until` now, earliest first."""
        return sorted(when for when, _ in self._sleepers)

    def _wake_due(self) -> None:
        for when, reached in self._sleepers:
            if when <= self._now:
                reached.set()

    async def sleep_until(self, when: datetime | None, wake: asyncio.Event) -> bool:
        """See :meth:`Clock.sleep_until`; the deadline is in this clock's time."""
        if wake.is_set():
            return True
        if when is None:
            return await _wait_event(wake, None)
        if when <= self._now:
            return False
        reached = asyncio.Event()
        entry = (when, reached)
        self._sleepers.append(entry)
        waiters = [asyncio.ensure_future(e.wait()) for e in (wake, reached)]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            self._sleepers.remove(entry)
        return wake.is_set()
