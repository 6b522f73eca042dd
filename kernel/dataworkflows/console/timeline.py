"""A run's step timeline (Gantt): one bar per attempt, placed by its start and end relative
to the run, as percentages of the run's span (an attempt still running ends "now")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Bar:
    """One attempt on the timeline."""

    node_id: str
    attempt: int
    status: str
    left: float
    width: float
    seconds: float | None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def bars(run: dict[str, Any], now: datetime) -> tuple[list[Bar], float]:
    """The bars of every attempt of ``run`` (API shape) and the span they cover (seconds)."""
    actions = run.get("actions") or []
    starts = [t for a in actions if (t := _time(a["startedAt"]))]
    origin = _time(run.get("startedAt")) or (min(starts) if starts else None)
    if origin is None:
        return [], 0.0
    ends = [_time(a["endedAt"]) or now for a in actions]
    end = _time(run.get("endedAt")) or max([now, *ends])
    span = max((end - origin).total_seconds(), 0.001)
    out = []
    for action, stop in zip(actions, ends, strict=True):
        start = _time(action["startedAt"]) or origin
        left = max((start - origin).total_seconds(), 0.0) / span * 100
        width = max((stop - start).total_seconds(), 0.0) / span * 100
        out.append(
            Bar(
                node_id=action["nodeId"],
                attempt=action["attempt"],
                status=action["status"],
                left=round(min(left, 100.0), 2),
                width=round(max(min(width, 100.0 - left), 0.5), 2),
                seconds=(stop - start).total_seconds() if action["endedAt"] else None,
            )
        )
    return out, span
