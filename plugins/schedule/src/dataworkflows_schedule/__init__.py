"""``schedule``: start runs on a cron schedule in an IANA timezone, or at a fixed interval.

Entry point only: the hooks import :mod:`dataworkflows_schedule.trigger` (pydantic models;
croniter when a cron expression is read) when the kernel asks for the types, and its names
are importable from here on first use.
"""

from __future__ import annotations

from typing import Any

from dataworkflows import hookimpl, lazy_attributes

__getattr__ = lazy_attributes(__name__, "dataworkflows_schedule.trigger")

#: the plugin-API versions this plugin works with (README, "Plugin API versions")
dataworkflows_api = ">=1,<2"
#: what it registers (type: title), so `dataworkflows plugins` need not import it;
#: `dataworkflows plugins --check` compares this with the classes
dataworkflows_actions = {}
dataworkflows_triggers = {
    "schedule": "Start runs on a cron schedule (IANA timezone) or at a fixed interval"
}


@hookimpl
def register_triggers(register: Any) -> None:
    from dataworkflows_schedule.trigger import Schedule

    register(Schedule)
