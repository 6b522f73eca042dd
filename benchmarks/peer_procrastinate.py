"""The second peer: W1 on Procrastinate 3.x, as a process of its own.

What a "workflow" is here: Procrastinate is a durable task queue, not a workflow engine,
so the documented way to do W1's two echo steps is **one job** (an ``async`` task) that
performs both steps in memory, step 2 on step 1's output. Procrastinate makes the job
durable (``defer_async`` inserts it; the worker's fetch marks it ``doing``; its end marks
it ``succeeded``) but not the steps: nothing is written between them, so a crash after
step 1 runs step 1 again. That is fewer durable writes per workflow than ours (we commit
each step's outcome), which favours the peer; it is the honest comparison with a queue.

The process (run by :mod:`benchmarks.peers`, protocol :mod:`benchmarks.peer_process`):

1. opens the app on ``--db-url`` (``PsycopgConnector``, a pool of ``--inflight`` + 4
   connections), applies Procrastinate's schema with ``--apply-schema`` (the setup run
   only), starts the worker in the same event loop (``app.run_worker_async(concurrency=
   --inflight)``, listen/notify on, the defaults otherwise), prints ``@@LAUNCHED`` and
   waits for a line;
2. defers ``--n`` jobs with ``task.defer_async(...)``, keeping ``--inflight`` of them
   unfinished: a job counts as finished once the worker has committed its final status
   (the process's :class:`procrastinate.manager.JobManager` is a subclass that signals
   after ``finish_job`` returns, no extra query), prints ``@@DONE {json}``, waits for a
   line;
3. stops the worker, closes the app and exits.

Each job's arguments carry ``--tag``, so the harness reads the timestamps from
Procrastinate's own tables afterwards (``procrastinate_events``: ``deferred`` →
``succeeded``). ``--io-url``: each step GETs that URL first (one ``aiohttp`` session).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.peer_process import AsyncGetter, done_payload, parser, say, wait_for_go

#: connections beyond the worker's concurrency (its listener, the driver's defers)
POOL_EXTRA = 4


async def _run(args: Any) -> int:
    try:
        import procrastinate
        from procrastinate import manager
    except ImportError as exc:
        say("ERROR", {"message": f"procrastinate is not installed: {exc}"})
        return 2

    finished: asyncio.Queue[tuple[int, str]] = asyncio.Queue()

    class SignallingJobManager(manager.JobManager):
        """Tells the driver when a job's final status is committed."""

        async def finish_job(self, job: Any, status: Any, delete_job: bool) -> None:
            await super().finish_job(job, status, delete_job)
            finished.put_nowait((int(job.id), str(status.value)))

    concurrency = max(1, args.inflight)
    connector = procrastinate.PsycopgConnector(
        conninfo=args.db_url,
        min_size=concurrency + POOL_EXTRA,
        max_size=concurrency + POOL_EXTRA,
    )
    app = procrastinate.App(connector=connector)
    app.job_manager = SignallingJobManager(connector)
    getter = AsyncGetter(args.io_url) if args.io_url else None

    async def echo(message: Any) -> dict[str, Any]:
        if getter is not None:
            await getter.get()
        return {"echo": message}

    @app.task(name="bench_workflow")
    async def bench_workflow(i: int, tag: str) -> dict[str, Any]:
        first = await echo(i)
        return await echo(first["echo"])

    async with app.open_async():
        if args.apply_schema:
            await app.schema_manager.apply_schema_async()
        worker = asyncio.create_task(
            app.run_worker_async(concurrency=concurrency, install_signal_handlers=False)
        )
        say("LAUNCHED")
        await asyncio.to_thread(wait_for_go)
        say("DONE", await _drive(args, bench_workflow, finished, worker))
        await asyncio.to_thread(wait_for_go)
        worker.cancel()
        try:
            await asyncio.wait_for(worker, 30)
        except (asyncio.CancelledError, TimeoutError):
            pass
        if getter is not None:
            await getter.close()
    return 0


async def _drive(
    args: Any, task: Any, finished: asyncio.Queue[tuple[int, str]], worker: asyncio.Task[None]
) -> dict[str, Any]:
    """Defer ``args.n`` jobs, ``args.inflight`` unfinished at a time (closed loop)."""
    errors: list[str] = []
    started = time.perf_counter()
    deadline = time.monotonic() + args.timeout
    deferred = done = 0
    timed_out = False
    while done < args.n:
        while deferred < args.n and deferred - done < max(1, args.inflight):
            try:
                await task.defer_async(i=deferred, tag=args.tag)
            except Exception as exc:
                errors.append(repr(exc))
                done += 1  # never deferred: nothing to wait for
            deferred += 1
        getting = asyncio.ensure_future(finished.get())
        await asyncio.wait(
            {getting, worker},
            timeout=max(0.0, deadline - time.monotonic()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not getting.done():
            getting.cancel()
            if worker.done():
                errors.append(f"the worker stopped: {worker!r}")
            else:
                timed_out = True
            break
        _job_id, status = getting.result()
        done += 1
        if status != "succeeded":
            errors.append(f"a job ended {status}")
    return done_payload(args.n, errors, time.perf_counter() - started, timed_out)


def main(argv: list[str] | None = None) -> int:
    """Run the peer process (see the module docstring)."""
    options = parser("python -m benchmarks.peer_procrastinate")
    options.add_argument(
        "--apply-schema", action="store_true", help="create Procrastinate's tables first"
    )
    return asyncio.run(_run(options.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
