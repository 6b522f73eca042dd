"""The ``startup`` workload: how long ``dataworkflows --help`` and ``dataworkflows plugins``
take, from process start to exit (issue 14's target: at most 0.4 s each).

Each command runs ``--startup-runs`` times as a fresh process of this interpreter, against
an empty SQLite path (``plugins`` opens no database); the median and the best wall time
are reported. No timing is asserted anywhere but in the targets table.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks.common import loadavg

COMMANDS = {"help": ["--help"], "plugins": ["plugins"]}


def run_startup(runs: int = 10) -> dict[str, Any]:
    """Time each command ``runs`` times; returns ``{command: {median_s, best_s}}``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAWORKFLOWS_")}
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        env["DATAWORKFLOWS_DATABASE_URL"] = f"sqlite:///{folder}/startup.db"
        for name, args in COMMANDS.items():
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "dataworkflows.cli.main", *args],
                    env=env,
                    capture_output=True,
                    check=False,
                )
                times.append(time.perf_counter() - started)
                if done.returncode != 0:
                    return {"ok": False, "error": done.stderr.decode()[-2000:]}
            figures[name] = {"median_s": statistics.median(times), "best_s": min(times)}
    return {"ok": True, "runs": runs, "commands": figures, "load": loadavg()}


def render(result: dict[str, Any]) -> list[str]:
    """Lines for the terminal and RESULTS.md."""
    if not result.get("ok"):
        return [f"startup: failed: {result.get('error')}"]
    parts = [
        f"dataworkflows {'--help' if name == 'help' else name}: median "
        f"{f['median_s']:.2f} s, best {f['best_s']:.2f} s"
        for name, f in result["commands"].items()
    ]
    return [f"startup ({result['runs']} runs each): " + "; ".join(parts)]
