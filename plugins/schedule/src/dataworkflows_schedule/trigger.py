"""``schedule``: start runs on a cron schedule in an IANA timezone, or at a fixed interval.

The kernel's scheduler asks :meth:`Schedule.next_fire_time` when a trigger fires next and
applies :meth:`Schedule.fire_policy`; this module is the only place that parses cron.

Configuration (camelCase JSON; see the README for the full table)::

    {"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin",
     "misfirePolicy": "catchUpOne", "overlapPolicy": "skip", "data": {"report": "daily"}}
    {"intervalSeconds": 300, "startAt": "2026-01-01T00:00:00Z"}

Daylight saving time (vixie-cron semantics, documented in docs/triggers.md):

* Cron fields are matched against the wall clock of ``timezone``.
* A *wildcard* expression is one whose minute or hour field starts with ``*`` (``* * * * *``,
  ``*/15 * * * *``, ``0 * * * *``). It follows real time: wall times skipped by the
  spring-forward jump do not happen, and wall times repeated by the fall-back hour fire in
  both occurrences.
* Any other expression is a *fixed-time* one (``30 2 * * *``). A fire time inside the
  skipped hour fires once, at the moment of the jump (02:30 → 03:00 new time); a fire time
  inside the repeated hour fires once, at its first occurrence.
* ``intervalSeconds`` schedules are plain elapsed time (``startAt + k * interval``) and
  ignore DST.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from dataworkflows import TriggerType
from dataworkflows.triggers import FirePolicy

__all__ = ["Schedule", "ScheduleConfig", "is_wildcard", "normalise_cron"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: the largest UTC offset change a DST transition makes (with margin)
MAX_SHIFT = timedelta(hours=3)
#: how many candidate wall times to examine before deciding a cron never fires
MAX_CANDIDATES = 5000

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# croniter's non-standard hashed (H) and random (R) values differ between processes or
# need a hash id: every scheduler must compute the same fire times, so they are refused.
_NONDETERMINISTIC = re.compile(r"^[HR](\(|/|$)", re.IGNORECASE)


def normalise_cron(expression: str) -> str:
    """A standard five-field expression (macros expanded); raises ValueError if invalid."""
    expr = " ".join(expression.split())
    expr = MACROS.get(expr.lower(), expr)
    fields = expr.split(" ")
    if len(fields) != 5:
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
            f"not {len(fields)}: {expression!r}"
        )
    for item in (part for f in fields for part in f.split(",")):
        if _NONDETERMINISTIC.match(item):
            raise ValueError(f"hashed (H) and random (R) cron values are not supported: {item!r}")
    from croniter import croniter  # imported when a cron expression is checked, not at load

    if not croniter.is_valid(expr):
        raise ValueError(f"invalid cron expression: {expression!r}")
    return expr


def is_wildcard(expression: str) -> bool:
    """vixie-cron's rule: the minute or the hour field starts with ``*``."""
    minute, hour = normalise_cron(expression).split(" ")[:2]
    return minute.startswith("*") or hour.startswith("*")


class ScheduleConfig(BaseModel):
    """Configuration of a ``schedule`` trigger: exactly one of ``cron`` and ``intervalSeconds``.

    Each fire time starts one run of the workflow; the run's ``trigger`` holds
    ``scheduledTime``, ``localScheduledTime``, ``catchUp`` and ``data``. Fire times the
    scheduler reaches late (after downtime) follow ``misfirePolicy``.
    """

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=to_camel,
        use_attribute_docstrings=True,
    )

    cron: str | None = None
    """A five-field cron expression (minute hour day-of-month month day-of-week, e.g.
    ``0 9 * * 1-5``) or ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``,
    read in ``timezone``. Hashed and random values (``H``, ``R``) are refused."""
    interval_seconds: int | None = Field(default=None, ge=1, le=366 * 86400)
    """Or: fire every N seconds (1 to 366 days), at ``startAt + k * N``; without
    ``startAt`` the anchor is 1970-01-01T00:00:00Z. Plain elapsed time: ignores DST."""
    timezone: str = "UTC"
    """The IANA time zone the cron fields are read in, e.g. ``Europe/Berlin``
    (daylight-saving rules in docs/triggers.md). Default: ``UTC``."""
    start_at: datetime | None = None
    """No fire time before this instant (ISO 8601 with an offset or ``Z``); also the
    anchor of ``intervalSeconds``. Default: no start."""
    end_at: datetime | None = None
    """No fire time after this instant (ISO 8601 with an offset or ``Z``), after
    ``startAt``. Default: no end."""
    misfire_policy: Literal["skip", "catchUpOne", "catchUpAll"] = "catchUpOne"
    """What to do with fire times reached later than ``misfireGraceSeconds`` (e.g. after
    downtime): ``skip`` starts nothing for them; ``catchUpOne`` (default) starts one run,
    for the most recent; ``catchUpAll`` starts one run per missed fire time (at most
    ``maxCatchUp``, the most recent ones). Such runs have ``trigger.catchUp`` true."""
    misfire_grace_seconds: float = Field(default=60, ge=0, le=86400)
    """Seconds a fire time may be processed late and still run normally (at most 86400,
    default 60); later than that it has misfired."""
    catch_up_window_seconds: float = Field(default=3600, ge=0, le=366 * 86400)
    """Misfired fire times older than this many seconds are never caught up (default
    3600: one hour)."""
    max_catch_up: int = Field(default=100, ge=1, le=10_000)
    """``catchUpAll`` starts at most this many catch-up runs at once (1 to 10000, default
    100)."""
    overlap_policy: Literal["allow", "skip"] = "allow"
    """``allow`` (default): start a run at every fire time; ``skip``: skip a fire time
    while a run this trigger started earlier is still Pending or Running."""
    data: dict[str, Any] = Field(default_factory=dict)
    """Static JSON object passed to every run as ``trigger.data``. Default: ``{}``."""

    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        normalise_cron(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r} (e.g. 'Europe/Berlin')") from None
        return value

    @field_validator("start_at", "end_at")
    @classmethod
    def _check_aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give an offset or Z (e.g. 2026-01-01T00:00:00Z)")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleConfig:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give exactly one of cron and intervalSeconds")
        if self.start_at and self.end_at and self.end_at <= self.start_at:
            raise ValueError("endAt must be after startAt")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _offset(tz: ZoneInfo, instant: datetime) -> timedelta:
    return instant.astimezone(tz).utcoffset() or timedelta(0)


def _transition(tz: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first instant in (before, after] with ``after``'s UTC offset (bisection)."""
    target = _offset(tz, after)
    lo, hi = before, after
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if _offset(tz, mid) == target:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0) if _offset(tz, hi.replace(microsecond=0)) == target else hi


def _instants(wall: datetime, tz: ZoneInfo, wildcard: bool) -> list[datetime]:
    """The UTC instants a matching wall-clock time fires at (see the DST rules above)."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if first.astimezone(tz).replace(tzinfo=None) == wall:  # repeated (fall back)
        return [first, second] if wildcard else [first]
    # skipped (spring forward): fold=1 is before the jump, fold=0 after it
    return [] if wildcard else [_transition(tz, second, first)]


def next_cron_time(expression: str, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first fire time of ``expression`` in ``tz`` strictly after ``after`` (UTC)."""
    expr = normalise_cron(expression)
    wildcard = is_wildcard(expr)
    after = after.astimezone(UTC)
    wall_after = after.astimezone(tz).replace(tzinfo=None)
    # Wall time runs in step with real time except across a backward (fall-back)
    # transition, where wall times repeat. Near one, look back by the size of the shift
    # (a repeated wall time's second occurrence may still be ahead), and keep looking
    # until no later wall time can map to an earlier instant.
    shift = _offset(tz, after - MAX_SHIFT) - _offset(tz, after + MAX_SHIFT)
    backward = shift > timedelta(0)
    from croniter import croniter

    candidates = croniter(expr, wall_after - shift if backward else wall_after)
    best: datetime | None = None
    best_wall: datetime | None = None
    for _ in range(MAX_CANDIDATES):
        try:
            wall = candidates.get_next(datetime)
        except Exception:  # croniter: no further match (e.g. 30 February)
            break
        if best_wall is not None and wall > best_wall + shift:
            break
        for instant in _instants(wall, tz, wildcard):
            if instant > after and (best is None or instant < best):
                best, best_wall = instant, wall
        if best is not None and not backward:
            break
    return best


def next_interval_time(seconds: int, anchor: datetime | None, after: datetime) -> datetime:
    """``anchor + k * seconds`` for the smallest k >= 0 that is strictly after ``after``."""
    start = (anchor or EPOCH).astimezone(UTC)
    step = timedelta(seconds=seconds)
    if after < start:
        return start
    return start + ((after - start) // step + 1) * step


class Schedule(TriggerType):
    """Cron or interval schedules, fired by the kernel's scheduler."""

    type = "schedule"
    title = "Start runs on a cron schedule (IANA timezone) or at a fixed interval"
    time_based = True
    Config = ScheduleConfig

    @classmethod
    def next_fire_time(cls, config: ScheduleConfig, after: datetime) -> datetime | None:
        if config.start_at is not None and after < config.start_at:
            after = config.start_at - timedelta(microseconds=1)
        if config.interval_seconds is not None:
            when: datetime | None = next_interval_time(
                config.interval_seconds, config.start_at, after
            )
        else:
            assert config.cron is not None
            when = next_cron_time(config.cron, config.zone, after)
        if when is not None and config.end_at is not None and when > config.end_at:
            return None
        return when

    @classmethod
    def fire_policy(cls, config: ScheduleConfig) -> FirePolicy:
        return FirePolicy(
            misfire=config.misfire_policy,
            misfire_grace=timedelta(seconds=config.misfire_grace_seconds),
            catch_up_window=timedelta(seconds=config.catch_up_window_seconds),
            max_catch_up=config.max_catch_up,
            overlap=config.overlap_policy,
        )

    @classmethod
    def event(cls, config: ScheduleConfig, scheduled_time: datetime) -> dict[str, Any]:
        local = scheduled_time.astimezone(config.zone)
        schedule: dict[str, Any] = (
            {"cron": config.cron} if config.cron else {"intervalSeconds": config.interval_seconds}
        )
        return {
            "timezone": config.timezone,
            "localScheduledTime": local.isoformat(),
            "schedule": schedule,
            "data": config.data,
        }

    @classmethod
    def describe(cls, trigger_id: str, config: ScheduleConfig) -> dict[str, Any]:
        if config.cron:
            kind = "wildcard" if is_wildcard(config.cron) else "fixed-time"
            return {"schedule": f"cron {config.cron!r} in {config.timezone} ({kind})"}
        return {"schedule": f"every {config.interval_seconds} s"}
