"""Per-step logs (engine/step_logs.py): what an action writes to ``ctx.log`` is kept per
attempt, redacted and capped, stored with the attempt's row, and read back through
``GET /api/v1/executions/{id}/logs`` and ``dataworkflows runs logs``."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from pydantic import BaseModel

from dataworkflows import Action, ActionContext, ActionResult, hookimpl
from dataworkflows.kernel import Kernel
from dataworkflows.settings import Settings

CANARY = "log-Canary:5b1d/Q+x"


class Chatty(Action):
    """Logs ``lines`` lines (one with its credential), failing retriably on attempt 1."""

    type = "test.chatty"

    class Params(BaseModel):
        credential: str | None = None
        lines: int = 2
        width: int = 0

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        if params.credential:
            secret = await ctx.credentials.get(params.credential)
            ctx.log.warning("calling with token %s", secret)
        for i in range(params.lines):
            ctx.log.info("attempt %d line %d%s", ctx.attempt, i, "." * params.width)
        ctx.log.debug("debug lines are not kept")
        if ctx.attempt == 1:
            return ActionResult.retriable("try again")
        return ActionResult.succeeded({"attempt": ctx.attempt})


class Plugin:
    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(Chatty)


def chatty(workflow_id: str, **parameters: Any) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": workflow_id,
        "nodes": [
            {
                "id": "chat",
                "actionType": "test.chatty",
                "parameters": parameters,
                "retry": {"maxAttempts": 2, "initialDelay": 0, "jitter": False},
            }
        ],
    }


async def test_logs_of_every_attempt_are_kept_redacted_and_filtered(
    kernel_factory, api_factory, run_workflow, monkeypatch
):
    monkeypatch.setenv("DATAWORKFLOWS_CREDENTIAL_LOG_CANARY", CANARY)
    kernel = await kernel_factory(plugins=[Plugin()], entrypoints=False)
    api = await api_factory(kernel, run_worker=False)
    run = await run_workflow(kernel, chatty("chatty", credential="log-canary"))
    assert run["status"] == "Succeeded"

    resp = await api.get(f"/api/v1/executions/{run['id']}/logs")
    assert resp.status == 200
    text = await resp.text()
    assert CANARY not in text
    items = json.loads(text)["items"]
    assert [(i["nodeId"], i["attempt"], i["level"], i["message"]) for i in items] == [
        ("chat", 1, "WARNING", "calling with token [REDACTED]"),
        ("chat", 1, "INFO", "attempt 1 line 0"),
        ("chat", 1, "INFO", "attempt 1 line 1"),
        ("chat", 2, "WARNING", "calling with token [REDACTED]"),
        ("chat", 2, "INFO", "attempt 2 line 0"),
        ("chat", 2, "INFO", "attempt 2 line 1"),
    ]
    assert all(i["time"].endswith("Z") for i in items)

    second = await (await api.get(f"/api/v1/executions/{run['id']}/logs?attempt=2")).json()
    assert [i["attempt"] for i in second["items"]] == [2, 2, 2]
    other = await (await api.get(f"/api/v1/executions/{run['id']}/logs?nodeId=nope")).json()
    assert other == {"items": []}

    # nothing of it in the database either
    async with kernel.db.connect() as conn:
        stored = await conn.exec_driver_sql("SELECT logs FROM action_executions")
        assert CANARY not in json.dumps([row[0] for row in stored])


async def test_bad_log_requests(kernel_factory, api_factory, run_workflow):
    kernel = await kernel_factory(plugins=[Plugin()], entrypoints=False)
    api = await api_factory(kernel, run_worker=False)
    run = await run_workflow(kernel, chatty("chatty"))
    for value in ("0", "-1", "two", "99999999999999999999"):
        resp = await api.get(f"/api/v1/executions/{run['id']}/logs?attempt={value}")
        assert resp.status == 422, value
        body = await resp.json()
        assert body["code"] == "invalid_query"
        assert body["details"]["parameter"] == "attempt"
    # another tenant's run, and no run at all: not found
    resp = await api.get(f"/api/v1/executions/{run['id']}/logs", headers={"X-Tenant-Id": "other"})
    assert resp.status == 404
    assert (await resp.json())["code"] == "execution_not_found"
    resp = await api.get(f"/api/v1/executions/{uuid.uuid4()}/logs")
    assert resp.status == 404
    resp = await api.get("/api/v1/executions/not-a-uuid/logs")
    assert resp.status == 404


async def test_logs_are_capped_per_attempt_and_per_run(kernel_factory, run_workflow):
    kernel = await kernel_factory(
        plugins=[Plugin()], entrypoints=False, step_log_max_bytes=100, run_log_max_bytes=150
    )
    # each line is "attempt N line I" + 14 dots = 30 bytes; 10 lines per attempt
    run = await run_workflow(kernel, chatty("capped", lines=10, width=14))
    assert run["status"] == "Succeeded"
    items = (await kernel.service.execution_logs(run["id"]))["items"]
    by_attempt = {
        n: [i["message"] for i in items if i["attempt"] == n] for n in (1, 2)
    }  # fmt: skip
    # attempt 1: 3 lines (90 bytes) fit its 100-byte cap, 7 are dropped
    assert by_attempt[1][:3] == [f"attempt 1 line {i}" + "." * 14 for i in range(3)]
    assert by_attempt[1][3] == (
        "[dataworkflows] 7 log line(s) (210 bytes) dropped: over the cap of 100 bytes per "
        "attempt (DATAWORKFLOWS_STEP_LOG_MAX_BYTES / DATAWORKFLOWS_RUN_LOG_MAX_BYTES)"
    )
    # attempt 2: the run has 60 bytes left: 2 lines, then the run's cap
    assert by_attempt[2][:2] == [f"attempt 2 line {i}" + "." * 14 for i in range(2)]
    assert by_attempt[2][2].startswith(
        "[dataworkflows] 8 log line(s) (240 bytes) dropped: over the cap of 150 bytes per run"
    )
    assert len(items) == 7


def test_cli_runs_logs(cli, database_url):
    async def run_one() -> str:
        kernel = Kernel(Settings(database_url=database_url), extra_plugins=[Plugin()])
        await kernel.start()
        try:
            await kernel.service.apply(chatty("chatty-cli"))
            summary, _ = await kernel.service.execute("chatty-cli", trigger={})
            kernel.start_worker()
            await kernel.ledger.wait_until_final(uuid.UUID(summary["executionId"]), 30)
            return str(summary["executionId"])
        finally:
            await kernel.close()

    run_id = asyncio.run(run_one())
    result = cli("runs", "logs", run_id, "--attempt", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 2
    assert "INFO" in lines[0] and "chat#2" in lines[0] and lines[0].endswith("attempt 2 line 0")
    result = cli("runs", "logs", run_id, "--json", "--node", "chat")
    assert [i["attempt"] for i in json.loads(result.output)["items"]] == [1, 1, 2, 2]
    result = cli("runs", "logs", str(uuid.uuid4()))
    assert result.exit_code == 1
    assert "execution_not_found" in result.output
