"""The metrics and how run events and engine measurements feed them.

One :class:`Recorder` per process (:func:`recorder`), made on first use. Its metrics are
not in ``prometheus_client``'s global registry: ``/metrics`` renders them (or, in
multi-process mode, the files of every process of the host) with the queue gauges read at
scrape time. Label children are cached, so recording an event is a dict lookup and an
increment (an mmap write in multi-process mode).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from dataworkflows_metrics.setup import config

PREFIX = "dataworkflows_"
#: seconds: steps are anything from a template render to a 5-minute HTTP call
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
#: seconds: queue waits and trigger intake (commits of a few ms, up to a backlog)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: items per group-commit transaction (at most 64 by default)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

_STEP_FINAL = {"StepSucceeded", "StepFailed", "StepRetrying", "StepCancelled"}
_RUN_FINAL = {"RunSucceeded": "Succeeded", "RunFailed": "Failed", "RunCancelled": "Cancelled"}


class Recorder:
    """The process's metrics (``registry`` holds them outside multi-process mode)."""

    def __init__(self, multiprocess: bool) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry

        def counter(name: str, doc: str, *labels: str) -> Any:
            return Counter(PREFIX + name, doc, labels, registry=reg)

        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: Any) -> Any:
            return Histogram(PREFIX + name, doc, labels, registry=reg, buckets=buckets)

        self.runs_queued = counter("runs_queued_total", "Runs queued.", "workflow_id")
        self.runs_started = counter(
            "runs_started_total", "Runs started (claimed by a worker).", "workflow_id"
        )
        self.runs_resumed = counter(
            "runs_resumed_total", "Runs taken over after their worker stopped.", "workflow_id"
        )
        self.runs_finished = counter(
            "runs_finished_total", "Runs finished, by final status.", "workflow_id", "status"
        )
        self.steps_started = counter("steps_started_total", "Step attempts begun.", "action_type")
        self.step_duration = histogram(
            "step_duration_seconds",
            "Seconds from an attempt's start to its end, by action type and attempt status.",
            ("action_type", "status"),
            STEP_BUCKETS,
        )
        self.step_retries = counter(
            "step_retries_total", "Attempts that failed and will be retried.", "action_type"
        )
        self.claim_latency = histogram(
            "claim_latency_seconds",
            "Seconds runs waited in the queue before a worker claimed them.",
            (),
            LATENCY_BUCKETS,
        )
        self.batch_size = histogram(
            "group_commit_batch_size",
            "Items written per group-commit transaction.",
            ("writer",),
            BATCH_BUCKETS,
        )
        self.fencing = counter(
            "fencing_rejections_total",
            "Writes or lease renewals refused because the claim was no longer current.",
            "stage",
        )
        self.dead_letters = counter(
            "dead_letters_total", "Runs moved to the dead letters.", "workflow_id"
        )
        self.trigger_seconds = histogram(
            "trigger_fire_seconds",
            "Seconds the kernel took to take a trigger plugin's event (webhook ack latency "
            "less reading and verifying the request), by trigger type and outcome.",
            ("trigger_type", "outcome"),
            LATENCY_BUCKETS,
        )
        if multiprocess:
            self.processes = Gauge(
                PREFIX + "metrics_processes",
                "Live processes writing metrics to this host's directory.",
                registry=reg,
                multiprocess_mode="livesum",
            )
            self.processes.set(1)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._on_event: dict[str, Callable[[Any], None]] = {
            "RunQueued": lambda e: self._child(self.runs_queued, e.workflow_id).inc(),
            "RunStarted": lambda e: self._child(self.runs_started, e.workflow_id).inc(),
            "RunResumed": lambda e: self._child(self.runs_resumed, e.workflow_id).inc(),
            "StepStarted": self._step_started,
        }
        for name in _RUN_FINAL:
            self._on_event[name] = self._run_finished
        for name in _STEP_FINAL:
            self._on_event[name] = self._step_finished

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels) if labels else metric
        return child

    # -- run events -------------------------------------------------------------------------

    def on_run_event(self, event: Any) -> None:
        """Count one run event (see :class:`~dataworkflows.events.RunEvent`)."""
        handler = self._on_event.get(event.type)
        if handler is not None:
            handler(event)

    def _run_finished(self, event: Any) -> None:
        # the run as an exemplar: from a count on a dashboard to the run (OpenMetrics only;
        # prometheus_client keeps none in multi-process mode)
        child = self._child(self.runs_finished, event.workflow_id, _RUN_FINAL[event.type])
        child.inc(exemplar={"execution_id": event.execution_id})

    def _step_started(self, event: Any) -> None:
        # counted once, at the live event; the durable one of a long step is the same start
        if not event.durable:
            self._child(self.steps_started, event.action_type or "unknown").inc()

    def _step_finished(self, event: Any) -> None:
        action_type = event.action_type or "unknown"
        if event.type == "StepRetrying":
            self._child(self.step_retries, action_type).inc()
        if event.duration_seconds is not None:
            status = str(event.payload.get("status", "unknown"))
            self._child(self.step_duration, action_type, status).observe(
                event.duration_seconds, exemplar={"execution_id": event.execution_id}
            )

    # -- engine measurements -----------------------------------------------------------------

    def on_measurement(self, measurement: Any) -> None:
        """Record one :class:`~dataworkflows.measurements.EngineMeasurement`."""
        name, values, labels = measurement.name, measurement.values, measurement.labels
        if name == "claim.latency":
            for value in values:
                self.claim_latency.observe(value)
        elif name == "group_commit.batch":
            self._observe_all(self.batch_size, values, labels, "writer")
        elif name == "trigger.fired":
            self._observe_all(self.trigger_seconds, values, labels, "trigger_type", "outcome")
        elif name == "fencing.rejected":
            self._child(self.fencing, _label(labels, "stage")).inc(sum(values))
        elif name == "dead_letter":
            self._child(self.dead_letters, _label(labels, "workflow_id")).inc(sum(values))

    def _observe_all(
        self, metric: Any, values: tuple[float, ...], labels: Mapping[str, str], *names: str
    ) -> None:
        child = self._child(metric, *(_label(labels, n) for n in names))
        for value in values:
            child.observe(value)


def _label(labels: Mapping[str, str], name: str) -> str:
    return str(labels.get(name) or "unknown")


@cache
def recorder() -> Recorder:
    """This process's recorder (settings read and metrics made on first use)."""
    return Recorder(multiprocess=config().directory is not None)
