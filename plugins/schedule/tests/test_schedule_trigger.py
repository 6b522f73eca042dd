"""The schedule trigger type: config validation and fire times, DST included.

These are pure functions of the config; the kernel-side scheduler (exactly-once, misfire,
overlap) is tested in tests/test_triggers_scheduler.py.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from dataworkflows.triggers import FirePolicy
from dataworkflows_schedule import Schedule, ScheduleConfig, is_wildcard, normalise_cron


def cfg(**values: Any) -> ScheduleConfig:
    return ScheduleConfig.model_validate(values)


def fire_times(config: ScheduleConfig, after: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    when: datetime | None = after
    for _ in range(count):
        assert when is not None
        when = Schedule.next_fire_time(config, when)
        if when is None:
            break
        out.append(when)
    return out


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_hook_register_triggers_schedule_is_time_based(kernel: Any) -> None:
    entry = kernel.plugins.triggers["schedule"]
    assert entry.cls is Schedule
    assert entry.plugin.distribution == "dataworkflows-schedule"
    assert Schedule.time_based
    assert "cron" in Schedule.config_schema()["properties"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "exactly one of cron and intervalSeconds"),
        ({"cron": "* * * * *", "intervalSeconds": 60}, "exactly one"),
        ({"cron": "61 * * * *"}, "invalid cron"),
        ({"cron": "* * * *"}, "5 fields"),
        ({"cron": "0 * * * * *"}, "5 fields"),
        ({"cron": "H * * * *"}, "hashed (H) and random (R)"),
        ({"cron": "R 2 * * *"}, "hashed (H) and random (R)"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown IANA timezone"),
        ({"intervalSeconds": 0}, "greater than or equal to 1"),
        ({"intervalSeconds": 60, "startAt": "2026-01-01T00:00:00"}, "offset"),
        (
            {
                "intervalSeconds": 60,
                "startAt": "2026-01-02T00:00:00Z",
                "endAt": "2026-01-01T00:00:00Z",
            },
            "endAt must be after startAt",
        ),
        ({"cron": "* * * * *", "misfirePolicy": "later"}, "skip"),
        ({"cron": "* * * * *", "overlapPolicy": "queue"}, "allow"),
        ({"cron": "* * * * *", "colour": "blue"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_configs_are_rejected(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        ScheduleConfig.model_validate(values)
    assert message in str(info.value)


def test_macros_and_wildcard_classification() -> None:
    assert normalise_cron("@daily") == "0 0 * * *"
    assert normalise_cron("  */5   *  * * MON-FRI ") == "*/5 * * * MON-FRI"
    assert is_wildcard("* * * * *") and is_wildcard("*/15 * * * *") and is_wildcard("@hourly")
    assert is_wildcard("* 3 * * *")  # vixie: minute OR hour starts with *
    assert not is_wildcard("30 2 * * *") and not is_wildcard("0 1-3 * * *")
    assert not is_wildcard("@daily")


def test_cron_in_utc_is_strictly_after() -> None:
    config = cfg(cron="*/15 * * * *")
    assert fire_times(config, utc(2026, 1, 1, 12, 0), 3) == [
        utc(2026, 1, 1, 12, 15),
        utc(2026, 1, 1, 12, 30),
        utc(2026, 1, 1, 12, 45),
    ]
    assert Schedule.next_fire_time(config, utc(2026, 1, 1, 12, 14, 59)) == utc(2026, 1, 1, 12, 15)


def test_cron_in_a_timezone() -> None:
    config = cfg(cron="0 9 * * MON-FRI", timezone="Europe/Berlin")
    # Friday 2026-01-02 10:00 Berlin → next is Monday 09:00 CET = 08:00Z
    assert fire_times(config, utc(2026, 1, 2, 9, 0), 2) == [
        utc(2026, 1, 5, 8, 0),
        utc(2026, 1, 6, 8, 0),
    ]
    # in summer Berlin is UTC+2
    assert Schedule.next_fire_time(config, utc(2026, 7, 1, 0, 0)) == utc(2026, 7, 1, 7, 0)


def test_start_and_end_bound_the_schedule() -> None:
    config = cfg(cron="0 * * * *", startAt="2026-03-01T10:30:00Z", endAt="2026-03-01T12:00:00Z")
    assert fire_times(config, utc(2026, 1, 1), 5) == [
        utc(2026, 3, 1, 11, 0),
        utc(2026, 3, 1, 12, 0),
    ]


def test_interval_is_anchored_and_ignores_dst() -> None:
    config = cfg(intervalSeconds=3600, startAt="2026-03-08T05:30:00Z")
    assert Schedule.next_fire_time(config, utc(2026, 1, 1)) == utc(2026, 3, 8, 5, 30)
    # across New York's spring-forward night: every 3600 s of real time regardless
    assert fire_times(config, utc(2026, 3, 8, 5, 30), 3) == [
        utc(2026, 3, 8, 6, 30),
        utc(2026, 3, 8, 7, 30),
        utc(2026, 3, 8, 8, 30),
    ]
    # without startAt the anchor is the Unix epoch: a 300 s interval fires on :00, :05, ...
    epoch_anchored = cfg(intervalSeconds=300)
    assert Schedule.next_fire_time(epoch_anchored, utc(2026, 1, 1, 0, 1, 7)) == utc(
        2026, 1, 1, 0, 5
    )


def test_never_matching_cron_never_fires() -> None:
    assert Schedule.next_fire_time(cfg(cron="0 0 30 2 *"), utc(2026, 1, 1)) is None


# -- DST (America/New_York: 2026-03-08 02:00 EST → 03:00 EDT at 07:00Z;
#                          2026-11-01 02:00 EDT → 01:00 EST at 06:00Z) -----------------------

NY = "America/New_York"


def test_spring_forward_fixed_time_fires_once_at_the_jump() -> None:
    config = cfg(cron="30 2 * * *", timezone=NY)
    times = fire_times(config, utc(2026, 3, 7, 12), 3)
    # 02:30 does not exist on 03-08: it fires at the jump, 03:00 EDT (07:00Z), once
    assert times == [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)]


def test_spring_forward_several_skipped_times_collapse_into_one_fire() -> None:
    config = cfg(cron="0,20,40 2 * * *", timezone=NY)
    times = fire_times(config, utc(2026, 3, 8, 5), 2)
    assert times == [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 0)]


def test_spring_forward_wildcard_follows_real_time() -> None:
    config = cfg(cron="*/15 * * * *", timezone=NY)
    times = fire_times(config, utc(2026, 3, 8, 6, 30), 3)  # 01:30 EST
    # 01:45 EST, then 03:00 EDT: 15 real minutes apart; 02:xx never happens
    assert times == [utc(2026, 3, 8, 6, 45), utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 7, 15)]


def test_fall_back_fixed_time_fires_once_at_the_first_occurrence() -> None:
    config = cfg(cron="30 1 * * *", timezone=NY)
    times = fire_times(config, utc(2026, 10, 31, 12), 2)
    # 01:30 happens twice on 11-01; it fires at 01:30 EDT (05:30Z) only
    assert times == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_fall_back_wildcard_fires_in_both_occurrences() -> None:
    config = cfg(cron="*/30 * * * *", timezone=NY)
    times = fire_times(config, utc(2026, 11, 1, 4, 40), 6)  # 00:40 EDT
    assert times == [
        utc(2026, 11, 1, 5, 0),  # 01:00 EDT
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT
        utc(2026, 11, 1, 6, 0),  # 01:00 EST
        utc(2026, 11, 1, 6, 30),  # 01:30 EST
        utc(2026, 11, 1, 7, 0),  # 02:00 EST
        utc(2026, 11, 1, 7, 30),  # 02:30 EST
    ]


def test_every_minute_over_both_transitions_never_stops_or_repeats() -> None:
    config = cfg(cron="* * * * *", timezone=NY)
    for start in (utc(2026, 3, 8, 6, 0), utc(2026, 11, 1, 4, 30)):
        times = fire_times(config, start, 180)
        assert [b - a for a, b in itertools.pairwise(times)] == [timedelta(minutes=1)] * 179


def test_europe_berlin_transitions() -> None:
    # 2026-03-29 02:00 CET → 03:00 CEST at 01:00Z; 2026-10-25 03:00 CEST → 02:00 CET at 01:00Z
    hourly = cfg(cron="0 * * * *", timezone="Europe/Berlin")
    assert fire_times(hourly, utc(2026, 3, 28, 23), 3) == [
        utc(2026, 3, 29, 0),
        utc(2026, 3, 29, 1),
        utc(2026, 3, 29, 2),
    ]
    assert fire_times(hourly, utc(2026, 10, 24, 23), 4) == [
        utc(2026, 10, 25, 0),  # 02:00 CEST
        utc(2026, 10, 25, 1),  # 02:00 CET (second occurrence: wildcard)
        utc(2026, 10, 25, 2),
        utc(2026, 10, 25, 3),
    ]
    daily = cfg(cron="30 2 * * *", timezone="Europe/Berlin")
    assert fire_times(daily, utc(2026, 3, 28, 12), 1) == [utc(2026, 3, 29, 1, 0)]  # 03:00 CEST
    assert fire_times(daily, utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST, first occurrence only
        utc(2026, 10, 26, 1, 30),
    ]


def test_policy_event_and_description() -> None:
    config = cfg(
        cron="0 9 * * *",
        timezone="Europe/Berlin",
        misfirePolicy="catchUpAll",
        misfireGraceSeconds=5,
        catchUpWindowSeconds=600,
        maxCatchUp=3,
        overlapPolicy="skip",
        data={"report": "daily"},
    )
    assert Schedule.fire_policy(config) == FirePolicy(
        misfire="catchUpAll",
        misfire_grace=timedelta(seconds=5),
        catch_up_window=timedelta(seconds=600),
        max_catch_up=3,
        overlap="skip",
    )
    assert Schedule.event(config, utc(2026, 1, 5, 8)) == {
        "timezone": "Europe/Berlin",
        "localScheduledTime": "2026-01-05T09:00:00+01:00",
        "schedule": {"cron": "0 9 * * *"},
        "data": {"report": "daily"},
    }
    assert Schedule.describe("t1", config) == {
        "schedule": "cron '0 9 * * *' in Europe/Berlin (fixed-time)"
    }
    defaults = Schedule.fire_policy(cfg(intervalSeconds=60))
    assert (defaults.misfire, defaults.overlap) == ("catchUpOne", "allow")
