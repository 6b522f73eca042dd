"""Evaluating templates and conditions without stalling the event loop.

A template comes from whoever may edit a workflow; a condition from whoever may edit a
trigger. Whatever they wrote, the API, the heartbeats and the other runs of the process
must keep going. So (docs/semantics.md, "Templates"):

* A template or condition whose *shape* is cheap (:meth:`TemplateEngine.is_cheap`: no
  calls, macros or size-taking filters, at most a couple of thousand characters; loops
  over data spend one operation per item)
  is evaluated inline, under a small budget (``INLINE_*`` in
  :mod:`dataworkflows.engine.templating`).
  If it goes over that budget, it is evaluated again as below.
* Everything else is evaluated in one of ``workers`` processes, forked from this one so
  that they see the same environment (plugin filters and globals included), under the
  full budget, one evaluation at a time per process. A process that does not answer
  within the wall-clock limit (plus a small margin) is killed and replaced; its
  evaluation fails with ``template_budget_exceeded``. Its address space is bounded by
  ``memory_mb`` more than it started with.

Evaluations that wait for a free worker process wait without blocking anything: the
wall-clock limit starts when a process takes the evaluation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any, Protocol

from dataworkflows.engine.template_budget import Budget, NeedsWorker, TemplateLimits
from dataworkflows.engine.template_errors import TemplateBudgetExceeded, TemplateError

if TYPE_CHECKING:
    from multiprocessing.context import ForkProcess


class Evaluator(Protocol):
    """What the pool runs (the :class:`~dataworkflows.engine.templating.TemplateEngine`)."""

    limits: TemplateLimits

    def is_cheap(self, value: Any) -> bool: ...

    def condition_is_cheap(self, source: str) -> bool: ...

    def render(
        self, value: Any, context: Mapping[str, Any], path: str = "$", budget: Budget | None = None
    ) -> Any: ...

    def evaluate_condition(
        self, source: str, context: Mapping[str, Any], path: str = "$", budget: Budget | None = None
    ) -> bool: ...


log = logging.getLogger(__name__)

#: seconds a worker process gets past the wall-clock limit to report it itself
KILL_MARGIN = 0.25
#: seconds ``close`` waits for an idle worker process to exit before killing it
EXIT_GRACE = 2.0

Request = tuple[str, Any, Mapping[str, Any], str]


class TemplatePool:
    """Runs evaluations inline when cheap, else in worker processes killed at the limit."""

    def __init__(self, engine: Evaluator) -> None:
        self.engine = engine
        self.limits = engine.limits
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._slots: asyncio.Semaphore | None = None
        #: evaluations done in a worker process, and workers killed (for tests and logs)
        self.offloaded = 0
        self.killed = 0

    async def render(self, value: Any, context: Mapping[str, Any], path: str) -> Any:
        cheap = self.engine.is_cheap(value)
        return await self._evaluate(cheap, self.engine.render, ("render", value, context, path))

    async def evaluate_condition(self, source: str, context: Mapping[str, Any], path: str) -> bool:
        cheap = self.engine.condition_is_cheap(source)
        request = ("condition", source, context, path)
        return bool(await self._evaluate(cheap, self.engine.evaluate_condition, request))

    async def _evaluate(self, cheap: bool, inline: Callable[..., Any], request: Request) -> Any:
        """Inline under the small budget if ``cheap`` (and it fits), else in a worker."""
        if cheap:
            try:
                return inline(*request[1:], Budget(self.limits.inline(), inline=True))
            except NeedsWorker:
                pass
        return await self._run(request)

    async def start(self) -> None:
        """Start every worker process now (``serve`` and ``worker`` do, before traffic).

        Forking holds the interpreter lock while the kernel copies this process's page
        tables, tens of milliseconds for a large process, so it is best done before any
        request is served; otherwise processes start on first need (and after a kill).
        """
        while len(self._all) < max(1, self.limits.workers):
            self._idle.append(await self._start())

    async def close(self) -> None:
        """Stop every worker process (idle ones exit, busy ones are killed)."""
        workers, self._all, self._idle = list(self._all), set(), []
        for worker in workers:
            worker.conn.close()  # an idle worker reads EOF and exits
        for worker in workers:
            await asyncio.to_thread(worker.process.join, EXIT_GRACE)
            if worker.process.is_alive():
                worker.kill()
                await asyncio.to_thread(worker.process.join, EXIT_GRACE)

    async def _run(self, request: Request) -> Any:
        path = request[3]
        try:
            payload = bytes(ForkingPickler.dumps(request))
        except Exception as exc:  # e.g. a plugin put an object that does not pickle
            raise TemplateError(
                path, f"its context cannot be sent to a worker process: {exc}"
            ) from None
        if self._slots is None:
            self._slots = asyncio.Semaphore(max(1, self.limits.workers))
        async with self._slots:
            worker = self._idle.pop() if self._idle else await self._start()
            healthy = False
            try:
                reply = await worker.call(payload, self.limits.timeout + KILL_MARGIN)
                healthy = True
            except TimeoutError:
                raise TemplateBudgetExceeded(
                    path, f"over its budget: took longer than {self.limits.timeout:g} s"
                ) from None
            except (EOFError, OSError):
                raise TemplateBudgetExceeded(
                    path, "over its budget: the process evaluating it died (out of memory?)"
                ) from None
            finally:
                if healthy:
                    self._idle.append(worker)
                else:  # timed out, died, or we were cancelled while it was busy
                    self._discard(worker)
        self.offloaded += 1
        code, *rest = reply
        if code == "ok":
            return rest[0]
        if code == TemplateBudgetExceeded.code:
            raise TemplateBudgetExceeded(rest[0], rest[1])
        raise TemplateError(rest[0], rest[1])

    async def _start(self) -> _Worker:
        # forking copies the page tables of this process: tens of ms for a big one, so
        # not on the event loop
        starting = asyncio.ensure_future(asyncio.to_thread(_Worker, self.engine))
        try:
            worker = await asyncio.shield(starting)
        except asyncio.CancelledError:  # the process still starts: stop it when it has
            starting.add_done_callback(_kill_started)
            raise
        self._all.add(worker)
        return worker

    def _discard(self, worker: _Worker) -> None:
        self._all.discard(worker)
        if worker.process.is_alive():
            self.killed += 1
            log.warning("killed the template worker process %s at its limit", worker.process.pid)
        worker.kill()


class _Worker:
    """One forked process evaluating one request at a time over a pipe."""

    def __init__(self, engine: Evaluator) -> None:
        context = multiprocessing.get_context("fork")
        self.conn, child = context.Pipe()
        self.process: ForkProcess = context.Process(
            target=_serve,
            args=(child, self.conn, engine),
            name="dataworkflows-templates",
            daemon=True,
        )
        self.process.start()
        child.close()

    async def call(self, payload: bytes, timeout: float) -> tuple[Any, ...]:
        """Send a pickled request; the reply, or TimeoutError after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        self.conn.send_bytes(payload)
        readable = loop.create_future()
        fd = self.conn.fileno()
        try:
            loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
        except NotImplementedError:  # an event loop without add_reader (Windows)
            if not await asyncio.to_thread(self.conn.poll, timeout):
                raise TimeoutError from None
        else:
            try:
                async with asyncio.timeout(timeout):
                    await readable
            finally:
                loop.remove_reader(fd)
        reply: tuple[Any, ...] = self.conn.recv()
        return reply

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()
        if self.process.is_alive():
            with contextlib.suppress(OSError):
                self.process.kill()
        # reaped by multiprocessing when the next process starts, or by ``close``


def _kill_started(starting: asyncio.Future[_Worker]) -> None:
    if not starting.cancelled() and starting.exception() is None:
        starting.result().kill()


def _serve(conn: Connection, parent_end: Connection, engine: Evaluator) -> None:
    """The worker process: answer requests until the pipe closes (the engine closed it,
    or its process died)."""
    # the fork copied the engine's end of this pipe too: keep it open here, and this
    # process would never read EOF, and outlive an engine that was killed
    parent_end.close()
    _detach(engine.limits.memory_mb)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        reply = _evaluate(engine, request)
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # the result does not pickle
            conn.send(("template_error", request[3], f"{type(exc).__name__}: {exc}"))


def _evaluate(engine: Evaluator, request: Request) -> tuple[Any, ...]:
    kind, payload, context, path = request
    budget = Budget(engine.limits)
    try:
        if kind == "render":
            return ("ok", engine.render(payload, context, path, budget))
        return ("ok", engine.evaluate_condition(payload, context, path, budget))
    except TemplateError as exc:
        return (exc.code, exc.path, exc.message)
    except BaseException as exc:  # never let the loop die on something odd
        return ("template_error", path, f"{type(exc).__name__}: {exc}")


def _detach(memory_mb: int) -> None:
    """In a fresh worker: leave the parent's signals alone and bound memory."""
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)  # else a signal here would wake the parent's event loop
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if memory_mb <= 0:
        return
    try:
        import resource

        with open("/proc/self/statm") as statm:
            size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = size + memory_mb * 1024 * 1024
        if hard == resource.RLIM_INFINITY or limit < hard:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):  # not Linux: the wall clock still bounds it
        pass
