"""Execution plans: a definition compiled into the graph the conductor schedules.

A plan is computed once per (workflow, version) and cached: versions are immutable.
Linear definitions (no edges anywhere) compile to a chain ``n1 -success-> n2 -success->
...`` so that one scheduler handles both forms. The workflow's ``onFailure`` node is never
part of the graph: it runs only when the run fails (see ``docs/semantics.md``).

The graph helpers at the bottom work on plain ids and are shared with validation
(:mod:`dataworkflows.engine.definitions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from dataworkflows.engine.graph import (
    ancestor_sets,
    find_cycles,
    reachable,
    successors,
    topological_order,
)

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
    #: nodes its parameter templates read (engine/context_reads.py); None: ``ancestors``
    reads: frozenset[str] | None = None
    #: nodes its edge conditions read; None: ``ancestors`` and itself
    condition_reads: frozenset[str] | None = None

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


def compile_plan(definition: WorkflowDefinition, defaults: PlanDefaults) -> ExecutionPlan:
    """Compile a valid definition; raises :class:`PlanError` for a broken graph."""
    ids = [n.id for n in definition.nodes]
    by_id = {n.id: (i, n) for i, n in enumerate(definition.nodes)}
    if len(by_id) != len(ids):
        raise PlanError("duplicate node ids")
    start = definition.first_node()
    if start is None or start not in by_id:
        raise PlanError("no valid start node")
    edges = [PlanEdge(*e) for e in definition.graph_edges()]
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
