"""``python -m benchmarks run``: run the workloads, print tables, write JSON.

Example (the full run recorded in RESULTS.md)::

    python3 -m uv run --all-packages --extra bench python -m benchmarks run --profile py-spy

Every loop is bounded in count and time, every request goes to 127.0.0.1, and every
scratch database the run creates is dropped at the end (``--keep-databases`` keeps them).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import peer_report
from benchmarks.common import fmt, machine_info, table

WORKLOADS = (
    "W1",
    "W1io",
    "W1solo",
    "W2",
    "W3",
    "W4",
    "peer",
    "ceiling",
    "sched",
    "redaction",
    "startup",
)
#: SQLite ``synchronous`` settings run side by side unless --sqlite-synchronous picks one:
#: FULL (durable, the engine's default) and NORMAL (fast, not durable on power loss)
SQLITE_MODES = ("FULL", "NORMAL")
#: workloads run only when --only names them (long: they load large backlogs)
OPT_IN = ("prune",)
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="DataWorkflows benchmarks (issue 8)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the workloads and write a JSON report")
    run.add_argument("--n", type=int, default=2000, help="W1 runs (and peer runs); default 2000")
    run.add_argument(
        "--backend",
        choices=("sqlite", "postgresql", "both"),
        default="both",
        help="database(s) for W1-W3 (W4, peer and ceiling are PostgreSQL only)",
    )
    run.add_argument(
        "--only",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS + OPT_IN)} (default: all but "
        f"{','.join(OPT_IN)})",
    )
    run.add_argument(
        "--pg-url",
        default=os.environ.get("DATAWORKFLOWS_BENCH_POSTGRES_URL") or DEFAULT_PG_URL,
        help="a PostgreSQL server URL (any database on it): scratch databases are created "
        "next to it (env DATAWORKFLOWS_BENCH_POSTGRES_URL; default %(default)s)",
    )
    run.add_argument("--w1io-n", type=int, default=None, help="W1io runs (default n)")
    run.add_argument(
        "--io-latency-ms",
        type=float,
        default=5.0,
        help="W1io: the local server's delay before each answer (default 5)",
    )
    run.add_argument(
        "--solo-n", type=int, default=100, help="W1solo: runs, one at a time (default 100)"
    )
    run.add_argument(
        "--solo-client",
        choices=("stream", "ledger"),
        default="stream",
        help="W1solo: how the client sees a run's end: its event stream, opened before the "
        "POST (default), or polling the ledger every 1 ms (a server shared with long "
        "writers holds the stream back)",
    )
    run.add_argument("--w2-n", type=int, default=None, help="W2 runs (default n/20, min 2)")
    run.add_argument("--w2-fanout", type=int, default=50, help="W2 branches (default 50)")
    run.add_argument(
        "--w3-rate",
        default="200,20",
        help="W3 requests/s, comma-separated for several runs (default 200,20: the target "
        "rate and a rate the engine sustains, for the latency floor)",
    )
    run.add_argument("--w3-duration", type=float, default=10.0, help="W3 seconds (default 10)")
    run.add_argument("--w4-rows", type=int, default=1_000_000, help="W4 executions to load")
    run.add_argument("--w4-queries", type=int, default=300, help="W4 timed requests per query")
    run.add_argument("--w4-max-load-seconds", type=float, default=180.0)
    run.add_argument(
        "--w4-database",
        default=None,
        help="W4 on this database, loaded by an earlier `--only W4 --keep-databases` run "
        "(its name on --pg-url's server): no load, and it is not dropped",
    )
    run.add_argument(
        "--prune-rows", type=int, default=1_000_000, help="prune: old runs to load and delete"
    )
    run.add_argument("--prune-rounds", type=int, default=2, help="prune: alone/pruning pairs")
    run.add_argument(
        "--ledger-partitioned",
        action="store_true",
        help="PostgreSQL workloads (W1, W2, W4, prune, ...) on a ledger partitioned by time"
        " (dataworkflows ledger partition --enable, weekly, from 41 days back)",
    )
    run.add_argument("--ceiling-seconds", type=float, default=10.0)
    run.add_argument(
        "--sched-triggers", type=int, default=4, help="sched: triggers firing every second"
    )
    run.add_argument(
        "--sched-duration", type=float, default=10.0, help="sched: seconds measured (default 10)"
    )
    run.add_argument(
        "--redaction-secrets", type=int, default=10_000, help="secrets the redaction workload adds"
    )
    run.add_argument(
        "--redaction-lines", type=int, default=250, help="timed redactions per line and round"
    )
    run.add_argument(
        "--startup-runs", type=int, default=10, help="startup: processes per CLI command"
    )
    run.add_argument(
        "--concurrency", type=int, default=None, help="engine worker concurrency (engine default)"
    )
    run.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default=None,
        help="the engine's DATAWORKFLOWS_EVENT_LOOP (engine default: auto)",
    )
    run.add_argument(
        "--sqlite-synchronous",
        choices=("FULL", "NORMAL"),
        default=None,
        help="only this DATAWORKFLOWS_SQLITE_SYNCHRONOUS (default: W1, W1io, W1solo and W2 on "
        "SQLite with FULL, the durable engine default, and with NORMAL; W3 and sched FULL)",
    )
    run.add_argument(
        "--processes",
        type=int,
        default=1,
        help="engine processes: 1 = `dataworkflows serve`; more adds `dataworkflows worker`s",
    )
    run.add_argument(
        "--engine-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another DATAWORKFLOWS_<NAME> of the engine processes, e.g. metrics=off or "
        "load_plugins=dataworkflows-echo (repeatable; with/without comparisons)",
    )
    run.add_argument("--inflight", type=int, default=16, help="unfinished runs kept in flight")
    run.add_argument("--warmup", type=int, default=20, help="runs before each measurement")
    run.add_argument("--poll", type=float, default=0.01, help="seconds between ledger polls")
    run.add_argument("--timeout", type=float, default=900.0, help="seconds per workload, max")
    run.add_argument(
        "--engine-log-level", default="WARNING", help="DATAWORKFLOWS_LOG_LEVEL of the engine"
    )
    run.add_argument(
        "--profile",
        choices=("none", "py-spy"),
        default="none",
        help="also run W1 once more under py-spy and summarise the profile",
    )
    run.add_argument("--profile-n", type=int, default=None, help="runs of the profiled W1")
    run.add_argument("--profile-backend", choices=("sqlite", "postgresql"), default="postgresql")
    run.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    run.add_argument("--json", type=Path, default=None, help="write the report here instead")
    run.add_argument("--keep-databases", action="store_true")
    run.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if any workload failed (a skipped one, e.g. peer without dbos, is not)",
    )
    return parser


def _engine_settings(pairs: list[str]) -> dict[str, str]:
    """``--engine-setting NAME=VALUE`` options as {name: value}."""
    settings = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--engine-setting {pair!r}: expected NAME=VALUE")
        settings[name.strip().lower()] = value
    return settings


def _backends(choice: str) -> list[str]:
    return ["sqlite", "postgresql"] if choice == "both" else [choice]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import (
        ceiling,
        cli_startup,
        latency_server,
        peers,
        profiling,
        redaction,
        retention,
        schedule_latency,
        w1_variants,
        workloads,
    )
    from benchmarks.common import BenchmarkError

    only = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = only - set(WORKLOADS + OPT_IN)
    if unknown:
        raise SystemExit(f"unknown workload(s): {', '.join(sorted(unknown))}")
    backends = _backends(args.backend)
    wants_pg = "postgresql" in backends or bool(only & {"W4", "peer", "ceiling", "prune"})
    pg_url = args.pg_url if wants_pg else None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work_dir = Path(tempfile.mkdtemp(prefix=f"dwbench-{stamp}-"))
    prefix_base = "dw_bench"
    if pg_url:
        from benchmarks import pg

        prefix_base = f"{pg.admin_database(pg_url)}_bench"
    ctx = workloads.Context(
        run_id=stamp,
        work_dir=work_dir,
        pg_admin_url=pg_url,
        db_prefix=f"{prefix_base}_{os.getpid()}",
        keep_databases=args.keep_databases,
        concurrency=args.concurrency,
        event_loop=args.event_loop,
        sqlite_synchronous=None,
        processes=args.processes,
        inflight=args.inflight,
        poll=args.poll,
        warmup=args.warmup,
        timeout=args.timeout,
        engine_log_level=args.engine_log_level,
        partitioned=args.ledger_partitioned,
        w4_database=args.w4_database,
        extra_settings=_engine_settings(args.engine_setting),
        io_latency_ms=args.io_latency_ms,
        solo_client=args.solo_client,
        log=_log,
    )
    sqlite_modes = [args.sqlite_synchronous] if args.sqlite_synchronous else list(SQLITE_MODES)

    def variants(backend: str, *, all_modes: bool = True) -> list[workloads.Context]:
        """The contexts a workload runs with on ``backend``: one per SQLite mode."""
        if backend != "sqlite":
            return [ctx]
        modes = sqlite_modes if all_modes else sqlite_modes[:1]
        return [dataclasses.replace(ctx, sqlite_synchronous=mode) for mode in modes]

    report: dict[str, Any] = {
        "run_id": stamp,
        "command": " ".join(sys.argv),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_info(pg_url),
        "results": [],
    }
    results: list[dict[str, Any]] = report["results"]

    def record(result: dict[str, Any]) -> None:
        results.append(result)
        status = "ok" if result.get("ok") else f"FAILED: {result.get('error')}"
        if result.get("skipped"):
            status = f"SKIPPED: {result.get('error')}"
        _log(f"{result['workload']} [{backend_label(result)}] {status}")

    w2_n = args.w2_n or max(2, args.n // 20)
    try:
        w3_rates = [float(x) for x in str(args.w3_rate).split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--w3-rate: not a number list: {args.w3_rate!r}") from None
    if not w3_rates or any(r <= 0 for r in w3_rates):
        raise SystemExit("--w3-rate: rates must be positive")
    try:
        if "ceiling" in only:
            _log("ceiling: single-row INSERT commits, 1 and 4 clients")
            try:
                report["ceiling"] = await asyncio.to_thread(
                    ceiling.run_ceiling,
                    pg_url or "",
                    f"{ctx.db_prefix}_ceiling",
                    seconds=args.ceiling_seconds,
                )
            except (BenchmarkError, Exception) as exc:
                report["ceiling"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if "startup" in only:
            _log(f"startup: dataworkflows --help and plugins, {args.startup_runs} runs each")
            report["startup"] = await asyncio.to_thread(cli_startup.run_startup, args.startup_runs)
        if "redaction" in only:
            _log(f"redaction: {args.redaction_secrets:,} secrets, 1 KB lines")
            report["redaction"] = await asyncio.to_thread(
                redaction.run_redaction, args.redaction_secrets, args.redaction_lines
            )
        if "W1io" in only:
            ctx.latency_server = await asyncio.to_thread(
                latency_server.start_latency_server, args.io_latency_ms / 1e3
            )
            report["latency_server"] = {
                "url": ctx.latency_server.url,
                "latency_ms": args.io_latency_ms,
            }
        w1io_n = args.w1io_n or args.n
        for backend in backends:
            for vctx in variants(backend):
                label = backend_label({"backend": backend, "synchronous": vctx.sqlite_synchronous})
                if "W1" in only:
                    _log(f"W1 [{label}]: {args.n} runs of a 2-step echo workflow")
                    record(await workloads.run_w1(vctx, backend, args.n))
                if "W1io" in only:
                    _log(f"W1io [{label}]: {w1io_n} runs of 2 HTTP calls to a local server")
                    record(await w1_variants.run_w1io(vctx, backend, w1io_n))
                if "W1solo" in only:
                    _log(f"W1solo [{label}]: {args.solo_n} runs of W1, one at a time")
                    record(await w1_variants.run_w1solo(vctx, backend, args.solo_n))
        if "peer" in only:
            if "W1" not in only:  # a peer's figures are read beside ours
                _log(f"W1 [postgresql]: {args.n} runs, the reference for the peers")
                record(await workloads.run_w1(ctx, "postgresql", args.n))
            _log(f"peer: W1 on DBOS Transact (sync and async API), {args.n} runs each")
            for result in await peers.run_dbos_peer(ctx, args.n):
                record(result)
            _log(f"peer: W1 on Procrastinate, {args.n} runs")
            record(await peers.run_procrastinate_peer(ctx, args.n))
            if ctx.latency_server is not None:  # W1io's real I/O, for the peers too
                io_url = f"{ctx.latency_server.url}{latency_server.IO_PATH}"
                _log(f"peer: W1io on DBOS and Procrastinate, {w1io_n} runs each")
                for result in await peers.run_dbos_peer(ctx, w1io_n, io_url=io_url):
                    record(result)
                record(await peers.run_procrastinate_peer(ctx, w1io_n, io_url=io_url))
        for backend in backends:
            for vctx in variants(backend) if "W2" in only else []:
                label = backend_label({"backend": backend, "synchronous": vctx.sqlite_synchronous})
                _log(f"W2 [{label}]: {w2_n} runs of 1 -> {args.w2_fanout} -> join")
                record(await workloads.run_w2(vctx, backend, w2_n, args.w2_fanout))
        for backend in backends:
            for vctx in variants(backend, all_modes=False):
                for rate in w3_rates if "W3" in only else []:
                    _log(f"W3 [{backend}]: {rate:g} req/s for {args.w3_duration:g} s")
                    record(
                        await workloads.run_w3(vctx, backend, rate=rate, duration=args.w3_duration)
                    )
        for backend in backends if "sched" in only else []:
            _log(
                f"sched [{backend}]: {args.sched_triggers} schedules every second, "
                f"{args.sched_duration:g} s on an idle engine"
            )
            record(
                await schedule_latency.run_sched(
                    ctx, backend, count=args.sched_triggers, duration=args.sched_duration
                )
            )
        if "W4" in only:
            _log(f"W4 [postgresql]: ledger reads at {args.w4_rows:,} executions")
            record(
                await workloads.run_w4(
                    ctx,
                    rows=args.w4_rows,
                    queries=args.w4_queries,
                    max_load_seconds=args.w4_max_load_seconds,
                )
            )
        if "prune" in only:
            _log(f"prune [postgresql]: W1 while {args.prune_rows:,} old runs are pruned")
            record(
                await retention.run_prune(
                    ctx,
                    rows=args.prune_rows,
                    n=args.n,
                    rounds=args.prune_rounds,
                    max_load_seconds=args.w4_max_load_seconds,
                )
            )
        if args.profile == "py-spy":
            profile_n = args.profile_n or min(args.n, 1000)
            _log(f"profile: W1 [{args.profile_backend}] under py-spy, {profile_n} runs")
            args.results_dir.mkdir(parents=True, exist_ok=True)
            raw = args.results_dir / f"{stamp}-w1-{args.profile_backend}.pyspy.txt"
            trace = args.results_dir / f"{stamp}-w1-{args.profile_backend}.commits.json"
            profiled = await workloads.run_w1(
                ctx, args.profile_backend, profile_n, profile_to=raw, trace_commits_to=trace
            )
            if raw.exists():
                profiled["profile"] = profiling.summarize(raw)
                profiled["profile"]["raw_file"] = str(raw)
            elif profiled.get("ok"):
                profiled["ok"] = False
                profiled["error"] = "py-spy wrote no profile"
            if trace.exists():
                profiled["commit_trace"] = profiling.commit_sites(
                    json.loads(trace.read_text()), max(1, profiled.get("runs") or 1)
                )
            record(profiled)
    finally:
        if ctx.latency_server is not None:
            await asyncio.to_thread(ctx.latency_server.stop)
        if not args.keep_databases:
            await workloads.drop_templates(ctx)
        if args.keep_databases:
            _log(f"kept: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    report["comparisons"] = comparisons(report)
    report["targets"] = evaluate_targets(report)
    return report


def backend_label(result: dict[str, Any]) -> str:
    """``postgresql``, or ``sqlite (FULL)`` / ``sqlite (NORMAL)``: the SQLite pair apart."""
    backend = str(result.get("backend", "-"))
    synchronous = result.get("synchronous")
    return f"{backend} ({synchronous})" if backend == "sqlite" and synchronous else backend


def _find(
    report: dict[str, Any],
    workload: str,
    backend: str,
    rate: float | None = None,
    synchronous: str = "FULL",
) -> dict[str, Any] | None:
    """The successful result of a workload (for W3: the one at ``rate``, else the first;
    on SQLite: the one with ``synchronous``, FULL — durable — unless asked otherwise)."""
    for r in report["results"]:
        if r.get("workload") == workload and r.get("backend") == backend and r.get("ok"):
            if backend == "sqlite" and r.get("synchronous", synchronous) != synchronous:
                continue
            if rate is None or r.get("rate") == rate:
                return r
    return None


def comparisons(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out |= peer_report.ratios(report)
    ours = _find(report, "W1", "postgresql")
    ceil = report.get("ceiling") or {}
    if ours and ceil.get("ok"):
        out["w1_steps_per_s_over_ceiling_4_clients"] = round(
            ours["steps_per_s"] / ceil["clients_4_commits_per_s"], 3
        )
        if ours.get("commits"):
            commits_per_s = ours["commits"]["net"] / ours["ledger_span_s"]
            out["w1_commits_per_s"] = round(commits_per_s, 1)
            out["w1_commits_per_s_over_ceiling_4_clients"] = round(
                commits_per_s / ceil["clients_4_commits_per_s"], 3
            )
    return out


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and met / missed / not measured."""
    targets: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, higher_is_better: bool) -> None:
        if value is None:
            met = None
        else:
            met = value >= limit if higher_is_better else value <= limit
        targets.append(
            {
                "target": name,
                "value": value,
                "limit": limit,
                "met": met,
                "status": "not measured" if met is None else ("met" if met else "MISSED"),
            }
        )

    comp = report.get("comparisons", {})
    w1_pg = _find(report, "W1", "postgresql")
    w1_sqlite = _find(report, "W1", "sqlite")
    add(
        "W1 PostgreSQL workflows/s >= 4x DBOS (its faster API)",
        comp.get("w1_ours_over_dbos_runs_per_s"),
        4,
        True,
    )
    add(
        "W1 PostgreSQL workflows/s >= 2.5x Procrastinate",
        comp.get("w1_ours_over_procrastinate_runs_per_s"),
        2.5,
        True,
    )
    add(
        "W1 PostgreSQL commits per 2-step workflow <= 4",
        (w1_pg or {}).get("commits", {}).get("per_workflow"),
        4,
        False,
    )
    add(
        "W1 steps/s >= 30% of the 4-client insert-commit ceiling",
        comp.get("w1_steps_per_s_over_ceiling_4_clients"),
        0.30,
        True,
    )
    add("W1 SQLite (FULL) >= 300 workflows/s", (w1_sqlite or {}).get("runs_per_s"), 300, True)
    add(
        "W1 PostgreSQL durable write transactions per run <= 1 (under load)",
        ((w1_pg or {}).get("durable") or {}).get("per_run"),
        1,
        False,
    )
    for backend in ("postgresql", "sqlite"):
        solo = _find(report, "W1solo", backend)
        label = "PostgreSQL" if backend == "postgresql" else "SQLite (FULL)"
        add(
            f"W1solo {label}: one run alone, 202 -> run end p50 <= 6 ms",
            ((solo or {}).get("solo") or {}).get("ack_to_end", {}).get("p50_ms"),
            6,
            False,
        )
    solo_pg = _find(report, "W1solo", "postgresql")
    add(
        "W1solo PostgreSQL: durable write transactions per 2-step run alone <= 3",
        ((solo_pg or {}).get("durable") or {}).get("per_run"),
        3,
        False,
    )
    for backend in ("postgresql", "sqlite"):
        w3 = _find(report, "W3", backend, 200.0) or _find(report, "W3", backend)
        w3_figures = (w3 or {}).get("w3", {})
        rate = f"{(w3 or {}).get('rate', 200):g}"
        add(
            f"W3 [{backend}] 202 ack p99 <= 10 ms at {rate} req/s (target at 200)",
            (w3_figures.get("ack_202") or {}).get("p99_ms"),
            10,
            False,
        )
        add(
            f"W3 [{backend}] POST -> run complete p50 <= 20 ms at {rate} req/s",
            (w3_figures.get("post_to_complete") or {}).get("p50_ms"),
            20,
            False,
        )
    for backend in ("postgresql", "sqlite"):
        sched = _find(report, "sched", backend)
        add(
            f"sched [{backend}] idle engine: due time -> run queued, max <= 50 ms",
            ((sched or {}).get("queued") or {}).get("max_ms"),
            50,
            False,
        )
    w4 = _find(report, "W4", "postgresql")
    add("W4 newest-50 list p95 <= 20 ms", (w4 or {}).get("newest_50_p95_ms"), 20, False)
    add("W4 single execution p95 <= 5 ms", (w4 or {}).get("one_p95_ms"), 5, False)
    red = report.get("redaction") or {}
    secrets = f"{red.get('secrets', 10_000):,} secrets"
    ok = bool(red.get("ok"))
    add(
        f"redaction: add <= 1000 us amortised at {secrets} (target at 10,000)",
        red.get("add_amortised_us") if ok else None,
        1000,
        False,
    )
    line_us = [v["best"] for v in (red.get("redact_us") or {}).values()]
    add(
        f"redaction: a 1 KB line <= 50 us at {secrets} (slowest line, best round)",
        max(line_us) if ok and line_us else None,
        50,
        False,
    )
    start = report.get("startup") or {}
    for name, shown in (("help", "dataworkflows --help"), ("plugins", "dataworkflows plugins")):
        figure = (start.get("commands") or {}).get(name) if start.get("ok") else None
        add(
            f"startup: {shown} <= 0.4 s (median)",
            round(figure["median_s"], 2) if figure else None,
            0.4,
            False,
        )
    return targets


def render_honest(report: dict[str, Any]) -> list[str]:
    """Issue 22's tables: durable commits (WAL) beside pg_stat_database's, W1io's I/O
    check, and W1solo (one run alone) against its targets."""
    lines: list[str] = []
    durable = [r for r in report["results"] if r.get("durable")]
    if durable:
        lines += [
            "",
            "durable commits (commit records in the WAL of transactions that wrote the "
            "workload's database; drive start -> engine stopped; 'server' columns count "
            "every database of the server):",
        ]
        rows = []
        for r in durable:
            d = r["durable"]
            rows.append(
                [
                    r["workload"],
                    r.get("runs"),
                    (r.get("commits") or {}).get("per_workflow_raw"),
                    _per_run(d.get("per_run")),
                    _per_run(d.get("per_run_net")),
                    d.get("engine_stop_commits"),
                    d.get("server_commits_per_run"),
                    d.get("database_wal_bytes_per_run"),
                    d.get("wal_bytes_per_run"),
                    d.get("wal_syncs_per_run"),
                    d.get("error") or "",
                ]
            )
        lines.append(
            table(
                [
                    "workload",
                    "runs",
                    "commits/run raw",
                    "durable commits/run",
                    "less stop",
                    "stop commits",
                    "server commits/run",
                    "db WAL B/run",
                    "server WAL B/run",
                    "server WAL syncs/run",
                    "error",
                ],
                rows,
            )
        )
        lines.append("what they wrote, per run (the tables each durable transaction changed):")
        for r in durable:
            groups = list((r["durable"].get("per_run_by_tables") or {}).items())[:5]
            text = ", ".join(f"{per_run:.2f} {tables}" for tables, per_run in groups)
            lines.append(f"  {r['workload']}: {text or '-'}")
    io = [r for r in report["results"] if r.get("io")]
    if io:
        lines += ["", "W1io: requests the latency server saw (exactly 2 per run expected):"]
        lines.append(
            table(
                ["backend", "runs", "I/O ms", "requests/run", "runs not 1 per step", "bad prev"],
                [
                    [
                        backend_label(r),
                        r.get("runs"),
                        r["io"]["latency_ms"],
                        r["io"]["requests_per_run"],
                        r["io"]["runs_not_exactly_one_per_step"],
                        r["io"]["bad_prev"],
                    ]
                    for r in io
                ],
            )
        )
    solo = [r for r in report["results"] if r.get("solo")]
    if solo:
        lines += [
            "",
            "W1solo: one 2-step run at a time (client: "
            + "; ".join(sorted({r["solo"]["client"] for r in solo}))
            + "); targets 202 -> end p50 <= 6 ms, <= 3 durable commits/run:",
        ]
        rows = []
        for r in solo:
            figures = r["solo"]
            ack = figures["ack_to_end"]
            per_run = (r.get("durable") or {}).get("per_run")
            rows.append(
                [
                    backend_label(r),
                    r.get("runs"),
                    ack["p50_ms"],
                    ack["p95_ms"],
                    ack["p99_ms"],
                    figures["post_to_end"]["p50_ms"],
                    figures["post_to_end"]["p99_ms"],
                    (r.get("latency") or {}).get("p50_ms"),
                    (r.get("latency") or {}).get("p99_ms"),
                    (figures.get("ledger_end_to_client") or {}).get("p50_ms"),
                    _per_run(per_run),
                    _status(ack["p50_ms"], 6),
                    _status(per_run, 3),
                ]
            )
        lines.append(
            table(
                [
                    "backend",
                    "runs",
                    "202->end p50",
                    "p95",
                    "p99",
                    "POST->end p50",
                    "p99",
                    "ledger p50",
                    "p99",
                    "end->client p50",
                    "durable/run",
                    "p50 <= 6 ms",
                    "<= 3 durable",
                ],
                rows,
            )
        )
    return lines


def _per_run(value: float | None) -> str | None:
    """Transactions per run with two decimals (3.03 is not "3.0": it misses <= 3)."""
    return None if value is None else f"{value:.2f}"


def _status(value: float | None, limit: float) -> str:
    return "-" if value is None else ("met" if value <= limit else "MISSED")


def render(report: dict[str, Any]) -> str:
    """The terminal (and RESULTS.md) view of a report."""
    m = report["machine"]
    lines = [
        f"DataWorkflows benchmarks {report['run_id']}: {m['nproc']} x {m['cpu_model']}, "
        f"PostgreSQL {m.get('postgresql')}, Python {m['python']}, load {m['loadavg_at_start']}",
        "",
    ]
    rows = []
    for r in report["results"]:
        if r["workload"] in ("W4", "sched"):
            continue
        commits = (r.get("commits") or {}).get("per_workflow")
        durable = _per_run((r.get("durable") or {}).get("per_run"))
        rows.append(
            [
                r["workload"],
                backend_label(r),
                "ok" if r.get("ok") else ("SKIPPED" if r.get("skipped") else "FAILED"),
                r.get("runs"),
                r.get("runs_per_s"),
                r.get("steps_per_s"),
                (r.get("latency") or {}).get("p50_ms"),
                (r.get("latency") or {}).get("p95_ms"),
                (r.get("latency") or {}).get("p99_ms"),
                (r.get("service_latency") or {}).get("p50_ms"),
                commits,
                durable,
                (r.get("engine") or {}).get("cpu_s"),
                (r.get("engine") or {}).get("peak_rss_mib"),
                (r.get("database") or {}).get("cpu_s"),
            ]
        )
    if rows:
        lines.append(
            table(
                [
                    "workload",
                    "backend",
                    "",
                    "runs",
                    "runs/s",
                    "steps/s",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "svc p50",
                    "commits/run",
                    "durable commits/run",
                    "eng CPU s",
                    "eng RSS MiB",
                    "db CPU s",
                ],
                rows,
            )
        )
    lines += render_honest(report)
    w3 = [r for r in report["results"] if r["workload"] == "W3" and r.get("w3")]
    if w3:
        lines += ["", "W3 webhook latency (open loop):"]
        lines.append(
            table(
                [
                    "backend",
                    "path",
                    "req/s",
                    "202 p50",
                    "202 p99",
                    "complete p50",
                    "complete p99",
                    "dropped",
                    "errors",
                ],
                [
                    [
                        backend_label(r),
                        "webhook" if not r.get("path_fallback") else "execute (fallback)",
                        r["w3"]["achieved_rate"],
                        r["w3"]["ack_202"]["p50_ms"],
                        r["w3"]["ack_202"]["p99_ms"],
                        r["w3"]["post_to_complete"]["p50_ms"],
                        r["w3"]["post_to_complete"]["p99_ms"],
                        r["w3"]["dropped"],
                        r["w3"]["errors"],
                    ]
                    for r in w3
                ],
            )
        )
    lines += peer_report.render(report)
    sched = [r for r in report["results"] if r["workload"] == "sched"]
    if any(r.get("ok") for r in sched):
        from benchmarks.schedule_latency import render as render_sched

        lines += ["", "sched: lateness after the due time on an idle engine (ms):"]
        lines.append(
            table(
                ["backend", "measured at", "fires", "p50", "p95", "p99", "max"],
                render_sched(sched),
            )
        )
    w4 = [r for r in report["results"] if r["workload"] == "W4"]
    for r in w4:
        state = "ok" if r.get("ok") else f"FAILED: {r.get('error')}"
        lines += ["", f"W4 ledger reads ({state}):"]
        if r.get("ok"):
            load = r["load"]
            lines.append(
                f"  {load['executions']:,} executions, {load['action_rows']:,} attempt rows, "
                f"{load['database_size']}, loaded in {load['load_s']} s; "
                f"newest 50 via {r['newest_50_via']}"
            )
            api = r["api"]
            sql = r["sql"]
            lines.append(
                table(
                    ["query", "API p50", "API p95", "SQL p50", "SQL p95"],
                    [
                        [
                            "newest 50 of a workflow",
                            (api["newest_50"] or {}).get("p50_ms"),
                            (api["newest_50"] or {}).get("p95_ms"),
                            sql["newest_50"]["p50_ms"],
                            sql["newest_50"]["p95_ms"],
                        ],
                        [
                            "one execution + actions",
                            api["one_with_actions"]["p50_ms"],
                            api["one_with_actions"]["p95_ms"],
                            sql["one_with_actions"]["p50_ms"],
                            sql["one_with_actions"]["p95_ms"],
                        ],
                    ],
                )
            )
            lines.append("  plan of the newest-50 query (EXPLAIN ANALYZE):")
            lines.extend(f"    {row}" for row in sql["newest_50_plan"])
    if report.get("startup"):
        from benchmarks.cli_startup import render as render_startup

        lines += ["", *render_startup(report["startup"])]
    if report.get("redaction"):
        from benchmarks.redaction import render as render_redaction

        lines += ["", *render_redaction(report["redaction"])]
    ceil = report.get("ceiling")
    if ceil:
        lines.append("")
        if ceil.get("ok"):
            lines.append(
                f"ceiling ({ceil['tool']}, {ceil['seconds']:g} s): single-row INSERT commits/s "
                f"1 client {fmt(ceil['clients_1_commits_per_s'])}, "
                f"4 clients {fmt(ceil['clients_4_commits_per_s'])}"
            )
        else:
            lines.append(f"ceiling: FAILED {ceil.get('error')}")
    comp = report.get("comparisons") or {}
    if comp:
        lines.append("")
        for key, value in comp.items():
            lines.append(f"{key}: {value}")
    for r in report["results"]:
        if not r.get("ok"):
            state = "SKIPPED" if r.get("skipped") else "FAILED"
            lines.append(f"\n{r['workload']} [{backend_label(r)}] {state}: {r.get('error')}")
    lines += ["", "targets:"]
    lines.append(
        table(
            ["target", "value", "limit", "status"],
            # two decimals: a value of 3.02 must not print as the limit 3.0 beside MISSED
            [[t["target"], fmt(t["value"], 2), t["limit"], t["status"]] for t in report["targets"]],
        )
    )
    for r in report["results"]:
        if r.get("profile"):
            from benchmarks.profiling import render as render_profile

            lines += ["", f"profile of {r['workload']} [{r['backend']}] (py-spy):"]
            lines.append(render_profile(r["profile"], top=20))
        if r.get("commit_trace"):
            trace = r["commit_trace"]
            lines += [
                "",
                f"write transactions by call site, {r['workload']} [{r['backend']}] "
                f"({trace['begin_per_run']} Database.begin() per run, "
                f"{trace['sqlalchemy_commits_per_run']} SQLAlchemy commits per run):",
            ]
            for site in trace["sites"]:
                lines.append(f"  {site['per_run']:7.3f}/run  {site['count']:>7}  {site['site']}")
        mix = r.get("statement_mix")
        if mix and mix.get("ok"):
            lines += [
                "",
                f"transactions seen by PostgreSQL, {r['workload']} [{r['backend']}] "
                f"(log_statement): {mix['explicit_commits_per_run']} explicit commits, "
                f"{mix['implicit_transactions_per_run']} implicit transactions, "
                f"{mix['rollbacks_per_run']} rollbacks per run:",
            ]
            for kind in mix["transactions"]:
                lines.append(f"  {kind['per_run']:7.3f}/run  {kind['count']:>7}  {kind['kind']}")
        elif mix:
            lines.append(f"statement mix: {mix.get('error')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n < 1:
        raise SystemExit("--n must be at least 1")
    started = time.monotonic()
    report = asyncio.run(_run(args))
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    path = args.json
    if path is None:
        args.results_dir.mkdir(parents=True, exist_ok=True)
        path = args.results_dir / f"{report['run_id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(render(report))
    print(f"\nreport: {path} ({report['elapsed_s']} s)")
    failed = [r for r in report["results"] if not r.get("ok") and not r.get("skipped")]
    ceil = report.get("ceiling")
    if ceil is not None and not ceil.get("ok"):
        failed.append(ceil)
    red = report.get("redaction")
    if red is not None and not red.get("ok"):
        failed.append(red)
    return 1 if (args.strict and failed) else 0
