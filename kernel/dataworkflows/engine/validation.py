"""Checking a workflow definition against the installed actions, before it is stored.

:func:`validate_definition` returns every problem at once, each with the JSON path of the
offending value, so that one 422 lists all of them: the JSON shape (pydantic), the graph
(start node, edges, cycles, reachability), each node's action type and parameters, and
what each template may read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from dataworkflows.common.validation_messages import (
    friendly_errors,
    friendly_message,
    json_path,
)
from dataworkflows.engine import graph
from dataworkflows.engine.templating import References, TemplateEngine, is_template

if TYPE_CHECKING:
    from dataworkflows.plugins.manager import PluginSet

from dataworkflows.engine.definitions import Node, Problem, WorkflowDefinition

#: names every template may read; ``error`` only in the ``onFailure`` node
CONTEXT_NAMES = frozenset({"trigger", "nodes", "execution", "attempt", "vars"})
CONDITION_NAMES = frozenset({"trigger", "nodes", "execution", "vars"})


def validate_definition(
    raw: Any, plugins: PluginSet, templates: TemplateEngine
) -> tuple[WorkflowDefinition | None, list[Problem]]:
    """Parse ``raw`` and check it against the installed actions.

    Returns the parsed definition (None if its shape is wrong) and the list of problems;
    the definition is usable only when the list is empty. Checked: the JSON shape, unique
    node ids, the start node, edge targets, cycles, reachability from the start node, the
    ``onFailure`` node, action types, template and condition syntax, the names templates
    and conditions read, and parameters against each action's schema.
    """
    if not isinstance(raw, dict):
        return None, [Problem("$", "a workflow definition must be a JSON object", "type")]
    try:
        definition = WorkflowDefinition.model_validate(raw)
    except ValidationError as exc:
        return None, [
            Problem(json_path(loc), message, kind)
            for loc, message, kind in friendly_errors(exc, WorkflowDefinition)
        ]

    problems: list[Problem] = []
    ids: dict[str, int] = {}
    for index, node in enumerate(definition.nodes):
        if node.id in ids:
            problems.append(
                Problem(
                    f"$.nodes[{index}].id",
                    f"duplicate node id {node.id!r} (first used by $.nodes[{ids[node.id]}])",
                    "duplicate_node_id",
                )
            )
        else:
            ids[node.id] = index

    graph = _check_graph(definition, ids, problems)
    for index, node in enumerate(definition.nodes):
        problems.extend(_check_node(index, node, plugins, templates, definition, graph))
    return definition, problems


@dataclass
class _Graph:
    """What the graph checks learnt; ``ancestors`` is None when they cannot be trusted."""

    ancestors: dict[str, frozenset[str]] | None


def _check_graph(
    definition: WorkflowDefinition, ids: dict[str, int], problems: list[Problem]
) -> _Graph:
    on_failure = definition.on_failure
    if on_failure is not None and on_failure not in ids:
        problems.append(
            Problem(
                "$.onFailure",
                f"onFailure names {on_failure!r}, which is not one of the nodes",
                "unknown_on_failure_node",
            )
        )
        on_failure = None

    start = definition.first_node()
    if definition.start_node is None and definition.has_edges:
        problems.append(
            Problem(
                "$.startNode",
                "a definition with edges must name its startNode",
                "missing_start_node",
            )
        )
    elif definition.start_node is not None and definition.start_node not in ids:
        problems.append(
            Problem(
                "$.startNode",
                f"start node {definition.start_node!r} is not one of the nodes",
                "missing_start_node",
            )
        )
        start = None
    elif start is None:
        problems.append(
            Problem("$.nodes", "there is no node to run besides onFailure", "missing_start_node")
        )
    elif not definition.has_edges:
        chain = [n.id for n in definition.nodes if n.id != on_failure]
        if start != chain[0]:
            problems.append(
                Problem(
                    "$.startNode",
                    "a definition without edges runs its nodes in array order, so startNode "
                    f"must be the first node ({chain[0]!r})",
                    "start_node_not_first",
                )
            )
            start = None

    edges = definition.graph_edges()
    sound = start is not None
    for _source, target, _when, _condition, path in edges:
        if target not in ids:
            problems.append(
                Problem(
                    f"{path}.targetNode",
                    f"edge target {target!r} is not one of the nodes",
                    "unknown_edge_target",
                )
            )
        elif on_failure is not None and target == on_failure:
            problems.append(
                Problem(
                    f"{path}.targetNode",
                    f"{target!r} is the onFailure node; it runs only when the run fails and "
                    "cannot be the target of an edge",
                    "on_failure_node_in_graph",
                )
            )
            sound = False
    if on_failure is not None:
        index = ids[on_failure]
        if definition.nodes[index].edges:
            problems.append(
                Problem(
                    f"$.nodes[{index}].edges",
                    f"{on_failure!r} is the onFailure node; it runs last and has no edges",
                    "on_failure_node_in_graph",
                )
            )
        if definition.start_node == on_failure:
            problems.append(
                Problem(
                    "$.startNode",
                    f"{on_failure!r} is the onFailure node and cannot be the start node",
                    "on_failure_node_in_graph",
                )
            )
            sound = False

    if len(ids) != len(definition.nodes):
        return _Graph(None)  # with duplicate ids the graph is ambiguous; fix those first
    graph_ids = [n for n in ids if n != on_failure]
    succ = graph.successors(graph_ids, [(e[0], e[1]) for e in edges])
    cycles = graph.find_cycles(graph_ids, succ)
    for cycle in cycles:
        source, target = cycle[-2], cycle[-1]
        path = next(p for s, t, _w, _c, p in edges if s == source and t == target)
        problems.append(Problem(path, "the edges form a cycle: " + " -> ".join(cycle), "cycle"))
    if start is None:
        return _Graph(None)
    reach = graph.reachable(start, succ)
    for node_id in graph_ids:
        if node_id not in reach:
            problems.append(
                Problem(
                    f"$.nodes[{ids[node_id]}]",
                    f"node {node_id!r} cannot be reached from the start node {start!r}",
                    "unreachable_node",
                )
            )
    if cycles or not sound:
        return _Graph(None)
    return _Graph(graph.ancestor_sets(graph.topological_order(graph_ids, succ), succ))


def _check_node(
    index: int,
    node: Node,
    plugins: PluginSet,
    templates: TemplateEngine,
    definition: WorkflowDefinition,
    graph: _Graph,
) -> list[Problem]:
    base = f"$.nodes[{index}]"
    problems: list[Problem] = []
    is_on_failure = node.id == definition.on_failure
    globals_ = frozenset(templates.env.globals)

    # What this node's templates may read: its ancestors' outputs (everything, for the
    # onFailure node, which runs after the rest); its conditions may also read its own.
    readable: frozenset[str] | None = None
    if graph.ancestors is not None and not is_on_failure:
        readable = graph.ancestors.get(node.id, frozenset())
    names = CONTEXT_NAMES | globals_ | ({"error"} if is_on_failure else set())
    problems.extend(
        Problem(err.path, err.message, "template_syntax")
        for err in templates.check(node.parameters, f"{base}.parameters")
    )
    problems.extend(  # loops or products that must exceed the budget whatever the data
        Problem(err.path, err.message, "template_unbounded")
        for err in templates.shape_problems(node.parameters, f"{base}.parameters")
    )
    for ref in templates.references(node.parameters, f"{base}.parameters"):
        problems.extend(_check_references(ref, names, readable, definition, node.id))
    for j, edge in enumerate(node.edges):
        path = f"{base}.edges[{j}].condition"
        if edge.condition is None:
            continue
        errors = templates.check_condition(edge.condition, path)
        problems.extend(Problem(err.path, err.message, "condition_syntax") for err in errors)
        ref = templates.condition_references(edge.condition, path)
        if ref is not None:
            own = None if readable is None else readable | {node.id}
            problems.extend(
                _check_references(ref, CONDITION_NAMES | globals_, own, definition, node.id)
            )

    action = plugins.action(node.action_type)
    if action is None:
        known = ", ".join(sorted(plugins.actions)) or "none are installed"
        problems.append(
            Problem(
                f"{base}.actionType",
                f"unknown action type {node.action_type!r} (installed: {known})",
                "unknown_action_type",
            )
        )
        return problems
    try:
        action.Params.model_validate(node.parameters)
    except ValidationError as exc:
        for err in exc.errors():
            # A template is checked after rendering, at run time: its value is not final yet.
            if is_template(err.get("input")) or _inside_template(node.parameters, err["loc"]):
                continue
            problems.append(
                Problem(
                    json_path(err["loc"], f"{base}.parameters"),
                    friendly_message(err, action.Params),
                    "parameters",
                )
            )
    return problems


def _check_references(
    ref: References,
    names: frozenset[str],
    readable: frozenset[str] | None,
    definition: WorkflowDefinition,
    node_id: str,
) -> list[Problem]:
    visible = ", ".join(sorted(n for n in names if n in CONTEXT_NAMES | {"error"}))
    problems = [
        Problem(ref.path, f"unknown name {name!r} (templates can read {visible})", "undefined_name")
        for name in sorted(ref.names - names)
    ]
    known = {n.id for n in definition.nodes}
    for other in sorted(ref.node_ids):
        if other not in known:
            problems.append(
                Problem(ref.path, f"nodes.{other}: there is no node {other!r}", "unknown_node")
            )
        elif readable is not None and other not in readable:
            problems.append(
                Problem(
                    ref.path,
                    f"nodes.{other}: {node_id!r} may not read {other!r}, which is not on a path "
                    f"from the start node to {node_id!r} (it may not have run yet)",
                    "not_an_ancestor",
                )
            )
    return problems


def _inside_template(params: Any, loc: tuple[Any, ...]) -> bool:
    value = params
    for part in loc:
        if is_template(value):
            return True
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return False
    return is_template(value)
