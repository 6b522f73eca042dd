"""``dataworkflows command NAME``: what ``POST /api/v1/commands`` does, from the command
line (docs/api.md, "Commands")."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import click

from dataworkflows.cli.common import print_ledger, read_json, with_kernel


@click.command("command")
@click.argument("name")
@click.option("--payload", "payload_src", default="{}", help="The payload JSON, or @FILE.")
@click.option("--correlation-id", help="The id the run's events carry (default: a new one).")
@click.option("--tenant", default="default", show_default=True, help="The tenant.")
@click.option(
    "--wait",
    is_flag=True,
    help="Run it in this process (a worker here) and print its ledger; exit 1 unless it "
    "succeeds. Without it the run waits in the queue for a server or worker.",
)
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait.")
def command(
    name: str,
    payload_src: str,
    correlation_id: str | None,
    tenant: str,
    wait: bool,
    timeout: float,
) -> None:
    """Queue the command NAME (action.run, workflow.run) and print its answer as JSON.

    For example: dataworkflows command action.run --payload
    '{"actionType": "core.echo", "parameters": {"message": "hi"}}'
    """
    body: dict[str, Any] = {"command": name, "payload": read_json(payload_src, "payload")}
    if correlation_id is not None:
        body["correlationId"] = correlation_id

    async def act(kernel: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        answer = await kernel.service.run_command(body, tenant_id=tenant, principal="cli")
        if not wait:
            return answer, None
        kernel.start_worker()
        try:
            await kernel.ledger.wait_until_final(uuid.UUID(answer["executionId"]), timeout)
        except TimeoutError as exc:
            raise click.ClickException(f"gave up waiting: {exc}") from None
        return answer, await kernel.service.get_execution(answer["executionId"])

    answer, execution = with_kernel(act)
    click.echo(json.dumps(answer, indent=2))
    if execution is not None:
        print_ledger(execution)
        if execution["status"] != "Succeeded":
            sys.exit(1)
