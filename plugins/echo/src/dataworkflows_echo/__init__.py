"""``core.echo``: returns its message. Also the engine's test double for failures.

Entry point only: the hooks import :mod:`dataworkflows_echo.action` (pydantic models) when
the kernel asks for the types, and its names are importable from here on first use.
"""

from __future__ import annotations

from typing import Any

from dataworkflows import hookimpl, lazy_attributes

__getattr__ = lazy_attributes(__name__, "dataworkflows_echo.action")

#: the plugin-API versions this plugin works with (README, "Plugin API versions")
dataworkflows_api = ">=1,<2"
#: what it registers (type: title), so `dataworkflows plugins` need not import it;
#: `dataworkflows plugins --check` compares this with the classes
dataworkflows_actions = {"core.echo": "Echo a message (and fail on purpose, for tests)"}
dataworkflows_triggers = {}


@hookimpl
def register_actions(register: Any) -> None:
    from dataworkflows_echo.action import Echo

    register(Echo)
