"""The ``startup`` workload: how long ``dataworkflows --help`` and ``dataworkflows plugins``
take, from process start to exit (issue 14's target: at most 0.4 s each).

Each command runs ``--startup-runs`` times as a fresh process of this interpreter, against
an empty SQLite path (``plugins`` opens no database); the median and the best wall time
are reported. No timing is asserted anywhere but in the targets table.

The processes read cached bytecode, as an installed CLI does (pip compiles it at install
time): ``PYTHONDONTWRITEBYTECODE`` is dropped from their environment and one untimed run
of each command writes whatever cache is missing. With that variable set and no cache
(some sandboxes), every process compiles every module from source first: about twice the
CPU time, which is not start-up work of the CLI.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks.common import loadavg

COMMANDS = {"help": ["--help"], "plugins": ["plugins"]}


def run_startup(runs: int = 10) -> dict[str, Any]:
    """Time each command ``runs`` times; returns ``{command: {median_s, best_s,
    cpu_median_s}}``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DATAWORKFLOWS_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        env["DATAWORKFLOWS_DATABASE_URL"] = f"sqlite:///{folder}/startup.db"
        for name, args in COMMANDS.items():
            times, cpu = [], []
            for attempt in range(runs + 1):  # the first one, untimed, writes the bytecode
                used = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "dataworkflows.cli.main", *args],
                    env=env,
                    capture_output=True,
                    check=False,
                )
                if done.returncode != 0:
                    return {"ok": False, "error": done.stderr.decode()[-2000:]}
                if attempt:
                    times.append(time.perf_counter() - started)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu.append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
            figures[name] = {
                "median_s": statistics.median(times),
                "best_s": min(times),
                # CPU time (user + system) of the process: what a loaded machine inflates least
                "cpu_median_s": statistics.median(cpu),
            }
    return {"ok": True, "runs": runs, "commands": figures, "load": loadavg()}


def render(result: dict[str, Any]) -> list[str]:
    """Lines for the terminal and RESULTS.md."""
    if not result.get("ok"):
        return [f"startup: failed: {result.get('error')}"]
    parts = [
        f"dataworkflows {'--help' if name == 'help' else name}: median "
        f"{f['median_s']:.2f} s, best {f['best_s']:.2f} s, CPU {f['cpu_median_s']:.2f} s"
        for name, f in result["commands"].items()
    ]
    load = result.get("load")
    where = f", load average {load[0]:.1f}" if load else ""
    return [f"startup ({result['runs']} runs each{where}): " + "; ".join(parts)]
