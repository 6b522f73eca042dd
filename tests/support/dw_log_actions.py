"""The action of the structured-log tests (tests/test_structured_logs.py), loaded in process
and in ``dataworkflows worker`` processes (``DATAWORKFLOWS_PLUGIN_MODULES=dw_log_actions``,
this folder on ``PYTHONPATH``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from dataworkflows import Action, ActionContext, ActionResult, hookimpl


class Leaky(Action):
    """Logs its credential, then fails: retriably on attempt 1, for good on attempt 2,
    with the secret in the error message. Without a credential: logs and succeeds."""

    type = "test.leaky"

    class Params(BaseModel):
        credential: str | None = None

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        if params.credential is None:
            ctx.log.info("preparing")
            return ActionResult.succeeded({"ok": True})
        secret = await ctx.credentials.get(params.credential)
        ctx.log.warning("calling with token %s", secret)
        if ctx.attempt == 1:
            return ActionResult.retriable(f"busy, token {secret}", code="remote_busy")
        return ActionResult.failed(f"remote refused token {secret}", code="remote_refused")


@hookimpl
def register_actions(register: Any) -> None:
    register(Leaky)
