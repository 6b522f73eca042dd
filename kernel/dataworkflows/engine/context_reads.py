"""Which nodes' results a node's templates read, so that its template context holds only
those (``nodes.<id>``) instead of every ancestor's outputs.

Found once per compiled plan from the templates' static references
(:class:`~dataworkflows.engine.templating.References`): a template that names nodes
literally (``nodes.fetch.outputs``, ``nodes['fetch']``) reads those; one that reads
``nodes`` any other way (``nodes[name]``, a loop over ``nodes``, ``{{ nodes }}``) may read
any node it can see, and gets all of them, as before. Parameters see the node's
ancestors; its edge conditions also see the node itself; the ``onFailure`` node sees
every node.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from dataworkflows.engine.plan import ExecutionPlan, PlanNode
from dataworkflows.engine.templating import References, TemplateEngine


def with_reads(plan: ExecutionPlan, templates: TemplateEngine) -> ExecutionPlan:
    """``plan`` with each node's :attr:`~PlanNode.reads` and ``condition_reads`` set."""
    nodes = {
        node_id: _with_reads(node, templates, node.ancestors)
        for node_id, node in plan.nodes.items()
    }
    on_failure = plan.on_failure
    if on_failure is not None:
        on_failure = _with_reads(on_failure, templates, frozenset(plan.nodes))
    return replace(plan, nodes=nodes, on_failure=on_failure)


def _with_reads(node: PlanNode, templates: TemplateEngine, visible: frozenset[str]) -> PlanNode:
    conditions = [
        templates.condition_references(edge.condition)
        for edge in node.outgoing
        if edge.condition is not None
    ]
    return replace(
        node,
        reads=_read(templates.references(node.node.parameters), visible),
        condition_reads=_read(conditions, visible | {node.id}),
    )


def _read(refs: Iterable[References | None], visible: frozenset[str]) -> frozenset[str]:
    ids: set[str] = set()
    for ref in refs:
        if ref is None or ref.dynamic:  # not analysable: whatever it can see
            return visible
        ids |= ref.node_ids
    return frozenset(ids) & visible


def parameter_reads(node: PlanNode, default: Iterable[str] | None = None) -> Iterable[str]:
    """The nodes a node's parameter templates read (engine/context_reads.py)."""
    if node.reads is not None:
        return node.reads
    return node.ancestors if default is None else default


def condition_reads(node: PlanNode) -> Iterable[str]:
    """The nodes its edge conditions read (themselves included when they read it)."""
    if node.condition_reads is not None:
        return node.condition_reads
    return node.ancestors | {node.id}
