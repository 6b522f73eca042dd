"""``serve --workers N``: the API and N supervised worker processes, with real processes.

The PostgreSQL tests start ``dataworkflows serve --workers N`` and drive it over HTTP only,
as a user would; steps come from ``tests/support/dw_test_actions.py`` (``test.hold``
holds its worker until the test creates a release file).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dataworkflows.cli.supervisor import READY_LINE, WorkersFailedToStart, WorkerSupervisor
from dataworkflows.testing import postgres_only

SUPPORT = Path(__file__).parent / "support"
WAIT = 60.0  # the longest any condition below is waited for


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def _until(condition: Callable[[], Any], what: str) -> Any:
    """Poll ``condition`` (a read of the public API or the file system) until it is truthy."""
    deadline = time.monotonic() + WAIT
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Served:
    """One ``dataworkflows serve`` process and what it logged."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """An HTTP call to this server: (status, parsed JSON body), errors included."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=WAIT) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def worker_pids(self) -> set[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=,args=", "--ppid", str(self.proc.pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return {int(line.split()[0]) for line in out.splitlines() if " worker " in line}

    def run(self, workflow: str, trigger: dict[str, Any]) -> str:
        status, body = self.request(
            "POST", f"/api/v1/workflows/{workflow}/execute", {"trigger": trigger}
        )
        assert status == 202, body
        return str(body["executionId"])

    def execution(self, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/executions/{run_id}")[1]

    def events(self, run_id: str) -> list[str]:
        body = self.request("GET", f"/api/v1/executions/{run_id}/events?limit=200")[1]
        return [e["type"] for e in body["items"]]


@pytest.fixture
def serve(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(*args: str, **env: str) -> Served:
        port = _free_port()
        log = tmp_path / f"serve-{port}.log"
        environ = {
            **os.environ,
            "DATAWORKFLOWS_DATABASE_URL": database_url,
            "DATAWORKFLOWS_PLUGIN_MODULES": "dw_test_actions",
            "DATAWORKFLOWS_POLL_INTERVAL": "0.5",
            # loopback only: callers are who the headers say, on PostgreSQL too (docs/auth.md)
            "DATAWORKFLOWS_AUTH_MODE": "loose",
            "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
            **{f"DATAWORKFLOWS_{k.upper()}": v for k, v in env.items()},
        }
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dataworkflows.cli.main",
                    "serve",
                    "--port",
                    str(port),
                    *args,
                ],
                env=environ,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        served = Served(proc, port, log)
        started.append(served)

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return served.request("GET", "/health")[0] == 200
            except OSError:
                return False  # not listening yet

        _until(up, "serve to listen")
        return served

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.proc.send_signal(signal.SIGTERM)
            try:
                served.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                served.proc.kill()
                served.proc.wait()


def _hold_workflow(workflow_id: str, tmp: Path, *, blocking: bool) -> dict[str, Any]:
    (tmp / "started").mkdir(exist_ok=True)
    return {
        "id": workflow_id,
        "displayName": workflow_id,
        "nodes": [
            {
                "id": "hold",
                "actionType": "test.hold",
                "parameters": {
                    "started": str(tmp / "started"),
                    "release": str(tmp / "release"),
                    "blocking": blocking,
                },
                "retry": {"maxAttempts": 3, "initialDelay": 0.1, "jitter": False},
            },
            {"id": "after", "actionType": "core.echo", "parameters": {"message": "done"}},
        ],
    }


def _started(tmp: Path) -> dict[str, list[int]]:
    """Execution id → the worker pids its hold step started in, from the marker files."""
    seen: dict[str, list[int]] = {}
    for marker in (tmp / "started").iterdir():
        run_id, pid = marker.name.rsplit(".", 1)
        seen.setdefault(run_id, []).append(int(pid))
    return seen


# -- choosing and refusing ----------------------------------------------------------------


def test_workers_on_sqlite_are_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from dataworkflows.cli.main import build_cli

    monkeypatch.setenv("DATAWORKFLOWS_DATABASE_URL", f"sqlite:///{tmp_path / 'one.db'}")
    result = CliRunner().invoke(build_cli(), ["serve", "--workers", "2"])
    assert result.exit_code == 1
    assert "--workers 2: worker processes need PostgreSQL" in result.output


def test_no_worker_with_workers_is_a_usage_error(cli: Any) -> None:
    result = cli("serve", "--no-worker", "--workers", "2")
    assert result.exit_code == 2
    assert "--no-worker and --workers N (N > 0) contradict each other" in result.output


def test_negative_workers_is_refused(cli: Any) -> None:
    result = cli("serve", "--workers", "-1")
    assert result.exit_code == 2
    assert "-1 is not in the range x>=0" in result.output


# -- the supervisor with stand-in children --------------------------------------------------


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_supervisor_start_fails_when_a_child_exits_before_ready() -> None:
    supervisor = WorkerSupervisor(2, grace=1.0, argv=_child("import sys; sys.exit(3)"))
    with pytest.raises(WorkersFailedToStart, match="exited with status 3 before it was ready"):
        await supervisor.start()
    assert supervisor.pids == []


READY_THEN_WAIT = (
    f"import sys, time; print({READY_LINE!r}, flush=True); [time.sleep(0.05) for _ in iter(int, 1)]"
)


async def test_supervisor_restarts_a_killed_child_and_stops_all_on_request() -> None:
    supervisor = WorkerSupervisor(
        2, grace=5.0, argv=_child(READY_THEN_WAIT), backoff_initial=0.05, kill_margin=0.5
    )
    await supervisor.start()
    try:
        first = supervisor.pids
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + WAIT
        while supervisor.children[0].restarts < 1:
            assert time.monotonic() < deadline, "the killed child was not restarted"
            await asyncio.sleep(0.05)
        again = supervisor.pids
        assert first[1] in again and first[0] not in again and len(again) == 2
    finally:
        await supervisor.stop()
    assert supervisor.pids == []  # SIGTERM ends the stand-in children


# -- the real thing on PostgreSQL ------------------------------------------------------------


@postgres_only
def test_webhook_is_acked_while_every_worker_is_blocked(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    """The worker's event loop is held by a CPU-bound step; the API process still acks."""
    server = serve("--workers", "1", worker_concurrency="1")
    body = _hold_workflow("busy", tmp_path, blocking=True)
    assert server.request("POST", "/api/v1/workflows?autoActivate=true", body)[0] == 201
    echo = json.loads(
        (Path(__file__).parents[1] / "fixtures/workflows/webhook-echo-workflow.json").read_text()
    )
    assert server.request("POST", "/api/v1/workflows?autoActivate=true", echo)[0] == 201
    status, trigger = server.request(
        "POST", "/api/v1/workflows/webhook-echo/triggers", {"type": "webhook", "config": {}}
    )
    assert status == 201, trigger

    busy = server.run("busy", {})
    _until(lambda: busy in _started(tmp_path), "the blocking step to start")

    status, ack = server.request(
        "POST", f"/hooks/{trigger['id']}", {"message": "hi", "action": "opened"}
    )
    assert status == 202, ack
    # acked while the only worker was still inside the blocking step
    assert not (tmp_path / "release").exists()
    assert server.execution(busy)["status"] == "Running"
    hooked = ack["executionId"]
    assert server.execution(hooked)["status"] == "Pending"

    (tmp_path / "release").touch()
    for run_id in (busy, hooked):
        _until(lambda r=run_id: server.execution(r)["status"] == "Succeeded", f"run {run_id}")


@postgres_only
def test_killed_worker_runs_are_reclaimed_and_end_once(
    serve: Callable[..., Served], tmp_path: Path
) -> None:
    server = serve(
        "--workers",
        "2",
        worker_concurrency="4",
        lease_seconds="2",
        heartbeat_interval="0.5",
    )
    body = _hold_workflow("held", tmp_path, blocking=False)
    assert server.request("POST", "/api/v1/workflows?autoActivate=true", body)[0] == 201
    workers_before = _until(
        lambda: len(server.worker_pids()) == 2 and server.worker_pids(), "2 workers"
    )

    runs = [server.run("held", {"n": i}) for i in range(4)]
    started = _until(lambda: len(_started(tmp_path)) == 4 and _started(tmp_path), "4 holds")
    victim = started[runs[0]][0]
    victims_runs = {r for r, pids in started.items() if pids == [victim]}
    os.kill(victim, signal.SIGKILL)

    # the supervisor starts a replacement; the victim's runs start again elsewhere
    _until(
        lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(),
        "the killed worker to be replaced",
    )
    assert server.worker_pids() != workers_before
    _until(
        lambda: all(len(_started(tmp_path)[r]) == 2 for r in victims_runs),
        "the killed worker's runs to be re-claimed after the lease",
    )
    (tmp_path / "release").touch()
    for run_id in runs:
        _until(lambda r=run_id: server.execution(r)["status"] == "Succeeded", f"run {run_id}")

    for run_id in runs:
        events = server.events(run_id)
        assert events.count("RunSucceeded") == 1, events
        assert not {"RunFailed", "RunCancelled"} & set(events)
        assert events.count("RunResumed") == (1 if run_id in victims_runs else 0), events
        attempts = server.execution(run_id)["actions"]
        done = [(a["nodeId"], a["status"]) for a in attempts if a["status"] == "Succeeded"]
        assert sorted(done) == [("after", "Succeeded"), ("hold", "Succeeded")], attempts
    assert "restarting in" in server.log.read_text()


def test_listen_connections_can_bypass_a_pooler(tmp_path: Path) -> None:
    """``DATAWORKFLOWS_LISTEN_DATABASE_URL`` (PgBouncer in transaction mode drops LISTEN)."""
    from dataworkflows.db.database import Database
    from dataworkflows.settings import Settings

    pooled = "postgresql://app@127.0.0.1:6432/dw"
    direct = "postgresql://app@127.0.0.1:5432/dw"
    assert Database(pooled).listen_url == Database(pooled).url  # default: the same server
    both = Database(pooled, listen_url=direct)
    assert both.listen_url == "postgresql+psycopg://app@127.0.0.1:5432/dw"
    assert both.url == "postgresql+psycopg://app@127.0.0.1:6432/dw"
    env = {"DATAWORKFLOWS_LISTEN_DATABASE_URL": direct}
    assert Settings.from_env(env).listen_database_url == direct
