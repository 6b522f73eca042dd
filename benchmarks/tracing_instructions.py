"""What tracing costs a W1 run, counted in CPU instructions (issue 16, "Traces").

Throughput on a shared 2-core machine moves by up to 2x between runs of the same code
(``benchmarks.tracing_cost`` shows it), far more than the 5 % to be shown; the
instructions a process executes do not. One process runs a kernel (SQLite, the embedded
worker, ``core.echo``, ``dataworkflows-tracing``) and executes ``--n`` W1 runs (two echo
steps, the second rendering the first's output; 16 in flight) with tracing off (no
``OTEL_*`` variable) or on (every span exported over OTLP/HTTP to ``--endpoint``, e.g.
:mod:`benchmarks.otlp_sink`; the spans are flushed before the process ends, so their
encoding and sending are counted). Run it under callgrind for each mode and for
``--n 0`` (start-up and shutdown only)::

    python -m benchmarks.otlp_sink --port 4318 &
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m benchmarks.tracing_instructions --n 200 --tracing on
    # "Collected : <instructions>" on stderr; the same with --tracing off and with --n 0

Instructions per run = (Ir(n) - Ir(0)) / n for each mode; the on/off ratio is the cost.
Without valgrind the script prints the process's CPU seconds per run instead (noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from benchmarks.inprocess import drive_w1, w1_kernel


async def _main(n: int, tracing: bool, inflight: int, endpoint: str) -> None:
    for name in [k for k in os.environ if k.startswith("OTEL_")]:
        del os.environ[name]
    if tracing:
        os.environ["OTEL_TRACES_EXPORTER"] = "otlp"
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    import dataworkflows_echo
    import dataworkflows_tracing

    # configured (and, when on, the SDK imported) once per process: not a cost of the runs
    tracer = dataworkflows_tracing.current_tracer()
    assert (tracer is not None) == tracing
    async with w1_kernel([dataworkflows_echo, dataworkflows_tracing]) as kernel:
        began = time.process_time()
        await drive_w1(kernel, n, inflight)
        if tracer is not None:
            tracer.provider.force_flush()  # the export of every span is part of the cost
        cpu = time.process_time() - began
    print(f"tracing={'on' if tracing else 'off'} n={n}: {cpu / max(n, 1) * 1000:.2f} ms CPU/run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--tracing", choices=("on", "off"), default="on")
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--endpoint", default="http://127.0.0.1:4318")
    args = parser.parse_args()
    asyncio.run(_main(args.n, args.tracing == "on", args.inflight, args.endpoint))


if __name__ == "__main__":
    main()
