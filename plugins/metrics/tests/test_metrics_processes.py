"""Multi-process metrics with real processes, on both backends: a ``dataworkflows worker``
executes the runs, ``dataworkflows serve --no-worker`` (another process) serves
``/metrics`` and shows them, both writing to one ``DATAWORKFLOWS_METRICS_DIR``; a killed
process's live gauge goes (``mark_process_dead``) while its counters stay in the sum."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import dataworkflows_echo

FLOW = {
    "displayName": "two echoes",
    "nodes": [
        {"id": "one", "actionType": "core.echo", "parameters": {"message": "a"}},
        {"id": "two", "actionType": "core.echo", "parameters": {"message": "b"}},
    ],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """Engine processes sharing a database and a metrics directory."""

    def __init__(self, database_url: str, tmp: Path) -> None:
        self.directory = tmp / "metrics"
        self.directory.mkdir()
        self.tmp = tmp
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DATAWORKFLOWS_")},
            "DATAWORKFLOWS_DATABASE_URL": database_url,
            "DATAWORKFLOWS_METRICS_DIR": str(self.directory),
            "DATAWORKFLOWS_POLL_INTERVAL": "0.2",
            "DATAWORKFLOWS_AUTH_MODE": "loose",  # strict mode's /metrics: tests/test_auth*
            "DATAWORKFLOWS_LOAD_PLUGINS": "dataworkflows-echo,dataworkflows-metrics",
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"proc-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "dataworkflows.cli.main", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)

    def live_files(self) -> list[str]:
        return sorted(p.name for p in self.directory.glob("gauge_live*.db"))


@pytest.fixture
def processes(database_url: str, tmp_path: Path) -> Iterator[Processes]:
    pool = Processes(database_url, tmp_path)
    yield pool
    pool.stop_all()


async def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _until(
    port: int, check: Callable[[dict[Any, float]], bool], timeout: float = 60.0
) -> dict[Any, float]:
    """Scrape until ``check`` holds (the worker counts an event just after its commit)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    samples: dict[Any, float] = {}
    while loop.time() < deadline:
        try:
            samples = await _scrape(port)
        except aiohttp.ClientConnectionError:
            samples = {}  # serve is still starting
        if samples and check(samples):
            return samples
        await asyncio.sleep(0.1)  # polling another process's state, bounded by the deadline
    raise AssertionError(f"/metrics never showed what was expected: {samples}")


def _v(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_serve_shows_what_a_worker_process_counted(kernel_factory, processes):
    control = await kernel_factory(plugins=[dataworkflows_echo], entrypoints=False)
    workflow_id = f"mp-{uuid.uuid4().hex[:8]}"
    await control.service.apply({"id": workflow_id, **FLOW})
    port = _free_port()
    serve = processes.start("serve", "--no-worker", "--port", str(port))
    worker = processes.start("worker", "--concurrency", "4")

    ids = []
    for _ in range(3):
        summary, _ = await control.service.execute(workflow_id, trigger={})
        ids.append(uuid.UUID(summary["executionId"]))
    for execution_id in ids:
        assert await control.ledger.wait_until_final(execution_id, 60) == "Succeeded"

    def done(samples: dict[Any, float]) -> bool:
        return _v(samples, "dataworkflows_runs_finished_total", **finished) == 3

    finished = {"workflow_id": workflow_id, "status": "Succeeded"}
    samples = await _until(port, done)
    # counted by the worker process, served by the serve process
    assert _v(samples, "dataworkflows_runs_started_total", workflow_id=workflow_id) == 3
    echo = {"action_type": "core.echo", "status": "Succeeded"}
    assert _v(samples, "dataworkflows_step_duration_seconds_count", **echo) == 6
    assert _v(samples, "dataworkflows_group_commit_batch_size_count", writer="ledger-flush") >= 1
    assert _v(samples, "dataworkflows_queue_depth", state="pending") == 0
    # both processes write to the directory and are alive
    assert _v(samples, "dataworkflows_metrics_processes") == 2
    assert len(processes.live_files()) == 2

    # a worker killed without exiting cleanly: its live gauge goes at the next scrape,
    # what it counted stays
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    samples = await _scrape(port)
    assert _v(samples, "dataworkflows_metrics_processes") == 1
    assert processes.live_files() == [f"gauge_livesum_{serve.pid}.db"]
    assert _v(samples, "dataworkflows_runs_finished_total", **finished) == 3

    # serve stopping cleanly removes its own live file on exit
    serve.send_signal(signal.SIGINT)
    assert serve.wait(timeout=30) == 0
    assert processes.live_files() == []
