"""What the metrics plugin costs a W1 run, counted in CPU instructions (issue 16).

Throughput on a shared 2-core machine moves by up to 2x between runs of the same code, far
more than the 5 % to be shown; the instructions a process executes do not. One process
runs a kernel (SQLite, the embedded worker, ``core.echo``) and executes ``--n`` W1 runs
(two echo steps, the second rendering the first's output; 16 in flight) with or without
``dataworkflows-metrics`` (and, with it, one ``/metrics`` rendering at the end). Run it
under callgrind for each mode and for ``--n 0`` (start-up and shutdown only)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m benchmarks.metrics_cost --n 300 --metrics on
    # "Collected : <instructions>" on stderr; the same with --metrics off and with --n 0

Instructions per run = (Ir(n) - Ir(0)) / n for each mode; the ratio is the cost.
Without valgrind the script prints the process's CPU seconds per run instead (noisy).

``--micro``: no database; the hook calls of one W1 run (its 7 events and one group-commit
measurement) through the plugin manager, with and without the plugin, in CPU µs per run
(set ``DATAWORKFLOWS_METRICS_DIR`` to time the multi-process mode).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from benchmarks.inprocess import drive_w1, w1_kernel


async def _main(n: int, metrics: bool, inflight: int) -> None:
    import dataworkflows_echo

    plugins: list[Any] = [dataworkflows_echo]
    if metrics:
        import dataworkflows_metrics

        plugins.append(dataworkflows_metrics)
    async with w1_kernel(plugins) as kernel:
        if metrics:  # imported and made once per process: not a cost of the runs
            from dataworkflows_metrics.recorder import recorder

            recorder()
        began = time.process_time()
        await drive_w1(kernel, n, inflight)
        cpu = time.process_time() - began
        if metrics:  # one scrape (with n = 0 too: it is a cost per scrape, not per run)
            from prometheus_client import generate_latest

            from dataworkflows_metrics.exposition import _registry

            depth = await kernel.plugin_api.queue_depth()
            text = generate_latest(_registry(depth, filtered=False))
            assert n == 0 or b"dataworkflows_runs_finished_total" in text
    print(f"metrics={'on' if metrics else 'off'} n={n}: {cpu / max(n, 1) * 1000:.2f} ms CPU/run")


def _micro(rounds: int = 20_000) -> None:
    """CPU µs of the hook calls of one W1 run, with and without the plugin."""
    from datetime import UTC, datetime

    import dataworkflows_metrics
    from dataworkflows.events import EventType, RunEvent
    from dataworkflows.measurements import EngineMeasurement, Measure
    from dataworkflows.plugins.manager import load_plugins

    now = datetime.now(UTC)
    step = {"action_type": "core.echo"}
    running, done = {"status": "Running"}, {"status": "Succeeded"}
    events = [
        RunEvent("e", "bench-w1", 1, EventType.RUN_QUEUED, now),
        RunEvent("e", "bench-w1", 2, EventType.RUN_STARTED, now),
        *[
            event
            for node in ("first", "second")
            for event in (
                RunEvent(
                    "e",
                    "bench-w1",
                    2,
                    EventType.STEP_STARTED,
                    now,
                    node,
                    running,
                    durable=False,
                    **step,
                ),
                RunEvent(
                    "e",
                    "bench-w1",
                    3,
                    EventType.STEP_SUCCEEDED,
                    now,
                    node,
                    done,
                    duration_seconds=0.001,
                    **step,
                ),
            )
        ],
        RunEvent("e", "bench-w1", 5, EventType.RUN_SUCCEEDED, now, None, done),
    ]
    batch = EngineMeasurement(Measure.GROUP_COMMIT_BATCH, (8.0,), {"writer": "ledger-flush"})
    for label, extra in (("with", [dataworkflows_metrics]), ("without", [])):
        hook = load_plugins(entrypoints=False, extra=extra).hook
        for event in events:  # first use: imports, label children
            hook.on_run_event(event=event)
        began = time.process_time()
        for _ in range(rounds):
            for event in events:
                hook.on_run_event(event=event)
            if extra:  # without an implementation the kernel builds no measurement
                hook.on_engine_measurement(measurement=batch)
        per_run = (time.process_time() - began) / rounds * 1e6
        print(f"{label} the plugin: {per_run:.1f} µs CPU per W1 run's hook calls")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--metrics", choices=("on", "off"), default="on")
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--micro", action="store_true", help="the hook calls only (no database)")
    args = parser.parse_args()
    if args.micro:
        _micro()
    else:
        asyncio.run(_main(args.n, args.metrics == "on", args.inflight))


if __name__ == "__main__":
    main()
