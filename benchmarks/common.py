"""Small helpers shared by the workloads: percentiles, tables, machine facts, ports."""

from __future__ import annotations

import asyncio
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any


class BenchmarkError(RuntimeError):
    """A workload could not run (its result records the message instead of figures)."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    rank = (len(data) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(data[low])
    return float(data[low] + (data[high] - data[low]) * (rank - low))


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """p50/p95/p99/max/mean of latencies given in seconds, reported in milliseconds."""

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000.0, 3)

    return {
        "count": len(seconds),
        "p50_ms": ms(percentile(seconds, 50)),
        "p95_ms": ms(percentile(seconds, 95)),
        "p99_ms": ms(percentile(seconds, 99)),
        "max_ms": ms(max(seconds) if seconds else None),
        "mean_ms": ms(sum(seconds) / len(seconds) if seconds else None),
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loadavg() -> list[float]:
    """The 1/5/15-minute load averages (other work on the machine skews every figure)."""
    try:
        with open("/proc/loadavg") as fh:
            return [float(x) for x in fh.read().split()[:3]]
    except OSError:
        return []


def machine_info(pg_admin_url: str | None) -> dict[str, Any]:
    """Facts RESULTS.md records next to the figures."""
    cpu_model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_total = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem_total = round(int(line.split()[1]) / 1024 / 1024, 1)
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_gib": mem_total,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "loadavg_at_start": loadavg(),
        "postgresql": None,
        "pgbench": shutil.which("pgbench"),
    }
    try:
        import dataworkflows

        info["dataworkflows"] = dataworkflows.__version__
    except Exception:  # pragma: no cover - the kernel is always installed here
        info["dataworkflows"] = None
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    if pg_admin_url:
        try:
            import psycopg

            with psycopg.connect(pg_admin_url, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                info["postgresql"] = row[0] if row else None
                for name in ("shared_buffers", "synchronous_commit", "max_connections"):
                    row = conn.execute(f"SHOW {name}").fetchone()
                    info[f"pg_{name}"] = row[0] if row else None
        except Exception as exc:
            info["postgresql"] = f"unreachable: {exc}"
    return info


async def until_signalled() -> None:
    """Return once the process gets SIGINT or SIGTERM (a local server's main loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def stop_process(proc: subprocess.Popen[Any], sig: int, timeout: float) -> None:
    """Send ``sig`` to a child process and wait for it; SIGKILL if it outlives ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: numbers rounded, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}" if abs(value) >= 1 else f"{value:.{max(digits, 2)}f}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns (also valid Markdown)."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    line = "| " + " | ".join(h.ljust(widths[i]) for i, h in enumerate(headers)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)) + " |"
        for row in cells
    ]
    return "\n".join([line, rule, *body])
