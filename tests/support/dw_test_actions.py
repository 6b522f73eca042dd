"""Actions used by the multi-process tests, loaded in worker processes through
``DATAWORKFLOWS_PLUGIN_MODULES=dw_test_actions`` (with this folder on ``PYTHONPATH``)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dataworkflows import Action, ActionContext, ActionResult, hookimpl


class Call(Action):
    """POST ``{node, attempt}`` to ``url`` with the idempotency key; succeed with the reply."""

    type = "test.call"

    class Params(BaseModel):
        url: str

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        body = {
            "node": ctx.node_id,
            "attempt": ctx.attempt,
            "execution": ctx.execution_id,
            "pid": os.getpid(),
        }
        async with ctx.http.post(
            params.url, json=body, headers={"Idempotency-Key": ctx.idempotency_key}
        ) as resp:
            if resp.status >= 500:
                return ActionResult.retriable(f"HTTP {resp.status}")
            return ActionResult.succeeded(await resp.json())


class Crash(Action):
    """Kill the worker process (the step that crashes its worker every time)."""

    type = "test.crash"

    async def run(self, ctx: ActionContext, params: Any) -> ActionResult:
        os._exit(3)


class Hold(Action):
    """Write ``<started>/<execution>.<pid>`` then hold until the file ``release`` exists
    (at most ``limit`` seconds, then fail). ``blocking``: hold with ``time.sleep``, so the
    worker's whole event loop is busy (a CPU-bound step); else sleep asynchronously."""

    type = "test.hold"

    class Params(BaseModel):
        started: str
        release: str
        blocking: bool = False
        limit: float = 120.0

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        Path(params.started, f"{ctx.execution_id}.{os.getpid()}").touch()  # noqa: ASYNC240
        deadline = time.monotonic() + params.limit
        while not os.path.exists(params.release):  # noqa: ASYNC240
            if time.monotonic() > deadline:
                return ActionResult.failed("never released")
            if params.blocking:
                time.sleep(0.02)  # noqa: ASYNC251 -- the step's work holds the event loop
            else:
                await asyncio.sleep(0.02)
        return ActionResult.succeeded({"pid": os.getpid()})


@hookimpl
def register_actions(register: Any) -> None:
    register(Call)
    register(Crash)
    register(Hold)
