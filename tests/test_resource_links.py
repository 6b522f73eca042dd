"""Resource links: stored with the step, unique per workflow, found again by re-runs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select

from dataworkflows import Action, ActionContext, ActionResult, ResourceLink, hookimpl
from dataworkflows.db.connector_models import workflow_resource_links
from dataworkflows.ledger.run_ledger import RunFinish, StaleRunError, StepRecord


class MakeThing(Action):
    """Test action: 'creates' a thing unless an earlier run of the workflow did."""

    type = "test.make-thing"
    created: list[str] = []

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        key = f"name:{params.name}"
        found = await ctx.resources.find("things", "thing", key=key)
        if found is not None:
            return ActionResult.succeeded(
                {"id": found.external_id, "created": False}, links=(found,)
            )
        thing_id = f"thing-{len(MakeThing.created) + 1}"
        MakeThing.created.append(thing_id)
        return ActionResult.succeeded(
            {"id": thing_id, "created": True},
            links=(
                ResourceLink("things", "thing", thing_id, f"https://things.test/{thing_id}", key),
                ResourceLink("things", "receipt", f"r-{thing_id}"),
            ),
        )


class Plugin:
    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(MakeThing)


@pytest.fixture(autouse=True)
def _reset() -> None:
    MakeThing.created = []


def workflow(workflow_id: str = "things") -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": "Make a thing",
        "nodes": [
            {
                "id": "make",
                "actionType": "test.make-thing",
                "parameters": {"name": "{{ trigger.name }}"},
            }
        ],
    }


async def count_links(kernel: Any) -> int:
    async with kernel.db.connect() as conn:
        return (
            await conn.execute(select(func.count()).select_from(workflow_resource_links))
        ).scalar_one()


async def test_links_are_listed_per_execution_and_found_by_re_runs(api_factory, kernel_factory):
    kernel = await kernel_factory(plugins=[Plugin()])
    api = await api_factory(kernel)
    assert (await api.post("/api/v1/workflows?autoActivate=true", json=workflow())).status == 201

    async def execute(trigger: dict[str, Any]) -> dict[str, Any]:
        accepted = await (
            await api.post("/api/v1/workflows/things/execute", json={"trigger": trigger})
        ).json()
        await kernel.ledger.wait_until_final(uuid.UUID(accepted["executionId"]), 30)
        return await (await api.get(f"/api/v1/executions/{accepted['executionId']}")).json()

    first = await execute({"name": "a"})
    assert first["actions"][0]["outputs"] == {"id": "thing-1", "created": True}
    resp = await api.get(f"/api/v1/executions/{first['id']}/resources")
    assert resp.status == 200
    links = (await resp.json())["items"]
    assert [(x["system"], x["type"], x["externalId"], x["url"], x["key"]) for x in links] == [
        ("things", "receipt", "r-thing-1", None, None),
        ("things", "thing", "thing-1", "https://things.test/thing-1", "name:a"),
    ]
    assert {x["executionId"] for x in links} == {first["id"]}
    assert {x["workflowId"] for x in links} == {"things"} and {x["nodeId"] for x in links} == {
        "make"
    }

    second = await execute({"name": "a"})
    assert second["actions"][0]["outputs"] == {"id": "thing-1", "created": False}
    assert MakeThing.created == ["thing-1"]
    assert await count_links(kernel) == 2  # the same object is recorded once
    third = await execute({"name": "b"})
    assert third["actions"][0]["outputs"]["created"] is True
    assert await count_links(kernel) == 4

    # another workflow does not see this workflow's links
    other = workflow("other-things")
    assert (await api.post("/api/v1/workflows?autoActivate=true", json=other)).status == 201
    accepted = await (
        await api.post("/api/v1/workflows/other-things/execute", json={"trigger": {"name": "a"}})
    ).json()
    await kernel.ledger.wait_until_final(uuid.UUID(accepted["executionId"]), 30)
    assert MakeThing.created == ["thing-1", "thing-2", "thing-3"]


async def test_resources_endpoint_errors(api_factory, kernel_factory):
    kernel = await kernel_factory(plugins=[Plugin()])
    api = await api_factory(kernel)
    for path in (
        f"/api/v1/executions/{uuid.uuid4()}/resources",
        "/api/v1/executions/nope/resources",
    ):
        resp = await api.get(path)
        assert resp.status == 404
        assert (await resp.json())["code"] == "execution_not_found"
    await api.post("/api/v1/workflows?autoActivate=true", json=workflow())
    accepted = await (
        await api.post("/api/v1/workflows/things/execute", json={"trigger": {"name": "z"}})
    ).json()
    await kernel.ledger.wait_until_final(uuid.UUID(accepted["executionId"]), 30)
    resp = await api.get(
        f"/api/v1/executions/{accepted['executionId']}/resources", headers={"X-Tenant-Id": "acme"}
    )
    assert resp.status == 404


async def test_links_are_written_with_the_step_or_not_at_all(kernel_factory):
    kernel = await kernel_factory(plugins=[Plugin()])
    await kernel.service.apply(workflow())
    await kernel.service.execute("things", trigger={"name": "x"})
    run = await kernel.ledger.claim()
    assert run is not None
    now = kernel.clock.now()

    def step(external_id: str) -> StepRecord:
        return StepRecord(
            node_id="make",
            action_type="test.make-thing",
            attempt=1,
            status="Succeeded",
            parameters={"name": "x"},
            outputs={"id": external_id},
            error=None,
            started_at=now,
            ended_at=now,
            links=(ResourceLink("things", "thing", external_id, key="k"),),
        )

    await kernel.ledger.record_step(run, step("t-1"), RunFinish("Succeeded"))
    assert await count_links(kernel) == 1
    with pytest.raises(StaleRunError):
        await kernel.ledger.record_step(run, step("t-2"))
    assert await count_links(kernel) == 1
    found = await kernel.resources.find("things", "things", "thing", key="k")
    assert found == ResourceLink("things", "thing", "t-1", None, "k")
    assert await kernel.resources.find("things", "things", "thing", external_id="t-2") is None
    with pytest.raises(ValueError):
        await kernel.resources.find("things", "things", "thing")
