"""Caps on what a step may return: per attempt and per run (``output_too_large``).

A step's outputs are stored on its attempt row and held in the run's template context
(``nodes.<id>.outputs``) for every later node, so one huge value would slow every read of
the run and grow the worker's memory with each step. Two caps bound it:

* ``DATAWORKFLOWS_STEP_OUTPUT_MAX_BYTES`` (4 MiB): the UTF-8 bytes of one attempt's
  outputs as JSON text;
* ``DATAWORKFLOWS_RUN_OUTPUT_MAX_BYTES`` (64 MiB): the sum over the run's succeeded steps.

Over either, the attempt fails permanently with ``output_too_large`` (``details`` name
the cap, its limit and the size); the value is dropped, never truncated, and the run's
other data is untouched. ``0`` switches a cap off. The size is measured on the JSON text
the check for storable JSON builds anyway, so a step costs no extra serialisation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dataworkflows.actions import ActionResult

#: defaults of the two settings (bytes)
STEP_OUTPUT_MAX_BYTES = 4 * 1024 * 1024
RUN_OUTPUT_MAX_BYTES = 64 * 1024 * 1024


class NotStorable(ValueError):
    """The value is not JSON both databases store (not serialisable, NaN, infinity)."""


def json_bytes(value: Any) -> int:
    """UTF-8 bytes of ``value``'s compact JSON text; :class:`NotStorable` if it has none."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise NotStorable(str(exc)) from None
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


@dataclass
class OutputBudget:
    """The output bytes one run may still hold; ``0`` limits mean no cap."""

    step_limit: int = STEP_OUTPUT_MAX_BYTES
    run_limit: int = RUN_OUTPUT_MAX_BYTES
    #: bytes of the succeeded steps' outputs so far (restored from the ledger on resume)
    used: int = 0

    def admit(self, size: int) -> ActionResult | None:
        """Count ``size`` bytes of a succeeded attempt's outputs, or return the failure
        that replaces the attempt's result when they go over a cap (nothing counted)."""
        if self.step_limit and size > self.step_limit:
            return _too_large("DATAWORKFLOWS_STEP_OUTPUT_MAX_BYTES", self.step_limit, size)
        if self.run_limit and self.used + size > self.run_limit:
            return _too_large(
                "DATAWORKFLOWS_RUN_OUTPUT_MAX_BYTES", self.run_limit, size, run=self.used
            )
        self.used += size
        return None

    def restore(self, outputs: Any) -> None:
        """Count a succeeded step's stored outputs (a run resumed by another worker)."""
        if outputs:
            try:
                self.used += json_bytes(outputs)
            except NotStorable:  # cannot be: it was stored
                pass


def _too_large(cap: str, limit: int, size: int, *, run: int | None = None) -> ActionResult:
    scope = "the run's step outputs" if run is not None else "a step's outputs"
    total = f" ({run} bytes already held by earlier steps)" if run is not None else ""
    details: dict[str, Any] = {"cap": cap, "limitBytes": limit, "outputBytes": size}
    if run is not None:
        details["runOutputBytes"] = run
    return ActionResult.failed(
        f"the action returned {size} bytes of outputs{total}; {scope} may hold at most "
        f"{limit} bytes ({cap})",
        code="output_too_large",
        details=details,
    )
