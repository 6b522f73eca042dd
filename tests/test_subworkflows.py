"""Subworkflows (``core.subworkflow``, plugin ``dataworkflows-subworkflow``): child runs,
the run tree, parking and waking a parent, failure and retries, nesting depth (at publish
and at run time), cancellation of a tree, and retention of children of runs in flight.
The crash tests with real worker processes are in ``test_subworkflows_durable.py``."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import dataworkflows_echo
import dataworkflows_subworkflow
from dataworkflows.ledger.retention import Pruner, RetentionPolicy

PLUGINS = [dataworkflows_echo, dataworkflows_subworkflow]


def leaf(workflow_id: str, **echo: Any) -> dict[str, Any]:
    """A one-node child: echoes ``trigger.msg`` (with ``echo``'s failure/delay options)."""
    return {
        "id": workflow_id,
        "displayName": workflow_id,
        "nodes": [
            {
                "id": "say",
                "actionType": "core.echo",
                "parameters": {"message": "{{ trigger.msg }}", **echo},
            }
        ],
    }


def sub(node_id: str, workflow: str, *, wait: bool = True, **more: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"workflow": workflow, "input": {"msg": node_id}}
    if not wait:
        params["waitForCompletion"] = False
    return {"id": node_id, "actionType": "core.subworkflow", "parameters": params, **more}


def parent_def(workflow_id: str, *nodes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"id": workflow_id, "displayName": workflow_id, "nodes": list(nodes), **top}


@pytest.fixture
async def kernel(kernel_factory: Any) -> Any:
    return await kernel_factory(plugins=PLUGINS, entrypoints=False)


async def create(api: Any, definition: dict[str, Any]) -> Any:
    return await api.post("/api/v1/workflows?autoActivate=true", json=definition)


async def execute(api: Any, workflow_id: str, trigger: dict[str, Any] | None = None) -> str:
    resp = await api.post(
        f"/api/v1/workflows/{workflow_id}/execute", json={"trigger": trigger or {}}
    )
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["executionId"])


async def final(kernel: Any, run_id: str, timeout: float = 30.0) -> str:
    return await kernel.ledger.wait_until_final(uuid.UUID(run_id), timeout)


async def status_is(kernel: Any, run_id: str, *statuses: str, timeout: float = 30.0) -> None:
    """Wait (re-reading the ledger) until the run has one of ``statuses``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await kernel.ledger.get_execution(uuid.UUID(run_id)))["status"] not in statuses:
        assert loop.time() < deadline, f"run {run_id} never became {statuses}"
        await asyncio.sleep(0.05)


async def test_a_parent_with_a_waited_and_a_started_child_over_the_api(kernel, api_factory):
    api = await api_factory(kernel)
    assert (await create(api, leaf("kid"))).status == 201
    parent = parent_def(
        "onboard",
        sub("wait", "kid"),
        sub("fire", "kid", wait=False),
        {
            "id": "report",
            "actionType": "core.echo",
            "parameters": {"message": "{{ nodes.wait.outputs.nodes.say.echo }}"},
        },
    )
    assert (await create(api, parent)).status == 201
    run_id = await execute(api, "onboard")
    assert await final(kernel, run_id) == "Succeeded"

    run = await (await api.get(f"/api/v1/executions/{run_id}")).json()
    attempts = {a["nodeId"]: a for a in run["actions"]}
    assert len(run["actions"]) == 3  # one row per attempt: Waiting was replaced
    waited = attempts["wait"]["outputs"]
    assert waited["nodes"] == {"say": {"echo": "wait"}}
    assert attempts["report"]["outputs"] == {"echo": "wait"}
    fired = attempts["fire"]["outputs"]["executionId"]
    assert (run["parentExecutionId"], run["depth"]) == (None, 0)

    children = await (await api.get(f"/api/v1/executions/{run_id}/children")).json()
    by_node = {c["parentNodeId"]: c for c in children["items"]}
    assert set(by_node) == {"wait", "fire"}
    assert by_node["wait"]["id"] == waited["executionId"] and by_node["fire"]["id"] == fired
    for child in children["items"]:
        assert (child["parentExecutionId"], child["rootExecutionId"]) == (run_id, run_id)
        assert uuid.UUID(child["id"]).version == 7  # time-ordered, the partition key
        assert (child["depth"], child["workflowId"]) == (1, "kid")
    assert await final(kernel, fired) == "Succeeded"
    child = await (await api.get(f"/api/v1/executions/{fired}")).json()
    assert child["trigger"] == {"msg": "fire"} and child["actions"][0]["outputs"] == {
        "echo": "fire"
    }
    # the parent's history says it waited and was woken
    events = await (await api.get(f"/api/v1/executions/{run_id}/events")).json()
    types = [e["type"] for e in events["items"]]
    assert "StepWaiting" in types and types[-1] == "RunSucceeded"


async def test_children_route_errors(kernel, api_factory):
    api = await api_factory(kernel)
    missing = await api.get(f"/api/v1/executions/{uuid.uuid4()}/children")
    assert missing.status == 404
    assert (await missing.json())["code"] == "execution_not_found"
    assert (await api.get("/api/v1/executions/not-a-uuid/children")).status == 404
    assert (await create(api, leaf("kid"))).status == 201
    run_id = await execute(api, "kid", {"msg": "x"})
    bad = await api.get(f"/api/v1/executions/{run_id}/children?recursive=maybe")
    assert bad.status == 422
    body = await bad.json()
    assert body["code"] == "invalid_query" and body["details"]["parameter"] == "recursive"


async def test_a_grandchild_tree_is_readable_recursively(kernel, api_factory):
    api = await api_factory(kernel)
    await create(api, leaf("leaf"))
    await create(api, parent_def("middle", sub("down", "leaf")))
    await create(api, parent_def("top", sub("mid", "middle")))
    run_id = await execute(api, "top")
    assert await final(kernel, run_id) == "Succeeded"
    tree = await (await api.get(f"/api/v1/executions/{run_id}/children?recursive=true")).json()
    assert [(c["workflowId"], c["depth"], c["rootExecutionId"]) for c in tree["items"]] == [
        ("middle", 1, run_id),
        ("leaf", 2, run_id),
    ]
    only = await (await api.get(f"/api/v1/executions/{run_id}/children")).json()
    assert [c["workflowId"] for c in only["items"]] == ["middle"]
    run = await (await api.get(f"/api/v1/executions/{run_id}")).json()
    assert run["actions"][0]["outputs"]["nodes"]["down"]["nodes"] == {"say": {"echo": "down"}}


def test_runs_tree_prints_the_tree(cli: Any, tmp_path: Path) -> None:
    files = []
    for definition in (
        leaf("leaf"),
        parent_def("middle", sub("down", "leaf"), sub("side", "leaf", wait=False)),
        parent_def("top", sub("mid", "middle")),
    ):
        files.append(tmp_path / f"{definition['id']}.json")
        files[-1].write_text(json.dumps(definition))
    for path in files[:2]:
        assert cli("apply", str(path)).exit_code == 0
    done = cli("run", str(files[2]))
    assert done.exit_code == 0, done.output
    run_id = re.search(r"run ([0-9a-f-]{36})", done.output).group(1)  # type: ignore[union-attr]
    shown = cli("runs", "tree", run_id)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == f"{run_id}  top v1  Succeeded"
    assert re.fullmatch(r"└─ \[mid\] [0-9a-f-]{36}  middle v1  Succeeded", lines[1])
    assert re.fullmatch(r"   ├─ \[down\] [0-9a-f-]{36}  leaf v1  Succeeded", lines[2])
    assert re.fullmatch(r"   └─ \[side\] [0-9a-f-]{36}  leaf v1  \w+", lines[3])
    nested = json.loads(cli("runs", "tree", run_id, "--json").output)
    assert nested["children"][0]["workflowId"] == "middle"
    assert [c["parentNodeId"] for c in nested["children"][0]["children"]] == ["down", "side"]
    missing = cli("runs", "tree", str(uuid.uuid4()))
    assert missing.exit_code == 1 and "[execution_not_found]" in missing.output


async def test_a_failed_child_fails_the_node_and_its_retry_starts_a_new_child(kernel, api_factory):
    api = await api_factory(kernel)
    await create(api, leaf("broken", failAlways=True, failureKind="permanent"))
    retry = {"maxAttempts": 2, "initialDelay": 0.01, "jitter": False}
    await create(api, parent_def("calls-broken", sub("call", "broken", retry=retry)))
    run_id = await execute(api, "calls-broken")
    assert await final(kernel, run_id) == "Failed"
    run = await (await api.get(f"/api/v1/executions/{run_id}")).json()
    assert [(a["attempt"], a["status"]) for a in run["actions"]] == [
        (1, "RetriableFailure"),
        (2, "Failed"),
    ]
    errors = [a["error"] for a in run["actions"]]
    assert {e["code"] for e in errors} == {"subworkflow_failed"}
    assert errors[1]["details"]["childStatus"] == "Failed"
    assert "simulated failure" in errors[1]["message"]
    assert run["error"]["code"] == "subworkflow_failed"
    children = (await (await api.get(f"/api/v1/executions/{run_id}/children")).json())["items"]
    assert len(children) == 2 and {c["status"] for c in children} == {"Failed"}
    ids = {e["details"]["childExecutionId"] for e in errors}
    assert ids == {c["id"] for c in children}
    # each attempt's child has its own request id: parent, node and attempt
    rows = [await kernel.ledger.get_execution(uuid.UUID(c["id"])) for c in children]
    assert sorted(r["request_id"] for r in rows) == [f"{run_id}:call:1", f"{run_id}:call:2"]


async def test_an_unknown_or_inactive_subworkflow_fails_the_node(kernel, api_factory):
    api = await api_factory(kernel)
    draft = await api.post("/api/v1/workflows", json=leaf("draft-kid"))
    assert draft.status == 201
    await create(api, parent_def("calls-draft", sub("call", "draft-kid")))
    await create(api, parent_def("calls-nothing", sub("call", "{{ trigger.name }}")))
    for workflow_id, trigger, needle in (
        ("calls-draft", {}, "is Draft, not Active"),
        ("calls-nothing", {"name": "no-such"}, "does not exist"),
    ):
        run_id = await execute(api, workflow_id, trigger)
        assert await final(kernel, run_id) == "Failed"
        run = await (await api.get(f"/api/v1/executions/{run_id}")).json()
        error = run["actions"][-1]["error"]
        assert error["code"] == "subworkflow_not_runnable" and needle in error["message"]
        children = await (await api.get(f"/api/v1/executions/{run_id}/children")).json()
        assert children["items"] == []  # nothing was queued


def chain(n: int) -> list[dict[str, Any]]:
    """w0 -> w1 -> ... -> wn (wn a leaf): w0's runs nest n deep."""
    return [leaf(f"w{n}")] + [
        parent_def(f"w{i}", sub("next", f"w{i + 1}")) for i in range(n - 1, -1, -1)
    ]


async def test_depth_6_is_refused_at_publish_and_depth_5_runs(kernel, api_factory):
    api = await api_factory(kernel)
    definitions = chain(6)
    for definition in definitions[:-1]:  # w6 .. w1: w1's runs nest 5 deep
        assert (await create(api, definition)).status == 201, definition["id"]
    refused = await create(api, definitions[-1])
    assert refused.status == 422
    body = await refused.json()
    assert body["code"] == "invalid_definition"
    (problem,) = body["details"]["problems"]
    assert problem["code"] == "max_nesting_depth_exceeded"
    assert problem["path"] == "$.nodes[0].parameters.workflow"
    assert problem["chain"] == [f"w{i}" for i in range(7)]
    assert (problem["depth"], problem["maxNestingDepth"]) == (6, 5)
    assert (await api.get("/api/v1/workflows/w0")).status == 404  # nothing was written
    # a definition may allow more
    allowed = await create(api, {**definitions[-1], "maxNestingDepth": 6})
    assert allowed.status == 201
    run_id = await execute(api, "w1", {})
    assert await final(kernel, run_id) == "Succeeded"
    tree = await (await api.get(f"/api/v1/executions/{run_id}/children?recursive=true")).json()
    assert [c["depth"] for c in tree["items"]] == [1, 2, 3, 4, 5]


async def test_static_recursion_is_refused_at_publish(kernel, api_factory):
    api = await api_factory(kernel)
    itself = await create(api, parent_def("selfish", sub("again", "selfish")))
    assert itself.status == 422
    (problem,) = (await itself.json())["details"]["problems"]
    assert problem["code"] == "subworkflow_recursion"
    assert problem["chain"] == ["selfish", "selfish"]
    # a cycle through another workflow: b is Active, then a new version of b calls a
    assert (await create(api, leaf("b"))).status == 201
    assert (await create(api, parent_def("a", sub("tob", "b")))).status == 201
    version = await api.post("/api/v1/workflows/b/versions", json=parent_def("b", sub("toa", "a")))
    assert version.status == 201, await version.text()
    publish = await api.post("/api/v1/workflows/b/publish", json={})
    assert publish.status == 422
    (problem,) = (await publish.json())["details"]["problems"]
    assert (problem["code"], problem["chain"]) == ("subworkflow_recursion", ["b", "a", "b"])
    current = await (await api.get("/api/v1/workflows/b")).json()
    assert current["currentVersion"] == 1  # still the leaf


async def test_dynamic_recursion_over_the_depth_fails_the_node(kernel, api_factory):
    api = await api_factory(kernel)
    # the workflow's name comes from the trigger: only known at run time
    recursive = parent_def(
        "again",
        {
            "id": "deeper",
            "actionType": "core.subworkflow",
            "parameters": {"workflow": "{{ trigger.next }}", "input": {"next": "again"}},
        },
        maxNestingDepth=2,
    )
    assert (await create(api, recursive)).status == 201
    run_id = await execute(api, "again", {"next": "again"})
    assert await final(kernel, run_id) == "Failed"
    tree = (await (await api.get(f"/api/v1/executions/{run_id}/children?recursive=true")).json())[
        "items"
    ]
    assert [(c["depth"], c["status"]) for c in tree] == [(1, "Failed"), (2, "Failed")]
    deepest = await (await api.get(f"/api/v1/executions/{tree[-1]['id']}")).json()
    error = deepest["actions"][0]["error"]
    assert error["code"] == "max_nesting_depth_exceeded"
    assert error["details"] == {"depth": 3, "maxNestingDepth": 2}
    # the code travels up, and no level retries: a new child would nest as deep
    top = await (await api.get(f"/api/v1/executions/{run_id}")).json()
    assert top["error"]["code"] == "max_nesting_depth_exceeded"
    assert [(a["attempt"], a["status"]) for a in top["actions"]] == [(1, "Failed")]
    assert top["actions"][0]["error"]["details"]["childExecutionId"] == tree[0]["id"]


async def test_cancelling_the_parent_cancels_its_children(kernel, api_factory):
    api = await api_factory(kernel)
    await create(api, leaf("slow", delayMs=600_000))
    await create(api, parent_def("waits", sub("fire", "slow", wait=False), sub("wait", "slow")))
    run_id = await execute(api, "waits")
    await status_is(kernel, run_id, "Waiting")  # parked: no worker holds it
    children = (await (await api.get(f"/api/v1/executions/{run_id}/children")).json())["items"]
    assert len(children) == 2
    for child in children:
        await status_is(kernel, child["id"], "Running")

    cancel = await api.post(f"/api/v1/executions/{run_id}/cancel")
    assert cancel.status == 202
    assert await final(kernel, run_id) == "Cancelled"
    for child in children:
        assert await final(kernel, child["id"]) == "Cancelled"
    run = await (await api.get(f"/api/v1/executions/{run_id}")).json()
    attempts = {a["nodeId"]: a for a in run["actions"]}
    assert attempts["wait"]["status"] == "Cancelled"
    assert attempts["wait"]["error"]["reason"] == "run_cancelled"
    again = await api.post(f"/api/v1/executions/{run_id}/cancel")
    assert again.status == 409


async def test_the_pruner_keeps_children_of_runs_in_flight(kernel, api_factory):
    api = await api_factory(kernel)
    await create(api, leaf("quick"))
    await create(api, leaf("slow", delayMs=600_000))
    # the parent waits on the slow child, after its quick children have ended
    await create(
        api,
        parent_def(
            "mixed", sub("first", "quick"), sub("second", "quick", wait=False), sub("last", "slow")
        ),
    )
    lone = await execute(api, "quick", {"msg": "alone"})
    run_id = await execute(api, "mixed")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:  # parked on its last node (it may park on `first` before)
        children = (await (await api.get(f"/api/v1/executions/{run_id}/children")).json())["items"]
        run = await kernel.ledger.get_execution(uuid.UUID(run_id))
        if len(children) == 3 and run["status"] == "Waiting":
            break
        assert loop.time() < deadline, "the parent never parked on its last node"
        await asyncio.sleep(0.05)
    quick = [c["id"] for c in children if c["workflowId"] == "quick"]
    for child_id in [*quick, lone]:
        assert await final(kernel, child_id) == "Succeeded"
    pruner = Pruner(kernel.db, RetentionPolicy(days=1, failed_days=1))
    later = datetime.now(UTC) + timedelta(days=10)
    assert (await pruner.prune(later)).runs == 1  # only the lone run
    assert await kernel.ledger.get_execution(uuid.UUID(lone)) is None
    for child_id in quick:
        assert await kernel.ledger.get_execution(uuid.UUID(child_id)) is not None

    assert (await api.post(f"/api/v1/executions/{run_id}/cancel")).status == 202
    for ended in (run_id, *[c["id"] for c in children]):
        assert await final(kernel, ended) in ("Cancelled", "Succeeded")
    # the parent has ended: its children go with the policy now, and so does it
    assert (await pruner.prune(later)).runs == 4
    for gone in (run_id, *[c["id"] for c in children]):
        assert await kernel.ledger.get_execution(uuid.UUID(gone)) is None
