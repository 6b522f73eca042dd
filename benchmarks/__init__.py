"""Reproducible performance workloads for DataWorkflows (issue 8).

Run them with one command from the repository root::

    python3 -m uv run --all-packages --extra bench python -m benchmarks run

See ``benchmarks/README.md`` for the workloads, the options and how every figure is
measured, and ``benchmarks/RESULTS.md`` for the recorded figures. Nothing here is imported
by the engine; the ``bench`` extra (DBOS Transact, Procrastinate, py-spy) is never a
runtime dependency.
"""

from __future__ import annotations
