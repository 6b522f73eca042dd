"""The ``redaction`` workload: the cost of registering secrets and of redacting a log line.

Issue 13's target: with 10,000 secrets registered, adding one costs at most 1 ms amortised
and redacting a 1 KB log line at most 50 µs. In-process, no database; a few seconds.

* **add**: ``--redaction-secrets`` secrets (deterministic, seeded: 4 in 5 token-like —
  letters, digits, ``-_`` — and 1 in 5 password-like with ``/+=:@`` and spaces, 16-48
  characters) are added one by one to a fresh kernel-style redactor; each ``add`` is timed
  on its own (so the GIL held by a background merge shows up as a slow add, which is what
  an event loop calling ``add`` would feel), then the background merges are waited for.
  Amortised = (sum of the adds + the wait) / secrets; the CPU time of the process over
  the same span (adds and background merges) is reported too, as it depends less on
  other work on the machine.
* **redact**: 1,024-character log-like lines: one with no secret, one with a secret as is,
  one with a secret URL-encoded, base64'd in ``Basic user:…`` and JSON-escaped. Each is
  redacted ``--redaction-lines`` times with ``Redactor.redact_text`` and through the
  process-wide log-record factory (``logging.LogRecord`` creation with the kernel's
  redactor registered), in 20 rounds: the best and the median round are reported (and the
  best in CPU time of the thread). Every output is checked (secrets gone, clean line
  unchanged).
"""

from __future__ import annotations

import base64
import json
import logging
import random
import string
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from benchmarks.common import loadavg, percentile

TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_"
PASSWORD_ALPHABET = string.ascii_letters + string.digits + "/+=:@ "
LINE_LENGTH = 1024
WORDS = (
    "request",
    "GET",
    "POST",
    "/api/v1/executions",
    "status=200",
    "took",
    "ms",
    "worker",
    "claimed",
    "run",
    "step",
    "echo1",
    "tenant=default",
    "retry",
    "attempt=2",
    "user@example.org",
    "id=7f3a9c",
    "{'ok': true}",
)


def make_secrets(count: int, seed: int = 13) -> list[str]:
    """``count`` distinct secrets, the same for a given seed (token- and password-like)."""
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < count:
        alphabet = PASSWORD_ALPHABET if rng.random() < 0.2 else TOKEN_ALPHABET
        out["".join(rng.choice(alphabet) for _ in range(rng.randint(16, 48)))] = None
    return list(out)


def make_line(rng: random.Random, inserts: Sequence[str] = ()) -> str:
    """A 1,024-character log-like line holding ``inserts`` (spread over it)."""
    parts: list[str] = []
    budget = LINE_LENGTH - sum(len(x) + 1 for x in inserts)
    while sum(len(p) + 1 for p in parts) < budget:
        parts.append(rng.choice(WORDS))
    for index, insert in enumerate(inserts):
        parts.insert((index + 1) * len(parts) // (len(inserts) + 1), insert)
    return " ".join(parts)[:LINE_LENGTH].ljust(LINE_LENGTH, ".")


ROUNDS = 20


def _time_calls(fn: Callable[[], object], repeat: int, rounds: int = ROUNDS) -> dict[str, float]:
    """Microseconds per call of ``fn`` over ``rounds`` rounds of ``repeat`` calls: the best
    and the median round (wall clock; the best filters out other work on a shared machine,
    as timeit does) and the best round in CPU time of this thread (``cpu``)."""
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.thread_time()
        for _ in range(repeat):
            fn()
        cpu.append((time.thread_time() - start_cpu) / repeat * 1e6)
        wall.append((time.perf_counter() - start) / repeat * 1e6)
    return {
        "best": round(min(wall), 2),
        "median": round(sorted(wall)[rounds // 2], 2),
        "cpu": round(min(cpu), 2),
    }


def run_redaction(secrets: int = 10_000, lines: int = 250, seed: int = 13) -> dict[str, Any]:
    """Measure add and redact costs; returns the workload's result (``ok`` and figures)."""
    from dataworkflows.common.log_redaction import install_log_redaction
    from dataworkflows.common.redaction import REDACTED, Redactor
    from dataworkflows.common.redaction import redactor as process_redactor

    load_before = loadavg()
    values = make_secrets(secrets, seed)
    redactor = Redactor(parent=process_redactor)
    adds: list[float] = []
    cpu_start = time.process_time()  # every thread of the process: adds and merges
    for value in values:
        start = time.perf_counter()
        redactor.add(value, "default")
        adds.append(time.perf_counter() - start)
    start = time.perf_counter()
    redactor.wait_idle()
    settle_s = time.perf_counter() - start
    cpu_s = time.process_time() - cpu_start

    rng = random.Random(seed + 1)
    plain = values[len(values) // 2]
    encoded = values[-1]
    clean_line = make_line(rng)
    cases = {
        "no_secret": clean_line,
        "one_secret": make_line(rng, [f"token={plain}"]),
        "encoded_forms": make_line(
            rng,
            [
                f"url=https://x.test/?t={quote(encoded, safe='')}",
                "Basic " + base64.b64encode(f"user:{encoded}".encode()).decode(),
                json.dumps({"t": encoded}),
            ],
        ),
    }
    install_log_redaction(redactor)
    factory = logging.getLogRecordFactory()
    redact_us: dict[str, dict[str, float]] = {}
    log_record_us: dict[str, dict[str, float]] = {}
    correct = True
    for name, line in cases.items():
        redact_us[name] = _time_calls(lambda line=line: redactor.redact_text(line), lines)
        log_record_us[name] = _time_calls(
            lambda line=line: factory("bench", logging.INFO, __file__, 1, line, None, None), lines
        )
        out = redactor.redact_text(line)
        record = factory("bench", logging.INFO, __file__, 1, line, None, None).getMessage()
        if name == "no_secret":
            correct &= out == line and record == line
        else:
            for leaked in (plain, encoded, quote(encoded, safe="")):
                correct &= leaked not in out and leaked not in record
            correct &= REDACTED in out and REDACTED in record
    total_s = sum(adds) + settle_s
    return {
        "workload": "redaction",
        "backend": "-",
        "ok": bool(correct),
        "error": None if correct else "a secret survived redaction (or a clean line changed)",
        "secrets": secrets,
        "line_chars": LINE_LENGTH,
        "add_amortised_us": round(total_s / secrets * 1e6, 1),
        "add_cpu_amortised_us": round(cpu_s / secrets * 1e6, 1),
        "add_p50_us": round((percentile(adds, 50) or 0) * 1e6, 1),
        "add_p99_us": round((percentile(adds, 99) or 0) * 1e6, 1),
        "add_max_ms": round(max(adds) * 1e3, 2),
        "settle_ms": round(settle_s * 1e3, 1),
        "automata": redactor.shard_count,
        "merges": redactor.merges,
        "redact_us": redact_us,
        "log_record_us": log_record_us,
        "loadavg": [load_before, loadavg()],
    }


def _figures(cases: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{k} {v['best']} / {v['median']}, {v['cpu']}" for k, v in cases.items())


def render(result: dict[str, Any]) -> list[str]:
    """Terminal lines for a redaction result."""
    if not result.get("ok"):
        return [f"redaction: FAILED {result.get('error')}"]
    return [
        f"redaction ({result['secrets']:,} secrets): add {result['add_amortised_us']} µs "
        f"amortised ({result['add_cpu_amortised_us']} µs of CPU), p50 {result['add_p50_us']} "
        f"µs, p99 {result['add_p99_us']} µs, "
        f"max {result['add_max_ms']} ms, settle {result['settle_ms']} ms, "
        f"{result['automata']} automata after {result['merges']} merges; "
        f"load {result['loadavg'][0][0]} -> {result['loadavg'][1][0]})",
        f"  redact a 1 KB line, µs per call (best / median of {ROUNDS} rounds, best CPU): "
        + _figures(result["redact_us"]),
        "  the same through the log-record factory: " + _figures(result["log_record_us"]),
    ]
