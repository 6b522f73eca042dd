"""``POST /api/v1/commands``: an action or a workflow run by name through the queue, its
correlation id on the run and on its one terminal event; idempotency; bad commands change
nothing (docs/api.md, "Commands")."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, SecretStr
from sqlalchemy import func, select

from dataworkflows import Action, ActionContext, ActionResult, hookimpl
from dataworkflows.db.lifecycle_models import idempotency_keys, workflow_audit_log
from dataworkflows.db.models import (
    execution_events,
    workflow_definitions,
    workflow_executions,
    workflows,
)
from dataworkflows.events import TERMINAL_RUN_EVENTS

URL = "/api/v1/commands"
TABLES = (
    workflows,
    workflow_definitions,
    workflow_executions,
    execution_events,
    workflow_audit_log,
    idempotency_keys,
)


class TokenParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: SecretStr
    note: str = ""


class UseToken(Action):
    type = "test.use-token"
    title = "Takes a secret parameter"
    Params = TokenParams

    async def run(self, ctx: ActionContext, params: TokenParams) -> ActionResult:
        return ActionResult.succeeded({})  # pragma: no cover - never run by a command


class Observer:
    """Records what ``on_run_event`` observers receive, and offers a secret action."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(UseToken)

    @hookimpl
    def on_run_event(self, event: Any) -> None:
        self.events.append(event)

    def terminal(self, execution_id: str) -> list[Any]:
        return [
            e
            for e in self.events
            if e.execution_id == execution_id and e.type in TERMINAL_RUN_EVENTS
        ]


@pytest.fixture
async def setup(kernel_factory: Any, api_factory: Any) -> tuple[Any, Any, Observer]:
    observer = Observer()
    kernel = await kernel_factory(plugins=[observer])
    return kernel, await api_factory(kernel), observer


def echo(message: Any = "hi", **more: Any) -> dict[str, Any]:
    return {"actionType": "core.echo", "parameters": {"message": message, **more}}


async def post(api: Any, body: Any, **headers: str) -> tuple[int, Any, Any]:
    resp = await api.post(URL, json=body, headers=headers)
    return resp.status, await resp.json(), resp.headers


async def finished(kernel: Any, api: Any, answer: dict[str, Any]) -> dict[str, Any]:
    await kernel.ledger.wait_until_final(uuid.UUID(answer["executionId"]), timeout=30)
    return await (await api.get(answer["statusUrl"])).json()


async def terminal_events(api: Any, answer: dict[str, Any]) -> list[dict[str, Any]]:
    page = await (await api.get(answer["eventsUrl"] + "?limit=200")).json()
    ends = {str(t) for t in TERMINAL_RUN_EVENTS}
    return [e for e in page["items"] if e["type"] in ends]


async def counts(kernel: Any) -> dict[str, int]:
    async with kernel.db.connect() as conn:
        return {
            t.name: (await conn.execute(select(func.count()).select_from(t))).scalar_one()
            for t in TABLES
        }


async def test_an_action_command_ends_in_one_event_with_its_correlation_id(setup):
    kernel, api, observer = setup
    body = {"command": "action.run", "correlationId": "order-1042", "payload": echo([1, "{{ x }}"])}
    status, answer, headers = await post(api, body, **{"Correlation-Id": "transport-7"})
    assert status == 202, answer
    assert answer["command"] == "action.run"
    assert answer["correlationId"] == headers["Correlation-Id"] == "order-1042"  # body wins
    assert answer["workflowId"].startswith("~command.core.echo.")
    assert headers["Location"] == answer["statusUrl"]
    assert answer["eventsUrl"] == answer["statusUrl"] + "/events"
    run = await finished(kernel, api, answer)
    assert (run["status"], run["correlationId"], run["testRun"]) == (
        "Succeeded",
        "order-1042",
        False,
    )
    [step] = run["actions"]
    assert step["actionType"] == "core.echo"
    assert step["outputs"] == {"echo": [1, "{{ x }}"]}  # data, never rendered as a template
    ends = await terminal_events(api, answer)
    assert [(e["type"], e["payload"]["correlationId"]) for e in ends] == [
        ("RunSucceeded", "order-1042")
    ]
    [seen] = observer.terminal(answer["executionId"])
    assert seen.payload["correlationId"] == "order-1042"


async def test_a_workflow_command_runs_the_published_version(setup, simple_echo):
    kernel, api, _ = setup
    await api.post("/api/v1/workflows?autoActivate=true", json=simple_echo)
    payload = {"workflowId": "simple-echo", "trigger": {"userId": "u-1"}}
    # no correlationId in the body: the header's
    status, answer, headers = await post(
        api, {"command": "workflow.run", "payload": payload}, **{"Correlation-Id": "req-9"}
    )
    assert status == 202 and answer["correlationId"] == headers["Correlation-Id"] == "req-9"
    assert answer["workflowId"] == "simple-echo"
    run = await finished(kernel, api, answer)
    assert run["status"] == "Succeeded" and run["trigger"] == {"userId": "u-1"}
    assert [e["payload"]["correlationId"] for e in await terminal_events(api, answer)] == ["req-9"]
    # neither: a new one, the same in the body, the header and the run
    status, answer, headers = await post(api, {"command": "workflow.run", "payload": payload})
    assert re.fullmatch(r"[0-9a-f]{32}", answer["correlationId"])
    assert headers["Correlation-Id"] == answer["correlationId"]
    run = await finished(kernel, api, answer)
    assert run["correlationId"] == answer["correlationId"]


async def test_the_same_idempotency_key_gives_the_same_answer_and_one_run(setup):
    kernel, api, _ = setup
    body = {"command": "action.run", "correlationId": "c-1", "payload": echo()}
    key = {"Idempotency-Key": "cmd-1"}
    status, first, _ = await post(api, body, **key)
    assert status == 202
    run = await finished(kernel, api, first)
    before = await counts(kernel)
    status, again, headers = await post(api, body, **key)
    assert (status, again, headers["Idempotent-Replayed"]) == (202, first, "true")
    status, error, _ = await post(api, {**body, "correlationId": "c-2"}, **key)
    assert (status, error["code"]) == (422, "idempotency_key_reused")
    assert await counts(kernel) == before
    assert run["requestId"] == "idem:cmd-1"  # a lost stored answer still finds this run
    assert len(await terminal_events(api, first)) == 1


async def test_a_repeated_request_id_returns_the_first_run_and_its_correlation_id(setup):
    kernel, api, _ = setup
    payload = {**echo(), "requestId": "r-1"}
    _, first, _ = await post(
        api, {"command": "action.run", "correlationId": "a", "payload": payload}
    )
    await finished(kernel, api, first)
    before = await counts(kernel)
    status, again, headers = await post(
        api, {"command": "action.run", "correlationId": "b", "payload": payload}
    )
    assert status == 202 and again["executionId"] == first["executionId"]
    assert again["correlationId"] == headers["Correlation-Id"] == "a"  # what its events carry
    assert await counts(kernel) == before
    other = {**echo("other"), "requestId": "r-1"}
    status, error, _ = await post(api, {"command": "action.run", "payload": other})
    assert (status, error["code"]) == (409, "request_id_reused")


async def test_an_unknown_command_lists_the_known_ones_and_changes_nothing(setup):
    kernel, api, _ = setup
    before = await counts(kernel)
    status, error, _ = await post(api, {"command": "Contacts.Upsert.v1", "payload": {}})
    assert status == 422 and error["code"] == "unknown_command"
    assert error["details"] == {
        "command": "Contacts.Upsert.v1",
        "knownCommands": ["action.run", "workflow.run"],
    }
    assert "action.run" in error["message"] and "workflow.run" in error["message"]
    assert await counts(kernel) == before


def _bad(command: str, payload: Any, **extra: Any) -> dict[str, Any]:
    return {"command": command, "payload": payload, **extra}


BAD = [
    ([], 422, "invalid_request"),
    ({"command": "action.run", "payload": echo(), "actor": "u"}, 422, "invalid_request"),
    ({"payload": echo()}, 422, "unknown_command"),
    ({"command": ["action.run"], "payload": echo()}, 422, "unknown_command"),
    ({"command": "action.run", "payload": {"actionType": {"a": 1}}}, 422, "unknown_action_type"),
    (_bad("workflow.run", {"workflowId": ["simple-echo"]}), 422, "invalid_request"),
    (_bad("action.run", echo(), correlationId="has space"), 422, "invalid_request"),
    (_bad("action.run", echo(), correlationId=12), 422, "invalid_request"),
    (_bad("action.run", echo(), correlationId="x" * 201), 422, "invalid_request"),
    (_bad("action.run", "core.echo"), 422, "invalid_request"),
    (_bad("action.run", {"actionType": "core.nope"}), 422, "unknown_action_type"),
    (_bad("action.run", {"parameters": {}}), 422, "unknown_action_type"),
    (_bad("action.run", {**echo(), "retry": {}}), 422, "invalid_request"),
    (_bad("action.run", {"actionType": "core.echo", "parameters": []}), 422, "invalid_request"),
    (_bad("action.run", echo(failAttempts=-1)), 422, "invalid_parameters"),
    (_bad("action.run", echo(mesage="typo")), 422, "invalid_parameters"),
    (_bad("action.run", {**echo(), "requestId": ""}), 422, "invalid_request"),
    (
        _bad(
            "action.run", {"actionType": "test.use-token", "parameters": {"token": "s3cr3t-value"}}
        ),
        422,
        "invalid_parameters",
    ),
    (_bad("workflow.run", {"workflowId": "missing"}), 404, "workflow_not_found"),
    (_bad("workflow.run", {"workflowId": "~command.core.echo.0"}), 404, "workflow_not_found"),
    (_bad("workflow.run", {}), 422, "invalid_request"),
    (_bad("workflow.run", {"workflowId": "draft", "trigger": [1]}), 422, "invalid_request"),
    (_bad("workflow.run", {"workflowId": "draft"}), 409, "workflow_not_active"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD)
async def test_a_bad_command_is_rejected_with_specifics_and_changes_nothing(
    setup, body, status, code
):
    kernel, api, _ = setup
    draft = {"id": "draft", "displayName": "D", "nodes": [{"id": "a", "actionType": "core.echo"}]}
    assert (await api.post("/api/v1/workflows", json=draft)).status == 201
    before = await counts(kernel)
    got, error, _ = await post(api, body, **{"Idempotency-Key": "bad-1"})
    assert (got, error["code"]) == (status, code), error
    assert set(error) <= {"code", "message", "details"} and error["message"]
    assert await counts(kernel) == before


async def test_parameter_problems_and_known_types_are_listed(setup):
    _, api, _ = setup
    _, error, _ = await post(api, _bad("action.run", echo(failAttempts=-1, mesage="x")))
    paths = {p["path"] for p in error["details"]["problems"]}
    assert paths == {"$.payload.parameters.failAttempts", "$.payload.parameters.mesage"}
    _, error, _ = await post(api, _bad("action.run", {"actionType": "core.nope"}))
    assert "core.echo" in error["details"]["installed"] and "core.echo" in error["message"]
    token = {"actionType": "test.use-token", "parameters": {"token": "s3cr3t-value"}}
    _, error, _ = await post(api, _bad("action.run", token))
    assert error["details"]["problems"][0]["path"] == "$.payload.parameters.token"
    assert error["details"]["problems"][0]["code"] == "secret_parameter"
    assert "s3cr3t-value" not in str(error)


async def test_command_workflows_are_per_tenant_hidden_and_versioned_by_parameter_names(setup):
    kernel, api, _ = setup
    answers = []
    for tenant, payload in [
        ("acme", echo("a")),
        ("acme", echo("b")),  # same names: same version
        ("acme", {"actionType": "core.echo", "parameters": {}}),  # other names: version 2
        ("other", echo("c")),
    ]:
        status, answer, _ = await post(
            api, {"command": "action.run", "payload": payload}, **{"X-Tenant-Id": tenant}
        )
        assert status == 202, answer
        answers.append(answer)
    for answer in answers:
        await kernel.ledger.wait_until_final(uuid.UUID(answer["executionId"]), timeout=30)
    acme, other = answers[0]["workflowId"], answers[3]["workflowId"]
    assert answers[1]["workflowId"] == answers[2]["workflowId"] == acme != other
    async with kernel.db.connect() as conn:
        versions = (
            await conn.execute(
                select(workflow_definitions.c.workflow_id, func.count())
                .group_by(workflow_definitions.c.workflow_id)
                .order_by(workflow_definitions.c.workflow_id)
            )
        ).all()
    assert sorted(versions) == sorted([(acme, 2), (other, 1)])
    acme_headers = {"X-Tenant-Id": "acme"}
    listed = await (await api.get("/api/v1/workflows", headers=acme_headers)).json()
    assert listed["items"] == []  # kernel-owned: not listed, not addressable
    assert (await api.get(f"/api/v1/workflows/{acme}", headers=acme_headers)).status == 404
    runs = await (await api.get("/api/v1/executions", headers=acme_headers)).json()
    assert {r["workflowId"] for r in runs["items"]} == {acme}  # its runs are ordinary runs
    foreign = await api.get(answers[0]["statusUrl"], headers={"X-Tenant-Id": "other"})
    assert foreign.status == 404


async def test_a_failing_command_beside_healthy_ones_affects_none_of_them(setup):
    kernel, api, _ = setup
    bodies = [
        {"command": "action.run", "correlationId": f"ok-{i}", "payload": echo(i)} for i in range(6)
    ]
    bodies.insert(
        2,
        {
            "command": "action.run",
            "correlationId": "poison",
            "payload": echo(failAlways=True, failureKind="permanent"),
        },
    )
    bodies.insert(4, {"command": "action.run", "payload": echo(failAttempts="x")})  # 422
    results = await asyncio.gather(*(post(api, b) for b in bodies))
    assert [s for s, _, _ in results] == [202, 202, 202, 202, 422, 202, 202, 202]
    for status, answer, _ in results:
        if status != 202:
            continue
        run = await finished(kernel, api, answer)
        expected = "Failed" if answer["correlationId"] == "poison" else "Succeeded"
        assert run["status"] == expected, run
        ends = await terminal_events(api, answer)
        assert [e["payload"]["correlationId"] for e in ends] == [answer["correlationId"]]


async def test_a_pending_command_cancelled_ends_with_its_correlation_id(api_factory, kernel):
    api = await api_factory(kernel, run_worker=False)  # the run stays Pending
    _, answer, _ = await post(
        api, {"command": "action.run", "correlationId": "c-x", "payload": echo()}
    )
    assert answer["status"] == "Pending"
    resp = await api.post(f"/api/v1/executions/{answer['executionId']}/cancel")
    assert resp.status == 200
    ends = await terminal_events(api, answer)
    assert [(e["type"], e["payload"]["correlationId"]) for e in ends] == [("RunCancelled", "c-x")]


def test_the_cli_queues_a_command_or_runs_it_here(cli):
    payload = json.dumps(echo("from the cli"))
    args = ("command", "action.run", "--payload", payload, "--correlation-id", "cli-1")
    result = cli(*args, "--wait")
    assert result.exit_code == 0, result.output
    assert '"correlationId": "cli-1"' in result.output
    assert '{"echo": "from the cli"}' in result.output and "Succeeded" in result.output
    queued = cli("command", "action.run", "--payload", payload)  # for a server's worker
    assert queued.exit_code == 0 and '"status": "Pending"' in queued.output
    unknown = cli("command", "Contacts.Upsert.v1")
    assert unknown.exit_code == 1
    assert "[unknown_command]" in unknown.output and "workflow.run" in unknown.output


def test_rerunning_a_command_run_keeps_its_version(cli):
    for parameters in ({"failAttempts": 0}, {"message": "b"}):  # versions 1 and 2
        payload = json.dumps({"actionType": "core.echo", "parameters": parameters})
        result = cli("command", "action.run", "--payload", payload, "--wait")
        assert result.exit_code == 0, result.output
    second = json.loads(result.output[: result.output.index("\nrun ")])
    rerun = cli("runs", "rerun", second["executionId"])
    assert rerun.exit_code == 0, rerun.output
    new_id = re.search(r"run (\S+) queued", rerun.output).group(1)
    shown = json.loads(cli("runs", "show", new_id, "--json").output)
    # version 1 would read a parameter this trigger does not have
    assert (shown["workflowVersion"], shown["trigger"]["parameters"]) == (2, {"message": "b"})
