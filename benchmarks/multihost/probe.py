"""The plugin the multi-host test loads into every worker
(``DATAWORKFLOWS_PLUGIN_MODULES=benchmarks.multihost.probe``):

* ``mh.sleep``: a step that waits ``seconds`` (standing in for an I/O-bound call);
* a fencing counter: every ``fencing.rejected`` measurement is appended to
  ``$MULTIHOST_PROBE_DIR/<hostname>-<pid>.fencing`` (one line per measurement:
  ``<stage> <count>``), so the harness counts rejections even of killed processes.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from pydantic import BaseModel

from dataworkflows import Action, ActionContext, ActionResult, hookimpl
from dataworkflows.measurements import EngineMeasurement, Measure


class Sleep(Action):
    """Wait ``seconds``, then succeed with the host that ran the step."""

    type = "mh.sleep"

    class Params(BaseModel):
        seconds: float = 0.2

    async def run(self, ctx: ActionContext, params: Params) -> ActionResult:
        await asyncio.sleep(params.seconds)
        return ActionResult.succeeded({"host": socket.gethostname()})


@hookimpl
def register_actions(register: Any) -> None:
    register(Sleep)


@hookimpl
def on_engine_measurement(measurement: EngineMeasurement) -> None:
    if measurement.name != Measure.FENCING_REJECTED:
        return
    folder = os.environ.get("MULTIHOST_PROBE_DIR")
    if not folder:
        return
    path = os.path.join(folder, f"{socket.gethostname()}-{os.getpid()}.fencing")
    stage = measurement.labels.get("stage", "?")
    line = f"{stage} {int(sum(measurement.values))}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
