"""``dataworkflows runs tree ID``: a run and the runs below it (its subworkflows).

The same reads as ``GET /api/v1/executions/{id}`` and ``GET /api/v1/executions/{id}/
children?recursive=true``; ``--json`` prints the tree as nested objects (each run's
summary plus ``children``).
"""

from __future__ import annotations

import json
from typing import Any

import click

from dataworkflows.cli.common import with_kernel


def nest(root: dict[str, Any], below: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs ``below`` (parents before children) hung under ``root`` as ``children``."""
    nodes: dict[str, dict[str, Any]] = {root["id"]: {**root, "children": []}}
    for run in below:
        node = {**run, "children": []}
        nodes[run["id"]] = node
        parent = nodes.get(run["parentExecutionId"] or "")
        if parent is not None:
            parent["children"].append(node)
    return nodes[root["id"]]


def tree_lines(
    node: dict[str, Any], prefix: str = "", last: bool = True, top: bool = True
) -> list[str]:
    """Text lines of a nested tree: ``[node] id  workflow vN  status``."""
    where = f"[{node['parentNodeId']}] " if node.get("parentNodeId") else ""
    label = (
        f"{where}{node['id']}  {node['workflowId']} v{node['workflowVersion']}  {node['status']}"
    )
    lines = [label if top else f"{prefix}{'└─ ' if last else '├─ '}{label}"]
    inner = prefix if top else prefix + ("   " if last else "│  ")
    children = node["children"]
    for i, child in enumerate(children):
        lines.extend(tree_lines(child, inner, i == len(children) - 1, top=False))
    return lines


@click.command("tree")
@click.argument("execution_id")
@click.option("--tenant", default="default", show_default=True, help="Tenant id.")
@click.option("--json", "as_json", is_flag=True, help="Print the tree as nested JSON.")
def runs_tree(execution_id: str, tenant: str, as_json: bool) -> None:
    """Print a run and every run below it (subworkflows) as a tree: the node that
    started each child, its id, workflow, version and status."""

    async def load(kernel: Any) -> dict[str, Any]:
        run = await kernel.service.get_execution(execution_id, tenant_id=tenant)
        below = await kernel.service.execution_children(
            execution_id, tenant_id=tenant, recursive=True
        )
        root = {k: v for k, v in run.items() if k not in ("actions", "trigger")}
        return nest(root, below["items"])

    tree = with_kernel(load)
    if as_json:
        click.echo(json.dumps(tree, indent=2))
        return
    for line in tree_lines(tree):
        click.echo(line)
