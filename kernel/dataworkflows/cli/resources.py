"""``dataworkflows workflows|runs|triggers ...``: what the HTTP API does, without curl.

The commands open the database named by ``DATAWORKFLOWS_DATABASE_URL`` through a kernel
(as ``apply`` and ``run`` do) and call the same services as the API, so they answer the
same errors (printed with their code, exit 1). ``--tenant`` selects the tenant (default
``default``); ``--json`` prints the API's JSON instead of a table.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import click

from dataworkflows.cli.common import HelpGroup, print_event, print_ledger, read_json, with_kernel
from dataworkflows.cli.run_tree import runs_tree

TERMINAL_STATUSES = ("Succeeded", "Failed", "Cancelled")


def register_resource_commands(cli: click.Group) -> None:
    """Add the ``workflows``, ``runs`` and ``triggers`` groups to ``cli``."""
    cli.add_command(workflows)
    cli.add_command(runs)
    cli.add_command(triggers)


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    if not rows:
        click.echo("(none)")
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


tenant_option = click.option("--tenant", default="default", show_default=True, help="Tenant id.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")


# -- workflows ------------------------------------------------------------------------------


@click.group(cls=HelpGroup)
def workflows() -> None:
    """List, show, publish and archive workflows."""


@workflows.command("list")
@click.option("--status", type=click.Choice(["Draft", "Active", "Archived"]), default=None)
@click.option("--search", "text", default=None, help="Only ids or names containing this.")
@tenant_option
@json_option
def workflows_list(status: str | None, text: str | None, tenant: str, as_json: bool) -> None:
    """List the tenant's workflows (the first 100, by id)."""
    from dataworkflows.common.pagination import PageRequest

    page = with_kernel(
        lambda k: k.service.list_workflows(
            tenant_id=tenant, page=PageRequest(100, None), status=status, text=text
        )
    )
    if as_json:
        _print_json(page)
        return
    _table(
        [
            (w["id"], w["status"], str(w["currentVersion"] or "-"), w["displayName"])
            for w in page["items"]
        ],
        ("id", "status", "version", "name"),
    )


@workflows.command("show")
@click.argument("workflow_id")
@tenant_option
def workflows_show(workflow_id: str, tenant: str) -> None:
    """Print a workflow with its current (or latest) definition, as JSON."""
    _print_json(with_kernel(lambda k: k.service.get_workflow(workflow_id, tenant_id=tenant)))


@workflows.command("publish")
@click.argument("workflow_id")
@click.option("--version", type=int, default=None, help="Version to publish (default: latest).")
@tenant_option
def workflows_publish(workflow_id: str, version: int | None, tenant: str) -> None:
    """Make a version current: new runs and triggers use it."""
    view = with_kernel(
        lambda k: k.service.publish(workflow_id, version=version, tenant_id=tenant, actor="cli")
    )
    click.echo(f"{view['id']}: version {view['currentVersion']} is {view['status']}")


@workflows.command("archive")
@click.argument("workflow_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@tenant_option
def workflows_archive(workflow_id: str, yes: bool, tenant: str) -> None:
    """Archive a workflow: no new runs; runs in flight go on."""
    if not yes:
        click.confirm(f"Archive {workflow_id}? Its triggers stop starting runs", abort=True)
    view = with_kernel(lambda k: k.service.archive(workflow_id, tenant_id=tenant, actor="cli"))
    click.echo(f"{view['id']} is {view['status']}")


# -- runs -----------------------------------------------------------------------------------


@click.group(cls=HelpGroup)
def runs() -> None:
    """List, show, watch, cancel and rerun runs; print their step logs and variables."""


runs.add_command(runs_tree)


@runs.command("list")
@click.option("--workflow", "workflow_id", default=None, help="Only this workflow's runs.")
@click.option(
    "--status",
    type=click.Choice(["Pending", "Running", "Waiting", "Succeeded", "Failed", "Cancelled"]),
    default=None,
)
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True)
@tenant_option
@json_option
def runs_list(
    workflow_id: str | None, status: str | None, limit: int, tenant: str, as_json: bool
) -> None:
    """List the tenant's runs, newest first."""
    from dataworkflows.common.pagination import PageRequest

    page = with_kernel(
        lambda k: k.service.list_executions(
            tenant_id=tenant, page=PageRequest(limit, None), workflow_id=workflow_id, status=status
        )
    )
    if as_json:
        _print_json(page)
        return
    _table(
        [
            (r["id"], r["workflowId"], str(r["workflowVersion"]), r["status"], r["createdAt"])
            for r in page["items"]
        ],
        ("id", "workflow", "version", "status", "created"),
    )


@runs.command("show")
@click.argument("execution_id")
@tenant_option
@json_option
def runs_show(execution_id: str, tenant: str, as_json: bool) -> None:
    """Print a run with every attempt (its ledger)."""
    execution = with_kernel(lambda k: k.service.get_execution(execution_id, tenant_id=tenant))
    if as_json:
        _print_json(execution)
    else:
        print_ledger(execution)


@runs.command("logs")
@click.argument("execution_id")
@click.option("--node", "node_id", default=None, help="Only this node's lines.")
@click.option("--attempt", type=click.IntRange(1), default=None, help="Only this attempt's.")
@tenant_option
@json_option
def runs_logs(
    execution_id: str, node_id: str | None, attempt: int | None, tenant: str, as_json: bool
) -> None:
    """Print what a run's actions wrote to their log (capped per attempt and per run,
    secrets redacted): time, level, node#attempt, message."""
    logs = with_kernel(
        lambda k: k.service.execution_logs(
            execution_id, tenant_id=tenant, node_id=node_id, attempt=attempt
        )
    )
    if as_json:
        _print_json(logs)
        return
    if not logs["items"]:
        click.echo("(no log lines)")
    for line in logs["items"]:
        where = f"{line['nodeId']}#{line['attempt']}"
        click.echo(f"{line['time']}  {line['level']:<8} {where}  {line['message']}")


@runs.command("vars")
@click.argument("execution_id")
@tenant_option
@json_option
def runs_vars(execution_id: str, tenant: str, as_json: bool) -> None:
    """Print the variables a run's actions set (ctx.set_variable): key, type, value, and
    the node#attempt that set it last."""
    found = with_kernel(lambda k: k.service.execution_variables(execution_id, tenant_id=tenant))
    if as_json:
        _print_json(found)
        return
    if not found["items"]:
        click.echo("(no variables)")
        return
    _table(
        [
            (v["key"], v["type"], json.dumps(v["value"]), f"{v['nodeId']}#{v['attempt']}")
            for v in found["items"]
        ],
        ("key", "type", "value", "set by"),
    )


@runs.command("cancel")
@click.argument("execution_id")
@tenant_option
def runs_cancel(execution_id: str, tenant: str) -> None:
    """Cancel a run (a Pending run never starts; a Running one is stopped by its worker)."""
    answer = with_kernel(lambda k: k.service.cancel(execution_id, tenant_id=tenant))
    click.echo(f"run {answer['executionId']}: cancel requested ({answer['status']})")


@runs.command("rerun")
@click.argument("execution_id")
@tenant_option
def runs_rerun(execution_id: str, tenant: str) -> None:
    """Queue a new run of the same workflow with the same trigger.

    It runs the current version; a test run is rerun as a test run of its own version, a
    command's run (action.run) with its own version.
    """

    async def rerun(kernel: Any) -> dict[str, Any]:
        from dataworkflows.service.commands import is_command_workflow

        old = await kernel.service.get_execution(execution_id, tenant_id=tenant)
        summary, _ = await kernel.service.execute(
            old["workflowId"],
            trigger=old["trigger"],
            request_id=f"rerun:{old['id']}:{uuid.uuid4().hex}",
            tenant_id=tenant,
            principal="cli",
            # a test run is rerun as a test run of the same (unpublished) version
            test_version=old["workflowVersion"] if old["testRun"] else None,
            # a command's run, with its own version (one per set of parameter names)
            version=old["workflowVersion"] if is_command_workflow(old["workflowId"]) else None,
        )
        return dict(summary)

    summary = with_kernel(rerun)
    click.echo(f"run {summary['executionId']} queued (a rerun of {execution_id})")


@runs.command("watch")
@click.argument("execution_id")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="Seconds.")
@click.option("--poll", type=float, default=0.5, show_default=True, help="Seconds between looks.")
@tenant_option
def runs_watch(execution_id: str, timeout: float, poll: float, tenant: str) -> None:
    """Print a run's events as they are recorded until it ends, then its ledger.

    Works for a run executed by any process. A step that runs longer than
    DATAWORKFLOWS_STEP_STARTED_AFTER_SECONDS shows as StepStarted with its start time.
    Exits 1 unless the run Succeeded.
    """

    import asyncio

    async def watch(kernel: Any) -> dict[str, Any]:
        key = uuid.UUID((await kernel.service.get_execution(execution_id, tenant_id=tenant))["id"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            for row in await kernel.ledger.list_events(key, after=seen):
                print_event(row["sequence"], row["type"], row["node_id"], row["payload"])
                seen = row["sequence"]
            execution = await kernel.service.get_execution(execution_id, tenant_id=tenant)
            if execution["status"] in TERMINAL_STATUSES:
                for row in await kernel.ledger.list_events(key, after=seen):
                    print_event(row["sequence"], row["type"], row["node_id"], row["payload"])
                return dict(execution)
            if loop.time() >= deadline:
                raise click.ClickException(
                    f"gave up waiting after {timeout:g} s: run {execution_id} is still "
                    f"{execution['status']}"
                )
            await asyncio.sleep(poll)  # a look at the ledger every `poll` seconds

    execution = with_kernel(watch)
    print_ledger(execution)
    if execution["status"] != "Succeeded":
        sys.exit(1)


# -- triggers -------------------------------------------------------------------------------


@click.group(cls=HelpGroup)
def triggers() -> None:
    """Create, list, enable, disable and fire a workflow's triggers (secret fields are
    encrypted at rest and shown masked)."""


@triggers.command("list")
@click.argument("workflow_id")
@tenant_option
@json_option
def triggers_list(workflow_id: str, tenant: str, as_json: bool) -> None:
    """List a workflow's triggers."""
    from dataworkflows.common.pagination import PageRequest

    page = with_kernel(
        lambda k: k.triggers.list(workflow_id, tenant_id=tenant, page=PageRequest(100, None))
    )
    if as_json:
        _print_json(page)
        return
    _table(
        [(t["id"], t["type"], t["status"], t.get("name") or "") for t in page["items"]],
        ("id", "type", "status", "name"),
    )


@triggers.command("create")
@click.argument("workflow_id")
@click.argument("trigger_src", metavar="TRIGGER")
@tenant_option
def triggers_create(workflow_id: str, trigger_src: str, tenant: str) -> None:
    """Create a trigger on WORKFLOW_ID from TRIGGER: JSON, or @FILE.

    TRIGGER is {"type", "config", "name"?, "enabled"?, "activationCondition"?}; secret
    fields of the config are encrypted at rest and printed masked.
    """
    raw = read_json(trigger_src, "trigger")
    _print_json(
        with_kernel(lambda k: k.triggers.create(workflow_id, raw, tenant_id=tenant, actor="cli"))
    )


def _enabling_command(name: str, enabled: bool, summary: str) -> click.Command:
    """``triggers enable`` / ``triggers disable``: the same command but for the flag."""

    @triggers.command(name, help=summary)
    @click.argument("workflow_id")
    @click.argument("trigger_id")
    @tenant_option
    def command(workflow_id: str, trigger_id: str, tenant: str) -> None:
        view = with_kernel(
            lambda k: k.triggers.set_enabled(workflow_id, trigger_id, enabled, tenant_id=tenant)
        )
        click.echo(f"trigger {view['id']} is {view['status']}")

    return command


triggers_enable = _enabling_command(
    "enable", True, "Enable a trigger (a schedule fires from now on)."
)
triggers_disable = _enabling_command(
    "disable", False, "Disable a trigger: it starts no runs until enabled again."
)


@triggers.command("fire")
@click.argument("workflow_id")
@click.argument("trigger_id")
@click.option("--payload", "payload_src", default="{}", help="Event JSON, or @FILE.")
@tenant_option
def triggers_fire(workflow_id: str, trigger_id: str, payload_src: str, tenant: str) -> None:
    """Fire a trigger now with an event (its activation condition applies)."""
    from dataworkflows.common.errors import NotFound

    payload = read_json(payload_src, "payload")
    if not isinstance(payload, dict):
        raise click.ClickException("the payload must be a JSON object")

    async def fire(kernel: Any) -> Any:
        await kernel.triggers.get(workflow_id, trigger_id, tenant_id=tenant)  # 404 first
        handle = await kernel.triggers.handle(trigger_id)
        if handle is None:
            raise NotFound(
                f"trigger {trigger_id!r} cannot fire: its plugin is missing or its config "
                "is invalid",
                code="trigger_unavailable",
            )
        return await kernel.triggers.start(handle, payload, principal="cli")

    result = with_kernel(fire)
    if result.execution_id:
        click.echo(f"{result.outcome}: run {result.execution_id}")
    else:
        reason = f" ({result.reason})" if result.reason else ""
        click.echo(f"{result.outcome}{reason}: no run started")
        if result.error:
            click.echo(f"error: {json.dumps(result.error)}")
