"""Property-based test: random DAGs with random step outcomes, run by the real kernel, and
the conductor's invariants checked on the ledger:

* no node starts before every predecessor ended (its row is final, and ended first);
* each node runs at most once apart from retries (attempts 1..k, only the last final);
* a node is ``Skipped`` exactly when none of its incoming edges fired;
* the run's final status follows from the steps: ``Failed`` (with that node's error)
  exactly when some node failed and fired no edge; otherwise ``Succeeded`` with a final
  row for every node;
* after a failure, the ``onFailure`` node runs last.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dataworkflows_echo

BEHAVIOURS = ["ok"] * 6 + ["fail", "flaky", "exhaust"]
CONDITIONS: dict[str | None, Any] = {
    None: lambda flag: True,
    "true": lambda flag: True,
    "false": lambda flag: False,
    "trigger.flag": lambda flag: flag,
    "not trigger.flag": lambda flag: not flag,
}
FINAL = {"Succeeded", "Failed", "Skipped", "Cancelled"}
_counter = itertools.count()


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(2, 7))
    ids = [f"n{i}" for i in range(size)]
    edges: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for i in range(1, size):
        preds = draw(st.sets(st.integers(0, i - 1), min_size=1, max_size=min(i, 3)))
        for p in preds:
            edge: dict[str, Any] = {
                "targetNode": ids[i],
                "when": draw(st.sampled_from(["success", "success", "failure", "always"])),
            }
            condition = draw(st.sampled_from(list(CONDITIONS)))
            if condition is not None:
                edge["condition"] = condition
            edges[ids[p]].append(edge)
    for node_id in ids:
        edges[node_id] = draw(st.permutations(edges[node_id]))
    behaviour = {i: draw(st.sampled_from(BEHAVIOURS)) for i in ids}
    delay = {i: draw(st.integers(0, 15)) for i in ids}
    nodes = []
    for node_id in ids:
        params: dict[str, Any] = {"message": node_id, "delayMs": delay[node_id]}
        kind = behaviour[node_id]
        if kind == "fail":
            params.update(failAlways=True, failureKind="permanent")
        elif kind == "flaky":
            params.update(failAttempts=1)
        elif kind == "exhaust":
            params.update(failAlways=True)
        node = {
            "id": node_id,
            "actionType": "core.echo",
            "parameters": params,
            "retry": {"maxAttempts": 2, "initialDelay": 0.001, "jitter": False},
        }
        if edges[node_id]:
            node["edges"] = edges[node_id]
        nodes.append(node)
    on_failure = draw(st.booleans())
    if on_failure:
        nodes.append({"id": "alert", "actionType": "core.echo", "parameters": {"message": "x"}})
    definition = {
        "id": f"prop-{next(_counter)}-{uuid.uuid4().hex[:6]}",
        "displayName": "property",
        "startNode": "n0",
        "routePolicy": draw(st.sampled_from(["parallel", "firstMatch"])),
        "maxParallelActions": draw(st.integers(1, 4)),
        "nodes": nodes,
    }
    if on_failure:
        definition["onFailure"] = "alert"
    return {
        "definition": definition,
        "ids": ids,
        "edges": edges,
        "behaviour": behaviour,
        "flag": draw(st.booleans()),
    }


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def check(scenario: dict[str, Any], run: dict[str, Any]) -> None:
    ids, edges, flag = scenario["ids"], scenario["edges"], scenario["flag"]
    policy = scenario["definition"]["routePolicy"]
    by_node: dict[str, list[dict[str, Any]]] = {}
    for row in run["actions"]:
        by_node.setdefault(row["nodeId"], []).append(row)

    # each node at most once apart from retries: attempts 1..k, only the last one final
    final: dict[str, dict[str, Any]] = {}
    for node_id, attempts in by_node.items():
        attempts.sort(key=lambda r: r["attempt"])
        assert [r["attempt"] for r in attempts] == list(range(1, len(attempts) + 1)), node_id
        assert all(r["status"] == "RetriableFailure" for r in attempts[:-1]), node_id
        assert attempts[-1]["status"] in FINAL, node_id
        final[node_id] = attempts[-1]

    # which edges fired, from the recorded outcomes
    fired: dict[tuple[str, str], bool] = {}
    for source in ids:
        status = final[source]["status"] if source in final else None
        outcome = {"Succeeded": "success", "Failed": "failure"}.get(status or "")
        any_fired = False
        for edge in edges[source]:
            fires = (
                outcome is not None
                and edge["when"] in (outcome, "always")
                and CONDITIONS[edge.get("condition")](flag)
                and not (policy == "firstMatch" and any_fired)
            )
            fired[(source, edge["targetNode"])] = fires
            any_fired = any_fired or fires
    preds = {i: [s for s in ids for e in edges[s] if e["targetNode"] == i] for i in ids}

    for node_id, row in final.items():
        if node_id == "alert":
            continue
        first = by_node[node_id][0]
        # no node starts before all its predecessors ended
        for pred in preds[node_id]:
            assert pred in final, f"{node_id} has a row but its predecessor {pred} has none"
            assert ts(final[pred]["endedAt"]) <= ts(first["startedAt"]), (pred, node_id)
        # Skipped exactly when no incoming edge fired (the start node has none)
        if node_id != "n0" and row["status"] != "Cancelled":
            none_fired = not any(fired[(p, node_id)] for p in preds[node_id])
            assert (row["status"] == "Skipped") == none_fired, node_id
        # outcomes follow each node's behaviour
        kind = scenario["behaviour"][node_id]
        if row["status"] not in ("Skipped", "Cancelled"):
            expected = {
                "ok": ["Succeeded"],
                "fail": ["Failed"],
                "flaky": ["RetriableFailure", "Succeeded"],
                "exhaust": ["RetriableFailure", "Failed"],
            }[kind]
            assert [r["status"] for r in by_node[node_id]] == expected, node_id

    unhandled = [
        n
        for n, row in final.items()
        if n != "alert"
        and row["status"] == "Failed"
        and not any(fired[(n, e["targetNode"])] for e in edges[n])
    ]
    if unhandled:
        assert run["status"] == "Failed"
        assert run["error"]["nodeId"] in unhandled
        assert run["error"]["code"] == "simulated_failure"
        if "onFailure" in scenario["definition"]:
            assert [r["status"] for r in by_node["alert"]] == ["Succeeded"]
            others = [r for n, rs in by_node.items() if n != "alert" for r in rs]
            assert ts(by_node["alert"][0]["startedAt"]) >= max(ts(r["endedAt"]) for r in others)
    else:
        assert run["status"] == "Succeeded", run["error"]
        assert set(final) == set(ids), "every node ran or was skipped"
        assert not any(r["status"] == "Cancelled" for r in final.values())
        assert "alert" not in final


@pytest.fixture
async def echo_kernel(kernel_factory: Any) -> Any:
    """One kernel (and database) per backend, shared by every example of the test."""
    return await kernel_factory(plugins=[dataworkflows_echo], entrypoints=False)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
async def test_random_dags_keep_the_invariants(echo_kernel, run_workflow, scenario):
    run = await run_workflow(
        echo_kernel, scenario["definition"], trigger={"flag": scenario["flag"]}
    )
    check(scenario, run)
