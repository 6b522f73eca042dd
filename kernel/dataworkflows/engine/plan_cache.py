"""Compiled plans for the conductor: the defaults a definition's unset fields take (from
the settings), and a bounded cache of compiled plans by (workflow, version) -- versions
are immutable, so a plan is compiled once however many runs of it start.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from dataworkflows.engine.definitions import WorkflowDefinition
from dataworkflows.engine.plan import ExecutionPlan, PlanDefaults, RetrySettings, compile_plan
from dataworkflows.settings import Settings


def plan_defaults(settings: Settings, default_action_timeout: float) -> PlanDefaults:
    """What a definition that leaves retries, timeouts or parallelism unset gets."""
    if settings.default_max_parallel_actions < 1:
        raise ValueError("default_max_parallel_actions must be at least 1")
    return PlanDefaults(
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


class PlanCache:
    """Compiled plans by (workflow, version), least recently used first (bounded)."""

    def __init__(
        self,
        load: Callable[[str, int], Awaitable[dict[str, Any]]],
        defaults: PlanDefaults,
        size: int,
        prepare: Callable[[ExecutionPlan], ExecutionPlan] | None = None,
    ) -> None:
        """``load(workflow_id, version)`` returns a version's definition; ``prepare``, if
        given, completes each compiled plan (e.g. the nodes' template reads)."""
        self._load = load
        self._prepare = prepare
        self.defaults = defaults
        self._plans: OrderedDict[tuple[str, int], asyncio.Future[ExecutionPlan]] = OrderedDict()
        self.max_cached_plans = max(1, size)

    async def get(self, workflow_id: str, version: int) -> ExecutionPlan:
        """The compiled plan of a version, cached: versions are immutable."""
        key = (workflow_id, version)
        plan = self._plans.get(key)
        if plan is None:
            # one load per version, however many runs of it start at once
            plan = self._plans[key] = asyncio.ensure_future(self._compile(workflow_id, version))
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

    async def _compile(self, workflow_id: str, version: int) -> ExecutionPlan:
        raw = await self._load(workflow_id, version)
        plan = compile_plan(WorkflowDefinition.model_validate(raw), self.defaults)
        return plan if self._prepare is None else self._prepare(plan)
