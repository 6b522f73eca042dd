"""The conductor: executes one claimed run as a graph, writing the ledger as it goes.

This module knows workflow semantics; it knows nothing of queues or HTTP. The worker hands
it a :class:`~dataworkflows.ledger.ClaimedRun`; :meth:`Conductor.execute` returns when the
run is final. The semantics are stated for users in ``docs/semantics.md``; in short:

* The definition is compiled once per version into an :class:`~dataworkflows.plan.ExecutionPlan`
  (a linear definition becomes a chain of ``success`` edges).
* A node is *ready* when every incoming edge is resolved and at least one fired (the start
  node is ready at once); it is ``Skipped`` when all its incoming edges are dead, and its
  own outgoing edges are then dead too (dead-path elimination). Ready nodes run at once,
  at most ``maxParallelActions`` attempts at a time.
* When a node ends, its outgoing edges are resolved: an edge fires if its ``when`` matches
  the outcome and its condition is true (``firstMatch``: only the first such edge).
* Retriable failures are retried with exponential backoff; every attempt is one ledger
  row. A final failure that fired no edge fails the run fast: the nodes in flight are
  cancelled (recorded ``Cancelled``), the ``onFailure`` node runs, and the run ends
  ``Failed`` with the error of the node that caused it.

Ledger discipline: one transaction per attempt row, written under a per-run lock (the
ledger numbers events from the in-memory ``ClaimedRun``); a node's final row (and the
``Skipped`` rows it causes) is committed before any node it makes ready starts; the run's
end rides in the transaction of the last row.

Resuming: :meth:`Conductor.execute` first reads the run's recorded attempts and rebuilds
the state from them, so a run interrupted by a crash continues where it stopped (nodes
with a final row are not run again; a node whose last row is ``RetriableFailure`` or
``TimedOut`` continues with the next attempt number).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import aiohttp
from pydantic import ValidationError

from dataworkflows import logcontext
from dataworkflows.actions import ActionContext, ActionError, ActionResult, StepOutcome
from dataworkflows.clock import Clock
from dataworkflows.definitions import WorkflowDefinition, json_path
from dataworkflows.ledger import ClaimedRun, RunFinish, RunLedger, StepRecord, UnwritableRecord
from dataworkflows.plan import (
    ExecutionPlan,
    PlanDefaults,
    PlanEdge,
    PlanNode,
    RetrySettings,
    compile_plan,
)
from dataworkflows.plugins import PluginSet
from dataworkflows.settings import Settings
from dataworkflows.store import WorkflowStore
from dataworkflows.templating import TemplateBudgetExceeded, TemplateEngine, TemplateError
from dataworkflows.validation_messages import friendly_errors

log = logging.getLogger(__name__)

T = TypeVar("T")

SUCCEEDED = "Succeeded"
FAILED = "Failed"
RETRIABLE = "RetriableFailure"
TIMED_OUT = "TimedOut"
SKIPPED = "Skipped"
CANCELLED = "Cancelled"
#: statuses a node never leaves (TimedOut is final only when no attempt is left)
FINAL_STATUSES = frozenset({SUCCEEDED, FAILED, SKIPPED, CANCELLED})
FAILURES = frozenset({FAILED, TIMED_OUT})
#: error codes of a node that failed because an edge condition could not be evaluated
CONDITION_ERRORS = frozenset({"condition_error", TemplateBudgetExceeded.code})
#: seconds an action gets to react to cancellation before it is abandoned
CANCEL_GRACE = 5.0


@dataclass
class Attempt:
    """The outcome of one attempt, before it is written."""

    record: StepRecord
    result: ActionResult


@dataclass
class _Node:
    """What the conductor knows about one node of one run."""

    plan: PlanNode
    status: str | None = None  # the final status, once known
    attempts: int = 0  # attempts recorded so far
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None  # rendered, reused by retries
    started: bool = False

    def view(self) -> dict[str, Any]:
        """The node as templates see it under ``nodes.<id>``."""
        return {
            "status": self.status,
            "outputs": self.outputs or {},
            "error": self.error,
            "attempts": self.attempts,
        }


@dataclass
class _Run:
    """One run in flight."""

    run: ClaimedRun
    plan: ExecutionPlan
    nodes: dict[str, _Node]
    slots: asyncio.Semaphore
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: set when nodes in flight must stop (failure, timeout, cancel request)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    edges: dict[PlanEdge, bool] = field(default_factory=dict)  # fired (True) or dead (False)
    failure: dict[str, Any] | None = None
    #: why nodes in flight are being cancelled: (reason code, message)
    stop_reason: tuple[str, str] = ("run_cancelled", "the run was cancelled")


class Conductor:
    """Executes runs. One per kernel; runs of any number of workflows share it."""

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
        settings: Settings | None = None,
        action_services: Callable[..., Mapping[str, Any]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``action_services(tenant_id=..., workflow_id=...)`` returns extra
        :class:`~dataworkflows.ActionContext` fields (credentials, resources, settings)."""
        self.ledger = ledger
        self.store = store
        self.plugins = plugins
        self.templates = templates
        self._http = http
        self.clock = clock
        settings = settings or Settings()
        if settings.default_max_parallel_actions < 1:
            raise ValueError("default_max_parallel_actions must be at least 1")
        self.defaults = PlanDefaults(
            retry=RetrySettings(
                max_attempts=max(1, settings.default_retry_max_attempts),
                initial_delay=settings.default_retry_initial_delay,
                backoff_multiplier=settings.default_retry_backoff_multiplier,
                max_delay=settings.default_retry_max_delay,
                jitter=settings.default_retry_jitter,
            ),
            action_timeout=default_action_timeout,
            max_parallel_actions=settings.default_max_parallel_actions,
            workflow_timeout=settings.default_workflow_timeout or None,
        )
        self._action_services = action_services
        self._rng = rng or random.Random()
        #: compiled plans by (workflow, version), least recently used first (bounded)
        self._plans: OrderedDict[tuple[str, int], asyncio.Future[ExecutionPlan]] = OrderedDict()
        self.max_cached_plans = max(1, settings.plan_cache_size)
        #: actions that ignored cancellation (see _unless); awaited by close()
        self._abandoned: set[asyncio.Future[Any]] = set()

    # -- public ---------------------------------------------------------------------------

    async def plan(self, workflow_id: str, version: int) -> ExecutionPlan:
        """The compiled plan of a version, cached: versions are immutable."""
        key = (workflow_id, version)
        plan = self._plans.get(key)
        if plan is None:
            # one load per version, however many runs of it start at once
            plan = self._plans[key] = asyncio.ensure_future(self._load_plan(workflow_id, version))
            while len(self._plans) > self.max_cached_plans:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        try:
            return await asyncio.shield(plan)
        except Exception:
            if self._plans.get(key) is plan:
                del self._plans[key]  # a failed load is retried by the next run
            raise

    async def close(self, grace: float = CANCEL_GRACE) -> None:
        """Wait (up to ``grace`` seconds) for actions that ignored cancellation to end."""
        if not self._abandoned:
            return
        _done, pending = await asyncio.wait(list(self._abandoned), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d action(s) still ignore cancellation at shutdown", len(pending))
            await asyncio.wait(pending, timeout=grace)

    async def _load_plan(self, workflow_id: str, version: int) -> ExecutionPlan:
        raw = await self.store.definition(workflow_id, version)
        return compile_plan(WorkflowDefinition.model_validate(raw), self.defaults)

    async def execute(self, run: ClaimedRun) -> str:
        """Run (or resume) to the end; returns the final status.

        Setting ``run.cancel_requested`` stops the run: the nodes in flight are recorded
        ``Cancelled`` and the run ends ``Cancelled``. Cancelling the task that awaits this
        (worker shutdown, lost lease) stops everything without writing: the run stays
        ``Running`` for another worker to resume.
        """
        try:
            plan = await self.plan(run.workflow_id, run.workflow_version)
        except Exception as exc:
            log.exception("run %s: cannot load its definition", run.id)
            finish = RunFinish("Failed", {"code": "definition_error", "message": str(exc)})
            await self.ledger.finish(run, finish)
            return finish.status
        nodes = {node_id: _Node(p) for node_id, p in plan.nodes.items()}
        if plan.on_failure is not None:
            nodes[plan.on_failure.id] = _Node(plan.on_failure)
        state = _Run(run, plan, nodes, asyncio.Semaphore(plan.max_parallel))
        with logcontext.bind(correlation_id=run.correlation_id, execution_id=run.id_str):
            try:
                return await self._drive(state)
            except UnwritableRecord as exc:
                return await self._unwritable(state, exc)

    async def _unwritable(self, state: _Run, exc: UnwritableRecord) -> str:
        """End a run whose step rows the database refused (a value it cannot store).

        Only this run is affected (group commit wrote the other runs of the batch). The
        refused rows are written without their values, and the run ends ``Failed``.
        """
        records = exc.records
        log.error("run %s: the ledger refused its step rows: %s", state.run.id, exc.message)
        error: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if records:
            error["nodeId"] = records[0].node_id
        finish = RunFinish("Failed", error)
        await self.ledger.record_steps(
            state.run, [_sanitised(r, exc.message) for r in records], finish
        )
        return finish.status

    # -- the scheduler --------------------------------------------------------------------

    async def _drive(self, state: _Run) -> str:
        plan, run = state.plan, state.run
        pending: list[StepRecord] = []  # final rows not yet written
        # a first claim has nothing recorded yet: only a run with history reads it back
        if run.has_history:
            self._restore(state, await self.ledger.list_actions(run.id))
        for node_id in plan.order:
            if state.nodes[node_id].status is not None:
                await self._route(state, state.nodes[node_id], replay=True)
        for node in state.nodes.values():
            # a run stopped by its timeout or a cancel request says so on its Cancelled rows
            reason = (node.error or {}).get("reason") if node.status == CANCELLED else None
            if reason == "workflow_timeout" and state.failure is None:
                self._timed_out(state)
            elif reason == "run_cancelled":
                run.cancel_requested.set()
        if state.failure is not None:
            # Resumed while failing fast: what was in flight is cancelled, as it would have been.
            for node_id in plan.order:
                node = state.nodes[node_id]
                if node.status is None and node.attempts:
                    pending.append(self._cancelled(state, node, node.attempts + 1))
                    self._mark(node, pending[-1])
        if self.ledger.is_over_recovery_limit(run):
            return await self._dead_letter(state, pending)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + plan.timeout if plan.timeout else None
        running: dict[asyncio.Task[StepRecord], _Node] = {}
        position = {node_id: i for i, node_id in enumerate(plan.order)}  # topological
        cancel_waiter = asyncio.ensure_future(run.cancel_requested.wait())
        lost_checked = not run.recovered
        try:
            while True:
                ready: list[_Node] = []
                if state.failure is None:
                    skipped, ready = self._scan(state)
                    pending.extend(skipped)
                if run.cancel_requested.is_set() and state.failure is None:
                    # cancelled before these ready nodes could start (only ever on the first
                    # pass: later, a cancel is noticed before new nodes become ready)
                    for node in ready:
                        pending.append(self._cancelled(state, node, node.attempts + 1))
                        self._mark(node, pending[-1])
                    break
                if state.failure is not None or (not ready and not running):
                    break
                if not lost_checked:
                    # Recovered from a worker that died: the nodes ready now may have been
                    # in flight there. That attempt's outcome is unknown; it counts as a
                    # retriable failure (the next one carries the same idempotency key).
                    lost_checked = True
                    for node in ready:
                        pending.append(self._lost(node))
                    if any(n.status is not None for n in ready):
                        for node in ready:
                            if node.status is not None:
                                await self._route(state, node)
                        continue
                await self._flush(state, pending)
                for node in ready:
                    node.started = True
                    task = asyncio.create_task(
                        self._run_node(state, node, state.stop, node.plan.ancestors),
                        name=f"node-{node.plan.id}",
                    )
                    running[task] = node
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(
                    [*running, cancel_waiter], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for task in sorted(
                    (t for t in done if t in running), key=lambda t: position[running[t].plan.id]
                ):
                    node = running.pop(task)
                    pending.append(await self._settle(state, node, task.result()))
                if not done and deadline is not None and state.failure is None:
                    self._timed_out(state)
                if state.failure is not None or run.cancel_requested.is_set():
                    break

            if running:
                state.stop.set()
                await asyncio.wait(list(running))
                for task in sorted(running, key=lambda t: position[running[t].plan.id]):
                    node = running.pop(task)
                    record = task.result()
                    self._mark(node, record)
                    pending.append(record)
        finally:
            cancel_waiter.cancel()
            await asyncio.wait([cancel_waiter])  # ends now, not at some later turn
            if running:  # we are being cancelled ourselves (worker shutdown) or crashed
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)

        if state.failure is not None:
            finish = RunFinish("Failed", state.failure)
            on_failure = state.nodes[plan.on_failure.id] if plan.on_failure else None
            if on_failure is not None and on_failure.status is None:
                await self._flush(state, pending)
                record = await self._run_node(
                    state, on_failure, asyncio.Event(), plan.nodes, {"error": state.failure}
                )
                self._mark(on_failure, record)
                pending.append(record)
        elif run.cancel_requested.is_set():
            finish = RunFinish(
                "Cancelled", {"code": "cancelled", "message": "the run was cancelled"}
            )
        else:
            finish = RunFinish("Succeeded")
        await self._flush(state, pending, finish)
        return finish.status

    async def _dead_letter(self, state: _Run, pending: list[StepRecord]) -> str:
        """Give up a run whose steps keep stopping their workers.

        The attempts the last worker was running when it stopped get their row (outcome
        unknown, failed, start time unknown), then the run ends ``Failed`` and is recorded in
        the dead letters, in one transaction.
        """
        if state.failure is None:
            skipped, ready = self._scan(state)
            pending.extend(skipped)
        else:  # it was failing fast: only its onFailure node can have been running
            on_failure = state.plan.on_failure
            node = state.nodes[on_failure.id] if on_failure else None
            ready = [node] if node is not None and node.status is None else []
        pending.extend(self._lost(node, final=True) for node in ready)
        finish = self.ledger.dead_letter_finish(state.run)
        await self._flush(state, pending, finish)
        return finish.status

    def _restore(self, state: _Run, rows: Iterable[Mapping[str, Any]]) -> None:
        """Rebuild node states from the recorded attempts of this run."""
        last: dict[str, Mapping[str, Any]] = {}
        for row in sorted(rows, key=lambda r: (r["node_id"], r["attempt"])):
            node = state.nodes.get(row["node_id"])
            if node is None:
                log.warning("run %s: ledger row for unknown node %r", state.run.id, row["node_id"])
                continue
            node.attempts = max(node.attempts, row["attempt"])
            last[row["node_id"]] = row
        for node_id, row in last.items():
            node = state.nodes[node_id]
            status = row["status"]
            node.started = True
            node.error = row["error"]
            if status in FINAL_STATUSES or (
                status == TIMED_OUT and node.attempts >= node.plan.retry.max_attempts
            ):
                node.status = status
                node.outputs = row["outputs"] if status == SUCCEEDED else None
            elif node.attempts >= node.plan.retry.max_attempts:
                node.status = FAILED  # no attempt left; nothing more to write
            else:
                node.parameters = row["parameters"]
                node.started = False  # continues with attempt ``attempts + 1`` when ready

    def _scan(self, state: _Run) -> tuple[list[StepRecord], list[_Node]]:
        """Skip the nodes whose incoming edges are all dead; return (skip rows, ready nodes)."""
        skipped: list[StepRecord] = []
        ready: list[_Node] = []
        for node_id in state.plan.order:
            node = state.nodes[node_id]
            if node.status is not None or node.started:
                continue
            if node_id == state.plan.start:
                ready.append(node)
                continue
            incoming = [state.edges.get(e) for e in node.plan.incoming]
            if any(fired is None for fired in incoming):
                continue
            if any(incoming):
                ready.append(node)
                continue
            now = self.clock.now()
            record = StepRecord(
                node_id=node_id,
                action_type=node.plan.node.action_type,
                attempt=node.attempts + 1,
                status=SKIPPED,
                parameters=None,
                outputs=None,
                error=None,
                started_at=now,
                ended_at=now,
            )
            self._mark(node, record)
            for edge in node.plan.outgoing:
                state.edges[edge] = False
            skipped.append(record)
        return skipped, ready

    async def _settle(self, state: _Run, node: _Node, record: StepRecord) -> StepRecord:
        """Take a node's final attempt: mark it, route it; returns the row to write."""
        self._mark(node, record)
        if record.status == CANCELLED:
            for edge in node.plan.outgoing:
                state.edges[edge] = False
            return record
        condition_error = await self._route(state, node)
        if condition_error is not None:
            # The action succeeded (its outputs stay on the row) but routing failed.
            record = replace(record, status=FAILED, error=condition_error)
            self._mark(node, record)
        return record

    def _mark(self, node: _Node, record: StepRecord) -> None:
        node.status = record.status
        node.attempts = max(node.attempts, record.attempt)
        node.outputs = record.outputs if record.status == SUCCEEDED else None
        node.error = record.error

    async def _route(
        self, state: _Run, node: _Node, *, replay: bool = False
    ) -> dict[str, Any] | None:
        """Resolve ``node``'s outgoing edges from its final status.

        Records the run's failure if the node failed and no edge fired. Returns the error
        of a condition that could not be evaluated (the node then counts as failed).
        """
        plan_node = node.plan
        if node.status == SUCCEEDED:
            outcome = "success"
        elif node.status in FAILURES:
            outcome = "failure"
        else:
            outcome = None
        condition_error: dict[str, Any] | None = None
        fired_any = False
        if replay and node.status == FAILED and _failed_routing(node.error):
            outcome = None  # it failed routing when it ran; it fails the run again
            condition_error = node.error
        for edge in plan_node.outgoing:
            fires = False
            if (
                outcome is not None
                and condition_error is None
                and edge.when in (outcome, "always")
                and not (fired_any and state.plan.route_policy == "firstMatch")
            ):
                if edge.condition is None:
                    fires = True
                else:
                    context = self._context(state, plan_node.ancestors | {plan_node.id})
                    try:
                        fires = await self.templates.evaluate_condition_async(
                            edge.condition, context, f"{edge.path}.condition"
                        )
                    except TemplateError as exc:
                        budget = isinstance(exc, TemplateBudgetExceeded)
                        condition_error = {
                            "code": exc.code if budget else "condition_error",
                            "message": exc.message,
                            "details": {"path": exc.path},
                        }
                        fires = False
            state.edges[edge] = fires
            fired_any = fired_any or fires
        if condition_error is not None:
            for edge in plan_node.outgoing:
                state.edges[edge] = False
            error = condition_error
        elif outcome == "failure" and not fired_any:
            error = node.error or {"code": "failed", "message": "the node failed"}
        else:
            return None
        if state.failure is None:
            state.failure = {"nodeId": plan_node.id, "attempt": node.attempts, **error}
            state.stop_reason = ("node_failed", f"node {plan_node.id!r} failed")
        return condition_error if not replay else None

    def _timed_out(self, state: _Run) -> None:
        timeout = state.plan.timeout or 0
        state.failure = {
            "code": "workflow_timeout",
            "message": f"the run did not finish within its timeout of {timeout:g} s",
        }
        state.stop_reason = ("workflow_timeout", "the workflow timed out")

    async def _flush(
        self, state: _Run, records: list[StepRecord], finish: RunFinish | None = None
    ) -> None:
        """Write ``records`` (and ``finish``) in one transaction; empties ``records``."""
        if not records and finish is None:
            return
        batch = list(records)
        records.clear()
        async with state.lock:
            try:
                await self.ledger.record_steps(state.run, batch, finish)
            except UnwritableRecord as exc:
                exc.records = batch
                raise

    async def _write(self, state: _Run, record: StepRecord) -> None:
        await self._flush(state, [record])

    # -- one node -------------------------------------------------------------------------

    async def _run_node(
        self,
        state: _Run,
        node: _Node,
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
        attempt = node.attempts + 1
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
                outcome = await self._attempt(state, node, attempt, stop, readable, extra)
            finally:
                state.slots.release()
            record, result = outcome.record, outcome.result
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
        state: _Run,
        node: _Node,
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
                ctx = ActionContext(
                    execution_id=run.id_str,
                    workflow_id=run.workflow_id,
                    workflow_version=run.workflow_version,
                    node_id=plan_node.id,
                    attempt=attempt,
                    idempotency_key=f"{run.id}:{plan_node.id}",
                    trigger=run.trigger,
                    http=self._http(),
                    # the execution id reaches log records through logcontext (bound in
                    # execute); passing it as ``extra`` too would collide with its factory
                    log=logging.LoggerAdapter(
                        logging.getLogger(f"dataworkflows.action.{definition.action_type}"),
                        {"node_id": plan_node.id, "attempt": attempt},
                    ),
                    cancelled=stop,
                    tenant_id=run.tenant_id,
                    principal=run.principal,
                    **self._services(run),
                )
                finished, invoked = await self._unless(
                    stop, self._invoke(action_cls(), ctx, params, plan_node.timeout)
                )
                if not finished:
                    record = self._cancelled(state, node, attempt, started, rendered)
                    return Attempt(record, ActionResult.failed("cancelled", code="cancelled"))
                result, status = invoked

        outputs = dict(result.outputs) if result.outcome is StepOutcome.SUCCEEDED else None
        if outputs is not None and not _is_json(outputs):
            result = ActionResult.failed(
                "the action returned outputs that are not JSON-serialisable",
                code="invalid_outputs",
            )
            outputs = None
        if result.error and not _is_json(dict(result.error)):
            # checked here, before the row joins a shared write: a bad value fails this
            # attempt, permanently, and nothing else
            result = ActionResult.failed(
                "the action returned an error whose details are not JSON-serialisable: "
                f"{_unserializable(dict(result.error))}",
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
        state: _Run,
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

    def _lost(self, node: _Node, *, final: bool = False) -> StepRecord:
        """The row of an attempt a dead worker may have been running (see ``_drive``).

        ``final``: no attempt follows (the run goes to the dead letters).
        """
        attempt = node.attempts + 1
        now = self.clock.now()
        record = StepRecord(
            node_id=node.plan.id,
            action_type=node.plan.node.action_type,
            attempt=attempt,
            status=FAILED if final or attempt >= node.plan.retry.max_attempts else RETRIABLE,
            parameters=node.parameters,
            outputs=None,
            error={
                "code": "worker_lost",
                "message": "the worker running this node stopped before the attempt ended; "
                "its outcome is unknown",
            },
            # when it started is not known (it was never recorded): null, not a guess;
            # it is known to have ended by now, when its loss was noticed
            started_at=None,
            ended_at=now,
        )
        if record.status == FAILED:
            self._mark(node, record)
        else:
            node.attempts = attempt
        return record

    def _cancelled(
        self,
        state: _Run,
        node: _Node,
        attempt: int,
        started: Any = None,
        parameters: dict[str, Any] | None = None,
    ) -> StepRecord:
        now = self.clock.now()
        return StepRecord(
            node_id=node.plan.id,
            action_type=node.plan.node.action_type,
            attempt=attempt,
            status=CANCELLED,
            parameters=parameters,
            outputs=None,
            error={
                "code": "cancelled",
                "message": f"cancelled: {state.stop_reason[1]}",
                "reason": state.stop_reason[0],
            },
            started_at=started or now,
            ended_at=now,
        )


def _failed_routing(error: Mapping[str, Any] | None) -> bool:
    """True for the error of a node that failed because one of its edge conditions did."""
    error = error or {}
    path = str((error.get("details") or {}).get("path", ""))
    return error.get("code") in CONDITION_ERRORS and path.endswith(".condition")


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _unserializable(value: Any) -> str:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return "unknown"  # pragma: no cover - only called for values that fail


def _sanitised(record: StepRecord, message: str) -> StepRecord:
    """A row the database will take in place of one it refused: its values are dropped,
    what happened stays (a final attempt that could not be recorded failed)."""
    return replace(
        record,
        status=record.status if record.status in (FAILED, CANCELLED, SKIPPED) else FAILED,
        parameters=None,
        outputs=None,
        error={"code": "unserializable_result", "message": message},
        links=(),
    )
