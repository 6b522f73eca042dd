"""``core.subworkflow``: run another workflow as a child run.

Parameters:
    workflow: the child workflow's id (templates allowed).
    version: a pinned version of it (default: its current published version).
    input: the child's trigger payload (``trigger`` in its templates; templates allowed).
    waitForCompletion: wait for the child (default) or return its execution id at once.

Waiting, the node's outputs are the child's: ``{"executionId", "nodes": {<child node>:
<its outputs>}}``; a failed or cancelled child fails the node (``subworkflow_failed``) and
the node's retry policy starts a new child. Not waiting, the output is ``{"executionId"}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dataworkflows import Action, ActionContext, ActionResult, WorkflowReference


class Subworkflow(Action):
    type = "core.subworkflow"
    title = "Run another workflow as a child run"

    class Params(BaseModel):
        """Start a run of another workflow of the same tenant as a child of this run, with
        ``input`` as its trigger payload, and wait for its end or not."""

        model_config = ConfigDict(
            extra="forbid", populate_by_name=True, use_attribute_docstrings=True
        )

        workflow: str = Field(min_length=1, max_length=200)
        """The id of the workflow to run (it must be Active)."""
        version: int | None = Field(default=None, ge=1)
        """A pinned version of that workflow; default: its current published version."""
        input: dict[str, Any] = Field(default_factory=dict)
        """The child run's trigger payload (``trigger`` in its templates)."""
        wait_for_completion: bool = Field(default=True, alias="waitForCompletion")
        """Wait for the child run (default): its outputs become this node's, its failure
        this node's failure. ``false``: start it and succeed at once with its
        ``executionId``."""

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        if params.wait_for_completion:
            result: ActionResult = await ctx.start_child_run(
                params.workflow, params.input, version=params.version, wait=True
            )
            return result
        child_id = await ctx.start_child_run(
            params.workflow, params.input, version=params.version, wait=False
        )
        return ActionResult.succeeded({"executionId": child_id})

    @classmethod
    def workflow_references(cls, parameters: Mapping[str, Any]) -> Sequence[WorkflowReference]:
        """The child workflow, when ``workflow`` (and ``version``) are not templates."""
        workflow = parameters.get("workflow")
        version = parameters.get("version")
        if not isinstance(workflow, str) or "{{" in workflow or "{%" in workflow:
            return ()
        pinned = version if isinstance(version, int) and not isinstance(version, bool) else None
        return (WorkflowReference(workflow, pinned, path="workflow"),)
