"""Structured logs (common/logformat.py, engine/run_logging.py): the engine's own log lines
are JSON objects with the run's ids on every line of a run, failures name the node, the
error code and the message, secrets appear nowhere; people on a terminal get a console
format (``DATAWORKFLOWS_LOG_FORMAT``)."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from dataworkflows import Action, ActionContext, ActionResult, hookimpl
from dataworkflows.common import logcontext, logformat
from dataworkflows.settings import Settings, SettingsError

CANARY = "structured-Canary:9f2e/Z+q"
IDS = ("executionId", "nodeId", "attempt", "correlationId", "tenant", "principal")


class Leaky(Action):
    """Logs its credential, then fails: retriably on attempt 1, for good on attempt 2,
    with the secret in the error message."""

    type = "test.leaky"

    class Params(BaseModel):
        credential: str | None = None

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        if params.credential is None:
            ctx.log.info("preparing")
            return ActionResult.succeeded({"ok": True})
        secret = await ctx.credentials.get(params.credential)
        ctx.log.warning("calling with token %s", secret)
        if ctx.attempt == 1:
            return ActionResult.retriable(f"busy, token {secret}", code="remote_busy")
        return ActionResult.failed(f"remote refused token {secret}", code="remote_refused")


class Plugin:
    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(Leaky)


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
    kernel = await kernel_factory(plugins=[Plugin()], entrypoints=False)
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
    kernel = await kernel_factory(plugins=[Plugin()], entrypoints=False)
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
