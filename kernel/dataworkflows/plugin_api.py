"""What the kernel offers plugins at run time (trigger endpoints, schedulers).

Plugins receive a :class:`PluginAPI` (e.g. in ``register_routes``) and use it instead of
the database: the kernel keeps its tables to itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dataworkflows.clock import Clock
    from dataworkflows.kernel import Kernel


class PluginAPI:
    """The kernel as a plugin sees it."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel

    @property
    def clock(self) -> Clock:
        """The kernel's clock; tests replace it with a :class:`~dataworkflows.clock.FakeClock`."""
        return self._kernel.clock

    async def start_execution(
        self,
        workflow_id: str,
        *,
        trigger: dict[str, Any],
        request_id: str | None = None,
        tenant_id: str = "default",
        principal: str | None = None,
        correlation_id: str | None = None,
    ) -> tuple[str, bool]:
        """Queue a run of an Active workflow; returns (execution id, created).

        The same ``request_id`` twice returns the first run's id with ``created`` False, so
        a redelivered event never starts a second run. Raises
        :class:`~dataworkflows.errors.ApiError` subclasses (404 unknown workflow, 409 not
        Active) that a route can render as they are.
        """
        summary, created = await self._kernel.service.execute(
            workflow_id,
            trigger=trigger,
            request_id=request_id,
            tenant_id=tenant_id,
            principal=principal,
            correlation_id=correlation_id,
        )
        return summary["executionId"], created
