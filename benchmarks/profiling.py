"""Summaries of a py-spy profile (``py-spy record --format raw --function``).

The raw format is one collapsed stack per line, ``frame;frame;...;frame <samples>``, each
frame ``function (file:line)``. From it: the top functions by *self* samples (the frame
on top of the stack: where the CPU was) and by *cumulative* samples (the frame anywhere
in the stack: what it cost including its callees), and self time per package.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
_PREFIXES = ("site-packages/", "/kernel/", "/plugins/", "/connectors/", "/lib/python3.11/")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match.group("file")
    for prefix in _PREFIXES:
        cut = path.rfind(prefix)
        if cut != -1:
            path = path[cut + len(prefix) :]
            break
    line = match.group("line")
    return f"{match.group('func')} ({path}{':' + line if line else ''})"


def _package(frame: str) -> str:
    """The top-level package of a frame (``sqlalchemy``), ``stdlib:<module>`` for the
    standard library, ``<frozen ...>`` as is."""
    match = _FRAME.match(frame)
    if not match:
        return "?"
    path = match.group("file")
    for prefix in ("site-packages/", "/kernel/", "/plugins/", "/connectors/"):
        cut = path.rfind(prefix)
        if cut != -1:
            return path[cut + len(prefix) :].split("/", 1)[0].removesuffix(".py")
    cut = path.find("/lib/python3")
    if cut != -1:
        rest = path[cut + 1 :].split("/", 2)
        module = rest[2].split("/", 1)[0] if len(rest) == 3 else path
        return "stdlib:" + module.removesuffix(".py")
    # py-spy already shortens paths: "psycopg/_cursor_base.py", "selectors.py"
    return path.lstrip("<").split("/", 1)[0].removesuffix(".py").rstrip(">") or "?"


def summarize(raw_path: Path, top: int = 25) -> dict[str, Any]:
    """Top functions by self and cumulative samples, and self samples per package."""
    self_counts: Counter[str] = Counter()
    cum_counts: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        packages[_package(stack.split(";")[-1])] += count
        for frame in set(frames):
            cum_counts[frame] += count

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "percent": round(100.0 * n / total, 1)}
            for name, n in counter.most_common(top)
        ]

    kernel = Counter({name: n for name, n in cum_counts.items() if "(dataworkflows" in name})
    return {
        "samples": total,
        "top_self": rows(self_counts),
        "top_cumulative": rows(cum_counts),
        "top_cumulative_kernel": rows(kernel),
        "self_by_package": rows(packages),
    }


def render(summary: dict[str, Any], top: int = 25) -> str:
    """A text rendering for the terminal and RESULTS.md."""
    out = [f"samples: {summary['samples']}"]
    for key, title in (
        ("self_by_package", "self time by package"),
        ("top_self", "top functions by self time"),
        ("top_cumulative_kernel", "top kernel (dataworkflows) functions by cumulative time"),
    ):
        out.append(f"\n{title}:")
        for row in summary[key][:top]:
            out.append(f"  {row['percent']:5.1f}%  {row['samples']:>7}  {row['function']}")
    return "\n".join(out)


def commit_sites(trace: dict[str, Any], runs: int, top: int = 15) -> dict[str, Any]:
    """Per-run figures of a :mod:`benchmarks.commit_trace` dump."""
    sites = sorted(trace.get("begin_sites", {}).items(), key=lambda kv: -kv[1])
    return {
        "runs": runs,
        "begin_per_run": round(trace.get("begin_calls", 0) / runs, 3),
        "sqlalchemy_commits_per_run": round(trace.get("sqlalchemy_commits", 0) / runs, 3),
        "sqlalchemy_rollbacks_per_run": round(trace.get("sqlalchemy_rollbacks", 0) / runs, 3),
        "sites": [
            {"site": site, "count": count, "per_run": round(count / runs, 3)}
            for site, count in sites[:top]
        ],
    }
