"""The publish-time check of subworkflows: no recursion, no nesting over ``maxNestingDepth``.

A node type names the workflows its nodes start as child runs
(:meth:`~dataworkflows.actions.Action.workflow_references`, e.g. ``core.subworkflow``).
Before a version becomes current, the kernel follows those references from it through the
referenced workflows' versions (the pinned one, else the current published one) and
refuses (422 ``invalid_definition``, every problem listed) a workflow that reaches itself
again (``subworkflow_recursion``) or a chain deeper than the definition's
``maxNestingDepth`` (``max_nesting_depth_exceeded``; the workflow's own runs have depth
0, their children 1). References made by templates are known only at run time: there the
node fails instead (:mod:`dataworkflows.engine.child_runs`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from dataworkflows.actions import WorkflowReference
from dataworkflows.common.errors import Unprocessable
from dataworkflows.plugins.manager import PluginSet

#: (workflow id, pinned version or None) -> that definition (raw JSON), None if unknown
DefinitionLoader = Callable[[str, int | None], Awaitable[Mapping[str, Any] | None]]

#: definitions followed at most per check (a bound for wide reference graphs)
MAX_VISITS = 1000


def references(
    definition: Mapping[str, Any], plugins: PluginSet
) -> Iterator[tuple[int, WorkflowReference]]:
    """(node index, reference) for every workflow the definition's nodes name."""
    for index, node in enumerate(definition.get("nodes") or ()):
        if not isinstance(node, Mapping):
            continue
        action = plugins.action(str(node.get("actionType")))
        parameters = node.get("parameters")
        if action is None or not isinstance(parameters, Mapping):
            continue
        for reference in action.workflow_references(parameters):
            yield index, reference


async def check_nesting(
    definition: Mapping[str, Any], plugins: PluginSet, load: DefinitionLoader, default_limit: int
) -> None:
    """Raise a 422 listing the recursions and over-deep chains reachable from
    ``definition`` (see the module's docstring)."""
    limit = int(definition.get("maxNestingDepth") or default_limit)
    root = str(definition.get("id"))
    problems: list[dict[str, Any]] = []
    visits = 0

    async def visit(current: Mapping[str, Any], chain: list[str], top: str | None) -> None:
        nonlocal visits
        for index, ref in references(current, plugins):
            path = top or f"$.nodes[{index}].parameters.{ref.path or 'workflow'}"
            through = [*chain, ref.workflow]
            if ref.workflow in chain:
                problems.append(
                    {
                        "path": path,
                        "code": "subworkflow_recursion",
                        "message": "subworkflows call each other in a cycle: "
                        + " -> ".join(through),
                        "chain": through,
                    }
                )
                continue
            depth = len(through) - 1
            if depth > limit:
                problems.append(
                    {
                        "path": path,
                        "code": "max_nesting_depth_exceeded",
                        "message": f"subworkflows nest {depth} deep, over the "
                        f"maxNestingDepth of {limit}: " + " -> ".join(through),
                        "chain": through,
                        "depth": depth,
                        "maxNestingDepth": limit,
                    }
                )
                continue
            visits += 1
            if visits > MAX_VISITS:
                return
            child = await load(ref.workflow, ref.version)
            if child is not None:
                await visit(child, through, path)

    await visit(definition, [root], None)
    if problems:
        raise Unprocessable(
            f"the workflow definition has {len(problems)} problem(s)",
            code="invalid_definition",
            details={"problems": problems},
        )
