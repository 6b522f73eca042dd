"""A step's template context holds only the nodes its templates read (engine/context_reads.py),
found from the templates' static references; a template that reads ``nodes`` dynamically
still sees every node it may read."""

from __future__ import annotations

from typing import Any

import pytest

import dataworkflows_echo
from dataworkflows.engine.context_reads import with_reads
from dataworkflows.engine.definitions import WorkflowDefinition
from dataworkflows.engine.plan import PlanDefaults, RetrySettings, compile_plan
from dataworkflows.engine.templating import TemplateEngine


def echo(node_id: str, message: Any, *targets: str, **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": node_id,
        "actionType": "core.echo",
        "parameters": {"message": message, **extra},
    }
    if targets:
        node["edges"] = [{"targetNode": t} for t in targets]
    return node


# a → b → c → d → e; e also has a condition on an edge to f; g is the onFailure node
DEFINITION: dict[str, Any] = {
    "id": "reads",
    "displayName": "reads",
    "startNode": "a",
    "onFailure": "g",
    "nodes": [
        echo("a", "{{ trigger.x }}", "b"),
        echo("b", "plain text", "c"),
        echo("c", "{{ nodes.a.outputs.echo }}-{{ nodes['b'].status }}", "d"),
        echo("d", "{{ nodes[trigger.which].outputs.echo }}", "e"),
        {
            **echo("e", "{% for n in nodes | sort %}{{ n }}{% endfor %}"),
            "edges": [{"targetNode": "f", "condition": "nodes.e.status == 'Succeeded'"}],
        },
        echo("f", "{% set nodes = {'z': 1} %}{{ nodes.z }}"),
        echo("g", "{{ nodes.c.outputs.echo }} {{ error.code }}"),
    ],
}


def plan() -> Any:
    defaults = PlanDefaults(
        retry=RetrySettings(1, 0.0, 1.0, 0.0, False),
        action_timeout=10.0,
        max_parallel_actions=1,
        workflow_timeout=None,
    )
    compiled = compile_plan(WorkflowDefinition.model_validate(DEFINITION), defaults)
    return with_reads(compiled, TemplateEngine())


def test_reads_are_the_literal_references_or_everything_visible() -> None:
    p = plan()
    reads = {node_id: p.nodes[node_id].reads for node_id in p.nodes}
    assert reads == {
        "a": frozenset(),
        "b": frozenset(),
        "c": {"a", "b"},
        "d": {"a", "b", "c"},  # nodes[trigger.which]: any ancestor
        "e": {"a", "b", "c", "d"},  # a loop over nodes
        "f": frozenset(),  # its ``nodes`` is its own variable
    }
    assert p.nodes["e"].condition_reads == {"e"}
    assert p.nodes["a"].condition_reads == frozenset()  # no condition at all
    assert p.on_failure is not None and p.on_failure.reads == {"c"}


@pytest.fixture
async def echo_kernel(kernel_factory: Any) -> Any:
    return await kernel_factory(plugins=[dataworkflows_echo], entrypoints=False)


async def test_the_context_of_each_step_holds_what_it_reads(echo_kernel, run_workflow):
    """A monitor on the template engine sees which nodes each rendering was given."""
    templates = echo_kernel.conductor.templates
    seen: dict[str, list[str]] = {}
    render, evaluate = templates.render_async, templates.evaluate_condition_async

    async def render_async(value: Any, context: dict[str, Any], path: str) -> Any:
        seen[path] = sorted(context["nodes"])
        return await render(value, context, path)

    async def evaluate_condition_async(source: str, context: dict[str, Any], path: str) -> Any:
        seen[path] = sorted(context["nodes"])
        return await evaluate(source, context, path)

    templates.render_async = render_async
    templates.evaluate_condition_async = evaluate_condition_async
    definition = {**DEFINITION, "nodes": [*DEFINITION["nodes"][:-1], echo("g", "{{ nodes.c }}")]}
    run = await run_workflow(echo_kernel, definition, trigger={"x": "hi", "which": "a"})
    assert run["status"] == "Succeeded", run
    outputs = {a["nodeId"]: (a["outputs"] or {}).get("echo") for a in run["actions"]}
    assert outputs["c"] == "hi-Succeeded"
    assert outputs["d"] == "hi"
    assert outputs["e"] == "abcd"
    assert outputs["f"] == "1"
    assert seen["$.nodes[2].parameters"] == ["a", "b"]
    assert seen["$.nodes[3].parameters"] == ["a", "b", "c"]
    assert seen["$.nodes[4].parameters"] == ["a", "b", "c", "d"]
    assert seen["$.nodes[4].edges[0].condition"] == ["e"]
    assert seen["$.nodes[5].parameters"] == []
    assert seen["$.nodes[0].parameters"] == []


async def test_the_on_failure_node_reads_what_it_names(echo_kernel, run_workflow):
    templates = echo_kernel.conductor.templates
    seen: dict[str, list[str]] = {}
    render = templates.render_async

    async def render_async(value: Any, context: dict[str, Any], path: str) -> Any:
        seen[path] = sorted(context["nodes"])
        return await render(value, context, path)

    templates.render_async = render_async
    definition = {
        "id": "fails",
        "displayName": "fails",
        "startNode": "a",
        "onFailure": "g",
        "nodes": [
            echo("a", "one", "b"),
            echo("b", "two", "c"),
            echo("c", "three", failAlways=True, failureKind="permanent"),
            echo("g", "{{ nodes.b.outputs.echo }} after {{ error.code }}"),
        ],
    }
    run = await run_workflow(echo_kernel, definition)
    assert run["status"] == "Failed"
    g = next(a for a in run["actions"] if a["nodeId"] == "g")
    assert g["outputs"] == {"echo": "two after simulated_failure"}
    assert seen["$.nodes[3].parameters"] == ["b"]
