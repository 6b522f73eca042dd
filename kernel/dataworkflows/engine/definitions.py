"""Workflow definitions: the JSON shape users write, parsed and checked.

A definition is camelCase JSON (as in ``fixtures/workflows/``)::

    {"id": "simple-echo", "displayName": "Simple Echo Workflow", "startNode": "echo1",
     "nodes": [{"id": "echo1", "actionType": "core.echo",
                "parameters": {"message": "Hello from node 1"}}, ...]}

:func:`validate_definition` returns every problem at once, each with the JSON path of the
offending value, so that one 422 lists all of them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from dataworkflows.common.validation_messages import (
    friendly_errors,
    friendly_message,
    json_path,
)
from dataworkflows.engine import graph
from dataworkflows.engine.templating import References, TemplateEngine, is_template

if TYPE_CHECKING:
    from dataworkflows.plugins.manager import PluginSet

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Edge(_Model):
    """An edge to ``targetNode``: fires when the source ends with an outcome matching
    ``when`` and ``condition`` (a sandboxed Jinja2 expression, optional) is true."""

    target_node: str
    when: Literal["success", "failure", "always"] = "success"
    condition: str | None = None


class RetryPolicy(_Model):
    """A node's retry policy; a field left out takes the engine's default."""

    max_attempts: int | None = Field(default=None, ge=1, le=100)
    initial_delay: float | None = Field(default=None, ge=0, le=86400)
    backoff_multiplier: float | None = Field(default=None, ge=1, le=100)
    max_delay: float | None = Field(default=None, ge=0, le=86400)
    jitter: bool | None = None


class Node(_Model):
    """One step: an action type, its (templated) parameters, edges and policies."""

    id: str = Field(pattern=ID_PATTERN)
    action_type: str
    display_name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    edges: list[Edge] = Field(default_factory=list)
    retry: RetryPolicy | None = None
    timeout: float | None = Field(default=None, gt=0)
    rerender_on_retry: bool = False


class WorkflowDefinition(_Model):
    """A whole definition. Semantics: ``docs/semantics.md``."""

    id: str = Field(pattern=ID_PATTERN)
    display_name: str = Field(min_length=1)
    description: str | None = None
    start_node: str | None = None
    nodes: list[Node] = Field(min_length=1)
    route_policy: Literal["parallel", "firstMatch"] = "parallel"
    max_parallel_actions: int | None = Field(default=None, ge=1, le=1000)
    timeout: float | None = Field(default=None, gt=0)
    on_failure: str | None = None

    @property
    def has_edges(self) -> bool:
        return any(node.edges for node in self.nodes)

    def first_node(self) -> str | None:
        """The node a run starts at: ``startNode``, or the first node of a linear definition
        (None for a graph without ``startNode``: validation reports it)."""
        if self.start_node is not None:
            return self.start_node
        if self.has_edges:
            return None
        chain = [n.id for n in self.nodes if n.id != self.on_failure]
        return chain[0] if chain else None

    def graph_edges(self) -> list[tuple[str, str, str, str | None, str]]:
        """Every edge as (source, target, when, condition, path); a linear definition is
        a chain of ``success`` edges (its ``onFailure`` node is never part of it)."""
        if self.has_edges:
            return [
                (node.id, edge.target_node, edge.when, edge.condition, f"$.nodes[{i}].edges[{j}]")
                for i, node in enumerate(self.nodes)
                for j, edge in enumerate(node.edges)
            ]
        chain = [(i, n.id) for i, n in enumerate(self.nodes) if n.id != self.on_failure]
        return [(a, b, "success", None, f"$.nodes[{i}]") for (i, a), (_, b) in pairwise(chain)]

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition."""

    path: str
    message: str
    code: str = "invalid"

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "message": self.message}


def checksum(definition: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON form (sorted keys, no whitespace)."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


#: names every template may read; ``error`` only in the ``onFailure`` node
CONTEXT_NAMES = frozenset({"trigger", "nodes", "execution", "attempt"})
CONDITION_NAMES = frozenset({"trigger", "nodes", "execution"})


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
