"""``core.echo``: returns its message. Also the engine's test double for failures.

Parameters:
    message: anything JSON; returned as ``{"echo": message}``.
    failAttempts: fail attempts 1..N, then succeed (``transient-failure`` fixtures).
    failAlways: fail every attempt.
    failureKind: ``"retriable"`` (default) or ``"permanent"``.
    failMessage: the error message of a failed attempt.
    delayMs: wait this long before answering (for parallelism and timeout tests).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dataworkflows import Action, ActionContext, ActionResult


class Echo(Action):
    type = "core.echo"
    title = "Echo a message (and fail on purpose, for tests)"

    class Params(BaseModel):
        """Return ``message`` as the step's output ``{"echo": message}``. The other
        parameters make the step fail or wait on purpose, to try out retries, error
        branches and timeouts."""

        model_config = ConfigDict(
            extra="forbid", populate_by_name=True, use_attribute_docstrings=True
        )

        message: Any = None
        """Any JSON value (templates allowed); returned unchanged as the output ``echo``.
        Default: null."""
        fail_attempts: int = Field(default=0, ge=0, alias="failAttempts")
        """Fail attempts 1 to N, then succeed: with ``retry.maxAttempts`` above N the step
        succeeds after N failed attempts. Default 0: no attempt fails."""
        fail_always: bool = Field(default=False, alias="failAlways")
        """Fail every attempt. Default: false."""
        failure_kind: Literal["retriable", "permanent"] = Field(
            default="retriable", alias="failureKind"
        )
        """How a simulated failure ends the attempt: ``retriable`` (default; the step's
        retry policy applies) or ``permanent`` (no further attempts)."""
        fail_message: str = Field(default="simulated failure", alias="failMessage")
        """The error message of a simulated failure; the attempt number is appended.
        Default: ``simulated failure``."""
        delay_ms: int = Field(default=0, ge=0, le=600_000, alias="delayMs")
        """Wait this many milliseconds before answering (0 to 600000, default 0), e.g. to
        try out parallel branches, timeouts or cancellation."""

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        if params.delay_ms:
            await asyncio.sleep(params.delay_ms / 1000)
        if params.fail_always or ctx.attempt <= params.fail_attempts:
            message = f"{params.fail_message} (attempt {ctx.attempt})"
            if params.failure_kind == "permanent":
                return ActionResult.failed(message, code="simulated_failure")
            return ActionResult.retriable(message, code="simulated_failure")
        return ActionResult.succeeded({"echo": params.message})
