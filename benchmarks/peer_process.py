"""What every peer process shares: the ``@@`` protocol, its options and the steps' I/O.

A peer process (:mod:`benchmarks.peer_dbos`, :mod:`benchmarks.peer_procrastinate`) talks
to the harness on stdin/stdout: it prints ``@@LAUNCHED`` once its library is up and waits
for a line, runs its workflows, prints ``@@DONE {json}`` and waits for a line again, then
shuts down (``@@ERROR {json}`` instead when it cannot go on). Lines that do not start with
``@@`` are the library's own output and are ignored by the harness.

``--io-url``: each step of a workflow then does an HTTP GET of that URL (the harness's
5 ms-latency local server) before it returns its echo, so the step does real I/O. The
synchronous variant uses ``urllib.request`` (no dependency); the asynchronous one one
``aiohttp.ClientSession`` for the whole process.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from typing import Any


def say(kind: str, payload: dict[str, Any] | None = None) -> None:
    """Print one protocol line (``@@KIND {json}``) and flush it."""
    sys.stdout.write(f"@@{kind} {json.dumps(payload or {})}\n")
    sys.stdout.flush()


def wait_for_go() -> None:
    """Block until the harness writes a line (or closes stdin)."""
    sys.stdin.readline()


def parser(prog: str) -> argparse.ArgumentParser:
    """The options every peer process takes."""
    out = argparse.ArgumentParser(prog=prog)
    out.add_argument("--db-url", required=True, help="postgresql:// URL of the peer's database")
    out.add_argument("--n", type=int, default=0, help="workflows to run (0: launch only)")
    out.add_argument("--inflight", type=int, default=16, help="unfinished workflows at a time")
    out.add_argument("--tag", default="run", help="names this process's workflows")
    out.add_argument("--timeout", type=float, default=600.0, help="bound on the drive (s)")
    out.add_argument("--io-url", default=None, help="each step GETs this URL (real I/O)")
    return out


def done_payload(n: int, errors: list[str], wall: float, timed_out: bool) -> dict[str, Any]:
    """What ``@@DONE`` reports."""
    return {
        "n": n,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": wall,
        "timed_out": timed_out,
    }


def get_sync(url: str) -> int:
    """GET ``url`` with the standard library; the body's length (the body is read whole)."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return len(response.read())


class AsyncGetter:
    """GETs over one ``aiohttp.ClientSession``, opened on first use in the running loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._session: Any = None

    async def get(self) -> int:
        """GET the URL; the body's length."""
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        async with self._session.get(self.url) as response:
            response.raise_for_status()
            return len(await response.read())

    async def close(self) -> None:
        """Close the session (if one was opened)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
