"""Run variables (common/run_variables.py): an action sets typed values with
``ctx.set_variable``; they are written with its successful attempt's row (no extra write),
upserted by key, read by later nodes as ``vars.<key>`` and listed at
``GET /api/v1/executions/{id}/variables``."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select, update

from dataworkflows import Action, ActionContext, ActionResult, hookimpl
from dataworkflows.api.models import ExecutionVariables
from dataworkflows.db.models import run_variables, workflow_executions
from dataworkflows.kernel import Kernel
from dataworkflows.ledger.run_ledger import StepRecord, UnwritableRecord
from dataworkflows.settings import Settings
from dataworkflows.testing import record_batch_sizes


class SetVars(Action):
    """Sets ``values`` as run variables; on attempts listed in ``fail_on`` it sets
    ``ghost`` too and then fails retriably. Returns ``echo`` (a rendered template)."""

    type = "test.set-vars"

    class Params(BaseModel):
        values: dict[str, Any] = {}
        echo: Any = None
        fail_on: list[int] = []
        #: set a value no parameter can carry: "nan", "nul" or "object"
        bad: str | None = None

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        for key, value in params.values.items():
            ctx.set_variable(key, value)
        if params.bad:
            bad = {"nan": float("nan"), "nul": "a\x00b", "object": object()}[params.bad]
            ctx.set_variable("bad", bad)
        if ctx.attempt in params.fail_on:
            ctx.set_variable("ghost", "from a failed attempt")
            return ActionResult.retriable("not yet")
        return ActionResult.succeeded({"echo": params.echo, "seen": dict(ctx.variables)})


class Plugin:
    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(SetVars)


def node(node_id: str, **parameters: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "actionType": "test.set-vars",
        "parameters": parameters,
        "retry": {"maxAttempts": 2, "initialDelay": 0, "jitter": False},
    }


FLOW = {
    "id": "vars-flow",
    "displayName": "vars",
    "nodes": [
        node(
            "a",
            values={"x": 3, "f": 2.5, "s": "hi", "b": True, "j": {"a": [1, 2]}, "n": None},
            fail_on=[1],
        ),
        node("b", values={"x": 4}, echo="{{ vars.x }}"),
        node("c", echo={"x": "{{ vars.x }}", "j": "{{ vars.j.a[1] }}", "text": "s={{ vars.s }}"}),
    ],
    "edges": [
        {"from": "a", "to": "b", "when": "success"},
        {"from": "b", "to": "c", "when": "success", "condition": "vars.b and vars.x == 4"},
    ],
}


async def _stored(kernel: Any, execution_id: str) -> dict[str, tuple[str, Any, str, int]]:
    async with kernel.db.connect() as conn:
        rows = await conn.execute(
            select(run_variables).where(run_variables.c.execution_id == uuid.UUID(execution_id))
        )
        return {r.key: (r.type, r.value, r.node_id, r.attempt) for r in rows}


async def test_set_in_one_node_read_typed_in_later_ones(
    kernel_factory, api_factory, run_workflow
) -> None:
    kernel = await kernel_factory(plugins=[Plugin()], entrypoints=False)
    api = await api_factory(kernel, run_worker=False)
    flow = _edges_as_node_edges(FLOW)
    run = await run_workflow(kernel, flow)
    assert run["status"] == "Succeeded", run
    outputs = {a["nodeId"]: a["outputs"] for a in run["actions"] if a["status"] == "Succeeded"}
    # b rendered "{{ vars.x }}" before its own write: a's value, still a number
    assert outputs["b"]["echo"] == 3 and isinstance(outputs["b"]["echo"], int)
    # c sees b's upsert; the condition on b -> c read vars too
    assert outputs["c"]["echo"] == {"x": 4, "j": 2, "text": "s=hi"}
    # an action reads the committed variables (and its own writes) as ctx.variables
    assert outputs["c"]["seen"]["f"] == 2.5

    stored = await _stored(kernel, run["id"])
    assert stored == {
        "x": ("number", 4, "b", 1),  # upserted: b overwrote a's 3
        "f": ("number", 2.5, "a", 2),
        "s": ("string", "hi", "a", 2),
        "b": ("boolean", True, "a", 2),
        "j": ("json", {"a": [1, 2]}, "a", 2),
        "n": ("json", None, "a", 2),
    }  # no "ghost": attempt 1 of a failed, its writes do not count

    resp = await api.get(f"/api/v1/executions/{run['id']}/variables")
    assert resp.status == 200
    body = await resp.json()
    ExecutionVariables.model_validate(body)  # the declared response model (extra="forbid")
    items = body["items"]
    assert [(i["key"], i["type"], i["value"]) for i in items] == [
        ("b", "boolean", True),
        ("f", "number", 2.5),
        ("j", "json", {"a": [1, 2]}),
        ("n", "json", None),
        ("s", "string", "hi"),
        ("x", "number", 4),
    ]
    x = items[-1]
    assert (x["nodeId"], x["attempt"]) == ("b", 1)
    assert x["updatedAt"].endswith("Z")


def _edges_as_node_edges(flow: dict[str, Any]) -> dict[str, Any]:
    """FLOW's edges written the way definitions declare them (on the source node)."""
    nodes = [dict(n) for n in flow["nodes"]]
    for edge in flow["edges"]:
        source = next(n for n in nodes if n["id"] == edge["from"])
        spec = {"targetNode": edge["to"], "when": edge["when"]}
        if "condition" in edge:
            spec["condition"] = edge["condition"]
        source.setdefault("edges", []).append(spec)
    return {"id": flow["id"], "displayName": flow["displayName"], "startNode": "a", "nodes": nodes}


async def test_bad_key_or_oversized_value_is_a_clear_step_error(kernel_factory, run_workflow):
    kernel = await kernel_factory(plugins=[Plugin()], entrypoints=False, run_variable_max_bytes=100)
    cases = {
        "bad-key": ({"values": {"no-dashes": 1}}, "invalid variable key 'no-dashes'"),
        "too-big": ({"values": {"big": "x" * 200}}, "over the cap of 100"),
        "nan": ({"bad": "nan"}, "is not a JSON number"),
        "nul": ({"bad": "nul"}, "contains a NUL character"),
        "object": ({"bad": "object"}, "not object"),
    }
    for name, (parameters, message) in cases.items():
        flow = {"id": name, "displayName": name, "nodes": [node("a", **parameters)]}
        run = await run_workflow(kernel, flow)
        assert run["status"] == "Failed", name
        (attempt,) = run["actions"]  # a permanent failure: not retried
        assert attempt["error"]["code"] == "invalid_variable", name
        assert message in attempt["error"]["message"], attempt["error"]
        assert await _stored(kernel, run["id"]) == {}


async def test_static_analysis_knows_vars(kernel) -> None:
    """``vars`` is a name templates and conditions may read; an unknown name still is not."""
    ok = {"id": "w", "displayName": "w", "startNode": "a", "nodes": [
        {"id": "a", "actionType": "core.echo", "parameters": {"message": "{{ vars.anything }}"},
         "edges": [{"targetNode": "b", "condition": "vars.go"}]},
        {"id": "b", "actionType": "core.echo", "parameters": {"message": "x"}},
    ]}  # fmt: skip
    kernel.service.validate(ok)  # raises on a problem
    bad = json.loads(json.dumps(ok).replace("vars.anything", "varz.anything"))
    try:
        kernel.service.validate(bad)
    except Exception as exc:
        assert "varz" in json.dumps(getattr(exc, "details", None) or str(exc))
    else:
        raise AssertionError("an unknown name was accepted")


async def test_variables_route_errors(kernel_factory, api_factory, run_workflow) -> None:
    kernel = await kernel_factory(plugins=[Plugin()], entrypoints=False)
    api = await api_factory(kernel, run_worker=False)
    run = await run_workflow(kernel, {"id": "w", "displayName": "w", "nodes": [node("a")]})
    resp = await api.get(f"/api/v1/executions/{run['id']}/variables")
    assert await resp.json() == {"items": []}
    resp = await api.get(
        f"/api/v1/executions/{run['id']}/variables", headers={"X-Tenant-Id": "other"}
    )
    assert resp.status == 404
    assert (await resp.json())["code"] == "execution_not_found"
    resp = await api.get(f"/api/v1/executions/{uuid.uuid4()}/variables")
    assert resp.status == 404
    resp = await api.get("/api/v1/executions/not-a-uuid/variables")
    assert resp.status == 404  # like /logs and /events: odd ids are plain 404s
    body = await resp.json()
    assert body["code"] == "execution_not_found"
    assert set(body) >= {"code", "message", "details"}
    spec = await (await api.get("/api/v1/openapi.json")).json()
    assert "get" in spec["paths"]["/api/v1/executions/{execution_id}/variables"]


async def test_a_bad_variable_in_a_shared_batch_fails_only_its_own_run(
    kernel_factory, backend
) -> None:
    """Twelve runs' step writes go together: one carries a NaN (refused before it joins the
    batch), one a NUL (PostgreSQL's jsonb refuses it inside the batch, which is then split;
    SQLite stores it). Every other run's step and variable is committed."""
    kernel = await kernel_factory(plugins=[Plugin()], entrypoints=False)
    await kernel.service.apply({"id": "w", "displayName": "w", "nodes": [node("a")]})
    for i in range(12):
        await kernel.service.execute("w", trigger={"i": i})
    runs = await kernel.ledger.claim_many("me", 12)
    assert len(runs) == 12
    sizes = record_batch_sizes(kernel)
    now = kernel.clock.now()
    values: list[Any] = [i for i in range(12)]
    values[3] = float("nan")
    values[6] = "a\x00b"

    def step(value: Any) -> StepRecord:
        return StepRecord(
            "a", "test.set-vars", 1, "Succeeded", {}, {}, None, now, now, variables={"v": value}
        )

    results = await asyncio.gather(
        *(kernel.ledger.record_step(run, step(v)) for run, v in zip(runs, values, strict=True)),
        return_exceptions=True,
    )
    assert isinstance(results[3], UnwritableRecord)
    assert results[3].path == "$.nodes.a.variables"
    if backend == "postgresql":
        assert isinstance(results[6], UnwritableRecord)
        assert sizes.count(1) >= 1  # split after the shared batch failed
    else:
        assert results[6] is None
    assert max(sizes) > 1, "the step writes never shared a batch: nothing was tested"
    for i, (run, result) in enumerate(zip(runs, results, strict=True)):
        if i in (3, 6):
            continue
        assert result is None, (i, result)
        assert await _stored(kernel, run.id_str) == {"v": ("number", i, "a", 1)}
    async with kernel.db.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(run_variables))).scalar()
    assert count == (11 if backend == "sqlite" else 10)


def test_cli_runs_vars(cli, database_url) -> None:
    async def run_one() -> str:
        kernel = Kernel(Settings(database_url=database_url), extra_plugins=[Plugin()])
        await kernel.start()
        try:
            flow = {"id": "cli-vars", "displayName": "v", "nodes": [node("a", values={"n": 7})]}
            await kernel.service.apply(flow)
            summary, _ = await kernel.service.execute("cli-vars", trigger={})
            kernel.start_worker()
            await kernel.ledger.wait_until_final(uuid.UUID(summary["executionId"]), 30)
            return str(summary["executionId"])
        finally:
            await kernel.close()

    run_id = asyncio.run(run_one())
    result = cli("runs", "vars", run_id)
    assert result.exit_code == 0, result.output
    header, row = result.output.strip().splitlines()
    assert header.split() == ["key", "type", "value", "set", "by"]
    assert row.split() == ["n", "number", "7", "a#1"]
    result = cli("runs", "vars", run_id, "--json")
    assert [(v["key"], v["value"]) for v in json.loads(result.output)["items"]] == [("n", 7)]
    result = cli("runs", "vars", "nope")
    assert result.exit_code == 1
    assert "execution_not_found" in result.output


async def test_a_resumed_run_reads_its_variables_back(kernel_factory) -> None:
    """Node a's attempt (with its variable) was written by a worker that then died; the
    worker that recovers the run renders b with it."""
    kernel = await kernel_factory(plugins=[Plugin()], entrypoints=False)
    flow = {
        "id": "resume",
        "displayName": "resume",
        "nodes": [node("a"), node("b", echo="{{ vars.x * 2 }}")],
    }
    await kernel.service.apply(flow)
    summary, _ = await kernel.service.execute("resume", trigger={})
    ghost = await kernel.ledger.claim("ghost")
    assert ghost is not None and ghost.id_str == summary["executionId"]
    now = kernel.clock.now()
    done = StepRecord(
        "a", "test.set-vars", 1, "Succeeded", {}, {}, None, now, now, variables={"x": 21}
    )
    await kernel.ledger.record_step(ghost, done)
    async with kernel.db.begin() as conn:  # the ghost's lease runs out
        await conn.execute(
            update(workflow_executions)
            .where(workflow_executions.c.id == ghost.id)
            .values(lease_expires_at=kernel.clock.now())
        )
    kernel.start_worker()
    assert await kernel.ledger.wait_until_final(ghost.id, 30) == "Succeeded"
    run = await kernel.service.get_execution(summary["executionId"])
    # (b's first attempt counts as lost with the ghost: it may have been in flight there)
    last = run["actions"][-1]
    assert (last["nodeId"], last["status"], last["outputs"]["echo"]) == ("b", "Succeeded", 42)


async def test_variables_cost_no_extra_transaction(kernel_factory, run_workflow, count_commits):
    """The same two-node run with and without variables commits as often: the variables
    ride in their step's own write."""
    # no background commits during the runs: no poll, no lease renewal (runs are handed to
    # the in-process worker when queued)
    kernel = await kernel_factory(
        plugins=[Plugin()],
        entrypoints=False,
        poll_interval=3600.0,
        lease_seconds=7200.0,
        heartbeat_interval=3600.0,
    )
    counts = []
    cases = (("warm-up", {}), ("plain", {}), ("with-vars", {"a": 1, "b": "two", "c": [3]}))
    for name, values in cases:
        flow = {"id": name, "displayName": name, "nodes": [node("a", values=values), node("b")]}
        await kernel.service.apply(flow)
        with count_commits(kernel) as commits:
            run = await run_workflow(kernel, flow)
        assert run["status"] == "Succeeded"
        counts.append(commits.count)
    assert counts[1] == counts[2], counts  # (the warm-up's include the worker's start)
