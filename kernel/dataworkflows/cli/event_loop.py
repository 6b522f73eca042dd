"""Which asyncio event loop the engine's long-running commands (``serve``, ``worker``) use.

uvloop (libuv) runs the same asyncio code with a cheaper scheduler, sockets and timers; the
engine spends much of its time in exactly those (HTTP requests, database round trips), so
it is the default wherever it is installed (a dependency on Linux and macOS). Tests and
library use keep whatever loop their caller runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dataworkflows.settings import Settings, SettingsError

if TYPE_CHECKING:
    import asyncio


def loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory of the event loop ``settings.event_loop`` names.

    ``auto``: uvloop if it can be imported, else asyncio's default; ``uvloop``: uvloop or a
    :class:`SettingsError` saying it is not installed; ``asyncio``: the standard loop.
    """
    import asyncio  # not at import: `dataworkflows --help` does not need it

    if settings.event_loop == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if settings.event_loop == "uvloop":
            raise SettingsError(
                "DATAWORKFLOWS_EVENT_LOOP=uvloop: uvloop is not installed "
                "(pip install uvloop, or use auto/asyncio)"
            ) from None
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``, for the startup banner."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
