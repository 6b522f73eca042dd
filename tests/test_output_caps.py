"""Caps on step outputs (engine/output_caps.py): over ``DATAWORKFLOWS_STEP_OUTPUT_MAX_BYTES``
or the run's ``DATAWORKFLOWS_RUN_OUTPUT_MAX_BYTES`` a step fails with ``output_too_large``,
its value is dropped whole and nothing else of the run (or of other runs) is touched."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from dataworkflows import Action, ActionContext, ActionResult, hookimpl
from dataworkflows.db.models import action_executions
from dataworkflows.engine.output_caps import NotStorable, OutputBudget, json_bytes


class Blob(Action):
    """Returns ``{"blob": char * size}``."""

    type = "test.blob"

    class Params(BaseModel):
        size: int
        char: str = "x"

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        return ActionResult.succeeded({"blob": params.char * params.size})


class Plugin:
    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(Blob)


def blobs(workflow_id: str, *sizes: int, parallel: bool = False) -> dict[str, Any]:
    """Nodes n0, n1, ... returning blobs of ``sizes``: a chain, or all after n0."""
    nodes: list[dict[str, Any]] = [
        {"id": f"n{i}", "actionType": "test.blob", "parameters": {"size": size}, "edges": []}
        for i, size in enumerate(sizes)
    ]
    for i in range(1, len(sizes)):
        nodes[0 if parallel else i - 1]["edges"].append({"targetNode": f"n{i}"})
    return {"id": workflow_id, "displayName": workflow_id, "startNode": "n0", "nodes": nodes}


def steps(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["nodeId"]: s for s in run["actions"]}


async def stored_outputs(kernel: Any, run_id: str) -> dict[str, Any]:
    """The ``outputs`` column of the run's attempt rows, read from the database."""
    query = sa.select(action_executions.c.node_id, action_executions.c.outputs).where(
        action_executions.c.execution_id == uuid.UUID(run_id)
    )
    async with kernel.db.connect() as conn:
        return {node: outputs for node, outputs in await conn.execute(query)}


def test_json_bytes_counts_utf8_of_compact_json() -> None:
    assert json_bytes({"a": [1, 2]}) == len('{"a":[1,2]}')
    assert json_bytes({"s": "é"}) == len('{"s":""}') + 2  # é is 2 bytes in UTF-8
    assert json_bytes({"s": "\U0001f600"}) == len('{"s":""}') + 4
    with pytest.raises(NotStorable):
        json_bytes({"x": float("nan")})
    with pytest.raises(NotStorable):
        json_bytes({"x": object()})


def test_budget_counts_only_what_it_admits_and_zero_means_no_cap() -> None:
    budget = OutputBudget(step_limit=10, run_limit=25)
    assert budget.admit(10) is None
    refused = budget.admit(11)
    assert refused is not None and refused.error is not None
    assert refused.error["details"]["cap"] == "DATAWORKFLOWS_STEP_OUTPUT_MAX_BYTES"
    assert budget.admit(10) is None
    refused = budget.admit(6)  # 20 held + 6 > 25
    assert refused is not None and refused.error is not None
    assert refused.error["details"] == {
        "cap": "DATAWORKFLOWS_RUN_OUTPUT_MAX_BYTES",
        "limitBytes": 25,
        "outputBytes": 6,
        "runOutputBytes": 20,
    }
    assert budget.used == 20
    unlimited = OutputBudget(step_limit=0, run_limit=0)
    assert unlimited.admit(10**12) is None
    unlimited.restore({"a": "bc"})
    assert unlimited.used == 10**12 + len('{"a":"bc"}')


async def test_a_step_over_the_cap_fails_and_the_rest_of_the_run_is_intact(
    kernel_factory, run_workflow
):
    kernel = await kernel_factory(plugins=[Plugin()], entrypoints=False, step_output_max_bytes=1000)
    # n0 then, in parallel, n1 (too big) and n2 (fits)
    run = await run_workflow(kernel, blobs("capped", 10, 2000, 20, parallel=True))
    assert run["status"] == "Failed"
    by_node = steps(run)
    assert by_node["n0"]["status"] == "Succeeded"
    assert by_node["n0"]["outputs"] == {"blob": "x" * 10}
    big = by_node["n1"]
    assert big["status"] == "Failed"
    assert big["outputs"] is None
    assert big["error"]["code"] == "output_too_large"
    assert big["error"]["details"] == {
        "cap": "DATAWORKFLOWS_STEP_OUTPUT_MAX_BYTES",
        "limitBytes": 1000,
        "outputBytes": len(json.dumps({"blob": "x" * 2000}, separators=(",", ":"))),
    }
    assert "at most 1000 bytes" in big["error"]["message"]
    assert run["error"]["code"] == "output_too_large"
    # n2 ran beside it (or was cancelled by the failure): never given n1's value
    stored = await stored_outputs(kernel, run["id"])
    assert stored["n1"] is None
    assert "x" * 2000 not in json.dumps(stored)


async def test_the_run_cap_counts_every_succeeded_step(kernel_factory, run_workflow):
    kernel = await kernel_factory(plugins=[Plugin()], entrypoints=False, run_output_max_bytes=1000)
    run = await run_workflow(kernel, blobs("run-capped", 400, 400, 400))
    assert run["status"] == "Failed"
    by_node = steps(run)
    assert [by_node[n]["status"] for n in ("n0", "n1", "n2")] == [
        "Succeeded",
        "Succeeded",
        "Failed",
    ]
    held = 2 * json_bytes({"blob": "x" * 400})
    assert by_node["n2"]["error"]["details"] == {
        "cap": "DATAWORKFLOWS_RUN_OUTPUT_MAX_BYTES",
        "limitBytes": 1000,
        "outputBytes": json_bytes({"blob": "x" * 400}),
        "runOutputBytes": held,
    }
    assert by_node["n1"]["outputs"] == {"blob": "x" * 400}


async def test_fifty_megabytes_fail_with_the_default_cap_beside_a_healthy_run(
    kernel_factory, run_workflow
):
    """No shared fate: both runs' rows go through the same writer at the same time."""
    kernel = await kernel_factory(plugins=[Plugin()], entrypoints=False)
    huge, healthy = await asyncio.gather(
        run_workflow(kernel, blobs("huge", 50 * 1024 * 1024)),
        run_workflow(kernel, blobs("healthy", 100, 100)),
    )
    assert huge["status"] == "Failed"
    assert huge["actions"][0]["error"]["code"] == "output_too_large"
    assert huge["actions"][0]["error"]["details"]["limitBytes"] == 4 * 1024 * 1024
    assert healthy["status"] == "Succeeded"
    assert [s["outputs"] for s in healthy["actions"]] == [{"blob": "x" * 100}] * 2
