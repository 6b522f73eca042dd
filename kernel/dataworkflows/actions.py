"""The action contract: what a plugin implements to add a step type.

An action is a class with a ``type`` (``"<plugin>.<verb-noun>"``), a pydantic ``Params``
model (its parameter schema, checked when a workflow is created or published and again on
the rendered values before every attempt) and an async ``run(ctx, params)``::

    class Echo(Action):
        type = "core.echo"
        title = "Echo a message"

        class Params(BaseModel):
            message: str

        async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
            return ActionResult.succeeded({"echo": params.message})

Actions never touch the database: everything they need comes through the
:class:`ActionContext`, everything they produce goes back in the :class:`ActionResult`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import asyncio

    import aiohttp


class StepOutcome(enum.StrEnum):
    """How one attempt of an action ended."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"  # permanent: retrying would not help
    RETRIABLE = "RetriableFailure"  # transient: the conductor may try again


@dataclass(frozen=True)
class ResourceLink:
    """An external object an action created or touched (a Slack message, a Monday item)."""

    system: str
    type: str
    external_id: str
    url: str | None = None


@dataclass(frozen=True)
class ActionResult:
    """What one attempt of an action produced.

    Build it with :meth:`succeeded`, :meth:`failed` or :meth:`retriable` rather than by hand.
    ``outputs`` must be JSON-serialisable; it is stored in the ledger and reaches later steps'
    templates as ``nodes.<id>.outputs``.
    """

    outcome: StepOutcome
    outputs: Mapping[str, Any] = field(default_factory=dict)
    error: Mapping[str, Any] | None = None
    retry_after: float | None = None
    links: tuple[ResourceLink, ...] = ()

    @classmethod
    def succeeded(
        cls, outputs: Mapping[str, Any] | None = None, *, links: tuple[ResourceLink, ...] = ()
    ) -> ActionResult:
        """The attempt did its job; ``outputs`` are recorded and passed on."""
        return cls(StepOutcome.SUCCEEDED, dict(outputs or {}), links=tuple(links))

    @classmethod
    def failed(
        cls, message: str, *, code: str = "action_failed", details: Any = None
    ) -> ActionResult:
        """The attempt failed and retrying cannot help (bad input, 4xx, auth)."""
        return cls(StepOutcome.FAILED, error=_error(code, message, details))

    @classmethod
    def retriable(
        cls,
        message: str,
        *,
        code: str = "transient_failure",
        details: Any = None,
        retry_after: float | None = None,
    ) -> ActionResult:
        """The attempt failed for a transient reason (5xx, 429, timeout).

        ``retry_after`` (seconds) is a hint from the remote side, e.g. ``Retry-After``; the
        conductor waits at least that long before the next attempt.
        """
        return cls(
            StepOutcome.RETRIABLE,
            error=_error(code, message, details),
            retry_after=retry_after,
        )


def _error(code: str, message: str, details: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return error


class ActionError(Exception):
    """Raise from ``run`` as an alternative to returning a failed result.

    ``retriable=True`` makes it a :attr:`StepOutcome.RETRIABLE` failure. Any *other*
    exception escaping ``run`` is recorded as a permanent failure of type
    ``unhandled_exception``: a bug in an action should not be retried blindly.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "action_failed",
        retriable: bool = False,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retriable = retriable
        self.details = details
        self.retry_after = retry_after

    def to_result(self) -> ActionResult:
        if self.retriable:
            return ActionResult.retriable(
                self.message, code=self.code, details=self.details, retry_after=self.retry_after
            )
        return ActionResult.failed(self.message, code=self.code, details=self.details)


@dataclass
class ActionContext:
    """Everything the kernel hands an action for one attempt.

    Attributes:
        execution_id: id of the run (a UUID string).
        workflow_id / workflow_version: the definition the run is pinned to.
        node_id: the node being executed.
        attempt: 1 for the first attempt, 2 for the first retry, ...
        idempotency_key: stable across retries and resumes of this node in this run
            (``"<execution_id>:<node_id>"``); send it to remote APIs that deduplicate.
        trigger: the run's trigger payload (read-only by convention).
        http: a shared ``aiohttp.ClientSession`` owned by the kernel; do not close it.
        log: a logger bound to this run and node.
        cancelled: set when the run is being cancelled; long actions should watch it.
        tenant_id / principal: who the run belongs to and who started it.
    """

    execution_id: str
    workflow_id: str
    workflow_version: int
    node_id: str
    attempt: int
    idempotency_key: str
    trigger: Mapping[str, Any]
    http: aiohttp.ClientSession
    log: logging.LoggerAdapter[logging.Logger]
    cancelled: asyncio.Event
    tenant_id: str = "default"
    principal: str | None = None


class Action:
    """Base class of every action type. Subclass it and register the subclass.

    Class attributes:
        type: unique name, ``"<plugin>.<verb-noun>"`` (e.g. ``"core.echo"``).
        title: one line for listings.
        Params: a pydantic model of the parameters. Its JSON schema is published by
            ``GET /api/v1/plugins``; definitions are checked against it when created or
            published (template strings such as ``"{{ trigger.n }}"`` are checked after
            rendering), and ``run`` receives an instance of it.
    """

    type: ClassVar[str]
    title: ClassVar[str] = ""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

    async def run(self, ctx: ActionContext, params: Any) -> ActionResult:
        """Do the work of one attempt. Must be overridden."""
        raise NotImplementedError

    @classmethod
    def params_schema(cls) -> dict[str, Any]:
        """The JSON schema of :attr:`Params`."""
        return cls.Params.model_json_schema()
