"""CPU seconds and memory of processes, read from ``/proc`` (Linux).

* :class:`ProcessMeter` follows given pids (the engine's ``dataworkflows serve`` /
  ``dataworkflows worker`` processes): CPU seconds (``utime + stime``) between
  :meth:`~ProcessMeter.start` and :meth:`~ProcessMeter.stop`, and peak RSS (``VmHWM``,
  the kernel's high-water mark, so no sample is missed).
* :class:`PostgresMeter` follows the PostgreSQL server processes: the client backends
  connected to one database (and their parallel workers) and, separately, the server-wide
  background processes (walwriter, checkpointer, background writer, ...). A thread samples
  them every ``interval`` seconds, so a backend that exits between two samples loses at
  most one interval of CPU. Background processes serve every database of the server: with
  other work on the same server their figure is an upper bound.

  The server is found through a connection, not through a name: :class:`PostgresServer`
  asks for ``pg_backend_pid()`` and ``cluster_name``, and the postmaster is that backend's
  parent process. Its children are the server's processes; their titles are ``postgres:
  [<cluster_name>: ]<user> <database> <host> <activity>`` for a client backend and
  ``postgres: [<cluster_name>: ]checkpointer`` etc. A stock ``initdb`` cluster has no
  ``cluster_name`` (Debian's clusters have one, ``15/main``), and other clusters on the
  same machine are not mistaken for this one. A server whose processes this machine cannot
  see (another host, a container) is reported (``error``, ``cpu_s`` None), never as 0.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
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


def _schedstat_works() -> bool:
    """Whether ``/proc/<pid>/schedstat`` reports run time (``0 0 0`` without sched_info)."""
    try:
        with open("/proc/self/schedstat") as fh:
            return int(fh.read().split()[2]) > 0
    except (OSError, ValueError, IndexError):
        return False


#: CPU time in nanoseconds from ``schedstat`` (else clock ticks of 10 ms from ``stat``, too
#: coarse for the few milliseconds the backends of a small run use)
SCHEDSTAT = _schedstat_works()


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds of a process so far, all its threads (run time from each thread's
    ``/proc/<pid>/task/<tid>/schedstat``, else user + system time from ``stat``); None if
    it is gone. ``/proc/<pid>/schedstat`` alone is the main thread only: a process that
    works in threads (DBOS's sync API, thread pools) would read as idle. A thread that
    has exited is no longer listed: :class:`ProcessMeter` also reads :func:`stat_cpu_seconds`
    (which keeps it) and takes the larger delta."""
    if SCHEDSTAT:
        try:
            total = 0
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                        total += int(fh.read().split()[0])
                except (OSError, ValueError, IndexError):
                    continue  # the thread ended while being read
            return total / 1e9
        except OSError:
            return None
    return stat_cpu_seconds(pid)


def stat_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a whole process from ``/proc/<pid>/stat`` (threads
    that have ended included; 10 ms ticks); None if it is gone."""
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
        self._stat_start: dict[int, float] = {}
        self._stat_last: dict[int, float] = {}
        self._hwm: dict[int, int] = {}

    def start(self) -> None:
        for pid in self.pids:
            for reader, start, last in self._readers():
                value = reader(pid)
                if value is not None:
                    start[pid] = value
                    last[pid] = value

    def _readers(
        self,
    ) -> list[tuple[Callable[[int], float | None], dict[int, float], dict[int, float]]]:
        return [
            (cpu_seconds, self._start, self._last),
            (stat_cpu_seconds, self._stat_start, self._stat_last),
        ]

    def sample(self) -> None:
        """Record the latest CPU and RSS high-water mark (call before the processes exit)."""
        for pid in self.pids:
            for reader, _start, last in self._readers():
                value = reader(pid)
                if value is not None:
                    last[pid] = value
            hwm = memory_kib(pid).get("VmHWM")
            if hwm is not None:
                self._hwm[pid] = hwm

    def stop(self) -> dict[str, Any]:
        self.sample()
        # per process, the larger of the precise per-thread run time and the whole
        # process's ticks (which keep the time of threads that ended meanwhile)
        cpu = sum(
            max(
                self._last.get(p, 0.0) - self._start.get(p, 0.0),
                self._stat_last.get(p, 0.0) - self._stat_start.get(p, 0.0),
            )
            for p in self.pids
        )
        return {
            "processes": len(self.pids),
            "cpu_s": round(cpu, 4),
            "peak_rss_mib": round(sum(self._hwm.values()) / 1024, 1) if self._hwm else None,
            "peak_rss_mib_per_process": [round(self._hwm.get(p, 0) / 1024, 1) for p in self.pids],
        }


def parent_pid(pid: int) -> int | None:
    """The parent of a process; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    return int(raw[raw.rfind(")") + 2 :].split()[1])


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``, also on kernels without ``/proc/<pid>/task/*/children``."""
    found = children(pid)
    if found:
        return found
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and parent_pid(int(e)) == pid]


@dataclass(frozen=True)
class PostgresServer:
    """The processes of the PostgreSQL server a URL reaches, when it runs on this machine."""

    postmaster: int
    #: the title prefix of its processes: ``postgres: `` or ``postgres: <cluster_name>: ``
    prefix: str

    @classmethod
    def locate(cls, url: str) -> PostgresServer:
        """Connect once: the postmaster is the parent of the connection's backend. Raises
        :class:`LookupError` when that backend is not a process of this machine."""
        from benchmarks import pg

        with pg.connect(url) as conn:
            row = conn.execute(
                "SELECT pg_backend_pid(), current_setting('cluster_name'), current_database()"
            ).fetchone()
            assert row is not None
            backend, cluster, database = row
            prefix = f"postgres: {cluster}: " if cluster else "postgres: "
            title = cmdline(backend)
            postmaster = parent_pid(backend)
        if not title.startswith(prefix) or database not in title[len(prefix) :].split()[:2]:
            raise LookupError(
                f"the server's backend {backend} is not a process of this machine (its "
                f"title here: {title[:80]!r}): database CPU is not measurable"
            )
        assert postmaster is not None
        return cls(postmaster, prefix)

    def processes(self, database: str) -> tuple[list[int], list[int], dict[int, int]]:
        """(client backends of ``database``, background processes, parallel workers ->
        their leader's pid), from the titles of the postmaster's children."""
        backends: list[int] = []
        background: list[int] = []
        workers: dict[int, int] = {}
        for pid in child_pids(self.postmaster):
            title = cmdline(pid)
            if not title.startswith(self.prefix):
                continue
            rest = title[len(self.prefix) :]
            words = rest.split()
            if rest.startswith(BACKGROUND) or rest.startswith("autovacuum worker"):
                background.append(pid)
            elif rest.startswith("parallel worker for PID ") and words[-1].isdigit():
                workers[pid] = int(words[-1])
            elif len(words) >= 2 and words[1] == database:
                backends.append(pid)
        return backends, background, workers


@dataclass
class _Tracked:
    first: float
    last: float
    rss_anon: int = 0


@dataclass
class PostgresMeter:
    """CPU seconds of one database's backends (and of the server's background processes)."""

    database: str
    #: a URL of the server (any database on it): how its processes are found
    server_url: str
    interval: float = 0.2
    #: backends not to count (the harness's own connection to the database)
    exclude: set[int | None] = field(default_factory=set)
    _backends: dict[int, _Tracked] = field(default_factory=dict)
    _background: dict[int, _Tracked] = field(default_factory=dict)
    _peak_anon_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _server: PostgresServer | None = None
    _error: str | None = None

    def start(self) -> None:
        """Find the server, take the baseline (backends alive now count from their current
        CPU time) and start sampling."""
        import psycopg

        try:
            self._server = PostgresServer.locate(self.server_url)
        except (LookupError, psycopg.Error) as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            return
        self._sample(baseline=True)
        self._thread = threading.Thread(target=self._loop, name="pg-meter", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(baseline=False)

    def _sample(self, *, baseline: bool) -> None:
        assert self._server is not None
        backends, background, workers = self._server.processes(self.database)
        backends = [pid for pid in backends if pid not in self.exclude]
        # a parallel worker works for its leader's database
        leaders = set(backends) | set(self._backends)
        backends += [pid for pid, leader in workers.items() if leader in leaders]
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
        if self._server is None:
            return {
                "backends_seen": 0,
                "cpu_s": None,
                "background_cpu_s": None,
                "peak_backend_rss_anon_mib": None,
                "error": self._error,
            }
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sample(baseline=False)
        cpu = sum(t.last - t.first for t in self._backends.values())
        bg = sum(t.last - t.first for t in self._background.values())
        return {
            "backends_seen": len(self._backends),
            "cpu_s": round(cpu, 4),
            "background_cpu_s": round(bg, 4),
            "peak_backend_rss_anon_mib": round(self._peak_anon_kib / 1024, 1),
        }


def per_run_ms(figures: dict[str, Any], runs: int) -> float | None:
    """CPU milliseconds per run of a meter's figures (None when the CPU was not measured)."""
    cpu = figures.get("cpu_s")
    return None if cpu is None else round(1000 * cpu / max(1, runs), 3)


def wait_gone(pids: list[int], timeout: float) -> bool:
    """Wait (bounded) until none of ``pids`` exists any more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(os.path.exists(f"/proc/{pid}") for pid in pids):
            return True
        time.sleep(0.05)
    return False
