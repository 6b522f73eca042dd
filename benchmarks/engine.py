"""The engine under test, run as real processes: ``dataworkflows serve`` (API + embedded
worker) plus, optionally, extra ``dataworkflows worker`` processes on the same database.

Each process gets a clean environment (no inherited ``DATAWORKFLOWS_*`` variables except
the ones given), writes its output to a log file, and is stopped with SIGTERM (the
engine's graceful shutdown) and waited for; SIGKILL only if it does not exit in time.
With ``profile_to`` set, :meth:`EngineProcesses.start_profiler` attaches ``py-spy
record`` (raw collapsed stacks, aggregated by function) to the ``serve`` process for the
measured window only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import aiohttp

from benchmarks.common import BenchmarkError, free_port, stop_process

#: the repository root: subprocesses run there so ``python -m benchmarks...`` resolves
REPO_ROOT = Path(__file__).resolve().parent.parent


def engine_command() -> list[str]:
    """The ``dataworkflows`` console script of this environment (or ``python -m``)."""
    script = Path(sys.executable).parent / "dataworkflows"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "dataworkflows.cli.main"]


def pyspy_command() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


class EngineProcesses:
    """One ``serve`` process (the HTTP API) and ``workers - 1`` extra worker processes."""

    def __init__(
        self,
        database_url: str,
        *,
        log_dir: Path,
        name: str,
        processes: int = 1,
        settings: Mapping[str, str] | None = None,
        profile_to: Path | None = None,
        profile_rate: int = 200,
        trace_commits_to: Path | None = None,
    ) -> None:
        self.database_url = database_url
        self.log_dir = log_dir
        self.name = name
        self.processes = max(1, processes)
        self.settings = dict(settings or {})
        self.profile_to = profile_to
        self.profile_rate = profile_rate
        self.trace_commits_to = trace_commits_to
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._profiler: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATAWORKFLOWS_")}
        env["DATAWORKFLOWS_DATABASE_URL"] = self.database_url
        env.setdefault("PYTHONUNBUFFERED", "1")
        # loopback only: callers are who the headers say, on PostgreSQL too (docs/auth.md)
        env["DATAWORKFLOWS_AUTH_MODE"] = "loose"
        # `serve` runs its worker in-process, as these figures always measured; worker
        # processes under `serve` are asked for with --engine-setting serve_workers=N
        env["DATAWORKFLOWS_SERVE_WORKERS"] = "0"
        env.update({f"DATAWORKFLOWS_{k.upper()}": str(v) for k, v in self.settings.items()})
        if self.trace_commits_to is not None:
            env["DWBENCH_COMMIT_TRACE"] = str(self.trace_commits_to)
        return env

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / log_name, "ab")  # closed in stop()
        self._logs.append(log)
        return subprocess.Popen(
            args,
            env=self._env(),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    async def start(self, timeout: float = 180.0) -> None:
        """Start the processes and wait until ``/health`` answers (bounded)."""
        command = engine_command()
        if self.trace_commits_to is not None:
            command = [sys.executable, "-m", "benchmarks.commit_trace"]
        serve = [*command, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self._procs.append(self._spawn(serve, f"{self.name}-serve.log"))
        for i in range(1, self.processes):
            self._procs.append(
                self._spawn([*engine_command(), "worker"], f"{self.name}-worker{i}.log")
            )
        await self._wait_ready(timeout)

    def start_profiler(self) -> None:
        """Attach ``py-spy record`` to the ``serve`` process (until :meth:`stop_profiler`)."""
        if self.profile_to is None:
            return
        spy = pyspy_command()
        if spy is None:
            raise BenchmarkError("py-spy is not installed (install the bench extra)")
        self.profile_to.parent.mkdir(parents=True, exist_ok=True)
        self._profiler = self._spawn(
            [
                spy,
                "record",
                "--pid",
                str(self._procs[0].pid),
                "--format",
                "raw",
                "--function",
                "--rate",
                str(self.profile_rate),
                "--output",
                str(self.profile_to),
            ],
            f"{self.name}-py-spy.log",
        )

    def stop_profiler(self, timeout: float = 30.0) -> None:
        """Stop sampling (SIGINT makes py-spy write its output) and wait for it."""
        if self._profiler is None:
            return
        stop_process(self._profiler, signal.SIGINT, timeout)
        self._profiler = None

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                for proc in self._procs:
                    if proc.poll() is not None:
                        raise BenchmarkError(
                            f"engine process exited with {proc.returncode} during start-up; "
                            f"see {self.log_dir}/{self.name}-*.log"
                        )
                try:
                    async with http.get(
                        f"{self.base_url}/health", timeout=aiohttp.ClientTimeout(total=2)
                    ) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        raise BenchmarkError(f"the engine did not answer /health within {timeout:.0f} s")

    @property
    def pids(self) -> list[int]:
        """The engine processes (``serve`` first)."""
        return [p.pid for p in self._procs]

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """SIGTERM every engine process, wait (bounded), SIGKILL stragglers."""
        self.stop_profiler()
        killed = 0
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(remaining)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                killed += 1
        for log in self._logs:
            log.close()
        self._logs.clear()
        return {"killed": killed}
