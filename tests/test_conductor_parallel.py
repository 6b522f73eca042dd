"""Ready nodes run concurrently, bounded by ``maxParallelActions``: shown from the
ledger's ``startedAt``/``endedAt`` of the attempts (the issue's timing criteria)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest


def fan_out(max_parallel: int | None, width: int = 10, delay_ms: int = 200) -> dict[str, Any]:
    branches = [f"step{i}" for i in range(width)]
    definition: dict[str, Any] = {
        "id": f"fan-out-{max_parallel}",
        "displayName": "Fan-out",
        "startNode": "start",
        "nodes": [
            {
                "id": "start",
                "actionType": "core.echo",
                "parameters": {"message": "go"},
                "edges": [{"targetNode": b} for b in branches],
            },
            *(
                {
                    "id": b,
                    "actionType": "core.echo",
                    "parameters": {"message": b, "delayMs": delay_ms},
                }
                for b in branches
            ),
        ],
    }
    if max_parallel is not None:
        definition["maxParallelActions"] = max_parallel
    return definition


def intervals(run: dict[str, Any]) -> list[tuple[datetime, datetime]]:
    return [
        (datetime.fromisoformat(a["startedAt"]), datetime.fromisoformat(a["endedAt"]))
        for a in run["actions"]
        if a["nodeId"] != "start"
    ]


def most_in_flight(spans: list[tuple[datetime, datetime]]) -> int:
    """The largest number of attempts running at one instant (an end at the same instant
    as a start does not overlap it)."""
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    current = peak = 0
    for _, delta in points:
        current += delta
        peak = max(peak, current)
    return peak


async def test_ten_steps_in_parallel_finish_well_under_two_seconds(kernel, run_workflow):
    run = await run_workflow(kernel, fan_out(10))
    assert run["status"] == "Succeeded"
    spans = intervals(run)
    assert len(spans) == 10
    assert all((end - start).total_seconds() >= 0.2 for start, end in spans)
    elapsed = (max(e for _, e in spans) - min(s for s, _ in spans)).total_seconds()
    assert elapsed < 1.0, f"10 x 200 ms took {elapsed:.2f} s"
    assert most_in_flight(spans) == 10


async def test_max_parallel_actions_two_never_has_more_than_two_in_flight(kernel, run_workflow):
    run = await run_workflow(kernel, fan_out(2))
    assert run["status"] == "Succeeded"
    spans = intervals(run)
    assert len(spans) == 10
    assert most_in_flight(spans) == 2
    elapsed = (max(e for _, e in spans) - min(s for s, _ in spans)).total_seconds()
    assert elapsed >= 1.0, "five waves of 200 ms"


@pytest.mark.parametrize("limit", [1, 3])
async def test_engine_default_max_parallel_actions(kernel_factory, run_workflow, limit):
    kernel = await kernel_factory(default_max_parallel_actions=limit)
    run = await run_workflow(kernel, fan_out(None, width=6, delay_ms=50))
    assert most_in_flight(intervals(run)) == limit
