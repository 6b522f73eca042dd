"""The conductor: executes one claimed run as a graph, writing the ledger as it goes.

This module knows workflow semantics; it knows nothing of queues or HTTP. The worker hands
it a :class:`~dataworkflows.ledger.run_ledger.ClaimedRun`; :meth:`Conductor.execute` returns
when the run is final. The semantics are stated for users in ``docs/semantics.md``; in short:

* The definition is compiled once per version into an
  :class:`~dataworkflows.engine.plan.ExecutionPlan` (a linear definition becomes a chain
  of ``success`` edges).
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

This module schedules the graph; running one node (its attempts, the action call,
cancellation) is :class:`~dataworkflows.engine.node_runner.NodeRunner`, which the conductor
inherits; the state of a run in flight and its transitions are
:mod:`dataworkflows.engine.run_state`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

import aiohttp

from dataworkflows.common import logcontext
from dataworkflows.common.clock import Clock
from dataworkflows.engine.context_reads import condition_reads, parameter_reads, with_reads
from dataworkflows.engine.node_runner import CANCEL_GRACE, NodeRunner
from dataworkflows.engine.plan_cache import PlanCache, plan_defaults
from dataworkflows.engine.run_logging import log_failure, run_log_ids
from dataworkflows.engine.run_state import (
    CANCELLED,
    FAILED,
    FAILURES,
    SUCCEEDED,
    WAITING,
    Node,
    RunState,
    failed_routing,
    mark,
    restore,
    sanitised,
    scan,
    timed_out,
    waiting,
)
from dataworkflows.engine.templating import TemplateBudgetExceeded, TemplateEngine, TemplateError
from dataworkflows.ledger.run_ledger import (
    ClaimedRun,
    RunFinish,
    RunLedger,
    StepRecord,
    UnwritableRecord,
)
from dataworkflows.plugins.manager import PluginSet
from dataworkflows.settings import Settings

log = logging.getLogger(__name__)


class DefinitionSource(Protocol):
    """Where the conductor reads a version's definition (the workflow store)."""

    async def definition(self, workflow_id: str, version: int) -> dict[str, Any]: ...


class Conductor(NodeRunner):
    """Executes runs. One per kernel; runs of any number of workflows share it."""

    def __init__(
        self,
        *,
        ledger: RunLedger,
        store: DefinitionSource,
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
        self.plans = PlanCache(
            lambda workflow_id, version: self.store.definition(workflow_id, version),
            plan_defaults(settings, default_action_timeout),
            settings.plan_cache_size,
            prepare=lambda plan: with_reads(plan, templates),
        )
        self._action_services = action_services
        self._step_started_after = settings.step_started_after_seconds
        self._log_caps = (settings.step_log_max_bytes, settings.run_log_max_bytes)
        self._output_caps = (settings.step_output_max_bytes, settings.run_output_max_bytes)
        self._variable_max_bytes = settings.run_variable_max_bytes
        self._max_nesting_depth = settings.default_max_nesting_depth
        self._rng = rng or random.Random()
        #: actions that ignored cancellation (see _unless); awaited by close()
        self._abandoned: set[asyncio.Future[Any]] = set()

    # -- public ---------------------------------------------------------------------------

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

    async def execute(self, run: ClaimedRun) -> str:
        """Run (or resume) to the end; returns the final status.

        Setting ``run.cancel_requested`` stops the run: the nodes in flight are recorded
        ``Cancelled`` and the run ends ``Cancelled``. Cancelling the task that awaits this
        (worker shutdown, lost lease) stops everything without writing: the run stays
        ``Running`` for another worker to resume.
        """
        try:
            plan = await self.plans.get(run.workflow_id, run.workflow_version)
        except Exception as exc:
            log.exception("run %s: cannot load its definition", run.id)
            finish = RunFinish("Failed", {"code": "definition_error", "message": str(exc)})
            await self.ledger.finish(run, finish)
            return finish.status
        nodes = {node_id: Node(p) for node_id, p in plan.nodes.items()}
        if plan.on_failure is not None:
            nodes[plan.on_failure.id] = Node(plan.on_failure)
        state = RunState(run, plan, nodes, asyncio.Semaphore(plan.max_parallel))
        state.log_budget.limit = self._log_caps[1]
        state.output_budget.step_limit, state.output_budget.run_limit = self._output_caps
        with logcontext.bind(**run_log_ids(run)):
            try:
                status = await self._drive(state)
            except UnwritableRecord as exc:
                status = await self._unwritable(state, exc)
            if status == FAILED:
                log_failure(run, state.failure or {})
            return status

    async def _unwritable(self, state: RunState, exc: UnwritableRecord) -> str:
        """End a run whose step rows the database refused (a value it cannot store).

        Only this run is affected (group commit wrote the other runs of the batch). The
        refused rows are written without their values, and the run ends ``Failed``.
        """
        records = exc.records
        log.error("run %s: the ledger refused its step rows: %s", state.run.id, exc.message)
        error: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if records:
            error["nodeId"] = records[0].node_id
        state.failure = error
        finish = RunFinish("Failed", error)
        await self.ledger.record_steps(
            state.run, [sanitised(r, exc.message) for r in records], finish
        )
        return finish.status

    # -- the scheduler --------------------------------------------------------------------

    async def _drive(self, state: RunState) -> str:
        plan, run = state.plan, state.run
        pending: list[StepRecord] = []  # final rows not yet written
        # a first claim has nothing recorded yet: only a run with history reads it back
        if run.has_history:
            restore(state, await self.ledger.list_actions(run.id))
            state.variables = {
                row["key"]: row["value"] for row in await self.ledger.list_variables(run.id)
            }
        for node_id in plan.order:
            if state.nodes[node_id].status is not None:
                await self._route(state, state.nodes[node_id], replay=True)
        for node in state.nodes.values():
            # a run stopped by its timeout or a cancel request says so on its Cancelled rows
            reason = (node.error or {}).get("reason") if node.status == CANCELLED else None
            if reason == "workflow_timeout" and state.failure is None:
                timed_out(state)
            elif reason == "run_cancelled":
                run.cancel_requested.set()
        if state.failure is not None:
            # Resumed while failing fast: what was in flight is cancelled, as it would have been.
            for node_id in plan.order:
                node = state.nodes[node_id]
                if node.status is None and node.attempts:
                    pending.append(self._cancelled(state, node, node.next_attempt))
                    mark(node, pending[-1])
        if self.ledger.is_over_recovery_limit(run):
            return await self._dead_letter(state, pending)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + plan.timeout if plan.timeout else None
        running: dict[asyncio.Task[StepRecord], Node] = {}
        position = {node_id: i for i, node_id in enumerate(plan.order)}  # topological
        cancel_waiter = asyncio.ensure_future(run.cancel_requested.wait())
        lost_checked = not run.recovered
        try:
            while True:
                ready: list[Node] = []
                if state.failure is None:
                    skipped, ready = scan(state, self.clock)
                    pending.extend(skipped)
                if run.cancel_requested.is_set() and state.failure is None:
                    # cancelled before these ready nodes could start (only ever on the first
                    # pass: later, a cancel is noticed before new nodes become ready)
                    for node in ready:
                        pending.append(self._cancelled(state, node, node.next_attempt))
                        mark(node, pending[-1])
                    break
                if state.failure is None and not ready and not running and waiting(state):
                    # nothing left but waiting on child runs: give the run up until one ends
                    await self._flush(state, pending)
                    if await self._park(state):
                        return WAITING
                    continue  # a child has ended: its node is ready again
                if state.failure is not None or (not ready and not running):
                    break
                if not lost_checked:
                    # Recovered from a worker that died: the nodes ready now may have been
                    # in flight there. That attempt's outcome is unknown; it counts as a
                    # retriable failure (the next one carries the same idempotency key).
                    # A node waiting on a child run was not in flight: it waits on.
                    lost_checked = True
                    lost = [node for node in ready if node.waiting_on is None]
                    for node in lost:
                        pending.append(self._lost(node))
                    if any(n.status is not None for n in lost):
                        for node in lost:
                            if node.status is not None:
                                await self._route(state, node)
                        continue
                await self._flush(state, pending)
                for node in ready:
                    node.started = True
                    task = asyncio.create_task(
                        self._run_node(state, node, state.stop, parameter_reads(node.plan)),
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
                    record = await self._settle(state, node, task.result())
                    if record is not None:
                        pending.append(record)
                if not done and deadline is not None and state.failure is None:
                    timed_out(state)
                if state.failure is not None or run.cancel_requested.is_set():
                    break

            if running:
                state.stop.set()
                await asyncio.wait(list(running))
                for task in sorted(running, key=lambda t: position[running[t].plan.id]):
                    node = running.pop(task)
                    record = task.result()
                    if record.status == WAITING:  # written; cancelled below with the others
                        node.attempts = record.attempt
                        continue
                    mark(node, record)
                    pending.append(record)
        finally:
            cancel_waiter.cancel()
            await asyncio.wait([cancel_waiter])  # ends now, not at some later turn
            if running:  # we are being cancelled ourselves (worker shutdown) or crashed
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)

        abandoned = [n.waiting_on for n in state.nodes.values() if n.waiting_on is not None]
        for node in state.nodes.values():
            if node.waiting_on is not None and node.status is None:
                # the run ends (failed, cancelled, timed out) while this node waits
                pending.append(self._cancelled(state, node, node.attempts, node.running_since))
                mark(node, pending[-1])
                node.waiting_on = None
        if state.failure is not None:
            finish = RunFinish("Failed", state.failure)
            on_failure = state.nodes[plan.on_failure.id] if plan.on_failure else None
            if on_failure is not None and on_failure.status is None:
                await self._flush(state, pending)
                record = await self._run_node(
                    state,
                    on_failure,
                    asyncio.Event(),
                    parameter_reads(on_failure.plan, plan.nodes),
                    {"error": state.failure},
                )
                mark(on_failure, record)
                pending.append(record)
        elif run.cancel_requested.is_set():
            finish = RunFinish(
                "Cancelled", {"code": "cancelled", "message": "the run was cancelled"}
            )
        else:
            finish = RunFinish("Succeeded")
        await self._flush(state, pending, finish)
        await self._cancel_children(abandoned)
        return finish.status

    async def _dead_letter(self, state: RunState, pending: list[StepRecord]) -> str:
        """Give up a run whose steps keep stopping their workers.

        The attempts the last worker was running when it stopped get their row (outcome
        unknown, failed, start time unknown), then the run ends ``Failed`` and is recorded in
        the dead letters, in one transaction.
        """
        if state.failure is None:
            skipped, ready = scan(state, self.clock)
            pending.extend(skipped)
        else:  # it was failing fast: only its onFailure node can have been running
            on_failure = state.plan.on_failure
            node = state.nodes[on_failure.id] if on_failure else None
            ready = [node] if node is not None and node.status is None else []
        pending.extend(self._lost(node, final=True) for node in ready if node.waiting_on is None)
        # a node waiting on a child was not in flight: its wait ends with the run
        waiting_on = [node for node in ready if node.waiting_on is not None]
        pending.extend(
            self._cancelled(state, node, node.attempts, node.running_since) for node in waiting_on
        )
        finish = self.ledger.dead_letter_finish(state.run)
        await self._flush(state, pending, finish)
        await self._cancel_children([node.waiting_on for node in waiting_on])
        return finish.status

    async def _settle(self, state: RunState, node: Node, record: StepRecord) -> StepRecord | None:
        """Take a node's final attempt: mark it, route it; returns the row to write (None
        for an attempt that waits on a child run: its row is written)."""
        if record.status == WAITING:
            node.attempts = record.attempt
            return None
        mark(node, record)
        if record.status == CANCELLED:
            for edge in node.plan.outgoing:
                state.edges[edge] = False
            return record
        condition_error = await self._route(state, node, variables=record.variables)
        if condition_error is not None:
            # The action succeeded (its outputs stay on the row) but routing failed.
            record = replace(record, status=FAILED, error=condition_error)
            mark(node, record)
        return record

    async def _route(
        self,
        state: RunState,
        node: Node,
        *,
        replay: bool = False,
        variables: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Resolve ``node``'s outgoing edges from its final status.

        ``variables``: what the node's final attempt set, not committed yet; its edge
        conditions see them (as they see its outputs).

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
        if replay and node.status == FAILED and failed_routing(node.error):
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
                    own = {"vars": state.variables | dict(variables)} if variables else None
                    context = self._context(state, condition_reads(plan_node), extra=own)
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

    async def _flush(
        self, state: RunState, records: list[StepRecord], finish: RunFinish | None = None
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
            for record in batch:  # committed: later nodes read them as vars.<key>
                state.variables.update(record.variables or {})

    async def _write(self, state: RunState, record: StepRecord) -> None:
        await self._flush(state, [record])
