"""A workflow definition drawn as SVG on the server: nodes in columns by their depth from
the start node, edges as arrows labelled with their ``when``, each node filled by the
status of its last attempt in a run (and the status written under its name, so colour is
never the only sign)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

NODE_W, NODE_H = 170, 54
GAP_X, GAP_Y = 60, 24
MARGIN = 12

#: fill per attempt status (text stays dark on every fill: WCAG AA contrast)
FILLS = {
    "Succeeded": "#c8ecd0",
    "Failed": "#f7c9c9",
    "Running": "#cfe0fb",
    "Retrying": "#fde7b8",
    "Skipped": "#e4e4e4",
    "Cancelled": "#e4e4e4",
    None: "#ffffff",
}


@dataclass(frozen=True)
class Box:
    """One node's place in the drawing."""

    id: str
    action_type: str
    status: str | None
    x: int
    y: int


@dataclass(frozen=True)
class Arrow:
    """One edge between two boxes."""

    x1: int
    y1: int
    x2: int
    y2: int
    label: str


@dataclass(frozen=True)
class Graph:
    """What ``graph.svg`` draws."""

    boxes: list[Box]
    arrows: list[Arrow]
    width: int
    height: int


def _edges(definition: dict[str, Any]) -> list[tuple[str, str, str]]:
    nodes = definition.get("nodes") or []
    edges = [
        (n["id"], e.get("targetNode"), e.get("when") or "success")
        for n in nodes
        for e in n.get("edges") or []
    ]
    if edges:
        return edges
    # no edges anywhere: the nodes run one after another in array order
    return [(a["id"], b["id"], "") for a, b in pairwise(nodes)]


def _depths(definition: dict[str, Any], edges: list[tuple[str, str, str]]) -> dict[str, int]:
    """Longest distance from the start node (the definition is acyclic once published)."""
    ids = [n["id"] for n in definition.get("nodes") or []]
    start = definition.get("startNode") or (ids[0] if ids else None)
    depth: dict[str, int] = {start: 0} if start in ids else {}
    queue = deque(depth)
    limit = len(ids) * max(len(edges), 1) + 1  # guard against a cycle in a draft
    while queue and limit:
        limit -= 1
        here = queue.popleft()
        for source, target, _ in edges:
            if source == here and target in ids and depth.get(target, -1) < depth[here] + 1:
                depth[target] = depth[here] + 1
                queue.append(target)
    deepest = max(depth.values(), default=-1)
    for node_id in ids:  # unreachable nodes get a column of their own at the end
        depth.setdefault(node_id, deepest + 1)
    return depth


def layout(definition: dict[str, Any], statuses: dict[str, str] | None = None) -> Graph:
    """Place the nodes of ``definition``; ``statuses``: node id → its last attempt's status."""
    statuses = statuses or {}
    edges = _edges(definition)
    depth = _depths(definition, edges)
    rows: dict[int, int] = {}
    boxes: dict[str, Box] = {}
    for node in definition.get("nodes") or []:
        column = depth[node["id"]]
        row = rows.get(column, 0)
        rows[column] = row + 1
        boxes[node["id"]] = Box(
            id=node["id"],
            action_type=str(node.get("actionType", "")),
            status=statuses.get(node["id"]),
            x=MARGIN + column * (NODE_W + GAP_X),
            y=MARGIN + row * (NODE_H + GAP_Y),
        )
    arrows = [
        Arrow(
            boxes[s].x + NODE_W,
            boxes[s].y + NODE_H // 2,
            boxes[t].x,
            boxes[t].y + NODE_H // 2,
            when if when not in ("", "success") else "",
        )
        for s, t, when in edges
        if s in boxes and t in boxes
    ]
    columns = max(depth.values(), default=0) + 1
    height_rows = max(rows.values(), default=1)
    return Graph(
        boxes=list(boxes.values()),
        arrows=arrows,
        width=2 * MARGIN + columns * NODE_W + (columns - 1) * GAP_X,
        height=2 * MARGIN + height_rows * NODE_H + (height_rows - 1) * GAP_Y,
    )


def fill(status: str | None) -> str:
    """The fill colour of a node whose last attempt has ``status``."""
    return FILLS.get(status, FILLS[None])


def last_statuses(actions: list[dict[str, Any]]) -> dict[str, str]:
    """node id → status of its last attempt, from a run's ``actions`` (API shape)."""
    out: dict[str, str] = {}
    for action in sorted(actions, key=lambda a: a["attempt"]):
        out[action["nodeId"]] = action["status"]
    return out
