"""A local HTTP server that answers after a fixed delay: the "real I/O" of W1io (issue 22).

It runs in its own process (never on the engine's or the driver's event loop), listens on
127.0.0.1 on a free port, and answers ``GET /io?run=R&step=S[&prev=P]`` after
``--io-latency-ms`` (default 5) with ``{"run": R, "step": S, "token": "R-S"}``. It counts
every request by ``run`` and ``step`` and checks that step 2 carried step 1's token
(``prev == "R-1"``); ``GET /stats`` returns the counts, so a harness can check that every
run made exactly one request per step.

From Python (the engine workloads, and the peers the same way)::

    async with latency_server(0.005) as server:
        url = server.url            # http://127.0.0.1:PORT
        ...                          # drive runs whose steps GET f"{url}/io?run=..."
        stats = server.stats()       # {"requests": ..., "runs": {R: {"1": n, "2": n}}, ...}

or ``server = start_latency_server(0.005)`` ... ``server.stop()``. Standalone::

    python -m benchmarks.latency_server --io-latency-ms 5     # prints its URL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import selectors
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from benchmarks.common import stop_process, until_signalled
from benchmarks.engine import REPO_ROOT

#: the path the workflows call
IO_PATH = "/io"


def token(run: str, step: str) -> str:
    """What step ``step`` of run ``run`` gets back (step 2 sends step 1's as ``prev``)."""
    return f"{run}-{step}"


def build_app(delay_s: float) -> web.Application:
    """The server's application: ``GET /io`` (delayed, counted) and ``GET /stats``."""
    counts: dict[str, Any] = {"requests": 0, "runs": {}, "bad_prev": 0, "first_bad": None}

    async def io(request: web.Request) -> web.Response:
        await asyncio.sleep(delay_s)
        run = request.query.get("run", "")
        step = request.query.get("step", "")
        counts["requests"] += 1
        per_run = counts["runs"].setdefault(run, {})
        per_run[step] = per_run.get(step, 0) + 1
        if step == "2" and request.query.get("prev") != token(run, "1"):
            counts["bad_prev"] += 1
            counts["first_bad"] = counts["first_bad"] or dict(request.query)
        return web.json_response({"run": run, "step": step, "token": token(run, step)})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counts)

    app = web.Application()
    app.router.add_get(IO_PATH, io)
    app.router.add_get("/stats", stats)
    return app


async def serve(delay_s: float, port: int = 0) -> None:
    """Serve until SIGINT/SIGTERM; the first line on stdout is the base URL."""
    runner = web.AppRunner(build_app(delay_s), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    server = site._server
    assert server is not None and server.sockets  # type: ignore[attr-defined]
    bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    print(f"http://127.0.0.1:{bound}", flush=True)
    await until_signalled()
    await runner.cleanup()


@dataclass
class LatencyServer:
    """A running latency server process: its base ``url``; :meth:`stats`, :meth:`stop`."""

    url: str
    delay_s: float
    process: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        """The server's counts now (``requests``, ``runs``: {run: {step: count}}, ``bad_prev``)."""
        with urllib.request.urlopen(f"{self.url}/stats", timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process and wait for it (SIGKILL if it does not exit in time)."""
        stop_process(self.process, signal.SIGTERM, timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_latency_server(delay_s: float = 0.005, timeout: float = 30.0) -> LatencyServer:
    """Start the server in a separate Python process; returns once it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.latency_server", "--io-latency-ms", str(delay_s * 1e3)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout)
    line = process.stdout.readline().strip() if ready else ""
    if not line.startswith("http://127.0.0.1:"):
        process.kill()
        process.wait(10)
        raise RuntimeError(f"the latency server did not start (said {line!r})")
    return LatencyServer(line, delay_s, process)


@contextlib.asynccontextmanager
async def latency_server(delay_s: float = 0.005) -> AsyncIterator[LatencyServer]:
    """:func:`start_latency_server` for the duration of an ``async with``."""
    server = await asyncio.to_thread(start_latency_server, delay_s)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


def check_runs(stats: dict[str, Any], runs: list[str], steps: int = 2) -> dict[str, Any]:
    """How the server saw ``runs``: requests per run, and the runs that did not make
    exactly one request per step (``steps`` steps) or sent a wrong ``prev``."""
    seen = stats.get("runs", {})
    wrong = [
        run for run in runs if seen.get(run, {}) != {str(step): 1 for step in range(1, steps + 1)}
    ]
    requests = sum(sum(seen.get(run, {}).values()) for run in runs)
    return {
        "requests": requests,
        "requests_per_run": round(requests / max(1, len(runs)), 3),
        "runs_not_exactly_one_per_step": len(wrong),
        "first_wrong": {wrong[0]: seen.get(wrong[0])} if wrong else None,
        "bad_prev": stats.get("bad_prev", 0),
        "first_bad_prev": stats.get("first_bad"),
        "ok": not wrong and not stats.get("bad_prev"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--io-latency-ms", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=0, help="0: a free port (default)")
    args = parser.parse_args()
    asyncio.run(serve(args.io_latency_ms / 1e3, args.port))


if __name__ == "__main__":
    main()
