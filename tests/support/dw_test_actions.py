"""Actions used by the multi-process tests, loaded in worker processes through
``DATAWORKFLOWS_PLUGIN_MODULES=dw_test_actions`` (with this folder on ``PYTHONPATH``)."""

from __future__ import annotations

import os
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


@hookimpl
def register_actions(register: Any) -> None:
    register(Call)
    register(Crash)
