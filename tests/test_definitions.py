"""Validation of definitions: every problem listed with its JSON path; over the API a 422
``invalid_definition`` that writes nothing (create, new version, publish)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select

import dataworkflows_echo
from dataworkflows import Action, ActionResult, hookimpl
from dataworkflows.db.schema import metadata
from dataworkflows.engine.templating import TemplateEngine
from dataworkflows.engine.validation import validate_definition
from dataworkflows.plugins.manager import load_plugins

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "workflows"


@pytest.fixture(scope="module")
def plugins() -> Any:
    return load_plugins(entrypoints=False, extra=[dataworkflows_echo])


def problems_of(definition: dict[str, Any], plugins: Any) -> set[tuple[str, str]]:
    _parsed, problems = validate_definition(definition, plugins, TemplateEngine())
    return {(p.path, p.code) for p in problems}


def messages_of(definition: dict[str, Any], plugins: Any) -> dict[str, str]:
    _, problems = validate_definition(definition, plugins, TemplateEngine())
    return {f"{p.path} {p.code}": p.message for p in problems}


def echo(node_id: str, *targets: str | dict[str, Any], **parameters: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"id": node_id, "actionType": "core.echo", "parameters": parameters}
    edges = [{"targetNode": t} if isinstance(t, str) else t for t in targets]
    if edges:
        node["edges"] = edges
    return node


def graph(*nodes: dict[str, Any], start: str | None = "a", **extra: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {"id": "g", "displayName": "G", "nodes": list(nodes), **extra}
    if start is not None:
        definition["startNode"] = start
    return definition


CONDUCTOR_FIXTURES = [
    "simple-echo-workflow.json",
    "retry-workflow.json",
    "fanout-fanin-workflow.json",
    "conditional-branch-workflow.json",
    "templated-params-workflow.json",
]


@pytest.mark.parametrize("name", CONDUCTOR_FIXTURES)
def test_fixtures_are_valid(plugins, name):
    assert problems_of(json.loads((FIXTURES / name).read_text()), plugins) == set()


def test_cycles_are_reported_at_the_edge_that_closes_them(plugins):
    definition = graph(
        echo("a", "b"),
        echo("b", "c"),
        echo("c", "a", "d"),
        echo("d", "d"),
    )
    assert problems_of(definition, plugins) == {
        ("$.nodes[2].edges[0]", "cycle"),
        ("$.nodes[3].edges[0]", "cycle"),
    }
    messages = messages_of(definition, plugins)
    assert messages["$.nodes[2].edges[0] cycle"] == "the edges form a cycle: a -> b -> c -> a"
    assert messages["$.nodes[3].edges[0] cycle"] == "the edges form a cycle: d -> d"


def test_unknown_edge_targets(plugins):
    definition = graph(echo("a", "b", "ghost"), echo("b", {"targetNode": "nope", "when": "always"}))
    assert problems_of(definition, plugins) == {
        ("$.nodes[0].edges[1].targetNode", "unknown_edge_target"),
        ("$.nodes[1].edges[0].targetNode", "unknown_edge_target"),
    }


def test_unreachable_nodes(plugins):
    definition = graph(echo("a", "b"), echo("b"), echo("island", "b"), echo("lonely"))
    assert problems_of(definition, plugins) == {
        ("$.nodes[2]", "unreachable_node"),
        ("$.nodes[3]", "unreachable_node"),
    }
    assert (
        "cannot be reached from the start node 'a'"
        in messages_of(definition, plugins)["$.nodes[3] unreachable_node"]
    )


def test_start_node_problems(plugins):
    assert problems_of(graph(echo("a", "b"), echo("b"), start=None), plugins) == {
        ("$.startNode", "missing_start_node")
    }
    assert problems_of(graph(echo("a", "b"), echo("b"), start="zz"), plugins) == {
        ("$.startNode", "missing_start_node")
    }
    # linear definitions run in array order
    assert problems_of(graph(echo("a"), echo("b"), start="b"), plugins) == {
        ("$.startNode", "start_node_not_first")
    }
    assert problems_of(graph(echo("a"), echo("b"), start=None), plugins) == set()


def test_on_failure_must_name_a_node_outside_the_graph(plugins):
    assert problems_of(graph(echo("a"), onFailure="ghost"), plugins) == {
        ("$.onFailure", "unknown_on_failure_node")
    }
    assert problems_of(graph(echo("a", "alert"), echo("alert"), onFailure="alert"), plugins) == {
        ("$.nodes[0].edges[0].targetNode", "on_failure_node_in_graph")
    }
    assert problems_of(
        graph(echo("a", "b"), echo("b"), echo("alert", "b"), onFailure="alert"), plugins
    ) == {("$.nodes[2].edges", "on_failure_node_in_graph")}
    assert problems_of(graph(echo("a", "b"), echo("b"), onFailure="a"), plugins) >= {
        ("$.startNode", "on_failure_node_in_graph")
    }
    # in a linear definition the onFailure node is left out of the chain
    assert (
        problems_of(graph(echo("alert"), echo("a"), start=None, onFailure="alert"), plugins)
        == set()
    )


def test_template_and_condition_syntax_errors(plugins):
    definition = graph(
        echo(
            "a",
            {"targetNode": "b", "condition": "trigger.x =="},
            {"targetNode": "c", "condition": "{% if x %}y{% endif %}"},
            message="{{ trigger.x ",
            failMessage="{{ ok }",
        ),
        echo("b"),
        echo("c"),
    )
    assert problems_of(definition, plugins) == {
        ("$.nodes[0].parameters.message", "template_syntax"),
        ("$.nodes[0].parameters.failMessage", "template_syntax"),
        ("$.nodes[0].edges[0].condition", "condition_syntax"),
        ("$.nodes[0].edges[1].condition", "condition_syntax"),
    }


def test_names_a_template_reads_are_checked(plugins):
    definition = graph(
        echo("a", "b", "c", message="{{ trigger.x }} {{ execution.id }} {{ attempt }}"),
        echo("b", "d", message="{{ trigerr.x }} {{ error }}"),
        echo("c", "d", message="{{ nodes.b.outputs.echo }}"),  # b is a sibling, not an ancestor
        echo("d", {"targetNode": "e", "condition": "nodes.d.outputs.echo and nodes.zz"}),
        echo(
            "e", message="{{ nodes.a.outputs.echo }} {{ nodes['c'].status }} {{ range(3) | list }}"
        ),
        echo("alert", message="{{ error.message }} {{ nodes.e.outputs }}"),
        onFailure="alert",
    )
    assert problems_of(definition, plugins) == {
        ("$.nodes[1].parameters.message", "undefined_name"),  # trigerr
        ("$.nodes[1].parameters.message", "undefined_name"),  # error: only in onFailure
        ("$.nodes[2].parameters.message", "not_an_ancestor"),
        ("$.nodes[3].edges[0].condition", "unknown_node"),
    }
    messages = [p.message for p in validate_definition(definition, plugins, TemplateEngine())[1]]
    assert any("unknown name 'trigerr'" in m for m in messages)
    assert any("unknown name 'error'" in m for m in messages)
    assert any("'c' may not read 'b'" in m for m in messages)


def test_parameters_are_checked_against_the_action_schema(plugins):
    definition = graph(
        echo("a", failAttempts="many", delayMs="{{ trigger.delay }}", volume=11),
        start=None,
    )
    assert problems_of(definition, plugins) == {
        ("$.nodes[0].parameters.failAttempts", "parameters"),
        ("$.nodes[0].parameters.volume", "parameters"),
    }


def test_policy_fields_have_bounds(plugins):
    node = echo("a")
    node["retry"] = {"maxAttempts": 0, "backoffMultiplier": 0.5, "jitter": "sometimes"}
    node["timeout"] = 0
    definition = graph(node, maxParallelActions=0, routePolicy="random", timeout=-1)
    assert problems_of(definition, plugins) == {
        ("$.nodes[0].retry.maxAttempts", "greater_than_equal"),
        ("$.nodes[0].retry.backoffMultiplier", "greater_than_equal"),
        ("$.nodes[0].retry.jitter", "bool_parsing"),
        ("$.nodes[0].timeout", "greater_than"),
        ("$.maxParallelActions", "greater_than_equal"),
        ("$.routePolicy", "literal_error"),
        ("$.timeout", "greater_than"),
    }


def test_every_kind_of_problem_at_once(plugins):
    definition = graph(
        echo("a", "b", "ghost", message="{{ broken"),
        echo("b", "a", {"targetNode": "c", "condition": "x =="}),
        echo("c", message="{{ nodes.nope.outputs }}", failAttempts="x"),
        {"id": "d", "actionType": "nope.nothing"},
        onFailure="missing",
    )
    assert problems_of(definition, plugins) == {
        ("$.onFailure", "unknown_on_failure_node"),
        ("$.nodes[0].edges[1].targetNode", "unknown_edge_target"),
        ("$.nodes[1].edges[0]", "cycle"),
        ("$.nodes[3]", "unreachable_node"),
        ("$.nodes[0].parameters.message", "template_syntax"),
        ("$.nodes[1].edges[1].condition", "condition_syntax"),
        ("$.nodes[2].parameters.message", "unknown_node"),
        ("$.nodes[2].parameters.failAttempts", "parameters"),
        ("$.nodes[3].actionType", "unknown_action_type"),
    }


# -- over the API: 422, every problem, nothing written ------------------------------------


async def row_counts(kernel: Any) -> dict[str, int]:
    counts = {}
    async with kernel.db.connect() as conn:
        for table in metadata.sorted_tables:
            counts[table.name] = (
                await conn.execute(select(func.count()).select_from(table))
            ).scalar()
    return counts


INVALID = {
    "cycle": (graph(echo("a", "b"), echo("b", "a")), ("$.nodes[1].edges[0]", "cycle")),
    "unknown_edge_target": (
        graph(echo("a", "zz")),
        ("$.nodes[0].edges[0].targetNode", "unknown_edge_target"),
    ),
    "unreachable_node": (
        graph(echo("a", "b"), echo("b"), echo("c")),
        ("$.nodes[2]", "unreachable_node"),
    ),
    "missing_start_node": (
        graph(echo("a", "b"), echo("b"), start=None),
        ("$.startNode", "missing_start_node"),
    ),
    "template_syntax": (
        graph(echo("a", message="{{ x")),
        ("$.nodes[0].parameters.message", "template_syntax"),
    ),
    "condition_syntax": (
        graph(echo("a", {"targetNode": "b", "condition": "1 +"}), echo("b")),
        ("$.nodes[0].edges[0].condition", "condition_syntax"),
    ),
    "parameters": (
        graph(echo("a", delayMs=-5)),
        ("$.nodes[0].parameters.delayMs", "parameters"),
    ),
    "unknown_on_failure_node": (
        graph(echo("a"), onFailure="b"),
        ("$.onFailure", "unknown_on_failure_node"),
    ),
}


def _named(definition: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(definition, id=f"bad-{name.replace('_', '-')}")


@pytest.mark.parametrize("kind", sorted(INVALID))
async def test_api_rejects_each_kind_on_create(api, kernel, kind):
    definition, problem = INVALID[kind]
    before = await row_counts(kernel)
    resp = await api.post("/api/v1/workflows?autoActivate=true", json=_named(definition, kind))
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert body["code"] == "invalid_definition"
    assert [(p["path"], p["code"]) for p in body["details"]["problems"]] == [problem]
    assert all(p["message"] for p in body["details"]["problems"])
    assert await row_counts(kernel) == before


async def test_api_lists_every_problem_at_once(api, kernel):
    definition = graph(
        echo("a", "b", "zz", message="{{ x"),
        echo("b", "a"),
        echo("c", delayMs=-1),
        onFailure="nobody",
    )
    before = await row_counts(kernel)
    resp = await api.post("/api/v1/workflows", json=definition)
    assert resp.status == 422
    body = await resp.json()
    assert {(p["path"], p["code"]) for p in body["details"]["problems"]} == {
        ("$.onFailure", "unknown_on_failure_node"),
        ("$.nodes[0].edges[1].targetNode", "unknown_edge_target"),
        ("$.nodes[1].edges[0]", "cycle"),
        ("$.nodes[2]", "unreachable_node"),
        ("$.nodes[0].parameters.message", "template_syntax"),
        ("$.nodes[2].parameters.delayMs", "parameters"),
    }
    assert body["message"] == "the workflow definition has 6 problem(s)"
    assert await row_counts(kernel) == before


@pytest.mark.parametrize("kind", ["cycle", "condition_syntax", "unreachable_node"])
async def test_api_rejects_an_invalid_new_version(api, kernel, kind):
    good = graph(echo("a", "b"), echo("b"), start="a")
    good["id"] = f"versioned-{kind.replace('_', '-')}"
    assert (await api.post("/api/v1/workflows", json=good)).status == 201
    before = await row_counts(kernel)
    bad = dict(INVALID[kind][0], id=good["id"])
    resp = await api.post(f"/api/v1/workflows/{good['id']}/versions", json=bad)
    assert resp.status == 422
    body = await resp.json()
    assert body["code"] == "invalid_definition"
    assert [(p["path"], p["code"]) for p in body["details"]["problems"]] == [INVALID[kind][1]]
    assert await row_counts(kernel) == before
    workflow = await (await api.get(f"/api/v1/workflows/{good['id']}")).json()
    assert workflow["latestVersion"] == 1


class Vanishing(Action):
    type = "test.vanishing"

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

    async def run(self, ctx: Any, params: Any) -> ActionResult:
        return ActionResult.succeeded()


class VanishingPlugin:
    @hookimpl
    def register_actions(self, register: Any) -> None:
        register(Vanishing)


async def test_api_rejects_publishing_a_version_that_no_longer_validates(
    kernel_factory, api_factory
):
    # saved as a Draft while a plugin was installed ...
    with_plugin = await kernel_factory(
        plugins=[VanishingPlugin(), dataworkflows_echo], entrypoints=False
    )
    definition = graph(
        echo("a", "b"),
        {"id": "b", "actionType": "test.vanishing", "parameters": {}},
    )
    definition["id"] = "vanishing"
    assert (await with_plugin.service.create_workflow(definition))["status"] == "Draft"
    # ... published by a kernel without it
    without = await kernel_factory(plugins=[dataworkflows_echo], entrypoints=False)
    api = await api_factory(without, run_worker=False)
    before = await row_counts(without)
    resp = await api.post("/api/v1/workflows/vanishing/publish", json={})
    assert resp.status == 422
    body = await resp.json()
    assert body["code"] == "invalid_definition"
    assert [(p["path"], p["code"]) for p in body["details"]["problems"]] == [
        ("$.nodes[1].actionType", "unknown_action_type")
    ]
    assert await row_counts(without) == before
    workflow = await (await api.get("/api/v1/workflows/vanishing")).json()
    assert workflow["status"] == "Draft" and workflow["currentVersion"] is None
