"""Execution plans: a definition compiled into the graph the conductor schedules.

A plan is computed once per (workflow, version) and cached: versions are immutable.
Linear definitions (no edges anywhere) compile to a chain ``n1 -success-> n2 -success->
...`` so that one scheduler handles both forms. The workflow's ``onFailure`` node is never
part of the graph: it runs only when the run fails (see ``docs/semantics.md``).

The graph helpers at the bottom work on plain ids and are shared with validation
(:mod:`dataworkflows.engine.definitions`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dataworkflows.engine.definitions import Node, WorkflowDefinition


@dataclass(frozen=True)
class RetrySettings:
    """A complete retry policy (the node's own fields over the engine's defaults)."""

    max_attempts: int
    initial_delay: float
    backoff_multiplier: float
    max_delay: float
    jitter: bool

    def delay(self, failed_attempt: int, random: float = 1.0) -> float:
        """Seconds to wait after attempt ``failed_attempt`` (1-based) failed.

        ``min(maxDelay, initialDelay * backoffMultiplier ** (n - 1))``; with jitter the
        result is scaled by ``0.5 + random / 2`` (``random`` uniform in [0, 1)), so a
        jittered delay lies in [base/2, base).
        """
        exponent = min(failed_attempt - 1, 1000)
        try:
            base = self.initial_delay * self.backoff_multiplier**exponent
        except OverflowError:
            base = self.max_delay
        base = min(self.max_delay, base)
        return base * (0.5 + random / 2) if self.jitter else base


@dataclass(frozen=True)
class PlanEdge:
    """One edge: ``source`` → ``target``, firing on ``when`` if ``condition`` holds."""

    source: str
    target: str
    when: str  # success | failure | always
    condition: str | None
    path: str  # JSON path of the edge in the definition (for error messages)


@dataclass(frozen=True)
class PlanNode:
    """One node with everything the scheduler needs precomputed."""

    node: Node
    index: int
    outgoing: tuple[PlanEdge, ...]
    incoming: tuple[PlanEdge, ...]
    #: nodes on some path from the start node to this one (the outputs it may read)
    ancestors: frozenset[str]
    retry: RetrySettings
    timeout: float

    @property
    def id(self) -> str:
        return self.node.id


@dataclass(frozen=True)
class ExecutionPlan:
    """A compiled definition. ``order`` is a topological order of the graph's nodes."""

    definition: WorkflowDefinition
    nodes: Mapping[str, PlanNode]
    start: str
    order: tuple[str, ...]
    on_failure: PlanNode | None
    route_policy: str
    max_parallel: int
    timeout: float | None
    linear: bool


@dataclass(frozen=True)
class PlanDefaults:
    """Engine-wide defaults a definition may override."""

    retry: RetrySettings
    action_timeout: float
    max_parallel_actions: int
    workflow_timeout: float | None


class PlanError(ValueError):
    """The definition cannot be compiled (it would not pass validation)."""


def graph_edges(definition: WorkflowDefinition) -> list[tuple[str, str, str, str | None, str]]:
    """Every edge as (source, target, when, condition, path), chaining linear definitions."""
    if definition.has_edges:
        return [
            (node.id, edge.target_node, edge.when, edge.condition, f"$.nodes[{i}].edges[{j}]")
            for i, node in enumerate(definition.nodes)
            for j, edge in enumerate(node.edges)
        ]
    chain = [n.id for n in definition.nodes if n.id != definition.on_failure]
    return [
        (a, b, "success", None, f"$.nodes[{_index(definition, a)}]") for a, b in pairwise(chain)
    ]


def start_node(definition: WorkflowDefinition) -> str | None:
    """The node a run starts at: ``startNode``, or the first node of a linear definition."""
    if definition.start_node is not None:
        return definition.start_node
    if definition.has_edges:
        return None
    chain = [n.id for n in definition.nodes if n.id != definition.on_failure]
    return chain[0] if chain else None


def compile_plan(definition: WorkflowDefinition, defaults: PlanDefaults) -> ExecutionPlan:
    """Compile a valid definition; raises :class:`PlanError` for a broken graph."""
    ids = [n.id for n in definition.nodes]
    by_id = {n.id: (i, n) for i, n in enumerate(definition.nodes)}
    if len(by_id) != len(ids):
        raise PlanError("duplicate node ids")
    start = start_node(definition)
    if start is None or start not in by_id:
        raise PlanError("no valid start node")
    edges = [PlanEdge(*e) for e in graph_edges(definition)]
    for edge in edges:
        if edge.target not in by_id:
            raise PlanError(f"{edge.path}: unknown target {edge.target!r}")
    graph_ids = [i for i in ids if i != definition.on_failure]
    successors_ = successors(graph_ids, [(e.source, e.target) for e in edges])
    if find_cycles(graph_ids, successors_):
        raise PlanError("the graph has a cycle")
    reach = reachable(start, successors_)
    if set(graph_ids) - reach:
        raise PlanError("the graph has unreachable nodes")
    order = topological_order(graph_ids, successors_)
    ancestors = ancestor_sets(order, successors_)

    def plan_node(node_id: str) -> PlanNode:
        index, node = by_id[node_id]
        return PlanNode(
            node=node,
            index=index,
            outgoing=tuple(e for e in edges if e.source == node_id),
            incoming=tuple(e for e in edges if e.target == node_id),
            ancestors=ancestors.get(node_id, frozenset()),
            retry=_retry(node, defaults.retry),
            timeout=node.timeout or defaults.action_timeout,
        )

    nodes = {node_id: plan_node(node_id) for node_id in order}
    on_failure = plan_node(definition.on_failure) if definition.on_failure else None
    timeout = definition.timeout or defaults.workflow_timeout
    return ExecutionPlan(
        definition=definition,
        nodes=nodes,
        start=start,
        order=tuple(order),
        on_failure=on_failure,
        route_policy=definition.route_policy,
        max_parallel=definition.max_parallel_actions or defaults.max_parallel_actions,
        timeout=timeout or None,
        linear=not definition.has_edges,
    )


def _retry(node: Node, default: RetrySettings) -> RetrySettings:
    if node.retry is None:
        return default
    own = {k: v for k, v in node.retry.model_dump().items() if v is not None}
    return replace(default, **own)


def _index(definition: WorkflowDefinition, node_id: str) -> int:
    return next(i for i, n in enumerate(definition.nodes) if n.id == node_id)


# -- graph helpers (plain ids) ------------------------------------------------------------


def successors(ids: Iterable[str], edges: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Adjacency lists restricted to ``ids`` (edges to or from other ids are ignored)."""
    known = set(ids)
    out: dict[str, list[str]] = {i: [] for i in known}
    for source, target in edges:
        if source in known and target in known and target not in out[source]:
            out[source].append(target)
    return out


def find_cycles(ids: Sequence[str], succ: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per back edge a depth-first search meets (empty: a DAG).

    Every cycle contains at least one back edge, so the list is empty exactly when the
    graph is acyclic; the last two ids of each cycle name its back edge.
    """
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(ids, white)
    cycles: list[list[str]] = []
    for root in ids:
        if color[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path = [root]
        color[root] = grey
        while stack:
            node, i = stack[-1]
            children = succ.get(node, ())
            if i < len(children):
                stack[-1] = (node, i + 1)
                child = children[i]
                if color.get(child) == grey:
                    cycles.append([*path[path.index(child) :], child])
                elif color.get(child) == white:
                    color[child] = grey
                    stack.append((child, 0))
                    path.append(child)
            else:
                color[node] = black
                stack.pop()
                path.pop()
    return cycles


def reachable(start: str, succ: Mapping[str, Sequence[str]]) -> set[str]:
    """Every node reachable from ``start`` (including it)."""
    seen = {start}
    todo = [start]
    while todo:
        for child in succ.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def topological_order(ids: Sequence[str], succ: Mapping[str, Sequence[str]]) -> list[str]:
    """Kahn's algorithm, stable with respect to ``ids`` (array order breaks ties)."""
    indegree = dict.fromkeys(ids, 0)
    for node in ids:
        for child in succ.get(node, ()):
            indegree[child] += 1
    position = {node: i for i, node in enumerate(ids)}
    ready = sorted((n for n in ids if indegree[n] == 0), key=position.__getitem__)
    order: list[str] = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for child in succ.get(node, ()):
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
                ready.sort(key=position.__getitem__)
    return order


def ancestor_sets(
    order: Sequence[str], succ: Mapping[str, Sequence[str]]
) -> dict[str, frozenset[str]]:
    """For each node, the set of nodes with a path to it (``order`` must be topological)."""
    found: dict[str, set[str]] = {node: set() for node in order}
    for node in order:
        for child in succ.get(node, ()):
            found[child] |= found[node] | {node}
    return {node: frozenset(s) for node, s in found.items()}
