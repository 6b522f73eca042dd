"""The conductor: executes one claimed run, step by step, writing the ledger as it goes.

This module knows workflow semantics; it knows nothing of queues or HTTP. The worker hands
it a :class:`~dataworkflows.ledger.ClaimedRun`; it returns when the run is final.

Semantics implemented here (linear form): a definition without edges runs its nodes in
array order; the first node that fails ends the run ``Failed`` with that node's error and
later nodes do not run. Graph execution (edges, joins, retries) builds on :meth:`_attempt`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import ValidationError

from dataworkflows.actions import ActionContext, ActionError, ActionResult, StepOutcome
from dataworkflows.clock import Clock
from dataworkflows.definitions import Node, WorkflowDefinition, json_path
from dataworkflows.ledger import ClaimedRun, RunFinish, RunLedger, StepRecord
from dataworkflows.plugins import PluginSet
from dataworkflows.store import WorkflowStore
from dataworkflows.templating import TemplateEngine, TemplateError

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    """The outcome of one attempt, before it is written."""

    record: StepRecord
    result: ActionResult


class Conductor:
    def __init__(
        self,
        *,
        ledger: RunLedger,
        store: WorkflowStore,
        plugins: PluginSet,
        templates: TemplateEngine,
        http: Callable[[], aiohttp.ClientSession],
        clock: Clock,
        default_action_timeout: float,
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.plugins = plugins
        self.templates = templates
        self._http = http
        self.clock = clock
        self.default_action_timeout = default_action_timeout
        self._plans: dict[tuple[str, int], WorkflowDefinition] = {}

    async def plan(self, workflow_id: str, version: int) -> WorkflowDefinition:
        """The parsed definition of a version, cached: versions are immutable."""
        key = (workflow_id, version)
        plan = self._plans.get(key)
        if plan is None:
            raw = await self.store.definition(workflow_id, version)
            plan = WorkflowDefinition.model_validate(raw)
            self._plans[key] = plan
        return plan

    async def execute(self, run: ClaimedRun) -> str:
        """Run to the end; returns the final status."""
        try:
            definition = await self.plan(run.workflow_id, run.workflow_version)
        except Exception as exc:
            log.exception("run %s: cannot load its definition", run.id)
            finish = RunFinish("Failed", {"code": "definition_error", "message": str(exc)})
            await self.ledger.finish(run, finish)
            return finish.status

        cancelled = asyncio.Event()
        context = self._template_context(run)
        nodes = definition.nodes
        for index, node in enumerate(nodes):
            attempt = await self._attempt(run, node, 1, context, cancelled)
            outcome = attempt.result.outcome
            finish: RunFinish | None = None
            if outcome is StepOutcome.SUCCEEDED:
                context["nodes"][node.id] = {"outputs": attempt.record.outputs}
                if index == len(nodes) - 1:
                    finish = RunFinish("Succeeded")
            else:
                finish = RunFinish(
                    "Failed",
                    {"nodeId": node.id, "attempt": 1, **(attempt.record.error or {})},
                )
            await self.ledger.record_step(run, attempt.record, finish)
            if finish is not None:
                return finish.status
        return "Succeeded"  # pragma: no cover - a definition has at least one node

    def _template_context(self, run: ClaimedRun) -> dict[str, Any]:
        return {
            "trigger": run.trigger,
            "nodes": {},
            "execution": {
                "id": run.id_str,
                "workflowId": run.workflow_id,
                "version": run.workflow_version,
                "principal": run.principal,
            },
        }

    async def _attempt(
        self,
        run: ClaimedRun,
        node: Node,
        attempt: int,
        context: dict[str, Any],
        cancelled: asyncio.Event,
    ) -> Attempt:
        """Render, validate and run one attempt of ``node``; never raises for action errors."""
        started = self.clock.now()
        action_cls = self.plugins.action(node.action_type)
        rendered: dict[str, Any] | None = None
        result: ActionResult
        status: str | None = None
        if action_cls is None:
            result = ActionResult.failed(
                f"action type {node.action_type!r} is not installed on this worker",
                code="unknown_action_type",
            )
        else:
            try:
                rendered = self.templates.render(node.parameters, context, "$.parameters")
                params = action_cls.Params.model_validate(rendered)
            except TemplateError as exc:
                result = ActionResult.failed(
                    exc.message, code="template_error", details={"path": exc.path}
                )
            except ValidationError as exc:
                result = ActionResult.failed(
                    "rendered parameters do not match the action's schema",
                    code="invalid_parameters",
                    details=[
                        {"path": json_path(e["loc"], "$.parameters"), "message": e["msg"]}
                        for e in exc.errors()
                    ],
                )
            else:
                ctx = ActionContext(
                    execution_id=run.id_str,
                    workflow_id=run.workflow_id,
                    workflow_version=run.workflow_version,
                    node_id=node.id,
                    attempt=attempt,
                    idempotency_key=f"{run.id}:{node.id}",
                    trigger=run.trigger,
                    http=self._http(),
                    log=logging.LoggerAdapter(
                        logging.getLogger(f"dataworkflows.action.{node.action_type}"),
                        {"execution_id": run.id_str, "node_id": node.id},
                    ),
                    cancelled=cancelled,
                    tenant_id=run.tenant_id,
                    principal=run.principal,
                )
                timeout = node.timeout or self.default_action_timeout
                result, status = await self._invoke(action_cls(), ctx, params, timeout)

        outputs = dict(result.outputs) if result.outcome is StepOutcome.SUCCEEDED else None
        if outputs is not None and not _is_json(outputs):
            result = ActionResult.failed(
                "the action returned outputs that are not JSON-serialisable",
                code="invalid_outputs",
            )
            outputs = None
        record = StepRecord(
            node_id=node.id,
            action_type=node.action_type,
            attempt=attempt,
            status=status or str(result.outcome),
            parameters=rendered,
            outputs=outputs,
            error=dict(result.error) if result.error else None,
            started_at=started,
            ended_at=self.clock.now(),
        )
        return Attempt(record, result)

    async def _invoke(
        self, action: Any, ctx: ActionContext, params: Any, timeout: float
    ) -> tuple[ActionResult, str | None]:
        try:
            async with asyncio.timeout(timeout):
                result = await action.run(ctx, params)
        except TimeoutError:
            return (
                ActionResult.retriable(
                    f"the action did not finish within {timeout:g} s", code="timeout"
                ),
                "TimedOut",
            )
        except ActionError as exc:
            return exc.to_result(), None
        except Exception as exc:
            ctx.log.exception("action raised")
            return (
                ActionResult.failed(f"{type(exc).__name__}: {exc}", code="unhandled_exception"),
                None,
            )
        if not isinstance(result, ActionResult):
            return (
                ActionResult.failed(
                    f"the action returned {type(result).__name__}, not an ActionResult",
                    code="invalid_result",
                ),
                None,
            )
        return result, None


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
