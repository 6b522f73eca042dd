"""Running one node of a run: its attempts, rendering, the action call, cancellation.

:class:`NodeRunner` is the half of :class:`~dataworkflows.engine.conductor.Conductor` that deals
with a single node (the conductor inherits it); the other half schedules nodes as a graph.
The in-memory state of a run and its nodes, and the statuses, are
:mod:`dataworkflows.engine.run_state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import aiohttp
from pydantic import ValidationError

from dataworkflows.actions import ActionContext, ActionError, ActionResult, StepOutcome
from dataworkflows.common import logcontext
from dataworkflows.common.clock import Clock
from dataworkflows.common.run_variables import RunVariables
from dataworkflows.common.validation_messages import friendly_errors, json_path
from dataworkflows.engine.child_runs import ChildRunner
from dataworkflows.engine.output_caps import NotStorable, json_bytes
from dataworkflows.engine.run_logging import log_attempt_failure
from dataworkflows.engine.run_state import (
    CANCELLED,
    FAILED,
    RETRIABLE,
    SUCCEEDED,
    TIMED_OUT,
    WAITING,
    Node,
    RunState,
    cancelled_attempt,
    lost_attempt,
)
from dataworkflows.engine.step_logs import StepLog
from dataworkflows.engine.step_progress import InFlight
from dataworkflows.engine.templating import TemplateEngine, TemplateError
from dataworkflows.ledger.records import json_problem
from dataworkflows.ledger.run_ledger import ClaimedRun, RunLedger, StepRecord
from dataworkflows.plugins.manager import PluginSet
from dataworkflows.plugins.propagation import propagation_source

log = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds an action gets to react to cancellation before it is abandoned
CANCEL_GRACE = 5.0


@dataclass
class Attempt:
    """The outcome of one attempt, before it is written."""

    record: StepRecord
    result: ActionResult


class NodeRunner(ChildRunner):
    """Attempts of one node; mixed into :class:`~dataworkflows.engine.conductor.Conductor`."""

    ledger: RunLedger
    plugins: PluginSet
    templates: TemplateEngine
    clock: Clock
    _http: Callable[[], aiohttp.ClientSession]
    _rng: random.Random
    _abandoned: set[asyncio.Future[Any]]
    _action_services: Callable[..., Mapping[str, Any]] | None
    #: DATAWORKFLOWS_STEP_STARTED_AFTER_SECONDS (see dataworkflows.engine.step_progress)
    _step_started_after: float
    #: bytes of step log lines kept per attempt and per run (engine/step_logs.py)
    _log_caps: tuple[int, int]
    #: bytes of outputs per attempt and per run (engine/output_caps.py)
    _output_caps: tuple[int, int]
    #: DATAWORKFLOWS_RUN_VARIABLE_MAX_BYTES (common/run_variables.py)
    _variable_max_bytes: int

    # -- one node -------------------------------------------------------------------------

    async def _run_node(
        self,
        state: RunState,
        node: Node,
        stop: asyncio.Event,
        readable: Iterable[str],
        extra: Mapping[str, Any] | None = None,
    ) -> StepRecord:
        """All attempts of one node; returns its final row, unwritten.

        Non-final rows (``RetriableFailure``, ``TimedOut`` with attempts left) are written
        here. As soon as ``stop`` is set it returns a ``Cancelled`` row. ``readable``: the
        nodes whose outputs its templates see.
        """
        plan_node = node.plan
        retry = plan_node.retry
        attempt = node.next_attempt
        while True:
            if stop.is_set():
                acquired = False
            elif not state.slots.locked():
                acquired = await state.slots.acquire()  # a free slot: no waiting, no task
            else:
                acquired, _ = await self._unless(
                    stop, state.slots.acquire(), late=lambda _: state.slots.release()
                )
            if not acquired:
                return self._cancelled(state, node, attempt)
            try:
                with logcontext.bind(node_id=plan_node.id, attempt=attempt):
                    if node.waiting_on is not None:  # the attempt waits on a child run
                        outcome = Attempt(*await self._child_outcome(state, node, attempt))
                    else:
                        outcome = await self._attempt(state, node, attempt, stop, readable, extra)
                    if outcome.record.status in (FAILED, RETRIABLE, TIMED_OUT):
                        log_attempt_failure(outcome.record)
            finally:
                state.slots.release()
            record, result = outcome.record, outcome.result
            if record.status == WAITING:
                return record  # written already; the conductor parks the run
            if record.status in (SUCCEEDED, FAILED, CANCELLED) or attempt >= retry.max_attempts:
                if record.status == RETRIABLE:  # no attempt left: the failure is final
                    record = replace(record, status=FAILED)
                return record
            await self._write(state, record)
            node.attempts = attempt
            delay = retry.delay(attempt, self._rng.random())
            delay = max(delay, result.retry_after or 0.0)
            waited, _ = await self._unless(stop, asyncio.sleep(delay))
            attempt += 1
            if not waited:
                return self._cancelled(state, node, attempt)

    async def _attempt(
        self,
        state: RunState,
        node: Node,
        attempt: int,
        stop: asyncio.Event,
        readable: Iterable[str],
        extra: Mapping[str, Any] | None,
    ) -> Attempt:
        """Render, validate and run one attempt; never raises for action errors."""
        run, plan_node = state.run, node.plan
        definition = plan_node.node
        started = self.clock.now()
        action_cls = self.plugins.action(definition.action_type)
        rendered: dict[str, Any] | None = None
        step_log: StepLog | None = None  # ctx.log, once the action is called
        variables: RunVariables | None = None  # ctx.variables, once the action is called
        result: ActionResult
        status: str | None = None
        if action_cls is None:
            result = ActionResult.failed(
                f"action type {definition.action_type!r} is not installed on this worker",
                code="unknown_action_type",
            )
        else:
            try:
                if node.parameters is not None and not definition.rerender_on_retry:
                    rendered = node.parameters
                else:
                    context = self._context(state, readable, attempt=attempt, extra=extra)
                    rendered = await self.templates.render_async(
                        definition.parameters, context, f"$.nodes[{plan_node.index}].parameters"
                    )
                    node.parameters = rendered
                params = action_cls.Params.model_validate(rendered)
            except TemplateError as exc:
                result = ActionResult.failed(
                    f"node {plan_node.id!r}, {exc.path}: {exc.message}",
                    code=exc.code,  # template_error or template_budget_exceeded
                    details={"path": exc.path},
                )
            except ValidationError as exc:
                base = f"$.nodes[{plan_node.index}].parameters"
                result = ActionResult.failed(
                    "rendered parameters do not match the action's schema",
                    code="invalid_parameters",
                    details=[
                        {"path": json_path(loc, base), "message": message}
                        for loc, message, _kind in friendly_errors(exc, action_cls.Params)
                    ],
                )
            else:
                step_log = StepLog.of(
                    definition.action_type, plan_node.id, attempt,
                    self.clock, self._log_caps[0], state.log_budget,
                )  # fmt: skip
                variables = RunVariables(state.variables, max_bytes=self._variable_max_bytes)
                ctx = ActionContext(
                    execution_id=run.id_str,
                    workflow_id=run.workflow_id,
                    workflow_version=run.workflow_version,
                    node_id=plan_node.id,
                    attempt=attempt,
                    idempotency_key=f"{run.id}:{plan_node.id}",
                    trigger=run.trigger,
                    http=self._http(),
                    log=step_log,
                    cancelled=stop,
                    tenant_id=run.tenant_id,
                    principal=run.principal,
                    variables=variables,
                    propagation=propagation_source(self.plugins, run.id_str, plan_node.id, attempt),
                    children=self._child_starter(state, plan_node.id),
                    **self._services(run),
                )
                in_flight = InFlight.begin(
                    self.ledger, run, state.lock, self._step_started_after,
                    node_id=plan_node.id, action_type=definition.action_type, attempt=attempt,
                    parameters=rendered, started_at=started,
                )  # fmt: skip
                try:
                    finished, invoked = await self._unless(
                        stop, self._invoke(action_cls(), ctx, params, plan_node.timeout)
                    )
                finally:
                    await in_flight.end()
                if not finished:
                    record = self._cancelled(state, node, attempt, started, rendered)
                    record = replace(record, logs=step_log.lines())
                    return Attempt(record, ActionResult.failed("cancelled", code="cancelled"))
                result, status = invoked
                if result.outcome is StepOutcome.WAITING:
                    waiting = StepRecord(
                        node_id=plan_node.id,
                        action_type=definition.action_type,
                        attempt=attempt,
                        status=WAITING,
                        parameters=rendered,
                        outputs=None,
                        error=None,
                        started_at=started,
                        ended_at=None,
                        logs=step_log.lines(),
                    )
                    result = await self._start_waited_child(state, node, waiting, result)
                    if result.outcome is StepOutcome.WAITING:
                        return Attempt(waiting, result)

        outputs = dict(result.outputs) if result.outcome is StepOutcome.SUCCEEDED else None
        if outputs is not None:
            try:
                refusal = state.output_budget.admit(json_bytes(outputs))
            except NotStorable:
                refusal = ActionResult.failed(
                    "the action returned outputs that are not JSON-serialisable",
                    code="invalid_outputs",
                )
            if refusal is not None:  # dropped whole, never truncated
                result, outputs = refusal, None
        problem = json_problem(dict(result.error)) if result.error else None
        if problem is not None:
            # checked here, before the row joins a shared write: a bad value fails this
            # attempt, permanently, and nothing else
            result = ActionResult.failed(
                f"the action returned an error whose details are not JSON-serialisable: {problem}",
                code="unserializable_result",
            )
        record = StepRecord(
            node_id=plan_node.id,
            action_type=definition.action_type,
            attempt=attempt,
            status=status or str(result.outcome),
            parameters=rendered,
            outputs=outputs,
            error=dict(result.error) if result.error else None,
            started_at=started,
            ended_at=self.clock.now(),
            links=tuple(result.links) if outputs is not None else (),
            logs=step_log.lines() if step_log is not None else None,
            # only a successful attempt's variables count (docs/semantics.md)
            variables=variables.written() if variables and outputs is not None else None,
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
                TIMED_OUT,
            )
        except ActionError as exc:
            return exc.to_result(), None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # we are cancelling it
            with contextlib.suppress(Exception):
                ctx.log.error("action raised CancelledError without being cancelled")
            return (
                ActionResult.failed("the action raised CancelledError", code="unhandled_exception"),
                None,
            )
        except Exception as exc:
            with contextlib.suppress(Exception):  # a broken log handler must not crash the run
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

    async def _unless(
        self,
        stop: asyncio.Event,
        coro: Coroutine[Any, Any, T],
        late: Callable[[T], None] | None = None,
    ) -> tuple[bool, T | None]:
        """Await ``coro`` unless ``stop`` is set first: (True, result) or (False, None).

        A result that arrives together with ``stop`` wins. When ``stop`` wins, ``coro`` is
        cancelled and given :data:`CANCEL_GRACE` seconds to unwind; if it completes anyway,
        ``late`` receives its result (e.g. to give back a semaphore slot).
        """
        task = asyncio.ensure_future(coro)
        if not stop.is_set():
            waiter = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                task.cancel()
                raise
            finally:
                waiter.cancel()
        if task.done():
            return True, task.result()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=CANCEL_GRACE)
        if not done:
            log.warning("an action ignored cancellation for %s s; abandoning it", CANCEL_GRACE)
            self._abandoned.add(task)
            task.add_done_callback(self._abandoned.discard)
        elif late is not None and not task.cancelled() and task.exception() is None:
            late(task.result())
        return False, None

    # -- helpers --------------------------------------------------------------------------

    def _services(self, run: ClaimedRun) -> Mapping[str, Any]:
        if self._action_services is None:
            return {}
        return self._action_services(tenant_id=run.tenant_id, workflow_id=run.workflow_id)

    def _context(
        self,
        state: RunState,
        readable: Iterable[str],
        *,
        attempt: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        run = state.run
        nodes = {}
        for node_id in readable:
            node = state.nodes.get(node_id)
            if node is not None and node.status is not None:
                nodes[node_id] = node.view()
        context: dict[str, Any] = {
            "trigger": run.trigger,
            "nodes": nodes,
            "vars": dict(state.variables),
            "execution": {
                "id": run.id_str,
                "workflowId": run.workflow_id,
                "version": run.workflow_version,
                "principal": run.principal,
                # set by time-based triggers (the schedule plugin): when the run was due
                "scheduledTime": run.trigger.get("scheduledTime"),
            },
        }
        if attempt is not None:
            context["attempt"] = attempt
        if extra:
            context.update(extra)
        return context

    def _lost(self, node: Node, *, final: bool = False) -> StepRecord:
        """The row of an attempt a dead worker may have been running (see ``_drive``)."""
        return lost_attempt(node, self.clock.now(), final=final)

    def _cancelled(
        self,
        state: RunState,
        node: Node,
        attempt: int,
        started: Any = None,
        parameters: dict[str, Any] | None = None,
    ) -> StepRecord:
        now = self.clock.now()
        return cancelled_attempt(state, node, attempt, started or now, now, parameters)
