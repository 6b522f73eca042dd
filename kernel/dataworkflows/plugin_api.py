"""What the kernel offers plugins at run time (trigger endpoints, schedulers).

Plugins receive a :class:`PluginAPI` (e.g. in ``register_routes``) and use it instead of
the database: the kernel keeps its tables to itself. The API is built by the composition
root (:mod:`dataworkflows.kernel`) from the services it needs, each described here by a
small protocol, so this contract module depends on no part of the kernel.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from dataworkflows.actions import Credential, CredentialError
from dataworkflows.measurements import EngineMeasurement, Measure, QueueDepth, TableSize
from dataworkflows.triggers import FireResult, TriggerHandle, request_id_for

if TYPE_CHECKING:
    from dataworkflows.common.clock import Clock
    from dataworkflows.settings import Settings


class RunStarter(Protocol):
    """Queues runs (the kernel's workflow service)."""

    async def execute(
        self,
        workflow_id: str,
        *,
        trigger: dict[str, Any] | None = None,
        request_id: str | None = None,
        tenant_id: str = "default",
        principal: str | None = None,
        correlation_id: str | None = None,
        redelivery_may_differ: bool = False,
    ) -> tuple[dict[str, Any], bool]: ...


class TriggerRuntime(Protocol):
    """What plugins may do with triggers (the kernel's trigger service)."""

    async def handle(self, trigger_id: str) -> TriggerHandle | None: ...

    async def start(
        self,
        trigger: TriggerHandle,
        event: Mapping[str, Any],
        *,
        key: str | None = None,
        principal: str | None = None,
        correlation_id: str | None = None,
    ) -> FireResult: ...

    async def get_state(self, trigger_id: str) -> dict[str, Any]: ...

    async def set_state(self, trigger_id: str, state: Mapping[str, Any]) -> None: ...

    async def record_error(self, trigger_id: str, error: dict[str, str]) -> None: ...


class SecretResolver(Protocol):
    """Resolves a tenant's credential by name (the kernel's credential service)."""

    async def resolve(self, tenant_id: str, name: str) -> Credential: ...


class QueueReader(Protocol):
    """Reads the run queue (the kernel's run ledger)."""

    async def queue_depth(self) -> QueueDepth: ...

    async def table_sizes(self) -> list[TableSize]: ...


class RateLimits(Protocol):
    """Token buckets shared by the engine's processes (the kernel's rate limiter)."""

    async def check_rate(self, key: str, per_second: float, burst: int) -> float | None: ...


class PluginAPI:
    """The kernel as a plugin sees it."""

    def __init__(
        self,
        *,
        clock: Clock,
        settings: Settings,
        runs: RunStarter,
        triggers: TriggerRuntime,
        credentials: SecretResolver,
        queue: QueueReader | None = None,
        measure: Callable[[EngineMeasurement], None] | None = None,
        rate_limits: RateLimits | None = None,
    ) -> None:
        self._clock = clock
        self._rate_limits = rate_limits
        self._queue = queue
        #: the ``on_engine_measurement`` observer (None: nobody listens)
        self._measure = measure
        self._settings = settings
        self._runs = runs
        self._triggers = triggers
        self._credentials = credentials

    @property
    def clock(self) -> Clock:
        """The kernel's clock; tests swap in a
        :class:`~dataworkflows.common.clock.FakeClock`."""
        return self._clock

    @property
    def settings(self) -> Settings:
        """The engine's settings (read-only), e.g. ``max_body_bytes``."""
        return self._settings

    async def start_execution(
        self,
        workflow_id: str,
        *,
        trigger: dict[str, Any],
        request_id: str | None = None,
        tenant_id: str = "default",
        principal: str | None = None,
        correlation_id: str | None = None,
        trigger_id: str | None = None,
    ) -> tuple[str, bool]:
        """Queue a run of an Active workflow; returns (execution id, created).

        The same ``request_id`` twice returns the first run's id with ``created`` False, so
        a redelivered event never starts a second run (without ``trigger_id``, the same
        ``request_id`` with another payload is a 409 ``request_id_reused``; a trigger's
        redelivery may differ, e.g. in its receipt time). With ``trigger_id`` the run is
        counted as that trigger's: the payload gets ``triggerId`` and the request id is
        namespaced as ``trg:<triggerId>:<request_id>``. This bypasses the trigger's
        enabled flag and activation condition; a trigger plugin normally calls
        :meth:`fire_trigger` instead. Raises :class:`~dataworkflows.common.errors.ApiError`
        subclasses (404 unknown workflow, 409 not Active) that a route can render as they are.
        """
        if trigger_id is not None:
            trigger = {**trigger, "triggerId": trigger_id}
            request_id = request_id_for(trigger_id, request_id or uuid.uuid4().hex)
        summary, created = await self._runs.execute(
            workflow_id,
            trigger=trigger,
            request_id=request_id,
            tenant_id=tenant_id,
            principal=principal,
            correlation_id=correlation_id,
            # a trigger's request id is its event's identity; a redelivery may differ
            redelivery_may_differ=trigger_id is not None,
        )
        return summary["executionId"], created

    async def get_trigger(self, trigger_id: str) -> TriggerHandle | None:
        """Look a trigger up by id: its workflow, type, validated config, enabled flag and
        whether its workflow is Active. None if there is no such trigger or its type's
        plugin is not installed. Check ``handle.type`` before trusting the config."""
        return await self._triggers.handle(trigger_id)

    async def fire_trigger(
        self,
        trigger: TriggerHandle,
        event: Mapping[str, Any],
        *,
        key: str | None = None,
        principal: str | None = None,
        correlation_id: str | None = None,
    ) -> FireResult:
        """Hand the kernel one event of an enabled trigger; it decides whether a run starts.

        The payload of the run (``trigger`` in templates) is ``event`` plus ``triggerId``
        and ``triggerType``. The trigger's ``activationCondition`` is evaluated over it
        first; a false one starts nothing and is counted (``outcome == "notActivated"``).
        ``key`` identifies the event (a delivery id): the same key twice returns the first
        run (``outcome == "duplicate"``); without a key every call is a new event. Returns
        only after the run is durably queued. Raises
        :class:`~dataworkflows.common.errors.NotFound` (disabled trigger) and
        :class:`~dataworkflows.common.errors.Conflict` (workflow not Active).
        """
        if self._measure is None:
            return await self._triggers.start(
                trigger, event, key=key, principal=principal, correlation_id=correlation_id
            )
        began = time.perf_counter()
        outcome = "error"
        try:
            result = await self._triggers.start(
                trigger, event, key=key, principal=principal, correlation_id=correlation_id
            )
            outcome = result.outcome
            return result
        finally:
            labels = {"trigger_type": trigger.type, "outcome": outcome}
            self._measure(
                EngineMeasurement(Measure.TRIGGER_FIRED, (time.perf_counter() - began,), labels)
            )

    async def check_rate_limit(self, key: str, per_second: float, burst: int) -> float | None:
        """Take one request of ``key`` from a token bucket of ``per_second`` requests per
        second and bursts of ``burst``: None when it may pass, else the seconds until one
        would (for a ``Retry-After``). On PostgreSQL every process sharing the database
        draws from the same bucket; on SQLite it lives in this process. Name the key after
        what is limited, e.g. ``trigger:<id>`` (docs/limits.md). Since plugin API 1.2."""
        if self._rate_limits is None:
            raise RuntimeError("this PluginAPI was built without a rate limiter")
        return await self._rate_limits.check_rate(key, per_second, burst)

    async def queue_depth(self) -> QueueDepth:
        """The run queue now, across every tenant and process sharing the database: runs
        ``Pending`` and ``Running`` and the oldest pending run's wait (one indexed read;
        for gauges collected when metrics are scraped). Since plugin API 1.1."""
        if self._queue is None:
            raise RuntimeError("this PluginAPI was built without a queue reader")
        return await self._queue.queue_depth()

    async def ledger_size(self) -> list[TableSize]:
        """Rows and bytes of each ledger table (runs, attempts, events, variables, dead
        letters), cheap at any size: estimates on PostgreSQL, exact on SQLite (for gauges
        collected when metrics are scraped). Since plugin API 1.1."""
        if self._queue is None:
            raise RuntimeError("this PluginAPI was built without a ledger reader")
        return await self._queue.table_sizes()

    async def get_trigger_state(self, trigger_id: str) -> dict[str, Any]:
        """The trigger's persistent plugin state (a JSON object; ``{}`` at first)."""
        return await self._triggers.get_state(trigger_id)

    async def set_trigger_state(self, trigger_id: str, state: Mapping[str, Any]) -> None:
        """Replace the trigger's persistent plugin state with ``state`` (JSON data only)."""
        await self._triggers.set_state(trigger_id, state)

    async def record_trigger_error(self, trigger_id: str, code: str, message: str) -> None:
        """Show an event the trigger could not handle as its ``lastError`` (API, CLI).

        For failures of the trigger's set-up that the sender cannot fix (e.g. the signing
        secret it names does not exist), so that its owner sees them where they look.
        ``message`` must not contain secrets.
        """
        await self._triggers.record_error(trigger_id, {"code": code, "message": message})

    async def resolve_secret(self, name: str, tenant_id: str = "default") -> str | None:
        """The secret of credential ``name`` for ``tenant_id``, or None if nobody knows it.

        The same resolver actions use (``ctx.credentials``): the encrypted credential store
        (credentials stored through the API or the CLI), then the ``resolve_secret`` hooks
        (run in a thread, so a blocking provider does not stall the event loop), the
        ``DATAWORKFLOWS_CREDENTIAL_<NAME>`` environment variable last. The value is
        registered with the redactor. Raises
        :class:`~dataworkflows.actions.CredentialError` when the name is invalid, a stored
        credential cannot be decrypted or a provider returned something else than a string.

        Since: 0.2 (a coroutine; in 0.1 it was synchronous and asked the hooks only).
        """
        try:
            credential = await self._credentials.resolve(tenant_id, name)
        except CredentialError as exc:
            if exc.code == "credential_not_found":
                return None
            raise
        return credential.secret
