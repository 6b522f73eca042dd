"""Trigger management over HTTP, the trigger parts of the plugin API, a missing plugin."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, SecretStr

from dataworkflows import TriggerType, hookimpl
from dataworkflows.common.errors import Conflict, NotFound
from dataworkflows.plugin_api import PluginAPI

BASE = "/api/v1/workflows/hello/triggers"

HELLO = {
    "id": "hello",
    "displayName": "Hello",
    "nodes": [{"id": "say", "actionType": "core.echo", "parameters": {"message": "hi"}}],
}


class Doorbell(TriggerType):
    """A test trigger type with a secret in its config."""

    type = "test.doorbell"
    title = "A doorbell"

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        room: str
        code: SecretStr | None = None
        volume: int = 3


class DoorbellPlugin:
    @hookimpl
    def register_triggers(self, register: Any) -> None:
        register(Doorbell)


@pytest.fixture
async def kernel(kernel_factory: Any) -> Any:
    return await kernel_factory(plugins=[DoorbellPlugin()])


@pytest.fixture
async def api(api_factory: Any, kernel: Any) -> Any:
    client = await api_factory(kernel)
    resp = await client.post("/api/v1/workflows?autoActivate=true", json=HELLO)
    assert resp.status == 201
    return client


async def create(api: Any, body: dict[str, Any], workflow: str = "hello") -> Any:
    return await api.post(f"/api/v1/workflows/{workflow}/triggers", json=body)


async def test_crud_round_trip(api: Any) -> None:
    resp = await create(
        api,
        {
            "type": "test.doorbell",
            "name": "front door",
            "config": {"room": "hall", "code": "1234"},
            "activationCondition": "{{ trigger.pressed }}",
        },
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert resp.headers["Location"] == f"{BASE}/{created['id']}"
    assert created["type"] == "test.doorbell"
    assert created["name"] == "front door"
    assert created["enabled"] is True
    assert created["status"] == "enabled"
    assert created["pluginMissing"] is False
    assert created["plugin"]["name"].startswith("DoorbellPlugin")
    assert created["config"] == {"room": "hall", "code": "**********", "volume": 3}
    assert created["activationCondition"] == "{{ trigger.pressed }}"
    assert created["timeBased"] is False and created["nextFireAt"] is None
    assert created["stats"] == {"runs": 0, "notActivated": 0, "conditionErrors": 0, "skipped": 0}
    trigger_id = created["id"]

    listed = await (await api.get(BASE)).json()
    assert [t["id"] for t in listed["items"]] == [trigger_id]
    assert (await (await api.get(f"{BASE}/{trigger_id}")).json()) == created

    # PATCH: config is a merge patch, so the secret need not be sent again
    resp = await api.patch(
        f"{BASE}/{trigger_id}", json={"config": {"volume": 9}, "name": "back door"}
    )
    assert resp.status == 200, await resp.text()
    patched = await resp.json()
    assert patched["config"] == {"room": "hall", "code": "**********", "volume": 9}
    assert patched["name"] == "back door"

    # PUT: config replaced as a whole
    resp = await api.put(f"{BASE}/{trigger_id}", json={"config": {"room": "attic"}})
    assert resp.status == 200
    assert (await resp.json())["config"] == {"room": "attic", "code": None, "volume": 3}

    disabled = await (await api.post(f"{BASE}/{trigger_id}/disable")).json()
    assert disabled["enabled"] is False and disabled["status"] == "disabled"
    enabled = await (await api.post(f"{BASE}/{trigger_id}/enable")).json()
    assert enabled["enabled"] is True

    assert (await api.delete(f"{BASE}/{trigger_id}")).status == 204
    assert (await api.get(f"{BASE}/{trigger_id}")).status == 404
    assert (await api.get(BASE)).status == 200
    assert (await (await api.get(BASE)).json())["items"] == []


async def test_invalid_triggers_are_422_with_every_problem(api: Any, kernel: Any) -> None:
    resp = await create(
        api,
        {
            "type": "test.doorbell",
            "config": {"volume": "loud"},
            "activationCondition": "trigger.x ==",
            "colour": "red",
            "enabled": "yes",
        },
    )
    assert resp.status == 422
    body = await resp.json()
    assert body["code"] == "invalid_trigger"
    problems = {(p["path"], p["code"]) for p in body["details"]["problems"]}
    assert problems == {
        ("$.colour", "unknown_field"),
        ("$.enabled", "invalid_type"),
        ("$.config.room", "invalid_config"),
        ("$.config.volume", "invalid_config"),
        ("$.activationCondition", "invalid_condition"),
    }

    resp = await create(api, {"type": "no.such.type", "config": {}})
    assert resp.status == 422
    problem = (await resp.json())["details"]["problems"][0]
    assert problem["code"] == "unknown_trigger_type"
    assert "test.doorbell" in problem["message"]
    assert (await create(api, {"config": {}})).status == 422
    assert (await create(api, {"type": "test.doorbell", "config": []})).status == 422
    resp = await create(api, {"type": "schedule", "config": {"cron": "every day"}})
    assert resp.status == 422
    assert (await resp.json())["details"]["problems"][0]["path"] == "$.config.cron"

    # malformed JSON and non-objects
    resp = await api.post(BASE, data=b"{", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert (await api.post(BASE, json=[1])).status == 422
    # nothing was created by any of this
    assert (await (await api.get(BASE)).json())["items"] == []


async def test_bad_updates_change_nothing(api: Any) -> None:
    created = await (
        await create(api, {"type": "test.doorbell", "config": {"room": "hall"}})
    ).json()
    url = f"{BASE}/{created['id']}"
    for body in (
        {"config": {"volume": "x"}},
        {"type": "webhook"},
        {"activationCondition": "{% if %}"},
        {"activationCondition": ""},
        {"name": 5},
        {"surprise": 1},
    ):
        resp = await api.patch(url, json=body)
        assert resp.status == 422, body
    assert (await api.put(url, json={"name": "no config"})).status == 422
    assert (await (await api.get(url)).json()) == created


async def test_unknown_workflow_and_trigger_are_404(api: Any) -> None:
    resp = await api.get("/api/v1/workflows/nope/triggers")
    assert resp.status == 404
    assert (await resp.json())["code"] == "workflow_not_found"
    resp = await create(api, {"type": "test.doorbell", "config": {"room": "x"}}, "nope")
    assert resp.status == 404
    for method, suffix in (
        ("GET", ""),
        ("PATCH", ""),
        ("PUT", ""),
        ("DELETE", ""),
        ("POST", "/enable"),
        ("POST", "/disable"),
    ):
        resp = await api.request(method, f"{BASE}/missing{suffix}", json={"config": {}})
        assert resp.status == 404, (method, suffix)
        assert (await resp.json())["code"] == "trigger_not_found"


async def test_triggers_belong_to_their_workflow_and_tenant(api: Any) -> None:
    other = dict(HELLO, id="other")
    await api.post("/api/v1/workflows?autoActivate=true", json=other)
    created = await (
        await create(api, {"type": "test.doorbell", "config": {"room": "hall"}})
    ).json()
    assert (await api.get(f"/api/v1/workflows/other/triggers/{created['id']}")).status == 404
    resp = await api.get(BASE, headers={"X-Tenant-Id": "someone-else"})
    assert resp.status == 404


async def test_plugin_api_fire_trigger_state_and_start_execution(api: Any, kernel: Any) -> None:
    created = await (
        await create(
            api,
            {
                "type": "test.doorbell",
                "config": {"room": "hall"},
                "activationCondition": "trigger.pressed",
            },
        )
    ).json()
    plugin_api: PluginAPI = kernel.plugin_api
    handle = await plugin_api.get_trigger(created["id"])
    assert handle is not None
    assert (handle.type, handle.workflow_id, handle.enabled, handle.workflow_active) == (
        "test.doorbell",
        "hello",
        True,
        True,
    )
    assert handle.config.room == "hall"
    assert await plugin_api.get_trigger("nope") is None

    no = await plugin_api.fire_trigger(handle, {"pressed": False})
    assert (no.outcome, no.activated, no.execution_id) == ("notActivated", False, None)
    yes = await plugin_api.fire_trigger(handle, {"pressed": True}, key="ring-1")
    again = await plugin_api.fire_trigger(handle, {"pressed": True}, key="ring-1")
    assert (yes.outcome, again.outcome) == ("started", "duplicate")
    assert yes.execution_id == again.execution_id
    run = await kernel.service.get_execution(yes.execution_id)
    assert run["trigger"] == {
        "pressed": True,
        "triggerId": created["id"],
        "triggerType": "test.doorbell",
    }
    assert run["requestId"] == f"trg:{created['id']}:ring-1"
    assert run["principal"] == f"trigger:{created['id']}"

    # the low-level path: a run counted as the trigger's, without the condition
    execution_id, was_created = await plugin_api.start_execution(
        "hello", trigger={"manual": True}, request_id="m-1", trigger_id=created["id"]
    )
    assert was_created
    manual = await kernel.service.get_execution(execution_id)
    assert manual["trigger"]["triggerId"] == created["id"]

    view = await (await api.get(f"{BASE}/{created['id']}")).json()
    assert view["stats"]["runs"] == 2
    assert view["stats"]["notActivated"] == 1

    # persistent per-trigger state
    assert await plugin_api.get_trigger_state(created["id"]) == {}
    await plugin_api.set_trigger_state(created["id"], {"cursor": 41, "seen": ["a"]})
    assert await plugin_api.get_trigger_state(created["id"]) == {"cursor": 41, "seen": ["a"]}
    with pytest.raises(NotFound):
        await plugin_api.get_trigger_state("nope")
    with pytest.raises(TypeError):
        await plugin_api.set_trigger_state(created["id"], {"when": object()})
    assert await plugin_api.get_trigger_state(created["id"]) == {"cursor": 41, "seen": ["a"]}

    # a disabled trigger refuses events; an inactive workflow is a 409
    await api.post(f"{BASE}/{created['id']}/disable")
    disabled = await plugin_api.get_trigger(created["id"])
    assert disabled is not None and not disabled.enabled
    with pytest.raises(NotFound):
        await plugin_api.fire_trigger(disabled, {"pressed": True})
    await api.post(f"{BASE}/{created['id']}/enable")
    await api.post("/api/v1/workflows", json=dict(HELLO, id="draft"))
    draft_trigger = await (
        await create(api, {"type": "test.doorbell", "config": {"room": "x"}}, "draft")
    ).json()
    draft = await plugin_api.get_trigger(draft_trigger["id"])
    assert draft is not None and not draft.workflow_active
    with pytest.raises(Conflict):
        await plugin_api.fire_trigger(draft, {"pressed": True})


async def test_deleting_a_trigger_keeps_its_runs(api: Any, kernel: Any) -> None:
    created = await (
        await create(api, {"type": "test.doorbell", "config": {"room": "hall"}})
    ).json()
    handle = await kernel.plugin_api.get_trigger(created["id"])
    result = await kernel.plugin_api.fire_trigger(handle, {})
    assert (await api.delete(f"{BASE}/{created['id']}")).status == 204
    assert (await api.get(f"/api/v1/executions/{result.execution_id}")).status == 200


SCHEDULED = {
    "id": "nightly",
    "displayName": "Nightly",
    "nodes": [{"id": "say", "actionType": "core.echo", "parameters": {"message": "night"}}],
}


async def test_missing_schedule_plugin_is_reported_not_fatal(
    kernel_factory: Any, api_factory: Any, fake_clock: Any
) -> None:
    full = await kernel_factory(clock=fake_clock)
    await full.service.apply(SCHEDULED)
    schedule = await full.triggers.create(
        "nightly", {"type": "schedule", "config": {"cron": "* * * * *"}}
    )
    webhook = await full.triggers.create("nightly", {"type": "webhook", "config": {}})
    assert schedule["nextFireAt"] == "2026-01-01T00:01:00Z"

    # the same database, with the schedule plugin "uninstalled" (not in the allow-list)
    reduced = await kernel_factory(
        clock=fake_clock, load_plugins="dataworkflows-echo,dataworkflows-webhook"
    )
    assert "schedule" not in reduced.plugins.triggers
    api = await api_factory(reduced)
    assert (await api.get("/health")).status == 200
    items = (await (await api.get("/api/v1/workflows/nightly/triggers")).json())["items"]
    by_id = {t["id"]: t for t in items}
    missing = by_id[schedule["id"]]
    assert missing["pluginMissing"] is True
    assert missing["status"] == "pluginMissing"
    assert missing["config"] is None  # cannot redact secrets without the schema
    assert missing["plugin"] is None and missing["nextFireAt"] is None
    assert "not installed" in missing["message"]
    assert by_id[webhook["id"]]["pluginMissing"] is False

    # its scheduler ignores the trigger instead of crashing; nothing fires
    fake_clock.advance(minutes=5)
    report = await reduced.scheduler.tick()
    assert (report.processed, report.started, report.errors) == (0, 0, 0)
    assert await reduced.plugin_api.get_trigger(schedule["id"]) is None

    url = f"/api/v1/workflows/nightly/triggers/{schedule['id']}"
    resp = await api.patch(url, json={"config": {"cron": "0 * * * *"}})
    assert resp.status == 422
    assert (await resp.json())["details"]["problems"][0]["code"] == "plugin_missing"
    assert (await (await api.post(url + "/disable")).json())["enabled"] is False
    assert (await (await api.post(url + "/enable")).json())["enabled"] is True

    # creating one of the missing type is refused
    resp = await api.post(
        "/api/v1/workflows/nightly/triggers",
        json={"type": "schedule", "config": {"cron": "* * * * *"}},
    )
    assert resp.status == 422

    # a kernel with no plugins at all starts and lists the triggers too
    bare = await kernel_factory(entrypoints=False)
    assert all(t["pluginMissing"] for t in (await bare.triggers.list("nightly"))["items"])

    assert (await api.delete(url)).status == 204
