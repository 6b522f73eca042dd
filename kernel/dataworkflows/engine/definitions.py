"""Workflow definitions: the JSON shape users write, parsed and checked.

A definition is camelCase JSON (as in ``fixtures/workflows/``)::

    {"id": "simple-echo", "displayName": "Simple Echo Workflow", "startNode": "echo1",
     "nodes": [{"id": "echo1", "actionType": "core.echo",
                "parameters": {"message": "Hello from node 1"}}, ...]}

:func:`~dataworkflows.engine.validation.validate_definition` checks one against the
installed actions and returns every problem at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

if TYPE_CHECKING:
    pass

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


class Retention(_Model):
    """How long this workflow's finished runs are kept (docs/semantics.md, "Retention");
    a field left out takes the engine's setting, ``0`` switches the rule off."""

    days: float | None = Field(default=None, ge=0)
    failed_days: float | None = Field(default=None, ge=0)
    max_runs: int | None = Field(default=None, ge=0)


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
    retention: Retention | None = None
    #: how deep subworkflows may nest below a run of this workflow (default: the
    #: engine's ``DATAWORKFLOWS_DEFAULT_MAX_NESTING_DEPTH``, 5)
    max_nesting_depth: int | None = Field(default=None, ge=1, le=100)

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
