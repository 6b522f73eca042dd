"""``dataworkflows workflows|runs|triggers``: the API's operations from the command line."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from dataworkflows.kernel import Kernel
from dataworkflows.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SIMPLE = ROOT / "fixtures/workflows/simple-echo-workflow.json"


def _run_id(output: str) -> str:
    match = re.search(r"run ([0-9a-f-]{36})", output)
    assert match, output
    return match.group(1)


def test_workflows_commands(cli: Any) -> None:
    assert cli("apply", str(SIMPLE)).exit_code == 0
    listed = cli("workflows", "list")
    assert listed.exit_code == 0
    assert re.search(r"simple-echo\s+Active\s+1\s+Simple Echo Workflow", listed.output)
    assert json.loads(cli("workflows", "list", "--json").output)["items"][0]["id"] == "simple-echo"
    shown = json.loads(cli("workflows", "show", "simple-echo").output)
    assert shown["definition"]["nodes"][0]["id"] == "echo1"
    assert cli("workflows", "publish", "simple-echo", "--version", "1").output == (
        "simple-echo: version 1 is Active\n"
    )
    archived = cli("workflows", "archive", "simple-echo", "--yes")
    assert archived.output == "simple-echo is Archived\n"
    assert "(none)" in cli("workflows", "list", "--status", "Active").output
    missing = cli("workflows", "show", "nope")
    assert missing.exit_code == 1 and "[workflow_not_found]" in missing.output


def test_runs_commands(cli: Any) -> None:
    done = cli("run", str(SIMPLE))
    assert done.exit_code == 0
    run_id = _run_id(done.output)
    listed = cli("runs", "list", "--workflow", "simple-echo")
    assert re.search(rf"{run_id}\s+simple-echo\s+1\s+Succeeded", listed.output)
    shown = cli("runs", "show", run_id)
    assert shown.exit_code == 0 and '{"echo": "Hello from node 2"}' in shown.output
    assert json.loads(cli("runs", "show", run_id, "--json").output)["status"] == "Succeeded"

    watched = cli("runs", "watch", run_id)  # already over: its whole history, then the ledger
    assert watched.exit_code == 0
    assert re.findall(r"\] (\w+)", watched.output) == [
        "RunQueued",
        "RunStarted",
        "StepSucceeded",
        "StepSucceeded",
        "RunSucceeded",
    ]

    rerun = cli("runs", "rerun", run_id)  # no worker here: it stays Pending
    assert rerun.exit_code == 0 and f"a rerun of {run_id}" in rerun.output
    new_id = _run_id(rerun.output)
    assert new_id != run_id
    waiting = cli("runs", "watch", new_id, "--timeout", "0.3", "--poll", "0.1")
    assert waiting.exit_code == 1
    assert f"gave up waiting after 0.3 s: run {new_id} is still Pending" in waiting.output
    assert cli("runs", "cancel", new_id).output == f"run {new_id}: cancel requested (Cancelled)\n"
    cancelled = cli("runs", "watch", new_id)
    assert cancelled.exit_code == 1 and "RunCancelled" in cancelled.output
    finished = cli("runs", "cancel", run_id)
    assert finished.exit_code == 1 and "[execution_finished]" in finished.output
    assert cli("runs", "show", "not-a-run").exit_code == 1


def test_triggers_commands(cli: Any, database_url: str) -> None:
    assert cli("apply", str(SIMPLE)).exit_code == 0

    async def create() -> str:
        kernel = Kernel(Settings(database_url=database_url))
        await kernel.start()
        try:
            view = await kernel.triggers.create("simple-echo", {"type": "webhook", "config": {}})
            return str(view["id"])
        finally:
            await kernel.close()

    trigger_id = asyncio.run(create())
    listed = cli("triggers", "list", "simple-echo")
    assert re.search(rf"{trigger_id}\s+webhook\s+enabled", listed.output)
    assert cli("triggers", "disable", "simple-echo", trigger_id).output == (
        f"trigger {trigger_id} is disabled\n"
    )
    refused = cli("triggers", "fire", "simple-echo", trigger_id)
    assert refused.exit_code == 1 and "is disabled" in refused.output
    cli("triggers", "enable", "simple-echo", trigger_id)
    fired = cli("triggers", "fire", "simple-echo", trigger_id, "--payload", '{"message": "hi"}')
    assert fired.exit_code == 0 and fired.output.startswith("started: run ")
    run = json.loads(cli("runs", "show", _run_id(fired.output), "--json").output)
    assert run["trigger"]["message"] == "hi" and run["trigger"]["triggerId"] == trigger_id
    bad = cli("triggers", "fire", "simple-echo", trigger_id, "--payload", "[1]")
    assert bad.exit_code == 1 and "must be a JSON object" in bad.output
