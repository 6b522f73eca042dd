"""The peer: W1 (a 2-step echo workflow) on DBOS Transact, as a process of its own.

Run by the harness (``benchmarks.peers``), never imported by it, so that DBOS's CPU and
memory are measured like the engine's and a missing or broken ``dbos`` cannot take the
harness down. Protocol on stdin/stdout: :mod:`benchmarks.peer_process` (``@@LAUNCHED``,
a line, the drive, ``@@DONE {json}``, a line, shutdown).

Two ways DBOS documents for starting a workflow and waiting for it, chosen by ``--api``:

* ``sync``: ``def`` workflow and steps; ``--inflight`` threads, each in a loop
  ``DBOS.start_workflow(...)`` then ``handle.get_result()``.
* ``async``: ``async def`` workflow and steps (the same ``@DBOS.workflow()`` /
  ``@DBOS.step()`` decorators); ``--inflight`` asyncio tasks on one event loop, each in a
  loop ``await DBOS.start_workflow_async(...)`` then ``await handle.get_result()``. The
  workflow runs on the caller's event loop (DBOS's documented behaviour); DBOS's own
  database calls go to its thread pool.

Either way the closed loop keeps ``--inflight`` workflows unfinished. The workflow ids are
``<tag>-<i>``, so the harness reads each run's timestamps from ``dbos.workflow_status``
afterwards, exactly as it reads our ledger. ``--io-url``: each step GETs that URL first
(``urllib.request`` in ``sync``, one shared ``aiohttp`` session in ``async``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from benchmarks.peer_process import AsyncGetter, done_payload, get_sync, parser, say, wait_for_go


def _drive_sync(dbos: Any, args: Any) -> dict[str, Any]:
    DBOS, SetWorkflowID = dbos.DBOS, dbos.SetWorkflowID
    io_url = args.io_url

    @DBOS.step()
    def echo(message: Any) -> dict[str, Any]:
        if io_url:
            get_sync(io_url)
        return {"echo": message}

    @DBOS.workflow()
    def bench_workflow(i: int) -> dict[str, Any]:
        first = echo(i)
        return echo(first["echo"])

    _launch(DBOS, args)
    lock = threading.Lock()
    counter = iter(range(args.n))
    errors: list[str] = []
    deadline = time.monotonic() + args.timeout

    def loop() -> None:
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                with SetWorkflowID(f"{args.tag}-{i}"):
                    handle = DBOS.start_workflow(bench_workflow, i)
                handle.get_result()
            except Exception as exc:
                with lock:
                    errors.append(repr(exc))

    started = time.perf_counter()
    threads = [
        threading.Thread(target=loop, name=f"bench-{k}", daemon=True)
        for k in range(max(1, args.inflight))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 1)
    wall = time.perf_counter() - started
    return done_payload(args.n, errors, wall, time.monotonic() >= deadline)


def _drive_async(dbos: Any, args: Any) -> dict[str, Any]:
    DBOS, SetWorkflowID = dbos.DBOS, dbos.SetWorkflowID
    getter = AsyncGetter(args.io_url) if args.io_url else None

    @DBOS.step()
    async def echo(message: Any) -> dict[str, Any]:
        if getter is not None:
            await getter.get()
        return {"echo": message}

    @DBOS.workflow()
    async def bench_workflow(i: int) -> dict[str, Any]:
        first = await echo(i)
        return await echo(first["echo"])

    _launch(DBOS, args)

    async def drive() -> dict[str, Any]:
        counter = iter(range(args.n))
        errors: list[str] = []

        async def loop() -> None:
            while (i := next(counter, None)) is not None:
                try:
                    with SetWorkflowID(f"{args.tag}-{i}"):
                        handle = await DBOS.start_workflow_async(bench_workflow, i)
                    await handle.get_result()
                except Exception as exc:
                    errors.append(repr(exc))

        started = time.perf_counter()
        timed_out = False
        try:
            async with asyncio.timeout(args.timeout):
                await asyncio.gather(*(loop() for _ in range(max(1, args.inflight))))
        except TimeoutError:
            timed_out = True
        finally:
            if getter is not None:
                await getter.close()
        return done_payload(args.n, errors, time.perf_counter() - started, timed_out)

    return asyncio.run(drive())


def _launch(DBOS: Any, args: Any) -> None:
    DBOS(
        config={
            "name": "dwbench",
            "system_database_url": args.db_url,
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    say("LAUNCHED")
    wait_for_go()


def main(argv: list[str] | None = None) -> int:
    """Run the peer process (see the module docstring)."""
    options = parser("python -m benchmarks.peer_dbos")
    options.add_argument("--api", choices=("sync", "async"), default="sync")
    args = options.parse_args(argv)
    try:
        import dbos
    except ImportError as exc:
        say("ERROR", {"message": f"dbos is not installed: {exc}"})
        return 2
    drive = _drive_async if args.api == "async" else _drive_sync
    say("DONE", drive(dbos, args))
    wait_for_go()
    dbos.DBOS.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
