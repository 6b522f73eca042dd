"""Graph semantics of the conductor: edges, conditions, joins, skips, retries, timeouts,
fail-fast, onFailure, cancellation and resuming from the ledger. Every test reads the
outcome from the real ledger on every backend."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

import dataworkflows_echo
from dataworkflows import Action, ActionContext, ActionResult, hookimpl
from dataworkflows.ledger.run_ledger import RunFinish, StaleRunError, StepRecord

# -- a test plugin ------------------------------------------------------------------------


class Gate(Action):
    """Signals that it started, then waits until released or cancelled."""

    type = "test.gate"
    started: ClassVar[dict[str, asyncio.Event]] = {}
    released: ClassVar[dict[str, asyncio.Event]] = {}
    saw_cancel: ClassVar[dict[str, bool]] = {}

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        key: str

    @classmethod
    def event(cls, table: dict[str, asyncio.Event], key: str) -> asyncio.Event:
        return table.setdefault(key, asyncio.Event())

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        self.event(self.started, params.key).set()
        released = asyncio.ensure_future(self.event(self.released, params.key).wait())
        cancelled = asyncio.ensure_future(ctx.cancelled.wait())
        try:
            await asyncio.wait([released, cancelled], return_when=asyncio.FIRST_COMPLETED)
        finally:
            released.cancel()
            cancelled.cancel()
            self.saw_cancel[params.key] = ctx.cancelled.is_set()
        return ActionResult.succeeded({"released": params.key})


class Keyed(Action):
    """Fails retriably on its first ``failAttempts`` attempts; reports key and attempt."""

    type = "test.keyed"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        failAttempts: int = 0
        retryAfter: float | None = None

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        if ctx.attempt <= params.failAttempts:
            return ActionResult.retriable(
                "not yet",
                details={"key": ctx.idempotency_key},
                retry_after=params.retryAfter,
            )
        return ActionResult.succeeded({"key": ctx.idempotency_key, "attempt": ctx.attempt})


class GraphTestPlugin:
    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(Gate)
        register(Keyed)


@pytest.fixture
async def graph_kernel(kernel_factory: Any) -> Any:
    return await kernel_factory(
        plugins=[GraphTestPlugin(), dataworkflows_echo],
        entrypoints=False,
        default_retry_initial_delay=0.01,
        default_retry_max_delay=0.05,
    )


# -- helpers ------------------------------------------------------------------------------


def echo(node_id: str, *edges: dict[str, Any], **parameters: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"id": node_id, "actionType": "core.echo", "parameters": parameters}
    if edges:
        node["edges"] = list(edges)
    return node


def to(target: str, when: str = "success", condition: str | None = None) -> dict[str, Any]:
    edge = {"targetNode": target, "when": when}
    if condition is not None:
        edge["condition"] = condition
    return edge


def workflow(workflow_id: str, *nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": workflow_id,
        "startNode": nodes[0]["id"],
        "nodes": list(nodes),
        **extra,
    }


def statuses(run: dict[str, Any]) -> dict[str, str]:
    return {a["nodeId"]: a["status"] for a in run["actions"]}


def rows(run: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(a["nodeId"], a["attempt"], a["status"]) for a in run["actions"]]


async def event_types(kernel: Any, run: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(e["type"], e["nodeId"]) for e in await kernel.service.get_events(run["id"])]


# -- edges, conditions, joins -------------------------------------------------------------


async def test_join_runs_when_one_incoming_edge_fired(graph_kernel, run_workflow):
    definition = workflow(
        "join-one",
        echo("a", to("b", condition="trigger.go_b"), to("c"), message="a"),
        echo("b", to("d"), message="b"),
        echo("c", to("d"), message="c"),
        echo("d", message="{{ nodes.c.outputs.echo }}+{{ nodes.b.status }}"),
    )
    run = await run_workflow(graph_kernel, definition, trigger={"go_b": False})
    assert run["status"] == "Succeeded"
    assert statuses(run) == {"a": "Succeeded", "b": "Skipped", "c": "Succeeded", "d": "Succeeded"}
    assert run["actions"][-1]["outputs"] == {"echo": "c+Skipped"}


async def test_skipping_propagates_down_a_dead_path(graph_kernel, run_workflow):
    definition = workflow(
        "dead-path",
        echo("a", to("b", condition="trigger.n > 10"), to("x"), message="a"),
        echo("b", to("c"), message="b"),
        echo("c", to("d"), to("e", when="failure"), message="c"),
        echo("d", message="d"),
        echo("e", message="e"),
        echo("x", message="x"),
    )
    run = await run_workflow(graph_kernel, definition, trigger={"n": 3})
    assert run["status"] == "Succeeded"
    assert statuses(run) == {
        "a": "Succeeded",
        "b": "Skipped",
        "c": "Skipped",
        "d": "Skipped",
        "e": "Skipped",
        "x": "Succeeded",
    }
    skipped = [a for a in run["actions"] if a["status"] == "Skipped"]
    assert all(a["attempt"] == 1 and a["parameters"] is None for a in skipped)


async def test_join_whose_incoming_edges_all_died_is_skipped(graph_kernel, run_workflow):
    definition = workflow(
        "all-dead",
        echo("a", to("b", condition="false"), to("c", condition="trigger.n == 0"), message="a"),
        echo("b", to("j"), message="b"),
        echo("c", to("j"), message="c"),
        echo("j", to("after"), message="j"),
        echo("after", message="after"),
    )
    run = await run_workflow(graph_kernel, definition, trigger={"n": 1})
    assert run["status"] == "Succeeded"
    assert statuses(run) == {
        "a": "Succeeded",
        "b": "Skipped",
        "c": "Skipped",
        "j": "Skipped",
        "after": "Skipped",
    }
    # the run's end rides with the last skipped row: the last two events
    assert (await event_types(graph_kernel, run))[-2:] == [
        ("StepSkipped", "after"),
        ("RunSucceeded", None),
    ]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("parallel", {"big": "Succeeded", "positive": "Succeeded", "other": "Succeeded"}),
        ("firstMatch", {"big": "Succeeded", "positive": "Skipped", "other": "Skipped"}),
    ],
)
async def test_route_policy(graph_kernel, run_workflow, policy, expected):
    definition = workflow(
        f"route-{policy}",
        echo(
            "a",
            to("big", condition="trigger.n > 100"),
            to("positive", condition="{{ trigger.n > 0 }}"),
            to("other"),
            message="a",
        ),
        echo("big", message="big"),
        echo("positive", message="positive"),
        echo("other", message="other"),
        routePolicy=policy,
    )
    run = await run_workflow(graph_kernel, definition, trigger={"n": 500})
    assert run["status"] == "Succeeded"
    assert {k: v for k, v in statuses(run).items() if k != "a"} == expected


async def test_first_match_falls_through_to_the_edge_without_condition(graph_kernel, run_workflow):
    definition = workflow(
        "else-branch",
        echo("a", to("big", condition="trigger.n > 100"), to("other"), message="a"),
        echo("big", message="big"),
        echo("other", message="other"),
        routePolicy="firstMatch",
    )
    run = await run_workflow(graph_kernel, definition, trigger={"n": 5})
    assert statuses(run) == {"a": "Succeeded", "big": "Skipped", "other": "Succeeded"}


async def test_failure_and_always_edges(graph_kernel, run_workflow):
    definition = workflow(
        "handled",
        echo(
            "a",
            to("on-ok"),
            to("on-error", when="failure", condition="nodes.a.error.code == 'simulated_failure'"),
            to("finally", when="always"),
            failAlways=True,
            failureKind="permanent",
        ),
        echo("on-ok", message="ok"),
        echo("on-error", message="{{ nodes.a.error.message }}"),
        echo("finally", message="{{ nodes.a.status }}"),
    )
    run = await run_workflow(graph_kernel, definition)
    assert run["status"] == "Succeeded", "a failure a fired edge handles does not fail the run"
    assert statuses(run) == {
        "a": "Failed",
        "on-ok": "Skipped",
        "on-error": "Succeeded",
        "finally": "Succeeded",
    }
    outputs = {a["nodeId"]: a["outputs"] for a in run["actions"]}
    assert outputs["on-error"] == {"echo": "simulated failure (attempt 1)"}
    assert outputs["finally"] == {"echo": "Failed"}


async def test_failure_edge_whose_condition_is_false_does_not_handle_the_failure(
    graph_kernel, run_workflow
):
    definition = workflow(
        "unhandled",
        echo(
            "a",
            to("on-error", when="failure", condition="nodes.a.error.code == 'rate_limited'"),
            failAlways=True,
            failureKind="permanent",
        ),
        echo("on-error", message="never"),
    )
    run = await run_workflow(graph_kernel, definition)
    assert run["status"] == "Failed"
    assert rows(run) == [("a", 1, "Failed")]
    assert run["error"]["nodeId"] == "a" and run["error"]["code"] == "simulated_failure"


async def test_a_condition_that_cannot_be_evaluated_fails_the_run(graph_kernel, run_workflow):
    definition = workflow(
        "bad-condition",
        echo(
            "a",
            to("b", condition="nodes.a.outputs.missing > 1"),
            to("c", when="failure"),
            message="a",
        ),
        echo("b", message="b"),
        echo("c", message="c"),
    )
    run = await run_workflow(graph_kernel, definition)
    assert run["status"] == "Failed"
    # the action succeeded (its outputs are kept) but routing failed: a permanent failure
    # that no failure edge can handle
    assert rows(run) == [("a", 1, "Failed")]
    (a,) = run["actions"]
    assert a["outputs"] == {"echo": "a"}
    assert a["error"]["code"] == "condition_error"
    assert a["error"]["details"] == {"path": "$.nodes[0].edges[0].condition"}
    assert "missing" in a["error"]["message"]
    assert run["error"]["code"] == "condition_error" and run["error"]["nodeId"] == "a"


# -- retries ------------------------------------------------------------------------------


async def test_permanent_failure_is_not_retried(graph_kernel, run_workflow):
    definition = workflow(
        "permanent",
        echo("a", failAlways=True, failureKind="permanent"),
    )
    definition["nodes"][0]["retry"] = {"maxAttempts": 5}
    run = await run_workflow(graph_kernel, definition)
    assert rows(run) == [("a", 1, "Failed")]


async def test_engine_default_retry_policy_applies(kernel_factory, run_workflow):
    kernel = await kernel_factory(
        plugins=[dataworkflows_echo],
        entrypoints=False,
        default_retry_max_attempts=4,
        default_retry_initial_delay=0.001,
        default_retry_jitter=False,
    )
    definition = workflow("default-retry", echo("a", failAlways=True))
    run = await run_workflow(kernel, definition)
    assert rows(run) == [
        ("a", 1, "RetriableFailure"),
        ("a", 2, "RetriableFailure"),
        ("a", 3, "RetriableFailure"),
        ("a", 4, "Failed"),
    ]
    # a node's own policy overrides the default field by field
    definition = workflow("own-retry", echo("a", failAlways=True))
    definition["nodes"][0]["retry"] = {"maxAttempts": 2}
    run = await run_workflow(kernel, definition)
    assert rows(run) == [("a", 1, "RetriableFailure"), ("a", 2, "Failed")]


async def test_idempotency_key_is_the_same_for_every_attempt(graph_kernel, run_workflow):
    definition = workflow(
        "keys", {"id": "k", "actionType": "test.keyed", "parameters": {"failAttempts": 2}}
    )
    run = await run_workflow(graph_kernel, definition)
    assert rows(run) == [
        ("k", 1, "RetriableFailure"),
        ("k", 2, "RetriableFailure"),
        ("k", 3, "Succeeded"),
    ]
    key = f"{run['id']}:k"
    assert [a["error"]["details"]["key"] for a in run["actions"][:2]] == [key, key]
    assert run["actions"][2]["outputs"] == {"key": key, "attempt": 3}


async def test_retry_after_is_a_minimum_delay(graph_kernel, run_workflow):
    definition = workflow(
        "retry-after",
        {
            "id": "k",
            "actionType": "test.keyed",
            "parameters": {"failAttempts": 1, "retryAfter": 0.3},
            "retry": {"initialDelay": 0.001, "jitter": False},
        },
    )
    run = await run_workflow(graph_kernel, definition)
    assert rows(run) == [("k", 1, "RetriableFailure"), ("k", 2, "Succeeded")]
    first, second = run["actions"]
    from datetime import datetime

    gap = datetime.fromisoformat(second["startedAt"]) - datetime.fromisoformat(first["endedAt"])
    assert gap.total_seconds() >= 0.3


@pytest.mark.parametrize(("rerender", "seen"), [(False, [1, 1, 1]), (True, [1, 2, 3])])
async def test_rerender_on_retry(graph_kernel, run_workflow, rerender, seen):
    node = echo("a", message="attempt {{ attempt }}", failAttempts=2)
    node["rerenderOnRetry"] = rerender
    run = await run_workflow(graph_kernel, workflow(f"rerender-{rerender}", node))
    assert run["status"] == "Succeeded"
    assert [a["parameters"]["message"] for a in run["actions"]] == [f"attempt {n}" for n in seen]


async def test_timed_out_attempts_are_recorded_and_retried(graph_kernel, run_workflow):
    node = echo("slow", message="done", delayMs="{{ 5000 if attempt == 1 else 0 }}")
    node.update(timeout=0.1, rerenderOnRetry=True, retry={"maxAttempts": 2})
    run = await run_workflow(graph_kernel, workflow("timeouts", node))
    assert run["status"] == "Succeeded"
    assert rows(run) == [("slow", 1, "TimedOut"), ("slow", 2, "Succeeded")]
    assert run["actions"][0]["error"] == {
        "code": "timeout",
        "message": "the action did not finish within 0.1 s",
    }


async def test_a_final_timeout_fails_the_run(graph_kernel, run_workflow):
    node = echo("slow", delayMs=5000)
    node.update(timeout=0.05, retry={"maxAttempts": 2})
    run = await run_workflow(graph_kernel, workflow("timeout-final", node))
    assert run["status"] == "Failed"
    assert rows(run) == [("slow", 1, "TimedOut"), ("slow", 2, "TimedOut")]
    assert run["error"]["code"] == "timeout" and run["error"]["attempt"] == 2


# -- fail-fast, onFailure, workflow timeout, cancel ---------------------------------------


async def test_fail_fast_cancels_siblings_then_runs_on_failure(graph_kernel, run_workflow):
    key = uuid.uuid4().hex
    definition = workflow(
        "fail-fast",
        echo("start", to("wait"), to("retrying"), to("bad"), message="go"),
        {
            "id": "wait",
            "actionType": "test.gate",
            "parameters": {"key": key},
            "edges": [to("never")],
        },
        {
            "id": "retrying",
            "actionType": "core.echo",
            "parameters": {"failAlways": True},
            "retry": {"maxAttempts": 5, "initialDelay": 30, "maxDelay": 30, "jitter": False},
        },
        echo("bad", failAlways=True, failureKind="permanent", failMessage="boom", delayMs=100),
        echo("never", message="never"),
        echo(
            "cleanup",
            message="{{ error.nodeId }}: {{ error.message }} / {{ nodes.start.outputs.echo }}",
        ),
        onFailure="cleanup",
    )
    run = await run_workflow(graph_kernel, definition)
    assert run["status"] == "Failed"
    assert run["error"] == {
        "nodeId": "bad",
        "attempt": 1,
        "code": "simulated_failure",
        "message": "boom (attempt 1)",
    }
    assert rows(run)[0] == ("start", 1, "Succeeded")
    assert sorted(rows(run)[1:]) == sorted(
        [
            ("retrying", 1, "RetriableFailure"),
            ("bad", 1, "Failed"),
            ("wait", 1, "Cancelled"),
            # it was waiting for its second attempt: that one is recorded cancelled
            ("retrying", 2, "Cancelled"),
            ("cleanup", 1, "Succeeded"),
        ]
    )
    by = {(a["nodeId"], a["attempt"]): a for a in run["actions"]}
    assert by[("wait", 1)]["error"] == {
        "code": "cancelled",
        "message": "cancelled: node 'bad' failed",
        "reason": "node_failed",
    }
    assert by[("wait", 1)]["parameters"] == {"key": key}
    assert Gate.saw_cancel[key] is True, "the action saw ctx.cancelled"
    assert by[("cleanup", 1)]["outputs"] == {"echo": "bad: boom (attempt 1) / go"}
    types = await event_types(graph_kernel, run)
    # the failing node, then the cancelled ones, then onFailure with the run's end
    assert types.index(("StepFailed", "bad")) < types.index(("StepCancelled", "wait"))
    assert types[-2:] == [("StepSucceeded", "cleanup"), ("RunFailed", None)]
    assert "never" not in statuses(run)


async def test_linear_definition_with_on_failure_node(graph_kernel, run_workflow):
    definition = {
        "id": "linear-on-failure",
        "displayName": "linear",
        "onFailure": "alert",
        "nodes": [
            echo("a", message="a"),
            echo("alert", message="alert: {{ error.code }}"),
            echo("b", failAlways=True, failureKind="permanent"),
            echo("c", message="c"),
        ],
    }
    run = await run_workflow(graph_kernel, definition)
    assert rows(run) == [("a", 1, "Succeeded"), ("b", 1, "Failed"), ("alert", 1, "Succeeded")]
    assert run["actions"][-1]["outputs"] == {"echo": "alert: simulated_failure"}
    # and when nothing fails, the onFailure node does not run
    ok = dict(definition, id="linear-ok", nodes=[*definition["nodes"][:2], echo("b", message="b")])
    run = await run_workflow(graph_kernel, ok)
    assert rows(run) == [("a", 1, "Succeeded"), ("b", 1, "Succeeded")]


async def test_workflow_timeout(graph_kernel, run_workflow):
    key = uuid.uuid4().hex
    definition = workflow(
        "wf-timeout",
        echo("a", to("wait"), message="a"),
        {"id": "wait", "actionType": "test.gate", "parameters": {"key": key}},
        echo("alert", message="{{ error.code }}"),
        timeout=0.3,
        onFailure="alert",
    )
    run = await run_workflow(graph_kernel, definition)
    assert run["status"] == "Failed"
    assert run["error"] == {
        "code": "workflow_timeout",
        "message": "the run did not finish within its timeout of 0.3 s",
    }
    assert rows(run) == [("a", 1, "Succeeded"), ("wait", 1, "Cancelled"), ("alert", 1, "Succeeded")]
    assert run["actions"][1]["error"]["reason"] == "workflow_timeout"
    assert run["actions"][2]["outputs"] == {"echo": "workflow_timeout"}


async def test_cancel_request_stops_the_run(graph_kernel):
    key = uuid.uuid4().hex
    definition = workflow(
        "cancel-me",
        echo("a", to("wait"), to("b"), message="a"),
        {"id": "wait", "actionType": "test.gate", "parameters": {"key": key}, "edges": [to("c")]},
        echo("b", message="b"),
        echo("c", message="c"),
        echo("alert", message="never"),
        onFailure="alert",
    )
    await graph_kernel.service.apply(definition)
    summary, _ = await graph_kernel.service.execute("cancel-me")
    graph_kernel.start_worker()
    await asyncio.wait_for(Gate.event(Gate.started, key).wait(), 10)
    execution_id = uuid.UUID(summary["executionId"])
    # what the API and the CLI call: the ledger records the request, the worker stops it
    answer = await graph_kernel.service.cancel(summary["executionId"])
    assert (answer["status"], answer["cancelRequested"]) == ("Running", True)
    assert await graph_kernel.ledger.wait_until_final(execution_id, 10) == "Cancelled"
    run = await graph_kernel.service.get_execution(summary["executionId"])
    assert statuses(run) == {"a": "Succeeded", "b": "Succeeded", "wait": "Cancelled"}
    assert run["error"]["code"] == "cancelled"


async def test_cancel_before_the_first_node_started(graph_kernel):
    definition = workflow("cancel-early", echo("a", to("b"), message="a"), echo("b", message="b"))
    run = await claim(graph_kernel, definition, {})
    run.cancel_requested.set()
    assert await graph_kernel.conductor.execute(run) == "Cancelled"
    result = await graph_kernel.service.get_execution(run.id_str)
    assert rows(result) == [("a", 1, "Cancelled")]
    assert result["actions"][0]["error"]["reason"] == "run_cancelled"


# -- resuming from the ledger -------------------------------------------------------------


async def claim(kernel: Any, definition: dict[str, Any], trigger: dict[str, Any]) -> Any:
    await kernel.service.apply(definition)
    await kernel.service.execute(definition["id"], trigger=trigger)
    run = await kernel.ledger.claim()
    assert run is not None
    return run


def record(node: str, attempt: int, status: str, **fields: Any) -> StepRecord:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "parameters": None,
        "outputs": None,
        "error": None,
        "started_at": now,
        "ended_at": now,
    }
    values.update(fields)
    return StepRecord(node, "core.echo", attempt, status, **values)


async def test_resume_continues_from_the_ledger(graph_kernel):
    definition = workflow(
        "resume",
        echo("a", to("b"), message="from a"),
        echo("b", to("c"), message="{{ nodes.a.outputs.echo }}", failAttempts=1),
        echo("c", message="{{ nodes.b.outputs.echo }}!"),
    )
    run = await claim(graph_kernel, definition, {})
    # a worker did a and the first attempt of b, then stopped
    await graph_kernel.ledger.record_step(
        run, record("a", 1, "Succeeded", outputs={"echo": "restored a"})
    )
    await graph_kernel.ledger.record_step(
        run,
        record("b", 1, "RetriableFailure", parameters={"message": "restored a", "failAttempts": 1}),
    )
    assert await graph_kernel.conductor.execute(run) == "Succeeded"
    result = await graph_kernel.service.get_execution(run.id_str)
    assert rows(result) == [
        ("a", 1, "Succeeded"),
        ("b", 1, "RetriableFailure"),
        ("b", 2, "Succeeded"),
        ("c", 1, "Succeeded"),
    ]
    # a was not run again; its recorded outputs reached the templates
    assert result["actions"][2]["outputs"] == {"echo": "restored a"}
    assert result["actions"][3]["outputs"] == {"echo": "restored a!"}
    events = await graph_kernel.service.get_events(run.id_str)
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))


async def test_resume_of_a_recovered_run_records_the_lost_attempt(graph_kernel):
    definition = workflow(
        "recovered",
        echo("a", to("b"), message="a"),
        {"id": "b", "actionType": "test.keyed", "parameters": {}},
    )
    run = await claim(graph_kernel, definition, {})
    await graph_kernel.ledger.record_step(run, record("a", 1, "Succeeded", outputs={"echo": "a"}))
    run.recovered = True  # as after a claim that took over an expired lease
    assert await graph_kernel.conductor.execute(run) == "Succeeded"
    result = await graph_kernel.service.get_execution(run.id_str)
    assert rows(result) == [
        ("a", 1, "Succeeded"),
        ("b", 1, "RetriableFailure"),
        ("b", 2, "Succeeded"),
    ]
    assert result["actions"][1]["error"]["code"] == "worker_lost"
    assert result["actions"][2]["outputs"] == {"key": f"{run.id}:b", "attempt": 2}


async def test_resume_while_failing_finishes_the_failure(graph_kernel):
    definition = workflow(
        "resume-failing",
        echo("a", to("b"), to("c"), message="a"),
        echo("b", failAlways=True, failureKind="permanent"),
        echo("c", message="c", failAttempts=1),
        echo("alert", message="{{ error.nodeId }}"),
        onFailure="alert",
    )
    run = await claim(graph_kernel, definition, {})
    for step in (
        record("a", 1, "Succeeded", outputs={"echo": "a"}),
        record("c", 1, "RetriableFailure"),
        record("b", 1, "Failed", error={"code": "simulated_failure", "message": "x"}),
    ):
        await graph_kernel.ledger.record_step(run, step)
    assert await graph_kernel.conductor.execute(run) == "Failed"
    result = await graph_kernel.service.get_execution(run.id_str)
    assert rows(result)[3:] == [("c", 2, "Cancelled"), ("alert", 1, "Succeeded")]
    assert result["error"]["nodeId"] == "b"
    assert result["actions"][-1]["outputs"] == {"echo": "b"}


async def test_resume_with_everything_recorded_only_ends_the_run(graph_kernel):
    definition = workflow("resume-done", echo("a", to("b"), message="a"), echo("b", message="b"))
    run = await claim(graph_kernel, definition, {})
    await graph_kernel.ledger.record_step(run, record("a", 1, "Succeeded", outputs={}))
    await graph_kernel.ledger.record_step(run, record("b", 1, "Succeeded", outputs={}))
    assert await graph_kernel.conductor.execute(run) == "Succeeded"
    result = await graph_kernel.service.get_execution(run.id_str)
    assert len(result["actions"]) == 2 and result["status"] == "Succeeded"


async def test_a_definition_that_cannot_be_loaded_ends_the_run_failed(kernel, simple_echo):
    """The end is written without any step row, fenced like every other write."""
    await kernel.service.create_workflow(simple_echo, auto_activate=True)
    summary, _ = await kernel.service.execute("simple-echo")
    (run,) = await kernel.ledger.claim_many("test-owner", 1)

    async def broken(workflow_id: str, version: int) -> Any:
        raise RuntimeError("the stored definition is unreadable")

    kernel.conductor.store.definition = broken  # type: ignore[method-assign]
    assert await kernel.conductor.execute(run) == "Failed"
    view = await kernel.service.get_execution(summary["executionId"])
    assert view["error"] == {
        "code": "definition_error",
        "message": "the stored definition is unreadable",
    }
    assert view["actions"] == []
    events = await kernel.service.get_events(summary["executionId"])
    assert [e["type"] for e in events] == ["RunQueued", "RunStarted", "RunFailed"]
    # a second end of the same claim is refused: the run is final
    with pytest.raises(StaleRunError):
        await kernel.ledger.finish(run, RunFinish("Succeeded"))
