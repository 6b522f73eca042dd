"""CPU seconds and memory of processes, read from ``/proc`` (Linux).

* :class:`ProcessMeter` follows given pids (the engine's ``dataworkflows serve`` /
  ``dataworkflows worker`` processes): CPU seconds (``utime + stime``) between
  :meth:`~ProcessMeter.start` and :meth:`~ProcessMeter.stop`, and peak RSS (``VmHWM``,
  the kernel's high-water mark, so no sample is missed).
* :class:`PostgresMeter` follows the PostgreSQL server processes: the client backends
  connected to one database (found by their process title, ``postgres: <cluster>: <user>
  <database> <host> ...``) and, separately, the server-wide background processes
  (walwriter, checkpointer, background writer, ...). A thread samples them every
  ``interval`` seconds, so a backend that exits between two samples loses at most one
  interval of CPU. Background processes serve every database of the server: with other
  work on the same server their figure is an upper bound.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
BACKGROUND = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "logical replication launcher",
    "stats collector",
)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """``VmHWM``, ``VmRSS``, ``RssAnon`` (KiB) of a process; empty if it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon"):
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    """Direct child pids (used to find the engine under a profiler)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    found.extend(int(x) for x in fh.read().split())
            except OSError:
                continue
    except OSError:
        pass
    return found


class ProcessMeter:
    """CPU seconds and peak RSS of a fixed set of processes."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = list(pids)
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._hwm: dict[int, int] = {}

    def start(self) -> None:
        for pid in self.pids:
            value = cpu_seconds(pid)
            if value is not None:
                self._start[pid] = value
                self._last[pid] = value

    def sample(self) -> None:
        """Record the latest CPU and RSS high-water mark (call before the processes exit)."""
        for pid in self.pids:
            value = cpu_seconds(pid)
            if value is not None:
                self._last[pid] = value
            hwm = memory_kib(pid).get("VmHWM")
            if hwm is not None:
                self._hwm[pid] = hwm

    def stop(self) -> dict[str, Any]:
        self.sample()
        cpu = sum(self._last.get(p, 0.0) - self._start.get(p, 0.0) for p in self.pids)
        return {
            "processes": len(self.pids),
            "cpu_s": round(cpu, 2),
            "peak_rss_mib": round(sum(self._hwm.values()) / 1024, 1) if self._hwm else None,
            "peak_rss_mib_per_process": [round(self._hwm.get(p, 0) / 1024, 1) for p in self.pids],
        }


def _postgres_processes(database: str) -> tuple[list[int], list[int]]:
    """(client backends of ``database``, server background processes), from titles."""
    backends: list[int] = []
    background: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/comm") as fh:
                comm = fh.read().strip()
        except OSError:
            continue
        if comm != "postgres":
            continue
        title = cmdline(pid)
        if not title.startswith("postgres:"):
            continue  # the postmaster itself (its path and -D ...)
        parts = title.split(":", 2)
        rest = parts[2].strip() if len(parts) == 3 else ""
        words = rest.split()
        if len(words) >= 2 and words[1] == database:
            backends.append(pid)
        elif rest.startswith(BACKGROUND) or rest.startswith("autovacuum worker"):
            background.append(pid)
    return backends, background


@dataclass
class _Tracked:
    first: float
    last: float
    rss_anon: int = 0


@dataclass
class PostgresMeter:
    """CPU seconds of one database's backends (and of the server's background processes)."""

    database: str
    interval: float = 0.2
    #: backends not to count (the harness's own connection to the database)
    exclude: set[int | None] = field(default_factory=set)
    _backends: dict[int, _Tracked] = field(default_factory=dict)
    _background: dict[int, _Tracked] = field(default_factory=dict)
    _peak_anon_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Take the baseline: backends alive now count from their current CPU time."""
        self._sample(baseline=True)
        self._thread = threading.Thread(target=self._loop, name="pg-meter", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(baseline=False)

    def _sample(self, *, baseline: bool) -> None:
        backends, background = _postgres_processes(self.database)
        backends = [pid for pid in backends if pid not in self.exclude]
        anon = 0
        for pids, tracked in ((backends, self._backends), (background, self._background)):
            for pid in pids:
                value = cpu_seconds(pid)
                if value is None:
                    continue
                entry = tracked.get(pid)
                if entry is None:
                    # a backend born during the measurement counts from zero
                    entry = tracked[pid] = _Tracked(first=value if baseline else 0.0, last=value)
                entry.last = value
                if tracked is self._backends:
                    anon += memory_kib(pid).get("RssAnon", 0)
        self._peak_anon_kib = max(self._peak_anon_kib, anon)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sample(baseline=False)
        cpu = sum(t.last - t.first for t in self._backends.values())
        bg = sum(t.last - t.first for t in self._background.values())
        return {
            "backends_seen": len(self._backends),
            "cpu_s": round(cpu, 2),
            "background_cpu_s": round(bg, 2),
            "peak_backend_rss_anon_mib": round(self._peak_anon_kib / 1024, 1),
        }


def wait_gone(pids: list[int], timeout: float) -> bool:
    """Wait (bounded) until none of ``pids`` exists any more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(os.path.exists(f"/proc/{pid}") for pid in pids):
            return True
        time.sleep(0.05)
    return False
