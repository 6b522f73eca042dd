"""The benchmark harness (``python -m benchmarks run``) runs end to end on a tiny N.

It checks that every workload goes through the real path and that the report has the
figures the issue asks for; it asserts no timing (benchmarks are not timed tests). The
PostgreSQL case also runs W4, the insert-commit ceiling, the redaction workload and the
peers (DBOS through both APIs and Procrastinate, each reporting "not installed" and
skipped when the ``bench`` extra is absent, as in CI), and asserts that the database's
CPU was measured — also on a stock ``initdb`` cluster without ``cluster_name``
(``stock_postgres``). Issue 22: SQLite runs
with ``synchronous`` FULL and NORMAL side by side; W1io's runs made exactly two requests to
the local latency server (so each took at least its two 5 ms answers: a bound by
construction, not a timing); W1solo's client-side figures exist; on PostgreSQL every engine
workload counts durable commits from the WAL, > 0 and never more than
``pg_stat_database``'s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dataworkflows.testing import POSTGRES_ENV

ROOT = Path(__file__).resolve().parents[1]


def _run_harness(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAWORKFLOWS_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "run",
            "--json",
            str(report),
            "--results-dir",
            str(tmp_path / "results"),
            "--strict",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    data = json.loads(report.read_text()) if report.exists() else None
    return proc, data


def _result(
    report: dict[str, Any], workload: str, backend: str, synchronous: str = "FULL"
) -> dict[str, Any]:
    """The one result of ``workload`` on ``backend`` (on SQLite: with ``synchronous``)."""
    found = [
        r
        for r in report["results"]
        if r["workload"] == workload
        and r["backend"] == backend
        and r.get("synchronous", synchronous) == synchronous
    ]
    assert len(found) == 1, [(r["workload"], r.get("synchronous")) for r in report["results"]]
    return found[0]


def _check_engine_workload(result: dict[str, Any], runs: int, steps_per_run: float) -> None:
    assert result["ok"], result.get("error")
    assert result["runs"] == runs
    assert result["succeeded"] == runs
    assert result["steps_per_run"] == steps_per_run
    for key in ("runs_per_s", "steps_per_s"):
        assert result[key] > 0
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        assert result["latency"][key] is not None
    assert result["engine"]["processes"] == 1
    assert result["engine"]["cpu_s"] >= 0
    assert result["engine"]["peak_rss_mib"] > 0


def _check_database_cpu(result: dict[str, Any]) -> None:
    """The backends of the workload's database were found and their CPU measured."""
    database = result["database"]
    assert "error" not in database, database
    assert database["backends_seen"] >= 1, database
    assert database["cpu_s"] > 0, database
    assert database["cpu_ms_per_run"] > 0, database


def _check_durable(result: dict[str, Any]) -> None:
    """Durable commits read from the WAL: some per run, and never more than
    pg_stat_database counted in a window that contains the WAL's."""
    durable = result["durable"]
    assert "error" not in durable, durable
    assert durable["commits"] > 0 and durable["per_run"] > 0, durable
    assert durable["commits"] <= result["commits"]["total"], (durable, result["commits"])
    assert durable["commits"] <= durable["server_commits"]
    assert durable["wal_bytes"] > 0 and durable["database_wal_bytes_per_run"] > 0
    assert durable["engine_stop_commits"] is not None
    # what they wrote, from the same WAL: the runs' rows are among it
    assert any("workflow_executions" in tables for tables in durable["per_run_by_tables"])


def test_harness_runs_every_workload(backend: str, tmp_path: Path) -> None:
    args = [
        "--backend",
        backend,
        "--n",
        "4",
        "--warmup",
        "0",
        "--w2-n",
        "2",
        "--w2-fanout",
        "5",
        "--w3-rate",
        "20",
        "--w3-duration",
        "0.5",
        "--sched-triggers",
        "2",
        "--sched-duration",
        "1",
        "--solo-n",
        "3",
        "--io-latency-ms",
        "5",
    ]
    if backend == "postgresql":
        args += [
            "--pg-url",
            os.environ[POSTGRES_ENV],
            "--w4-rows",
            "300",
            "--w4-queries",
            "5",
            "--ceiling-seconds",
            "1",
            "--redaction-secrets",
            "300",
            "--redaction-lines",
            "20",
            "--startup-runs",
            "1",
        ]
    else:
        args += ["--only", "W1,W1io,W1solo,W2,W3,sched"]
    proc, report = _run_harness(tmp_path, *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report is not None
    assert report["machine"]["nproc"] >= 1

    _check_engine_workload(_result(report, "W1", backend), 4, 2)
    _check_engine_workload(_result(report, "W2", backend), 2, 7)
    _check_w1io_and_w1solo(report, proc, backend)
    w3 = _result(report, "W3", backend)
    _check_engine_workload(w3, 10, 2)
    assert w3["w3"]["requests_sent"] == 10
    assert w3["w3"]["ack_202"]["count"] == 10
    assert w3["w3"]["post_to_complete"]["count"] == 10
    assert "target" in proc.stdout and "W1" in proc.stdout
    sched = _result(report, "sched", backend)
    assert sched["ok"], sched.get("error")
    assert sched["measured"] >= 1 and sched["duplicates"] == 0
    assert sched["queued"]["count"] == sched["measured"]

    if backend == "sqlite":
        assert "commits" not in _result(report, "W1", backend)
        assert "durable" not in _result(report, "W1", backend)
        # SQLite runs durable (FULL, the engine's default) and fast (NORMAL) side by side
        _check_engine_workload(_result(report, "W1", backend, "NORMAL"), 4, 2)
        _check_engine_workload(_result(report, "W2", backend, "NORMAL"), 2, 7)
        _check_engine_workload(_result(report, "W1io", backend, "NORMAL"), 4, 2)
        _check_engine_workload(_result(report, "W1solo", backend, "NORMAL"), 3, 2)
        assert "sqlite (FULL)" in proc.stdout and "sqlite (NORMAL)" in proc.stdout
        return

    w1 = _result(report, "W1", backend)
    commits = w1["commits"]
    assert commits["settled"]
    # at least enqueue + claim + one write per step, shared by at most the 4 runs of the
    # smoke test (group commit): 4 transactions / 4 runs
    assert commits["per_workflow"] >= 1
    for workload in ("W1", "W2", "W3"):
        _check_database_cpu(_result(report, workload, backend))
        _check_durable(_result(report, workload, backend))
    assert commits["rows_by_table"]["action_executions"]["ins_per_run"] == 2

    w4 = _result(report, "W4", backend)
    assert w4["ok"], w4.get("error")
    assert w4["load"]["executions"] == 300
    assert w4["load"]["action_rows"] == 600
    assert w4["api"]["one_with_actions"]["count"] == 5
    assert w4["newest_50_p95_ms"] is not None

    ceiling = report["ceiling"]
    assert ceiling["ok"], ceiling.get("error")
    assert ceiling["clients_1_commits_per_s"] > 0
    assert ceiling["clients_4_commits_per_s"] > 0
    assert report["comparisons"]["w1_steps_per_s_over_ceiling_4_clients"] > 0

    redaction = report["redaction"]
    assert redaction["ok"], redaction.get("error")
    assert redaction["secrets"] == 300
    assert redaction["add_amortised_us"] > 0
    assert set(redaction["redact_us"]) == {"no_secret", "one_secret", "encoded_forms"}
    assert any(t["target"].startswith("redaction: a 1 KB line") for t in report["targets"])

    startup = report["startup"]
    assert startup["ok"], startup.get("error")
    assert set(startup["commands"]) == {"help", "plugins"}
    assert all(f["best_s"] > 0 for f in startup["commands"].values())

    for workload, package, key in (
        ("W1-DBOS", "dbos", "dbos_sync"),
        ("W1-DBOS-async", "dbos", "dbos_async"),
        ("W1-Procrastinate", "procrastinate", "procrastinate"),
    ):
        peer = _result(report, workload, backend)
        if importlib.util.find_spec(package) is None:
            assert peer["skipped"]
            assert "not installed" in peer["error"]
            continue
        assert peer["ok"], peer.get("error")
        assert peer["runs"] == 4
        assert peer["commits"]["per_workflow"] > 0
        durable = peer["durable_commits"]
        assert durable.get("error") or durable["commits"] >= 4, durable
        assert report["comparisons"][f"w1_ours_over_{key}_runs_per_s"] > 0
    if importlib.util.find_spec("dbos") is not None:
        assert report["comparisons"]["w1_ours_over_dbos_runs_per_s"] > 0
        assert _result(report, "W1-DBOS", backend)["dbos_fastest_api"] in {"sync", "async"}

    statuses = {t["status"] for t in report["targets"]}
    assert statuses <= {"met", "MISSED", "not measured"}


def test_harness_measures_the_database_of_a_stock_cluster(
    stock_postgres: str, tmp_path: Path
) -> None:
    """A fresh ``initdb`` cluster has no ``cluster_name``: its backends are found all the
    same (they were missed and reported as 0 database CPU)."""
    proc, report = _run_harness(
        tmp_path,
        *("--backend", "postgresql", "--pg-url", stock_postgres),
        *("--n", "4", "--warmup", "0", "--only", "W1"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report is not None
    w1 = _result(report, "W1", "postgresql")
    _check_engine_workload(w1, 4, 2)
    _check_database_cpu(w1)


def test_harness_rejects_an_unknown_workload(tmp_path: Path) -> None:
    proc, report = _run_harness(tmp_path, "--backend", "sqlite", "--only", "W9")
    assert proc.returncode != 0
    assert "unknown workload" in proc.stderr
    assert report is None


@pytest.mark.parametrize("n", ["0", "-3"])
def test_harness_rejects_a_bad_n(tmp_path: Path, n: str) -> None:
    proc, report = _run_harness(tmp_path, "--backend", "sqlite", "--n", n)
    assert proc.returncode != 0
    assert "--n must be at least 1" in proc.stderr
    assert report is None


def _check_w1io_and_w1solo(
    report: dict[str, Any], proc: subprocess.CompletedProcess[str], backend: str
) -> None:
    """W1io's steps called the local latency server (exactly 2 requests per run, step 2
    carrying step 1's answer); W1solo timed single runs through their event stream; on
    PostgreSQL both report durable commits from the WAL."""
    assert report["latency_server"]["url"].startswith("http://127.0.0.1:")

    w1io = _result(report, "W1io", backend)
    _check_engine_workload(w1io, 4, 2)
    io = w1io["io"]
    assert io["ok"], io
    assert io["requests"] == 8 and io["requests_per_run"] == 2
    assert io["runs_not_exactly_one_per_step"] == 0 and io["bad_prev"] == 0
    assert io["server_url"] == report["latency_server"]["url"]
    # each run waited for two 5 ms answers, one after the other
    assert w1io["service_latency"]["p50_ms"] >= 10

    solo = _result(report, "W1solo", backend)
    _check_engine_workload(solo, 3, 2)
    figures = solo["solo"]
    assert figures["final_statuses"] == ["RunSucceeded"]
    for key in ("ack_to_end", "post_to_end", "post_to_202", "ledger_end_to_client"):
        assert figures[key]["count"] == 3, (key, figures)
    assert figures["post_to_end"]["p50_ms"] >= figures["ack_to_end"]["p50_ms"] > 0
    assert "W1solo" in proc.stdout and "202->end p50" in proc.stdout
    targets = {t["target"]: t for t in report["targets"]}
    label = "PostgreSQL" if backend == "postgresql" else "SQLite (FULL)"
    assert targets[f"W1solo {label}: one run alone, 202 -> run end p50 <= 6 ms"]["value"]

    if backend == "sqlite":
        assert "durable" not in solo
        return
    for result in (w1io, solo):
        _check_durable(result)
    # a run alone writes at least its enqueue, its steps' outcomes and its end: the WAL
    # cannot show less than one write transaction per run
    assert solo["durable"]["per_run"] >= 1
    assert (
        targets["W1solo PostgreSQL: durable write transactions per 2-step run alone <= 3"]["value"]
        == solo["durable"]["per_run"]
    )
