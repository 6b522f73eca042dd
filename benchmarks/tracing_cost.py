"""The cost of tracing on W1: the same workload with tracing off and on, alternated.

    python3 -m uv run --all-packages python -m benchmarks.tracing_cost --n 1000 --rounds 3

Each round runs W1 (``python -m benchmarks run --only W1``) twice on each backend, once
without any ``OTEL_*`` variable (tracing off) and once exporting every span over OTLP/HTTP
to :mod:`benchmarks.otlp_sink` on 127.0.0.1 (the order alternates between rounds). On a
shared, noisy machine the throughput of one run varies by up to 2x; the engine's CPU time
per run (``/proc``, the ``dataworkflows serve`` process) varies much less, so both are
printed, per run and as the median over the rounds, with the on/off ratio. The sink's
span count checks that the traced runs really exported their spans (3 per run: the run
and its two steps).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PORT = 4318


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="W1 runs per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--port", type=int, default=PORT)
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    sink = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.otlp_sink", "--port", str(args.port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None
        sink.stdout.readline()  # listening
        rows: dict[tuple[str, bool], list[dict[str, float]]] = {}
        for round_ in range(args.rounds):
            for backend in backends:
                order = (False, True) if round_ % 2 == 0 else (True, False)
                for traced in order:
                    before = _spans(args.port)
                    result = _w1(backend, traced, args.n, args.port)
                    result["spans"] = _spans(args.port) - before
                    rows.setdefault((backend, traced), []).append(result)
                    print(_line(backend, traced, result), flush=True)
        print()
        for backend in backends:
            off, on = rows[(backend, False)], rows[(backend, True)]
            for key, label in (("runs_per_s", "runs/s"), ("cpu_ms_per_run", "CPU ms/run")):
                a = statistics.median(r[key] for r in off)
                b = statistics.median(r[key] for r in on)
                print(
                    f"{backend:10} {label:11} median off {a:8.2f}  on {b:8.2f}  on/off {b / a:.3f}"
                )
    finally:
        sink.terminate()
        sink.wait(10)


def _w1(backend: str, traced: bool, n: int, port: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if traced:
        env["OTEL_TRACES_EXPORTER"] = "otlp"
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "w1.json"
        subprocess.run(
            [sys.executable, "-m", "benchmarks", "run", "--only", "W1", "--backend", backend,
             "--n", str(n), "--json", str(report)],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        result = json.loads(report.read_text())["results"][0]
    time.sleep(1.0)  # let the engine's last export reach the sink before counting
    return {
        "runs_per_s": float(result["runs_per_s"]),
        "cpu_ms_per_run": float(result["engine"]["cpu_ms_per_run"]),
        "p50_ms": float(result["latency"]["p50_ms"]),
        "load": float(result["loadavg_before"][0]),
    }


def _spans(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as resp:
        return int(json.load(resp)["spans"])


def _line(backend: str, traced: bool, r: dict[str, float]) -> str:
    return (
        f"{backend:10} tracing {'on ' if traced else 'off'}  runs/s {r['runs_per_s']:7.1f}  "
        f"CPU ms/run {r['cpu_ms_per_run']:6.2f}  p50 {r['p50_ms']:6.1f} ms  "
        f"load {r['load']:4.1f}  spans exported {int(r['spans'])}"
    )


if __name__ == "__main__":
    main()
