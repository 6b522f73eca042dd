"""``serve --workers N``: the API process starts N ``dataworkflows worker`` children and
keeps them running.

Why processes: a step that burns CPU (or blocks) holds up the event loop it runs on. With
the worker in the API's own process that loop is also the one that acks webhooks; with the
workers in child processes the API's loop does nothing but intake, and the second core
does the steps. The children share the database exactly as separately started
``dataworkflows worker`` processes do (claims, leases, fencing, NOTIFY).

Supervision:

* start: every child must report ready (its kernel started, schema checked) within
  ``ready_timeout``; one that exits before then fails the start, and ``serve`` exits 1
  with the child's exit status, before the API listens;
* a child that dies later is restarted after a back-off that doubles from
  ``backoff_initial`` to ``backoff_max`` seconds, and resets once a child has stayed up
  for ``stable_after`` seconds. Its runs are recovered by any worker once their lease
  expires (as after any crash);
* stop: SIGTERM to every child (each drains: no new claims, runs in flight finish within
  ``DATAWORKFLOWS_SHUTDOWN_GRACE``, the rest released), then SIGKILL to any child still
  there after the grace plus ``kill_margin`` seconds;
* on Linux each child gets SIGTERM if the ``serve`` process itself dies (``PR_SET_PDEATHSIG``),
  so a killed supervisor leaves no orphan workers claiming runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("dataworkflows.supervisor")

#: what ``dataworkflows worker --ready-line`` prints on stdout once it is ready
READY_LINE = "dataworkflows-worker-ready"


class WorkersFailedToStart(RuntimeError):
    """A worker child exited (or stayed silent) before it reported ready."""


def default_worker_count() -> int:
    """The CPU cores this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _pdeathsig_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when its parent dies (Linux), or
    None elsewhere. libc is loaded here, in the parent, not between fork and exec."""
    if sys.platform != "linux":
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return hook


@dataclass
class _Child:
    slot: int
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    reader: asyncio.Task[None] | None = field(default=None, repr=False)


class WorkerSupervisor:
    """Starts ``count`` worker children, restarts crashed ones, stops them all gracefully."""

    def __init__(
        self,
        count: int,
        *,
        grace: float,
        argv: list[str] | None = None,
        ready_timeout: float = 60.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 60.0,
        kill_margin: float = 5.0,
    ) -> None:
        if count < 1:
            raise ValueError("a supervisor needs at least one worker")
        self.count = count
        self.grace = grace
        self.argv = argv or [sys.executable, "-m", "dataworkflows.cli.main", "worker"]
        self.ready_timeout = ready_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.kill_margin = kill_margin
        self.children = [_Child(slot) for slot in range(count)]
        self._stopping = False
        self._preexec = _pdeathsig_hook()

    @property
    def pids(self) -> list[int]:
        """Process ids of the children running now."""
        return [c.proc.pid for c in self.children if c.proc and c.proc.returncode is None]

    async def start(self) -> None:
        """Start every child and wait until all are ready; raise :class:`WorkersFailedToStart`
        (after stopping the others) if any is not."""
        results = await asyncio.gather(
            *(self._spawn(child) for child in self.children), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            raise WorkersFailedToStart(str(failures[0]))
        for child in self.children:
            child.watcher = asyncio.create_task(self._watch(child), name=f"worker-{child.slot}")
        log.info("%d worker process(es) ready: pids %s", self.count, self.pids)

    async def _spawn(self, child: _Child) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            "--ready-line",
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=self._preexec,
        )
        child.proc = proc
        child.started_at = time.monotonic()
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), self.ready_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise WorkersFailedToStart(
                f"worker {child.slot} did not report ready within {self.ready_timeout:g} s"
            ) from None
        if not line.decode(errors="replace").startswith(READY_LINE):
            code = await proc.wait()
            raise WorkersFailedToStart(
                f"worker {child.slot} exited with status {code} before it was ready "
                "(its error is logged above)"
            )
        # keep reading: a child blocked on a full stdout pipe would stall
        child.reader = asyncio.create_task(self._copy_stdout(proc.stdout))

    @staticmethod
    async def _copy_stdout(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            sys.stdout.write(line.decode(errors="replace"))
            sys.stdout.flush()

    async def _watch(self, child: _Child) -> None:
        backoff = self.backoff_initial
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            if self._stopping:
                return
            if time.monotonic() - child.started_at >= self.stable_after:
                backoff = self.backoff_initial
            log.error(
                "worker %d (pid %d) exited with status %s; restarting in %.1f s",
                child.slot,
                child.proc.pid,
                code,
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)
            if self._stopping:
                return
            try:
                await self._spawn(child)
            except (WorkersFailedToStart, OSError) as exc:
                log.error("restarting worker %d failed: %s", child.slot, exc)
                child.started_at = time.monotonic()
                continue
            child.restarts += 1
            log.info("worker %d restarted as pid %d", child.slot, child.proc.pid)

    async def stop(self) -> None:
        """SIGTERM every child, wait for the drain, SIGKILL what is left."""
        self._stopping = True
        for child in self.children:
            if child.watcher is not None:
                child.watcher.cancel()
        procs = [c.proc for c in self.children if c.proc and c.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if not procs:
            return
        _done, pending = await asyncio.wait(
            [asyncio.ensure_future(p.wait()) for p in procs],
            timeout=self.grace + self.kill_margin,
        )
        if pending:
            log.warning("%d worker(s) did not stop in time: killing them", len(pending))
            for proc in procs:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*pending, return_exceptions=True)
