"""``dataworkflows ledger ...``: the run ledger's size and retention (all tenants: an
operator's commands, like ``db``)."""

from __future__ import annotations

import json
from typing import Any

import click

from dataworkflows.cli.common import HelpGroup, with_kernel


@click.group(cls=HelpGroup)
def ledger() -> None:
    """The run ledger: its size, and deleting runs past retention."""


@ledger.command("prune")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option(
    "--days",
    type=click.FloatRange(0),
    default=None,
    help="Keep succeeded/cancelled runs this many days [DATAWORKFLOWS_RETENTION_DAYS].",
)
@click.option(
    "--failed-days",
    type=click.FloatRange(0),
    default=None,
    help="Keep failed runs this many days [DATAWORKFLOWS_RETENTION_FAILED_DAYS].",
)
@click.option(
    "--max-runs",
    type=click.IntRange(0),
    default=None,
    help="Keep at most this many finished runs per workflow [DATAWORKFLOWS_RETENTION_MAX_RUNS].",
)
@click.option(
    "--fast",
    is_flag=True,
    help="No pause between batches (for a stopped engine); by default each batch is "
    "followed by a pause as long as it took, as the background pruner does.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def ledger_prune(
    dry_run: bool,
    fast: bool,
    days: float | None,
    failed_days: float | None,
    max_runs: int | None,
    as_json: bool,
) -> None:
    """Delete finished runs past the retention policy, with their attempts and events.

    Runs in flight and runs with a dead letter not yet requeued are never deleted. 0
    switches a rule off; with every rule off nothing is deleted.
    """
    from dataclasses import replace

    async def prune(kernel: Any) -> dict[str, Any]:
        pruner = kernel.pruner
        overrides = {"days": days, "failed_days": failed_days, "max_runs": max_runs}
        pruner.policy = replace(
            pruner.policy, **{k: v for k, v in overrides.items() if v is not None}
        )
        from dataworkflows.service.pruning import paced

        report = await pruner.prune(
            kernel.clock.now(), dry_run=dry_run, exclusive=True, pause=None if fast else paced
        )
        policy = pruner.policy
        return {
            **report.as_dict(),
            "policy": {
                "days": policy.days,
                "failedDays": policy.failed_days,
                "maxRuns": policy.max_runs,
            },
        }

    report = with_kernel(prune)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    policy = report["policy"]
    rules = (
        f"succeeded/cancelled {_days(policy['days'])}, failed {_days(policy['failedDays'])}, "
        f"{_per_workflow(policy['maxRuns'])}"
    )
    verb = "would delete" if dry_run else "deleted"
    rows = report["rows"]
    dropped = f", {len(report['partitions'])} whole partition(s)" if report["partitions"] else ""
    click.echo(
        f"{verb} {report['runs']} run(s), {rows['action_executions']} attempt(s), "
        f"{rows['execution_events']} event(s){dropped}  (kept: {rules})"
    )


def _days(days: float) -> str:
    return f"{days:g} day(s)" if days else "forever"


@ledger.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def ledger_stats_cmd(as_json: bool) -> None:
    """Rows and bytes on disk of each ledger table, and runs per status."""
    from dataworkflows.ledger.retention import ledger_stats

    stats = with_kernel(lambda kernel: ledger_stats(kernel.db))
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    click.echo(f"{'table':<22} {'rows':>12} {'bytes':>14}")
    for name, figures in stats["tables"].items():
        size = "unknown" if figures["bytes"] is None else f"{figures['bytes']:,}"
        click.echo(f"{name:<22} {figures['rows']:>12,} {size:>14}")
    by_status = ", ".join(f"{s} {n:,}" for s, n in stats["runsByStatus"].items()) or "none"
    click.echo(f"runs: {by_status}")


def _per_workflow(max_runs: int) -> str:
    return f"the newest {max_runs} per workflow" if max_runs else "no count limit"


@ledger.command("partition")
@click.option(
    "--enable", "action", flag_value="enable", help="Partition the ledger (stop the engine first)."
)
@click.option("--disable", "action", flag_value="disable", help="Copy it back into plain tables.")
@click.option(
    "--interval-days",
    type=click.IntRange(1, 366),
    default=None,
    help="With --enable: days per partition (default 7).",
)
@click.option(
    "--from",
    "since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Also create the partitions from this day (UTC) on, e.g. to load old runs into.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the partitions as JSON.")
def ledger_partition(
    action: str | None, interval_days: int | None, since: Any, as_json: bool
) -> None:
    """Time partitions of runs, attempts and events (PostgreSQL; docs/partitioning.md).

    Without --enable or --disable: lists the partitions. The pruner (``serve``) keeps
    partitions created ahead and drops whole ones whose every run is past retention.
    """
    from dataworkflows.cli.ledger_partition import partition_command

    if interval_days is not None and action != "enable":
        raise click.UsageError("--interval-days goes with --enable")
    if action == "disable" and since is not None:
        raise click.UsageError("--from does not go with --disable")
    report = with_kernel(lambda kernel: partition_command(kernel, action, interval_days, since))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if not report["partitioned"]:
        click.echo("the ledger is not partitioned")
        return
    click.echo(f"partitioned by run id, {report['intervalDays']} day(s) per partition")
    for part in report["partitions"]:
        click.echo(f"  {part['name']:<12} {part['start']} .. {part['end']}")
    if report.get("skipped"):
        click.echo(f"not created (runs from before partitioning there): {report['skipped']}")
