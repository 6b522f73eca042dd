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
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.workloads import w1_definition


async def _main(n: int, metrics: bool, inflight: int) -> None:
    import dataworkflows_echo
    from dataworkflows.kernel import Kernel
    from dataworkflows.settings import Settings

    plugins: list[Any] = [dataworkflows_echo]
    if metrics:
        import dataworkflows_metrics

        plugins.append(dataworkflows_metrics)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'cost.db'}"
        kernel = Kernel(
            Settings(database_url=url, secret_key_file="", poll_interval=0.05),
            extra_plugins=plugins,
            entrypoints=False,
        )
        await kernel.start()
        if metrics:  # imported and made once per process: not a cost of the runs
            from dataworkflows_metrics.recorder import recorder

            recorder()
        await kernel.service.apply(w1_definition())
        kernel.start_worker()
        began = time.process_time()
        window = asyncio.Semaphore(inflight)

        async def one(i: int) -> None:
            async with window:
                summary, _ = await kernel.service.execute("bench-w1", trigger={"i": i})
                status = await kernel.ledger.wait_until_final(
                    uuid.UUID(summary["executionId"]), 120
                )
                assert status == "Succeeded", status

        await asyncio.gather(*(one(i) for i in range(n)))
        cpu = time.process_time() - began
        if metrics:  # one scrape (with n = 0 too: it is a cost per scrape, not per run)
            from prometheus_client import generate_latest

            from dataworkflows_metrics.exposition import _registry

            depth = await kernel.plugin_api.queue_depth()
            text = generate_latest(_registry(depth, filtered=False))
            assert n == 0 or b"dataworkflows_runs_finished_total" in text
        await kernel.close()
    print(f"metrics={'on' if metrics else 'off'} n={n}: {cpu / max(n, 1) * 1000:.2f} ms CPU/run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--metrics", choices=("on", "off"), default="on")
    parser.add_argument("--inflight", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(_main(args.n, args.metrics == "on", args.inflight))


if __name__ == "__main__":
    main()
