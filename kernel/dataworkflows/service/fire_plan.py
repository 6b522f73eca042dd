"""Which fire times of a time-based trigger start runs at one tick, under its misfire
policy (:class:`~dataworkflows.triggers.FirePolicy`): a pure function of the trigger
type, its config, its cursor and the time, used by
:class:`~dataworkflows.service.scheduler.Scheduler`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dataworkflows.triggers import FirePolicy, TriggerType

#: the most fire times one trigger may produce in one tick (a guard against tiny intervals)
MAX_FIRE_TIMES_PER_TICK = 10_000
_EPSILON = timedelta(microseconds=1)


def _utc(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    if when.tzinfo is None:
        raise ValueError("next_fire_time returned a naive datetime")
    return when.astimezone(UTC)


@dataclass
class FirePlan:
    """The fire times of one trigger due at one tick."""

    #: (fire time, is a catch-up of a misfired time), oldest first
    fire: list[tuple[datetime, bool]]
    #: fire times that start no run because of the misfire policy
    skipped: int
    #: the new cursor: the first fire time after now (None: never again)
    next_fire_at: datetime | None


def plan_fires(
    cls: type[TriggerType],
    config: Any,
    cursor: datetime,
    now: datetime,
    policy: FirePolicy,
) -> FirePlan:
    """Which fire times in ``[cursor, now]`` start runs under ``policy`` (pure function)."""

    def following(after: datetime) -> datetime | None:
        return _utc(cls.next_fire_time(config, after))

    grace = policy.misfire_grace
    skipped = 0
    horizon = now - max(policy.catch_up_window, grace)
    when: datetime | None = cursor
    if when < horizon:
        # older than the catch-up window: never caught up, counted as one skip
        skipped += 1
        when = following(horizon - _EPSILON)
    due: list[datetime] = []
    while when is not None and when <= now and len(due) < MAX_FIRE_TIMES_PER_TICK:
        due.append(when)
        when = following(when)
    if when is not None and when <= now:
        skipped += 1
        when = following(now)
    on_time = [t for t in due if now - t <= grace]
    late = [t for t in due if now - t > grace]
    if policy.misfire == "skip":
        caught_up: list[datetime] = []
    elif policy.misfire == "catchUpOne":
        caught_up = late[-1:]
    else:
        caught_up = late[-policy.max_catch_up :] if policy.max_catch_up > 0 else []
    skipped += len(late) - len(caught_up)
    return FirePlan(
        fire=[(t, True) for t in caught_up] + [(t, False) for t in on_time],
        skipped=skipped,
        next_fire_at=when,
    )
