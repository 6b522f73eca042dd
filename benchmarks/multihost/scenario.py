"""The multi-host fault scenario: hosts, load, faults, and what the ledger must show.

Three simulated hosts (network namespaces, :mod:`benchmarks.multihost.netns`) run worker
processes with skewed clocks against one PostgreSQL database, reached through
:mod:`benchmarks.multihost.forwarder`. The harness (root namespace) queues runs at a fixed
rate the whole time and samples how many have ended, while it injects, in order:

1. packet delay and loss on host h1 (``tc netem``);
2. a partition of host h2 (its link down) for 1.5 leases, then healed;
3. host h0 killed whole (SIGKILL to every process in its namespace), not restarted.

Then it stops queueing, waits for every run to end and checks the ledger
(:mod:`benchmarks.multihost.checks`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from benchmarks.multihost.netns import Host, Hosts

ROOT = Path(__file__).resolve().parents[2]
FINAL = ("Succeeded", "Failed", "Cancelled")


@dataclass
class Plan:
    """Sizes and durations (seconds) of one run of the scenario."""

    workers_per_host: int = 2
    concurrency: int = 3  # per worker: 18 slots in all, 12 busy at the queueing rate
    lease: float = 6.0
    heartbeat: float = 1.0
    rate: float = 12.0  # runs queued per second
    step_seconds: float = 0.5  # each of the workflow's two steps
    baseline: float = 10.0
    netem: float = 10.0
    delay_ms: int = 80
    jitter_ms: int = 30
    loss_pct: int = 5
    settle: float = 5.0
    partition_leases: float = 1.5
    after_heal: float = 10.0
    after_kill: float = 10.0
    offsets: list[float] = field(default_factory=lambda: [0.0, 1.0, -1.0])

    @classmethod
    def short(cls) -> Plan:
        """The CI form: one worker per host, shorter phases (about a minute in all)."""
        return cls(
            workers_per_host=1, concurrency=8, lease=4.0, rate=8.0, baseline=6.0,
            netem=5.0, settle=3.0, after_heal=6.0, after_kill=6.0,
        )  # fmt: skip


@dataclass
class Timeline:
    """Wall-clock times (epoch seconds) of what the harness did."""

    start: float = 0.0
    netem: tuple[float, float] = (0.0, 0.0)
    degraded_by: str = ""
    partition: tuple[float, float] = (0.0, 0.0)
    kill: float = 0.0
    load_end: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, runs ended)


def worker_url(database_url: str, host: Host, plan: Plan) -> str:
    """The database URL a host's workers use: through its link, with TCP timeouts short
    enough that a partition is noticed within a lease (docs/scaling.md)."""
    url = make_url(database_url).set(drivername="postgresql+psycopg", host=host.root_addr)
    return url.update_query_dict(
        {
            "connect_timeout": "3",
            "keepalives": "1",
            "keepalives_idle": "2",
            "keepalives_interval": "1",
            "keepalives_count": "2",
            "tcp_user_timeout": str(int(plan.lease * 500)),
        }
    ).render_as_string(hide_password=False)


def start_worker(host: Host, database_url: str, plan: Plan, out: Path) -> None:
    env = {
        **os.environ,
        "DATAWORKFLOWS_DATABASE_URL": worker_url(database_url, host, plan),
        "DATAWORKFLOWS_PLUGIN_MODULES": "benchmarks.multihost.probe",
        "DATAWORKFLOWS_LEASE_SECONDS": str(plan.lease),
        "DATAWORKFLOWS_HEARTBEAT_INTERVAL": str(plan.heartbeat),
        "DATAWORKFLOWS_POLL_INTERVAL": "0.5",
        "DATAWORKFLOWS_WORKER_CONCURRENCY": str(plan.concurrency),
        "DATAWORKFLOWS_MAX_RECOVERIES": "10",
        "DATAWORKFLOWS_SHUTDOWN_GRACE": "5",
        "DATAWORKFLOWS_TEMPLATE_WORKERS": "1",
        "DATAWORKFLOWS_LOG_FORMAT": "console",
        "MULTIHOST_PROBE_DIR": str(out),
        # a partitioned host's open transaction must not hold row locks for ever
        "PGOPTIONS": f"-c idle_in_transaction_session_timeout={int(plan.lease * 500)}",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [
        sys.executable, "-m", "benchmarks.multihost.host_worker",
        "--clock-offset", str(host.clock_offset),
    ]  # fmt: skip
    log = open(out / f"{host.name}-{len(host.procs)}.log", "wb")
    proc = subprocess.Popen(
        host.exec_argv(argv), env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    host.procs.append(proc)


def wait_ready(hosts: list[Host], out: Path, timeout: float = 90.0) -> None:
    """Until every worker logged that it started (or fail with its log)."""
    deadline = time.monotonic() + timeout
    for host in hosts:
        for i, proc in enumerate(host.procs):
            log = out / f"{host.name}-{i}.log"
            while " started (concurrency" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {host.name}-{i} did not start:\n{log.read_text()}")
                time.sleep(0.1)  # waiting for a process to come up, not for a result


def start_forwarder(database_url: str, hosts: list[Host]) -> subprocess.Popen[str]:
    url = make_url(database_url)
    target = f"{url.host or '127.0.0.1'}:{url.port or 5432}"
    listens = [f"{h.root_addr}:{url.port or 5432}" for h in hosts]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.multihost.forwarder", target, *listens],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "forwarding":
        raise RuntimeError("the forwarder did not start")
    return proc


def workflow(workflow_id: str, plan: Plan) -> dict[str, Any]:
    step = {"actionType": "mh.sleep", "parameters": {"seconds": plan.step_seconds}}
    return {
        "id": workflow_id,
        "displayName": "multi-host fault test",
        "nodes": [{"id": "first", **step}, {"id": "second", **step}],
    }


class Driver:
    """Queues runs at ``plan.rate`` and samples how many have ended."""

    def __init__(self, control: Any, workflow_id: str, plan: Plan, timeline: Timeline) -> None:
        self.control, self.workflow_id, self.plan, self.timeline = (
            control, workflow_id, plan, timeline,
        )  # fmt: skip
        self.run_ids: list[str] = []
        self.stop = asyncio.Event()

    async def load(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        i = 0
        while not self.stop.is_set():
            summary, _ = await self.control.service.execute(self.workflow_id, trigger={"i": i})
            self.run_ids.append(summary["executionId"])
            i += 1
            next_at += 1 / self.plan.rate
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def ended(self) -> int:
        async with self.control.db.connect() as conn:
            return int(
                (
                    await conn.execute(
                        text(
                            "SELECT count(*) FROM workflow_executions "
                            "WHERE workflow_id = :w "
                            "AND status IN ('Succeeded', 'Failed', 'Cancelled')"
                        ),
                        {"w": self.workflow_id},
                    )
                ).scalar_one()
            )

    async def sample(self) -> None:
        while True:
            self.timeline.samples.append((time.time(), await self.ended()))
            await asyncio.sleep(0.25)


async def run_scenario(database_url: str, plan: Plan, out: Path) -> dict[str, Any]:
    """Run the whole scenario; returns the figures and the checks' verdicts."""
    from benchmarks.multihost.checks import (
        check_ledger,
        fencing_counts,
        recovery,
        rejoined_after,
    )
    from dataworkflows.kernel import Kernel
    from dataworkflows.settings import Settings

    control = Kernel(
        Settings(
            database_url=database_url,
            plugin_modules="benchmarks.multihost.probe",
            auto_migrate=True,
        )
    )
    await control.start()
    workflow_id = f"mh-{uuid.uuid4().hex[:8]}"
    await control.service.apply(workflow(workflow_id, plan))
    hosts = Hosts(3, plan.offsets)
    timeline = Timeline()
    forwarder: subprocess.Popen[str] | None = None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        hosts.create()
        forwarder = start_forwarder(database_url, hosts.hosts)
        for host in hosts.hosts:
            for _ in range(plan.workers_per_host):
                start_worker(host, database_url, plan, out)
        await asyncio.to_thread(wait_ready, hosts.hosts, out)
        h0, h1, h2 = hosts.hosts
        driver = Driver(control, workflow_id, plan, timeline)
        tasks = [asyncio.create_task(driver.load()), asyncio.create_task(driver.sample())]
        timeline.start = time.time()
        await asyncio.sleep(plan.baseline)
        timeline.degraded_by = h1.degrade(plan.delay_ms, plan.jitter_ms, plan.loss_pct)
        began = time.time()
        await asyncio.sleep(plan.netem)
        h1.restore()
        timeline.netem = (began, time.time())
        await asyncio.sleep(plan.settle)
        h2.link(up=False)
        began = time.time()
        await asyncio.sleep(plan.lease * plan.partition_leases)
        h2.link(up=True)
        timeline.partition = (began, time.time())
        await asyncio.sleep(plan.after_heal)
        h0.kill_all()
        timeline.kill = time.time()
        await asyncio.sleep(plan.after_kill)
        driver.stop.set()
        await tasks[0]
        timeline.load_end = time.time()
        deadline = time.monotonic() + 3 * plan.lease + 60
        while await driver.ended() < len(driver.run_ids):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        tasks[1].cancel()
        for host in (h1, h2):
            for proc in host.procs:
                proc.send_signal(signal.SIGTERM)
        for host in (h1, h2):
            for proc in host.procs:
                proc.wait(timeout=30)
        async with control.db.connect() as conn:
            ledger = await check_ledger(conn, workflow_id, driver.run_ids)
            rejoined = await rejoined_after(
                conn, workflow_id, h2.name, h2.clock_offset, timeline.partition[1]
            )
        return {
            "plan": asdict(plan),
            "workflowId": workflow_id,
            "runs": len(driver.run_ids),
            "ledger": ledger,
            "fencingRejected": fencing_counts(out),
            "recovery": {**recovery(timeline, plan), "partitionedHostRejoinedAfter": rejoined},
            "timeline": {k: v for k, v in asdict(timeline).items() if k != "samples"},
        }
    finally:
        signal.signal(signal.SIGTERM, previous)
        hosts.remove()
        if forwarder is not None:
            forwarder.terminate()
            forwarder.wait(timeout=10)
        await control.close()


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # reaches the finally that removes the namespaces
