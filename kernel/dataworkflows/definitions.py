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
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from dataworkflows.templating import TemplateEngine, is_template

if TYPE_CHECKING:
    from dataworkflows.plugins import PluginSet

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Edge(_Model):
    target_node: str
    when: Literal["success", "failure", "always"] = "success"
    condition: str | None = None


class RetryPolicy(_Model):
    max_attempts: int = Field(default=1, ge=1, le=100)
    initial_delay: float = Field(default=1.0, ge=0)
    backoff_multiplier: float = Field(default=2.0, ge=1)
    max_delay: float = Field(default=60.0, ge=0)
    jitter: bool = True


class Node(_Model):
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

    @property
    def first_node(self) -> str:
        return self.start_node or self.nodes[0].id

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


def json_path(loc: tuple[Any, ...], root: str = "$") -> str:
    path = root
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate_definition(
    raw: Any, plugins: PluginSet, templates: TemplateEngine
) -> tuple[WorkflowDefinition | None, list[Problem]]:
    """Parse ``raw`` and check it against the installed actions.

    Returns the parsed definition (None if its shape is wrong) and the list of problems;
    the definition is usable only when the list is empty.
    """
    if not isinstance(raw, dict):
        return None, [Problem("$", "a workflow definition must be a JSON object", "type")]
    try:
        definition = WorkflowDefinition.model_validate(raw)
    except ValidationError as exc:
        return None, [
            Problem(json_path(err["loc"]), err["msg"], err["type"]) for err in exc.errors()
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

    if definition.start_node is not None and definition.start_node not in ids:
        problems.append(
            Problem(
                "$.startNode",
                f"start node {definition.start_node!r} is not one of the nodes",
                "missing_start_node",
            )
        )
    elif (
        definition.start_node is not None
        and not definition.has_edges
        and definition.start_node != definition.nodes[0].id
    ):
        problems.append(
            Problem(
                "$.startNode",
                "a definition without edges runs its nodes in array order, so startNode "
                f"must be the first node ({definition.nodes[0].id!r})",
                "start_node_not_first",
            )
        )

    for index, node in enumerate(definition.nodes):
        problems.extend(_check_node(index, node, plugins, templates))
    return definition, problems


def _check_node(
    index: int, node: Node, plugins: PluginSet, templates: TemplateEngine
) -> list[Problem]:
    base = f"$.nodes[{index}]"
    action = plugins.action(node.action_type)
    if action is None:
        known = ", ".join(sorted(plugins.actions)) or "none are installed"
        return [
            Problem(
                f"{base}.actionType",
                f"unknown action type {node.action_type!r} (installed: {known})",
                "unknown_action_type",
            )
        ]
    problems = [
        Problem(err.path, err.message, "template_syntax")
        for err in templates.check(node.parameters, f"{base}.parameters")
    ]
    try:
        action.Params.model_validate(node.parameters)
    except ValidationError as exc:
        for err in exc.errors():
            # A template is checked after rendering, at run time: its value is not final yet.
            if is_template(err.get("input")) or _inside_template(node.parameters, err["loc"]):
                continue
            problems.append(
                Problem(json_path(err["loc"], f"{base}.parameters"), err["msg"], "parameters")
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
