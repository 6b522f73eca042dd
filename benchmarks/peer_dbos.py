"""The peer: W1 (a 2-step echo workflow) on DBOS Transact, as a process of its own.

Run by the harness (``benchmarks.peers``), never imported by it, so that DBOS's CPU and
memory are measured like the engine's and a missing or broken ``dbos`` cannot take the
harness down. Protocol on stdin/stdout (lines starting with ``@@``; anything else DBOS
prints is ignored):

1. the process configures DBOS on ``--db-url`` (its system database), launches it, prints
   ``@@LAUNCHED`` and waits for a line on stdin;
2. it runs ``--n`` workflows with ``--inflight`` of them in flight at a time (threads, each
   ``DBOS.start_workflow`` then ``handle.get_result()``: DBOS's own durable-start path),
   prints ``@@DONE {json}`` and waits for a line on stdin;
3. it shuts DBOS down and exits.

The workflow ids are ``<tag>-<i>``, so the harness reads each run's timestamps from
``dbos.workflow_status`` afterwards, exactly as it reads our ledger.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any


def _say(kind: str, payload: dict[str, Any] | None = None) -> None:
    sys.stdout.write(f"@@{kind} {json.dumps(payload or {})}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer_dbos")
    parser.add_argument("--db-url", required=True, help="postgresql:// URL (system database)")
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--tag", default="run")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    try:
        from dbos import DBOS, SetWorkflowID
    except ImportError as exc:
        _say("ERROR", {"message": f"dbos is not installed: {exc}"})
        return 2

    @DBOS.step()
    def echo(message: Any) -> dict[str, Any]:
        return {"echo": message}

    @DBOS.workflow()
    def bench_workflow(i: int) -> dict[str, Any]:
        first = echo(i)
        return echo(first["echo"])

    DBOS(
        config={
            "name": "dwbench",
            "system_database_url": args.db_url,
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    _say("LAUNCHED")
    sys.stdin.readline()

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
    _say(
        "DONE",
        {
            "n": args.n,
            "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "wall_s": wall,
            "timed_out": time.monotonic() >= deadline,
        },
    )
    sys.stdin.readline()
    DBOS.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
