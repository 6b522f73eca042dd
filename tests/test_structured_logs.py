"""Structured logs (common/logformat.py, engine/run_logging.py): the engine's own log lines
are JSON objects with the run's ids on every line of a run, failures name the node, the
error code and the message, secrets appear nowhere; people on a terminal get a console
format (``DATAWORKFLOWS_LOG_FORMAT``)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dataworkflows.common import logcontext, logformat
from dataworkflows.settings import Settings, SettingsError

#: the test action (tests/support/dw_log_actions.py), in process and in worker processes
SUPPORT = Path(__file__).parent / "support"
ACTIONS = "dw_log_actions"

CANARY = "structured-Canary:9f2e/Z+q"
IDS = ("executionId", "nodeId", "attempt", "correlationId", "tenant", "principal")


FLOW = {
    "id": "leaky",
    "displayName": "leaky",
    "nodes": [
        {"id": "prep", "actionType": "test.leaky", "parameters": {}},
        {
            "id": "call",
            "actionType": "test.leaky",
            "parameters": {"credential": "log-canary"},
            "retry": {"maxAttempts": 2, "initialDelay": 0, "jitter": False},
        },
    ],
}


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _support_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(SUPPORT))


@pytest.fixture
def capture() -> Iterator[Any]:
    """``capture(format, stream)``: the engine's handler on ``stream``; undone after."""
    root = logging.getLogger()
    level = root.level

    def install(log_format: str, stream: io.StringIO) -> io.StringIO:
        logformat.configure("INFO", log_format, stream)
        return stream

    yield install
    for handler in [h for h in root.handlers if getattr(h, "dw_engine_handler", False)]:
        root.removeHandler(handler)
    root.setLevel(level)


async def _failing_run(kernel: Any) -> str:
    await kernel.service.apply(FLOW)
    summary, _ = await kernel.service.execute(
        "leaky", trigger={}, principal="alice", correlation_id="corr-42"
    )
    kernel.start_worker()
    assert await kernel.ledger.wait_until_final(uuid.UUID(summary["executionId"])) == "Failed"
    return str(summary["executionId"])


async def test_json_lines_of_a_failing_run(kernel_factory, capture, monkeypatch) -> None:
    monkeypatch.setenv("DATAWORKFLOWS_CREDENTIAL_LOG_CANARY", CANARY)
    stream = capture("auto", io.StringIO())  # not a terminal: JSON
    kernel = await kernel_factory(plugin_modules=ACTIONS, entrypoints=False)
    run_id = await _failing_run(kernel)
    text = stream.getvalue()
    assert CANARY not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one object
    assert all(set(IDS) <= line.keys() for line in lines)
    run_lines = [line for line in lines if line["executionId"] == run_id]
    assert run_lines, lines
    for line in run_lines:
        assert (line["correlationId"], line["tenant"], line["principal"]) == (
            "corr-42",
            "default",
            "alice",
        ), line
        assert line["time"].endswith("Z")
    # what the actions logged carries the node and attempt
    action_lines = [line for line in run_lines if line["logger"].startswith("dataworkflows.action")]
    assert [(line["nodeId"], line["attempt"], line["message"]) for line in action_lines] == [
        ("prep", 1, "preparing"),
        ("call", 1, "calling with token [REDACTED]"),
        ("call", 2, "calling with token [REDACTED]"),
    ]
    # every failed attempt, and the run's failure, with node, code and message
    failures = [line for line in run_lines if "errorCode" in line]
    assert [
        (line["level"], line["nodeId"], line["attempt"], line["errorCode"], line["errorMessage"])
        for line in failures
    ] == [
        ("WARNING", "call", 1, "remote_busy", "busy, token [REDACTED]"),
        ("WARNING", "call", 2, "remote_refused", "remote refused token [REDACTED]"),
        ("ERROR", "call", 2, "remote_refused", "remote refused token [REDACTED]"),
    ]
    assert failures[-1]["message"] == (
        f"run {run_id} of leaky failed at node call: [remote_refused] remote refused token "
        "[REDACTED]"
    )


async def test_console_format_on_a_terminal(kernel_factory, capture, monkeypatch) -> None:
    monkeypatch.setenv("DATAWORKFLOWS_CREDENTIAL_LOG_CANARY", CANARY)
    stream = capture("auto", Terminal())
    kernel = await kernel_factory(plugin_modules=ACTIONS, entrypoints=False)
    run_id = await _failing_run(kernel)
    text = stream.getvalue()
    assert CANARY not in text
    assert not text.lstrip().startswith("{")
    (failed,) = [line for line in text.splitlines() if " failed at node call" in line]
    assert f"[cid=corr-42 run={run_id} node=call#2]:" in failed
    assert failed.split()[2] == "ERROR"
    assert "[remote_refused] remote refused token [REDACTED]" in failed


def test_formats_and_settings(capture) -> None:
    assert logformat.resolve("auto", Terminal()) == "console"
    assert logformat.resolve("auto", io.StringIO()) == "json"
    assert logformat.resolve("json", Terminal()) == "json"
    assert Settings.from_env({"DATAWORKFLOWS_LOG_FORMAT": "console"}).log_format == "console"
    with pytest.raises(SettingsError, match="DATAWORKFLOWS_LOG_FORMAT='xml'"):
        Settings(log_format="xml")
    # a line outside any run: the ids are there, null
    stream = capture("json", io.StringIO())
    logging.getLogger("dataworkflows.test").info("hello %s", "world")
    with logcontext.bind(execution_id="r1", node_id="n", attempt=3, tenant_id="t"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("dataworkflows.test").exception("it broke")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "hello world"
    assert {k: first[k] for k in IDS} == dict.fromkeys(IDS)
    assert {k: second[k] for k in IDS} == {
        "executionId": "r1",
        "nodeId": "n",
        "attempt": 3,
        "correlationId": None,
        "tenant": "t",
        "principal": None,
    }
    assert "RuntimeError: boom" in second["exception"]


async def test_a_worker_process_writes_json_lines(kernel_factory, database_url, tmp_path) -> None:
    """``dataworkflows worker`` with stderr not a terminal (``auto``): every stderr line is
    a JSON object; the run's lines carry its ids, the canary appears nowhere."""
    control = await kernel_factory(plugin_modules=ACTIONS, entrypoints=False)  # no worker
    await control.service.apply(FLOW)
    env = {
        **os.environ,
        "DATAWORKFLOWS_DATABASE_URL": database_url,
        "DATAWORKFLOWS_PLUGIN_MODULES": ACTIONS,
        "DATAWORKFLOWS_LOAD_PLUGINS": "",
        "DATAWORKFLOWS_POLL_INTERVAL": "0.2",
        "DATAWORKFLOWS_CREDENTIAL_LOG_CANARY": CANARY,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("DATAWORKFLOWS_LOG_FORMAT", None)
    if control.settings.secret_key:
        env["DATAWORKFLOWS_SECRET_KEY"] = control.settings.secret_key
    stderr = tmp_path / "worker.stderr"
    with stderr.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "dataworkflows.cli.main", "worker", "--concurrency", "1"),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=err,
        )
    try:
        summary, _ = await control.service.execute(
            "leaky", trigger={}, principal="bob", correlation_id="corr-w"
        )
        run_id = str(summary["executionId"])
        assert await control.ledger.wait_until_final(uuid.UUID(run_id), 60, 0.1) == "Failed"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
    text = stderr.read_text()
    assert CANARY not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert any(line["message"].startswith("worker ") for line in lines)  # not echoed
    run_lines = [line for line in lines if line["executionId"] == run_id]
    assert {(line["correlationId"], line["tenant"], line["principal"]) for line in run_lines} == {
        ("corr-w", "default", "bob")
    }
    (failed,) = [line for line in run_lines if line["level"] == "ERROR"]
    assert (failed["nodeId"], failed["attempt"], failed["errorCode"]) == (
        "call",
        2,
        "remote_refused",
    )
