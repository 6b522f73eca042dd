"""A worker process of one simulated host, whose clock runs ``--clock-offset`` seconds off.

Run by the harness inside the host's namespace; otherwise ``dataworkflows worker`` exactly
(settings from ``DATAWORKFLOWS_*``, SIGTERM drains), but with the kernel's clock skewed:
every time the engine writes or compares (claims, lease expiry, step times) is this host's.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timedelta

from dataworkflows.cli.common import configure_logging, new_loop, settings_or_fail
from dataworkflows.cli.server import _worker_main
from dataworkflows.common.clock import SystemClock


class OffsetClock(SystemClock):
    """The system clock plus a fixed offset (a host whose NTP is off)."""

    def __init__(self, offset: float) -> None:
        self.offset = timedelta(seconds=offset)

    def now(self) -> datetime:
        return super().now() + self.offset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clock-offset", type=float, default=0.0)
    args = parser.parse_args()
    settings = settings_or_fail()
    configure_logging(settings)
    with asyncio.Runner(loop_factory=lambda: new_loop(settings)) as runner:
        runner.run(_worker_main(settings, clock=OffsetClock(args.clock_offset)))


if __name__ == "__main__":
    main()
