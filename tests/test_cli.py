"""The ``dataworkflows`` command line, in process (click's runner) and as a real server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIMPLE = ROOT / "fixtures/workflows/simple-echo-workflow.json"
REQUEST = ROOT / "fixtures/requests/execute-request.json"


def test_plugins_lists_echo(cli: Any) -> None:
    result = cli("plugins")
    assert result.exit_code == 0
    assert "echo  (dataworkflows-echo 0.1.0)" in result.output
    assert "core.echo" in result.output
    schemas = json.loads(cli("plugins", "--json").output)
    echo = next(p for p in schemas if p["name"] == "echo")
    assert echo["actions"][0]["parametersSchema"]["properties"]["message"]


def test_run_prints_the_ledger_and_exits_zero(cli: Any) -> None:
    result = cli("run", str(SIMPLE), "--request", f"@{REQUEST}")
    assert result.exit_code == 0, result.output
    assert "Succeeded" in result.output
    assert '{"echo": "Hello from node 1"}' in result.output
    assert '{"echo": "Hello from node 2"}' in result.output
    assert "RunSucceeded" in result.output  # progress lines


def test_run_of_a_failing_workflow_exits_one(cli: Any, tmp_path: Path) -> None:
    failing = tmp_path / "failing.json"
    failing.write_text(
        json.dumps(
            {
                "id": "failing",
                "displayName": "Failing",
                "nodes": [
                    {
                        "id": "x",
                        "actionType": "core.echo",
                        "parameters": {"failAlways": True, "failureKind": "permanent"},
                    }
                ],
            }
        )
    )
    result = cli("run", str(failing), "--trigger", '{"a": 1}')
    assert result.exit_code == 1
    assert "Failed" in result.output
    assert "simulated_failure" in result.output


def test_apply_creates_then_versions(cli: Any, tmp_path: Path) -> None:
    assert "simple-echo: version 1 is Active" in cli("apply", str(SIMPLE)).output
    # the same file again changes nothing
    assert "simple-echo: version 1 is Active" in cli("apply", str(SIMPLE)).output
    changed = json.loads(SIMPLE.read_text())
    changed["nodes"][0]["parameters"]["message"] = "changed"
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(changed))
    assert "simple-echo: version 2 is Active" in cli("apply", str(path)).output


def test_apply_reports_invalid_definitions(cli: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {"id": "bad", "displayName": "Bad", "nodes": [{"id": "a", "actionType": "nope.nope"}]}
        )
    )
    result = cli("apply", str(bad))
    assert result.exit_code == 1
    assert "$.nodes[0].actionType: unknown action type 'nope.nope'" in result.output
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = cli("apply", str(broken))
    assert result.exit_code == 1
    assert "not valid JSON" in result.output


def test_run_with_bad_trigger_json_exits_nonzero(cli: Any) -> None:
    result = cli("run", str(SIMPLE), "--trigger", "{oops")
    assert result.exit_code == 1
    assert "trigger is not valid JSON" in result.output


def test_db_current_and_upgrade(cli: Any) -> None:
    assert "(up to date)" in cli("db", "current").output
    assert cli("db", "upgrade").exit_code == 0


def test_bad_setting_is_a_clear_error(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAWORKFLOWS_WORKER_CONCURRENCY", "lots")
    result = cli("apply", str(SIMPLE))
    assert result.exit_code == 1
    assert "DATAWORKFLOWS_WORKER_CONCURRENCY='lots'" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataworkflows.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if _request(port, "GET", "/health")[0] == 200:
                return proc
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(
                    proc.stdout.read().decode() if proc.stdout else "serve died"
                ) from None
            time.sleep(0.1)  # waiting for a port to open, not for a result
    proc.kill()
    raise AssertionError("serve did not come up")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


def test_serve_keeps_workflows_and_runs_across_restarts(tmp_path: Path) -> None:
    """The quick start's promise on SQLite: stop the server, start it again, all still there."""
    env = {**os.environ, "DATAWORKFLOWS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'dw.db'}"}
    port = _free_port()
    proc = _serve(env, port)
    try:
        assert (
            _request(
                port, "POST", "/api/v1/workflows?autoActivate=true", json.loads(SIMPLE.read_text())
            )[0]
            == 201
        )
        status, accepted = _request(
            port, "POST", "/api/v1/workflows/simple-echo/execute", json.loads(REQUEST.read_text())
        )
        assert status == 202
        execution_url = accepted["statusUrl"]
        deadline = time.monotonic() + 30
        while _request(port, "GET", execution_url)[1]["status"] != "Succeeded":
            assert time.monotonic() < deadline, "run did not finish"
            time.sleep(0.05)  # polling the public API the way a client would
    finally:
        _stop(proc)

    port = _free_port()
    proc = _serve(env, port)
    try:
        status, workflow = _request(port, "GET", "/api/v1/workflows/simple-echo")
        assert status == 200 and workflow["status"] == "Active"
        status, run = _request(port, "GET", execution_url)
        assert status == 200
        assert run["status"] == "Succeeded"
        assert [a["outputs"] for a in run["actions"]] == [
            {"echo": "Hello from node 1"},
            {"echo": "Hello from node 2"},
        ]
    finally:
        _stop(proc)


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    env = os.environ | {"DATAWORKFLOWS_DATABASE_URL": f"sqlite:///{tmp_path / 'busy.db'}"}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "dataworkflows.cli.main", "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "DataWorkflows" not in done.stdout  # no banner for a server that never listened
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: port {port} on 127.0.0.1 is already in use: choose another with --port or "
        "DATAWORKFLOWS_PORT"
    ]


def test_run_is_a_test_run_that_changes_nothing_live(cli: Any, tmp_path: Path) -> None:
    # a new workflow: stored as a Draft so the run can pin its version; nothing is published
    first = cli("run", str(SIMPLE))
    assert first.exit_code == 0, first.output
    assert "test run of simple-echo version 1 (not published" in first.output
    workflow = json.loads(cli("workflows", "show", "simple-echo").output)
    assert (workflow["status"], workflow["currentVersion"]) == ("Draft", None)

    assert cli("apply", str(SIMPLE)).exit_code == 0  # now live: version 1
    changed = json.loads(SIMPLE.read_text())
    changed["displayName"] = "Renamed in the file"
    changed["nodes"][0]["parameters"]["message"] = "trying a change"
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(changed))
    tried = cli("run", str(path))
    assert tried.exit_code == 0 and '{"echo": "trying a change"}' in tried.output
    assert "test run of simple-echo version 2" in tried.output
    workflow = json.loads(cli("workflows", "show", "simple-echo").output)
    assert (workflow["status"], workflow["currentVersion"]) == ("Active", 1)
    assert workflow["displayName"] == "Simple Echo Workflow"  # the live name stays
    runs = json.loads(cli("runs", "list", "--json").output)["items"]
    assert [(r["workflowVersion"], r["testRun"]) for r in runs] == [(2, True), (1, True)]
    again = cli("run", str(path))  # the same file: the same stored version, no third one
    assert "test run of simple-echo version 2" in again.output

    published = cli("run", str(path), "--publish")
    assert published.exit_code == 0 and "simple-echo: version 2 is Active" in published.output
    newest = json.loads(cli("runs", "list", "--json", "--limit", "1").output)["items"][0]
    assert (newest["workflowVersion"], newest["testRun"]) == (2, False)


def test_validate_lists_every_problem(cli: Any, tmp_path: Path) -> None:
    assert cli("validate", str(SIMPLE)).output == f"{SIMPLE}: valid\n"
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "id": "bad",
                "displayName": "Bad",
                "nodes": [
                    {"id": "a", "actionType": "nope.nope"},
                    {"id": "b", "actionType": "core.echo", "parameters": {"message": "{{ x"}},
                ],
            }
        )
    )
    result = cli("validate", str(bad))
    assert result.exit_code == 1
    assert "2 problem(s)" in result.output
    assert "$.nodes[0].actionType: unknown action type 'nope.nope'" in result.output
    assert "$.nodes[1].parameters.message" in result.output
    assert cli("workflows", "list").output == "(none)\n"  # validating writes nothing


def test_help_texts_are_whole_and_plain(cli: Any) -> None:
    """No command description cut with "...", no reST markup, in any group's help."""
    texts = [cli("--help").output]
    for group in ("db", "credentials", "workflows", "runs", "triggers"):
        texts.append(cli(group, "--help").output)
    for command in ("run", "serve", "worker", "validate", ("db", "downgrade"), ("runs", "watch")):
        texts.append(cli(*((command,) if isinstance(command, str) else command), "--help").output)
    for text in texts:
        assert "``" not in text and ":class:" not in text, text
        cut = [
            line
            for line in text.splitlines()
            if line.rstrip().endswith("...") and not line.startswith("Usage:")
        ]
        assert cut == [], text
    assert "print the run's\n" in texts[0] or "print the run's ledger" in texts[0]


STARTUP_PROBE = """
import sys
from dataworkflows.cli.main import build_cli
try:
    build_cli()(sys.argv[1:], prog_name="dataworkflows")
except SystemExit:
    pass
heavy = ("pydantic", "aiohttp", "slack_sdk", "croniter", "sqlalchemy", "jinja2")
print("IMPORTED", sorted(name for name in heavy if name in sys.modules))
"""


def _probe(*args: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", STARTUP_PROBE, *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return done.stdout + done.stderr


def test_help_and_plugins_import_no_sdk_and_help_lists_plugin_commands(tmp_path: Path) -> None:
    """Issue 14: start-up stays cheap (timed in benchmarks/, not here): ``--help`` imports
    no plugin implementation (pydantic) and no SDK, ``plugins`` no SDK; a plugin's command
    is still listed."""
    (tmp_path / "hello_commands.py").write_text(
        "import click\nfrom dataworkflows import hookimpl\n\n"
        "@hookimpl\ndef register_commands(cli):\n"
        "    @cli.command()\n    def hello():\n        '''Say hello from a plugin.'''\n\n"
        "    @cli.command()\n    def serve():\n        '''Not the kernel's serve.'''\n"
    )
    env = {
        "DATAWORKFLOWS_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        "DATAWORKFLOWS_PLUGIN_MODULES": "hello_commands",
        "PYTHONPATH": str(tmp_path),
    }
    help_text = _probe("--help", **env)
    assert "IMPORTED []" in help_text
    assert "Say hello from a plugin." in help_text
    # a plugin cannot replace a kernel command
    assert "a plugin's command 'serve' is ignored" in help_text
    assert "Serve the HTTP API" in help_text
    # a plugin that does not declare its types (hello_commands): the table loads them all
    assert "IMPORTED ['pydantic']" in _probe("plugins", **env)
    # every installed plugin declares them: the table imports no plugin implementation
    del env["DATAWORKFLOWS_PLUGIN_MODULES"]
    listed = _probe("plugins", **env)
    assert "IMPORTED []" in listed
    assert "core.echo" in listed and "Start runs on a cron schedule" in listed
