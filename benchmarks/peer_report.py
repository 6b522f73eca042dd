"""How the peers' results are read beside ours: ours/peer ratios and the peer table.

Ours is ``W1`` on PostgreSQL (``W1io`` for the I/O variant, whose steps do HTTP calls);
the peers are ``W1-DBOS`` (sync API), ``W1-DBOS-async`` and ``W1-Procrastinate``, with
an ``-io`` suffix for their I/O variant. The headline DBOS figure is its faster API.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import table

#: the peers (workload name without the "-io" suffix, key in the comparisons)
PEERS = (
    ("W1-DBOS", "dbos_sync"),
    ("W1-DBOS-async", "dbos_async"),
    ("W1-Procrastinate", "procrastinate"),
)
DBOS = ("W1-DBOS", "W1-DBOS-async")
#: our workload for each variant ("" = echo steps, "-io" = steps doing HTTP calls)
OURS = {"": "W1", "-io": "W1io"}


def results(report: dict[str, Any], workload: str, ok: bool = False) -> list[dict[str, Any]]:
    """The PostgreSQL results of a workload (only the successful ones with ``ok``)."""
    return [
        r
        for r in report["results"]
        if r.get("workload") == workload
        and r.get("backend") == "postgresql"
        and (r.get("ok") or not ok)
    ]


def _one(report: dict[str, Any], workload: str) -> dict[str, Any] | None:
    found = results(report, workload, ok=True)
    return found[0] if found else None


def fastest_dbos(report: dict[str, Any], suffix: str = "") -> dict[str, Any] | None:
    """The faster of the successful DBOS results (sync or async API): the headline DBOS."""
    runs = [r for name in DBOS if (r := _one(report, f"{name}{suffix}"))]
    return max(runs, key=lambda r: r["runs_per_s"]) if runs else None


def ratios(report: dict[str, Any]) -> dict[str, Any]:
    """ours/peer runs/s and engine CPU per run, for each peer and for the fastest DBOS
    (``w1_ours_over_dbos_runs_per_s``; ``w1_io_…`` for the I/O variant)."""
    out: dict[str, Any] = {}
    for suffix, name in OURS.items():
        ours = _one(report, name)
        if not ours:
            continue
        io = suffix.replace("-", "_")
        peers = [(f"dbos{io}", fastest_dbos(report, suffix))]
        peers += [(f"{key}{io}", _one(report, f"{peer}{suffix}")) for peer, key in PEERS]
        for key, peer in peers:
            if not peer:
                continue
            out[f"w1{io}_ours_over_{key}_runs_per_s"] = round(
                ours["runs_per_s"] / peer["runs_per_s"], 2
            )
            ours_cpu = (ours.get("engine") or {}).get("cpu_ms_per_run")
            peer_cpu = (peer.get("engine") or {}).get("cpu_ms_per_run")
            if ours_cpu is not None and peer_cpu is not None:
                out[f"w1{io}_ours_over_{key}_engine_cpu_per_run"] = round(
                    ours_cpu / max(peer_cpu, 1e-9), 2
                )
    return out


def render(report: dict[str, Any]) -> list[str]:
    """W1 beside each peer (and the I/O variant): ours/peer runs/s and the write costs."""
    rows = []
    for suffix, name in OURS.items():
        peers = [r for peer, _ in PEERS for r in results(report, f"{peer}{suffix}")]
        if not peers:
            continue
        ours = _one(report, name)
        headline = fastest_dbos(report, suffix)
        for r in [*results(report, name), *peers]:
            ratio = None
            if ours and r.get("ok") and r is not ours:
                ratio = round(ours["runs_per_s"] / max(r["runs_per_s"], 1e-9), 2)
            state = "ok" if r.get("ok") else ("SKIPPED" if r.get("skipped") else "FAILED")
            durable = r.get("durable_commits") or r.get("durable") or {}
            rows.append(
                [
                    r["workload"] + (" *" if r is headline else ""),
                    state,
                    r.get("runs_per_s"),
                    ratio,
                    (r.get("latency") or {}).get("p50_ms"),
                    (r.get("latency") or {}).get("p99_ms"),
                    (r.get("commits") or {}).get("per_workflow"),
                    durable.get("per_workflow"),
                    (r.get("engine") or {}).get("cpu_ms_per_run"),
                    (r.get("database") or {}).get("cpu_ms_per_run"),
                ]
            )
    if not rows:
        return []
    header = ["W1 on PostgreSQL", "", "runs/s", "ours/peer", "p50 ms", "p99 ms"]
    header += ["commits/wf", "durable/wf", "eng CPU ms/run", "db CPU ms/run"]
    return ["", "W1 beside the peers (* = DBOS's faster API, the headline):", table(header, rows)]
