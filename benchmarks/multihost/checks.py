"""What the multi-host scenario must show, read from the ledger, the probe files and the
harness's samples (:mod:`benchmarks.multihost.scenario`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import text

_OF_WORKFLOW = "JOIN workflow_executions r ON r.id = x.execution_id WHERE r.workflow_id = :w"


async def check_ledger(conn: Any, workflow_id: str, queued: list[str]) -> dict[str, Any]:
    """Every queued run ended exactly once; no step outcome was written twice."""
    w = {"w": workflow_id}
    runs = (
        await conn.execute(
            text("SELECT id, status FROM workflow_executions WHERE workflow_id = :w"), w
        )
    ).all()
    ends = dict(
        (
            await conn.execute(
                text(
                    "SELECT x.execution_id, count(*) FROM execution_events x "
                    f"{_OF_WORKFLOW} AND x.type IN ('RunSucceeded','RunFailed','RunCancelled') "
                    "GROUP BY 1"
                ),
                w,
            )
        ).all()
    )
    steps = (
        await conn.execute(
            text(
                "SELECT x.execution_id, x.node_id, "
                "count(*) FILTER (WHERE x.status = 'Succeeded') AS ok, count(*) AS attempts, "
                "count(*) FILTER (WHERE x.error->>'code' = 'worker_lost') AS lost "
                f"FROM action_executions x {_OF_WORKFLOW} GROUP BY 1, 2"
            ),
            w,
        )
    ).all()
    step_events = (
        await conn.execute(
            text(
                "SELECT x.execution_id, x.node_id, count(*) FROM execution_events x "
                f"{_OF_WORKFLOW} AND x.type = 'StepSucceeded' GROUP BY 1, 2 HAVING count(*) > 1"
            ),
            w,
        )
    ).all()
    resumed = (
        await conn.execute(
            text(
                f"SELECT count(*) FROM execution_events x {_OF_WORKFLOW} AND x.type = 'RunResumed'"
            ),
            w,
        )
    ).scalar_one()
    problems: list[str] = []
    if len(runs) != len(queued):
        problems.append(f"{len(queued)} runs queued but {len(runs)} in the ledger")
    succeeded_nodes: Counter[Any] = Counter()
    for run_id, node, ok, _attempts, _lost in steps:
        if ok > 1:
            problems.append(f"run {run_id} node {node}: {ok} succeeded attempts")
        succeeded_nodes[run_id] += ok == 1
    for run_id, status in runs:
        if status not in ("Succeeded", "Failed", "Cancelled"):
            problems.append(f"run {run_id} did not end ({status})")
        if ends.get(run_id, 0) != 1:
            problems.append(f"run {run_id}: {ends.get(run_id, 0)} end events")
        if status == "Succeeded" and succeeded_nodes[run_id] != 2:
            problems.append(f"run {run_id} succeeded with {succeeded_nodes[run_id]} of 2 steps")
    for run_id, node, count in step_events:
        problems.append(f"run {run_id} node {node}: {count} StepSucceeded events")
    return {
        "runs": len(runs),
        "byStatus": dict(Counter(status for _id, status in runs)),
        "attempts": sum(s.attempts for s in steps),
        "workerLostAttempts": sum(s.lost for s in steps),
        "resumed": int(resumed),
        "problemCount": len(problems),
        "problems": problems[:20],
    }


def fencing_counts(folder: Path) -> dict[str, int]:
    """Fencing rejections per stage, summed over every worker's probe file."""
    totals: Counter[str] = Counter()
    for path in folder.glob("*.fencing"):
        for line in path.read_text().splitlines():
            stage, count = line.split()
            totals[stage] += int(count)
    return dict(totals)


def _rate(samples: list[tuple[float, int]], start: float, end: float) -> float:
    """Runs ended per second between two times (nearest samples at or after each)."""

    def at(t: float) -> tuple[float, int]:
        return next((s for s in samples if s[0] >= t), samples[-1])

    (t0, n0), (t1, n1) = at(start), at(end)
    return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def recovery(timeline: Any, plan: Any, window: float = 2.0) -> dict[str, Any]:
    """Baseline rate, the dip during the partition, and how long after the heal the rate
    was back to 80 % of the baseline (over a ``window``-second window)."""
    samples = timeline.samples
    baseline = _rate(samples, timeline.start + 2.0, timeline.netem[0])
    began, healed = timeline.partition
    during = [_rate(samples, t, t + window) for t, _ in samples if began <= t <= healed - window]
    back_after = None
    for t, _ in samples:
        if t >= healed and t + window <= timeline.kill:
            if _rate(samples, t, t + window) >= 0.8 * baseline:
                back_after = round(t - healed, 2)
                break
    return {
        "baselineRunsPerSecond": round(baseline, 2),
        "netemRunsPerSecond": round(_rate(samples, *timeline.netem), 2),
        "partitionMinRunsPerSecond": round(min(during), 2) if during else None,
        "recoveredSecondsAfterHeal": back_after,
        "afterKillRunsPerSecond": round(_rate(samples, timeline.kill, timeline.load_end), 2),
        "lease": plan.lease,
    }


async def rejoined_after(
    conn: Any, workflow_id: str, host: str, offset: float, after: float
) -> float | None:
    """Seconds from ``after`` (epoch) to the first run ``host`` claimed later, its clock's
    ``offset`` taken off the event's time (None: it claimed none)."""
    first = (
        await conn.execute(
            text(
                f"SELECT min(x.created_at) FROM execution_events x {_OF_WORKFLOW} "
                "AND x.type IN ('RunStarted','RunResumed') AND x.payload->>'owner' LIKE :owner "
                "AND x.created_at > to_timestamp(:after)"
            ),
            {"w": workflow_id, "owner": f"{host}:%", "after": after + offset},
        )
    ).scalar_one()
    return None if first is None else round(first.timestamp() - offset - after, 2)
