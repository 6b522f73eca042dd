"""Graph helpers on plain node ids, shared by validation (:mod:`dataworkflows.engine.definitions`)
and plan compilation (:mod:`dataworkflows.engine.plan`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


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
